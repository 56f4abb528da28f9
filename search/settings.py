"""The engine's settings groups: query limits and the vector index.

Each group is declared once, here, with its defaults, limits and the reason for
them; the engine takes the groups as they are, and the application's settings
(xmodal.api.settings) nest them, so that `XMODAL_ANN__EF_SEARCH=128` or `[ann]
ef_search = 128` in xmodal.toml reach the index without being copied anywhere.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# The kinds of vector index: "exact" is a matrix product over every vector; the others
# are FAISS indexes (search/ann/faiss_index.py).
IndexKind = Literal["auto", "exact", "flat", "hnsw", "ivfpq"]
# An HNSW index keeps every vector plus its graph (~dim*4 + 2*M*4 bytes each); past this
# many segments "auto" switches to IVF-PQ, which compresses them.
HNSW_UP_TO = 5_000_000


class SettingsGroup(BaseModel):
    """A named group of settings: immutable, and a misspelt key is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class QuerySettings(SettingsGroup):
    """What a query may ask for and how its hits are built."""

    max_k: int = Field(1000, ge=1, description="Largest page of results (k) a query may ask for.")
    max_text_chars: int = Field(
        2000, ge=1, description="Longest text query, in characters; longer ones are refused."
    )
    max_id_chars: int = Field(
        512, ge=16, description="Longest item id a request may name, in characters."
    )
    max_filter_conditions: int = Field(
        32,
        ge=1,
        description="Most conditions (a key's operators, or its value) in one metadata "
        "filter: each is a pass over the items.",
    )
    max_filter_values: int = Field(
        1024, ge=1, description="Most values in one filter's `$in` and `$nin` lists, in all."
    )
    min_score: float | None = Field(
        None,
        allow_inf_nan=False,
        description="Text queries: drop hits whose calibrated score (standard deviations above "
        "the best match unrelated queries find in the same space) is below this; unset keeps "
        "every hit. A request's own min_score overrides it.",
    )
    max_query_audio_seconds: float = Field(
        60.0, gt=0, description="Queries by sound use only the first this many seconds."
    )
    text_cache_size: int = Field(
        4096, ge=0, description="Text query vectors kept (LRU): repeated queries skip the model."
    )
    text_batch_wait_ms: float = Field(
        1.0,
        ge=0,
        le=50,
        description="Concurrent text queries share one forward pass; after a pass that had "
        "company, the next waits up to this long for as many (bench/text_batching.py: +25% "
        "QPS at 8 clients).",
    )
    moment_margin: float = Field(
        0.03,
        ge=0,
        description="A video's or a sound's segments within this cosine of its best one are "
        "shown as moments.",
    )
    max_moments: int = Field(3, ge=1, description="Moments shown per video or sound.")


class AnnSettings(SettingsGroup):
    """The vector index of each space (bench/ann.py measures these choices)."""

    kind: IndexKind = Field(
        "auto",
        description='"auto" searches exactly up to `min_segments` segments, then with HNSW, '
        f"then IVF-PQ past {HNSW_UP_TO:,}; or one of exact, flat, hnsw, ivfpq.",
    )
    min_segments: int = Field(
        50_000,
        ge=0,
        description="auto: exact search up to this many segments (under ~5 ms a query there "
        "on 2 cores).",
    )
    ef_search: int = Field(
        64,
        ge=1,
        description="HNSW candidate list per query: at 1M x 512 with ef_construction 160, "
        "recall@10 0.977 at 64, 0.995 at 128.",
    )
    nprobe: int = Field(
        8,
        ge=1,
        description="IVF-PQ cells visited per query; past ~8 recall hardly rises, the PQ "
        "error dominates.",
    )
    hnsw_m: int = Field(32, ge=2, description="HNSW graph degree (build time).")
    ef_construction: int = Field(160, ge=1, description="HNSW candidate list while building.")
    nlist: int = Field(0, ge=0, description="IVF-PQ cells; 0: about 4*sqrt(n).")
    pq_m: int = Field(
        0, ge=0, description="IVF-PQ sub-quantizers (must divide dim); 0: 8 dims each."
    )
    refine_factor: int = Field(
        32,
        ge=1,
        description="IVF-PQ re-ranks this many times k candidates on the full vectors "
        "(at 1M x 512, nprobe 8: recall@10 0.91 at 16, 0.97 at 32, 0.99 at 64).",
    )
    train_size: int = Field(
        0, ge=0, description="IVF-PQ trains on at most this many vectors; 0: 128 per cell."
    )
    exact_filter_below: int = Field(
        20_000,
        ge=0,
        description="A filter leaving at most this many segments is ranked exactly over them, "
        "where graph search would wander.",
    )
    build_if_missing: bool = Field(
        True,
        description="Build a missing index when a query needs it; else search exactly until "
        "`xmodal reindex`.",
    )
    mmap: bool = Field(
        True,
        description="Memory-map saved indexes and their vectors instead of reading them "
        "into memory.",
    )
    max_growing: int = Field(
        50_000,
        ge=0,
        description="Segments added since the index was saved that are ranked exactly "
        "beside it; past this many they are merged into a new copy of the index, off the "
        "request path (an indexing run's save does it too).",
    )

    def kind_for(self, segments: int) -> str:
        """The index a space of `segments` vectors gets: the one policy for every caller."""
        if self.kind != "auto":
            return self.kind
        if segments <= self.min_segments:
            return "exact"
        return "hnsw" if segments <= HNSW_UP_TO else "ivfpq"

    def index_params(self) -> dict[str, int]:
        """The parameters a FAISS index is built with (search/ann/faiss_index.IndexParams)."""
        return self.model_dump(
            include={
                "ef_search",
                "nprobe",
                "hnsw_m",
                "ef_construction",
                "nlist",
                "pq_m",
                "refine_factor",
                "train_size",
            }
        )


class StoreSettings(SettingsGroup):
    """The data directory's writers (search/store/writer_lock.py)."""

    writer_wait: float = Field(
        600.0,
        ge=0,
        description="Seconds a writer (index, reindex, repair) waits for another one on the "
        "same data directory to finish before it gives up with exit status 75; 0: give up "
        "at once (as --no-wait).",
    )


__all__ = [
    "HNSW_UP_TO",
    "AnnSettings",
    "IndexKind",
    "QuerySettings",
    "SettingsGroup",
    "StoreSettings",
]
