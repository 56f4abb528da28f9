"""What a query returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from search.store import ItemRecord


@dataclass(frozen=True)
class SegmentHit:
    id: str
    score: float  # cosine similarity in the space, -1..1
    start: float | None = None  # seconds, for time-based media
    end: float | None = None


@dataclass
class Hit:
    item: ItemRecord
    score: float  # the item's best segment score
    segments: list[SegmentHit] = field(default_factory=list)


@dataclass
class SearchResult:
    hits: list[Hit]
    took_ms: float
    # Milliseconds per stage: "encode" (decode and embed the query), "search" (rank the
    # space, refreshing its snapshot if the store changed), "fetch" (build the hits).
    timings: dict[str, float] = field(default_factory=dict)
