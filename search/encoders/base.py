"""What every encoder offers the engine and the indexer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
from PIL import Image

IMAGE_TEXT = "image-text"


class ImageTextEncoder(ABC):
    """A model with an image tower and a text tower sharing one embedding space.

    Images are prepared in two steps so that the CPU part can run in decode
    workers while the model encodes the previous batch:
    `prepare_image` (thread-safe, pure CPU) then `encode_prepared` (batched).
    All returned vectors are float32 and L2-normalised.
    """

    space: str = IMAGE_TEXT
    _spec: str = ""

    @property
    def spec(self) -> str:
        """The spec string this encoder was created from (a built-in name stays that name)."""
        return self._spec

    def named(self, spec: str) -> ImageTextEncoder:
        """Report `spec` (e.g. a built-in name) instead of the resolved spec; returns self."""
        self._spec = spec
        return self

    @property
    @abstractmethod
    def identity(self) -> str:
        """Architecture and weights identity recorded in the store; cheap (no model load)."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Embedding dimension."""

    @property
    @abstractmethod
    def input_size(self) -> tuple[int, int]:
        """(height, width) in pixels of the model's image input; decoders may draft to it."""

    @abstractmethod
    def load(self) -> None:
        """Load weights now (otherwise done on first use). Raises ModelLoadError."""

    @abstractmethod
    def prepare_image(self, image: Image.Image) -> np.ndarray:
        """Resize and crop an RGB image to the model input; thread-safe."""

    @abstractmethod
    def encode_prepared(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """Encode prepared images; returns (n, dim) float32, unit length."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts; returns (n, dim) float32, unit length."""

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Prepare and encode RGB images; returns (n, dim) float32, unit length."""
        return self.encode_prepared([self.prepare_image(image) for image in images])
