"""Reranking and explaining hits with a vision-language model (the LLaVA family).

A text search's top hits are scored again by a model that looks at each picture
while reading the query (search/rerank/llava.py); the engine's RerankService
(service.py) batches, caches and time-limits that work so that a search never fails
because of it. Explanations are the model's description of a picture, per-word
support for the query, and a heatmap over the picture.
"""

from __future__ import annotations

from typing import Any

from xmodal.search.encoders.builtin import REFERENCE_RERANKER
from xmodal.search.encoders.registry import create_model
from xmodal.search.errors import ModelSpecError

from . import llava as _llava  # registers the "llava" family
from .base import CAPTION, METHODS, VQA, Reranker, WordSupport
from .llava import DEFAULT_RERANKER_HUB

DEFAULT_RERANKER = f"llava:{DEFAULT_RERANKER_HUB}"


def create_reranker(spec: str, **overrides: Any) -> Reranker:
    """Build (but do not load) the reranker for a spec."""
    model = create_model(spec, **overrides)
    if not isinstance(model, Reranker):
        raise ModelSpecError(
            f"{spec.strip()} is an embedding model, not a reranker; a reranker is a "
            f"vision-language model such as {DEFAULT_RERANKER} or {REFERENCE_RERANKER}"
        )
    return model


__all__ = [
    "CAPTION",
    "DEFAULT_RERANKER",
    "METHODS",
    "REFERENCE_RERANKER",
    "VQA",
    "Reranker",
    "WordSupport",
    "create_reranker",
]
del _llava
