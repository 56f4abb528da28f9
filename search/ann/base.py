"""The interface every ANN index offers: inner-product search over int64 labels."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


class VectorIndex(ABC):
    """Unit vectors under int64 labels; scores are inner products (cosine)."""

    kind: str

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def __len__(self) -> int:
        """Live vectors (removed ones excluded)."""

    @abstractmethod
    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        """Add (n, dim) float32 vectors under n distinct int64 labels."""

    @abstractmethod
    def remove(self, labels: np.ndarray) -> None:
        """Never return these labels again."""

    @abstractmethod
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(q, k) scores and labels, best first; label -1 pads missing results.

        `allowed` (int64 labels, or a bool mask indexed by label) restricts the
        candidates before ranking, so a filter still yields the k best allowed vectors
        when there are k of them."""

    @abstractmethod
    def save(self, path: Path) -> None: ...
