"""What an audio-text encoder (CLAP and the like) offers the engine and the indexer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

AUDIO_TEXT = "audio-text"


class AudioTextEncoder(ABC):
    """A model with an audio tower and a text tower sharing one embedding space.

    Audio comes in as float32 mono clips at `sample_rate`, ideally `window_seconds`
    long (what the indexer's windows are cut to). All returned vectors are float32
    and L2-normalised.
    """

    space: str = AUDIO_TEXT
    _spec: str = ""

    @property
    def spec(self) -> str:
        """The spec string this encoder was created from (a built-in name stays that name)."""
        return self._spec

    def named(self, spec: str) -> AudioTextEncoder:
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
    def sample_rate(self) -> int:
        """Sampling rate in Hz that clips passed to `encode_audio` must have."""

    @property
    @abstractmethod
    def window_seconds(self) -> float:
        """Clip length in seconds the model was trained on; longer clips are cut to it."""

    @abstractmethod
    def load(self) -> None:
        """Load weights now (otherwise done on first use). Raises ModelLoadError."""

    @abstractmethod
    def encode_audio(
        self, batch: Sequence[np.ndarray], sample_rate: int | None = None
    ) -> np.ndarray:
        """Encode float32 mono clips at `sample_rate`; returns (n, dim) float32, unit length.

        A caller that states the `sample_rate` of its clips gets a ValueError when it
        differs from the model's, instead of silently wrong vectors.
        """

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts; returns (n, dim) float32, unit length."""
