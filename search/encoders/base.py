"""What every encoder offers the engine and the indexer.

`TwoTowerEncoder` is a text tower and one media tower sharing one embedding space;
`ImageTextEncoder` (open_clip) and `AudioTextEncoder` (CLAP) add their media tower.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Self, final

import numpy as np
from PIL import Image

IMAGE_TEXT = "image-text"
AUDIO_TEXT = "audio-text"


class LazyModel(ABC):
    """A model named by a spec whose weights load once, on the first `load()` or first
    use, whichever thread gets there first; a subclass writes `_load` and calls
    `super().__init__()`. Encoders and rerankers are both."""

    _spec: str = ""

    def __init__(self) -> None:
        # Reentrant so that `_load` may call helpers that take the lock themselves
        # (CLAP loads its processor under it, alone for sample_rate or within `_load`).
        self._load_lock = threading.RLock()
        self._loaded = False

    @property
    def spec(self) -> str:
        """The spec string this model was created from (a built-in name stays that name)."""
        return self._spec

    def named(self, spec: str) -> Self:
        """Report `spec` (e.g. a built-in name) instead of the resolved spec; returns self."""
        self._spec = spec
        return self

    @property
    @abstractmethod
    def identity(self) -> str:
        """Architecture and weights identity; cheap (no model load)."""

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory."""
        return self._loaded

    @final
    def load(self) -> None:
        """Load weights now (otherwise done on first use). Raises ModelLoadError.

        Concurrent callers wait for one `_load`; after a failure the next call tries again.
        """
        if self._loaded:
            return
        with self._load_lock:
            if not self._loaded:
                self._load()
                self._loaded = True

    @abstractmethod
    def _load(self) -> None:
        """Load the weights; called once, under the load lock, by `load`."""


# CLIP's trained temperature is clamped at 100; a model that does not say uses it.
DEFAULT_LOGIT_SCALE = 100.0


class TwoTowerEncoder(LazyModel):
    """A text tower and a media tower that embed into one space, named by `space`.

    All returned vectors are float32 and L2-normalised.
    """

    space: str  # IMAGE_TEXT or AUDIO_TEXT: the store keeps one vector table per space

    @property
    @abstractmethod
    def dim(self) -> int:
        """Embedding dimension (number of float32 components per vector)."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts; returns (n, dim) float32, unit length."""

    @property
    def logit_scale(self) -> float:
        """The temperature the model was trained with: logit_scale x cosine is its log
        odds of a match, up to a constant per query (reranking fuses on it)."""
        return DEFAULT_LOGIT_SCALE


class ImageTextEncoder(TwoTowerEncoder):
    """A model with an image tower and a text tower sharing one embedding space.

    Images are prepared in two steps so that the CPU part can run in decode
    workers while the model encodes the previous batch:
    `prepare_image` (thread-safe, pure CPU) then `encode_prepared` (batched).
    """

    space: str = IMAGE_TEXT

    @property
    @abstractmethod
    def input_size(self) -> tuple[int, int]:
        """(height, width) in pixels of the model's image input; decoders may draft to it."""

    @abstractmethod
    def prepare_image(self, image: Image.Image) -> np.ndarray:
        """Resize and crop an RGB image to the model input; thread-safe."""

    def load_preprocessing(self) -> None:
        """Make `prepare_image` ready: without the weights where the model's
        preprocessing is known without them (a process that only prepares pictures, a
        Ray decode actor, then holds no model); otherwise by loading the model."""
        self.load()

    @abstractmethod
    def encode_prepared(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """Encode prepared images; returns (n, dim) float32, unit length."""

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Prepare and encode RGB images; returns (n, dim) float32, unit length."""
        return self.encode_prepared([self.prepare_image(image) for image in images])


class AudioTextEncoder(TwoTowerEncoder):
    """A model with an audio tower and a text tower sharing one embedding space.

    Audio comes in as float32 mono clips at `sample_rate`, ideally `window_seconds`
    long (what the indexer's windows are cut to).
    """

    space: str = AUDIO_TEXT

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Sampling rate in Hz that clips passed to `encode_audio` must have."""

    @property
    @abstractmethod
    def window_seconds(self) -> float:
        """Clip length in seconds the model was trained on; longer clips are cut to it."""

    @abstractmethod
    def encode_audio(
        self, batch: Sequence[np.ndarray], sample_rate: int | None = None
    ) -> np.ndarray:
        """Encode float32 mono clips at `sample_rate` Hz; returns (n, dim) float32, unit length.

        A caller that states the `sample_rate` of its clips gets a ValueError when it
        differs from the model's, instead of silently wrong vectors.
        """
