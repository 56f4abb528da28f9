"""The segments a hit shows: an image's own segment, a timed item's best moments."""

from __future__ import annotations

from typing import Any

import numpy as np

from xmodal.search.hits import SegmentHit

from .ranking import RankedItem
from .snapshot import Snapshot


def segment_hits(snapshot: Snapshot, ranked: RankedItem) -> list[SegmentHit]:
    """The ranked item's best segments as they are (images: one, whole)."""
    return [
        SegmentHit(
            id=str(snapshot.segment_ids[row]),
            score=score,
            start=optional_seconds(snapshot.starts[row]),
            end=optional_seconds(snapshot.ends[row]),
        )
        for row, score in zip(ranked.segment_rows, ranked.segment_scores, strict=True)
    ]


def best_moments(
    snapshot: Snapshot, code: int, vector: np.ndarray, margin: float, limit: int
) -> list[SegmentHit]:
    """A timed item's (video keyframes, audio windows) best moments, best first.

    Segments scoring within `margin` (cosine) of the item's best are kept; those that
    touch or overlap (consecutive keyframe spans, overlapping audio windows) merge into
    one span, which takes its best segment's score and id."""
    rows = snapshot.item_rows(code)
    scores = snapshot.vectors_of(rows) @ vector
    best = float(scores.max())
    chosen = sorted(
        (float(snapshot.starts[row]), float(snapshot.ends[row]), float(score), int(row))
        for row, score in zip(rows, scores, strict=True)
        if score >= best - margin
    )
    moments: list[list[Any]] = []
    for start, end, score, row in chosen:
        if moments and start <= moments[-1][1] + 1e-6:
            last = moments[-1]
            last[1] = max(last[1], end)
            if score > last[2]:
                last[2], last[3] = score, row
        else:
            moments.append([start, end, score, row])
    moments.sort(key=lambda m: -m[2])
    return [
        SegmentHit(id=str(snapshot.segment_ids[row]), score=score, start=start, end=end)
        for start, end, score, row in moments[:limit]
    ]


def optional_seconds(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return float(value)
