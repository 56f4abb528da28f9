"""What a reranker offers the engine: scores for (query, picture) pairs, and the parts
of an explanation (a description, per-word support, a heatmap)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from xmodal.search.encoders.base import LazyModel

# How a reranker turns a vision-language model into a score for (query, picture):
CAPTION = "caption"  # the query's likelihood as the picture's caption, per token
VQA = "vqa"  # P("Yes") to 'Does this image show "{query}"?' (VQAScore)
METHODS = (CAPTION, VQA)


@dataclass(frozen=True)
class WordSupport:
    """How much the picture raises (> 0) or lowers (< 0) the model's belief in one
    word of the query, in nats, against a picture that shows nothing."""

    word: str
    support: float


class Reranker(LazyModel):
    """A vision-language model asked about pictures. Thread-safe; calls are serialised
    on the model (callers batch pairs rather than call concurrently)."""

    default_method: str = VQA  # overridden by a model whose card measured otherwise

    @property
    @abstractmethod
    def input_size(self) -> tuple[int, int]:
        """(height, width) the model looks at; decoders may draft large pictures to it."""

    @abstractmethod
    def fit_picture(self, image: Image.Image) -> Image.Image:
        """The picture shrunk to what the model uses of it (kept in the picture cache)."""

    @abstractmethod
    def score(
        self, queries: Sequence[str], images: Sequence[Image.Image], method: str
    ) -> list[float]:
        """One batched forward pass: for each (query, picture) pair a score in [0, 1]."""

    def answer_tokens(self, query: str, method: str) -> int:
        """How many tokens a score is the geometric mean of: tokens x log(score) is the
        log-likelihood the reranker gives the query (1 for a yes/no answer)."""
        return 1

    @abstractmethod
    def describe(self, images: Sequence[Image.Image], max_words: int = 40) -> list[str]:
        """What each picture shows, in the model's words."""

    @abstractmethod
    def word_support(self, query: str, image: Image.Image) -> list[WordSupport]:
        """Per word of the query, how much this picture supports it."""

    @abstractmethod
    def view(self, image: Image.Image) -> Image.Image:
        """The part of the picture the model looks at (e.g. its centre square), which a
        heatmap covers."""

    @abstractmethod
    def heatmap(self, query: str, image: Image.Image, weighting: str = "occlusion") -> np.ndarray:
        """(rows, cols) float32 in [0, 1] over the picture as the model sees it (`view`):
        where the evidence for the query's score lies."""
