"""What a query returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xmodal.search.encoders.base import AUDIO_TEXT, IMAGE_TEXT
from xmodal.search.store import ItemRecord

if TYPE_CHECKING:
    from xmodal.search.rerank.apply import ExplainReport
    from xmodal.search.rerank.explain import Explanation
    from xmodal.search.rerank.service import RerankReport


@dataclass(frozen=True)
class SegmentHit:
    id: str
    score: float  # cosine similarity in the space, -1..1
    start: float | None = None  # seconds, for time-based media
    end: float | None = None


# What a hit matched, by the space that found it.
MATCHED_BY_SPACE = {IMAGE_TEXT: "picture", AUDIO_TEXT: "sound"}


@dataclass
class Hit:
    item: ItemRecord
    score: float  # the item's best segment similarity (cosine in `space`)
    segments: list[SegmentHit] = field(default_factory=list)
    space: str = IMAGE_TEXT  # the space the hit was found in
    # Text queries: the score on the scale shared by all spaces (search/calibration.py);
    # the list is ordered by it. None for queries by example, which stay in one space.
    calibrated: float | None = None
    # Reranked hits: the vision-language model's score in [0, 1] (search/rerank/).
    rerank_score: float | None = None
    explanation: Explanation | None = None  # when the search asked for explanations

    @property
    def matched(self) -> str:
        """ "picture" or "sound": what of the item matched (a video has both)."""
        return MATCHED_BY_SPACE.get(self.space, self.space)


@dataclass
class SearchResult:
    hits: list[Hit]
    took_ms: float
    # Milliseconds per stage: "encode" (decode and embed the query), "search" (rank the
    # space, refreshing its snapshot if the store changed), "fetch" (build the hits).
    timings: dict[str, float] = field(default_factory=dict)
    rerank: RerankReport | None = None  # when the search asked for reranking
    explain: ExplainReport | None = None  # when the search asked for explanations
