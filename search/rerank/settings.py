"""The `rerank` settings group: which vision-language model reranks, how much, how long."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from xmodal.search.settings import SettingsGroup

from .llava import DEFAULT_RERANKER_HUB

RerankMethod = Literal["auto", "caption", "vqa"]


class RerankSettings(SettingsGroup):
    """Reranking text searches' top hits with a vision-language model (docs/rerank.md)."""

    model: str = Field(
        f"llava:{DEFAULT_RERANKER_HUB}",
        description="The reranker: a llava: spec (a Hugging Face id, @revision, or a "
        "save_pretrained folder) or xmodal-ref-vlm, the project's own offline model.",
    )
    allowed_models: list[str] = Field(
        default_factory=list,
        description="Rerankers an HTTP request may name besides `model`; a request naming "
        "another is refused (400): which models a server loads is its operator's choice.",
    )
    preload: bool = Field(
        False,
        description="Load the reranker in the background when the server starts, so that "
        "the first reranked search does not wait for it (or fall back past the budget).",
    )
    method: RerankMethod = Field(
        "auto",
        description='"caption": the query\'s likelihood as the picture\'s caption; "vqa": '
        'P(Yes) to "Does this image show ...?"; "auto": the model\'s own (xmodal-ref-vlm '
        "names the one measured better for it, other models use vqa).",
    )
    top_n: int = Field(20, ge=1, description="Hits reranked when a request does not say.")
    max_top_n: int = Field(50, ge=1, description="Most hits a request may have reranked.")
    weight: float = Field(
        0.5,
        ge=0,
        le=100,
        description="Reranked pictures are ordered by the search model's log odds "
        "(logit_scale x cosine) + weight x the reranker's log-likelihood of the query: the "
        "product of the two models' beliefs. 0 keeps the first order; larger trusts the "
        "reranker more.",
    )
    timeout_ms: float = Field(
        5000.0,
        gt=0,
        description="Rerank budget per search; past it (or when the model cannot load) the "
        "search answers in its first order, saying why. The work goes on and fills the cache.",
    )
    batch_pairs: int = Field(
        32, ge=1, description="Most (query, picture) pairs in one forward pass, across requests."
    )
    cache_size: int = Field(
        50_000, ge=0, description="Scores kept per (model, method, query, item, moment), LRU."
    )
    picture_cache_size: int = Field(
        512, ge=0, description="Decoded pictures (at the model's input size) kept, LRU."
    )
    max_explain: int = Field(
        5, ge=0, description="Most hits of one search a request may have explained."
    )
    explain_words: int = Field(40, ge=4, le=200, description="Longest generated description.")
