"""Ranking items in one step: take the best segments, group them by item, page.

Every query path ranks the same way; only where the best segments come from differs:
- `ExactScan`: one matrix product over every segment of the snapshot (optionally
  masked by a filter);
- `ExactRows`: a product over the few rows a selective filter leaves;
- `AnnSearch`: the space's ANN index (optionally restricted to a filter's labels);
- `RowsInMemory`: the rows added since the ANN index was saved, ranked exactly, merged
  with the index's own by `Merged`.
An item's score is its best segment's. Items with many segments (video keyframes,
audio windows) can crowd a batch of segments, so `rank_items` asks its source for
four times more until the page is full or the source has nothing more to give.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from xmodal.search.ann.synced import SyncedIndex

    from .labels import LabelMap
    from .snapshot import Snapshot


@dataclass(frozen=True)
class RankedItem:
    item_code: int
    score: float  # its best segment's cosine similarity
    segment_rows: list[int]  # rows of the snapshot, best first
    segment_scores: list[float]


class Candidates(Protocol):
    def first_take(self, needed: int) -> int:
        """How many segments to ask for first, for a page ending at rank `needed`."""

    def best(self, take: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """The best `take` allowed segment rows and their scores, best first, and whether
        the source has no more to give."""


def rank_items(
    candidates: Candidates,
    item_codes: np.ndarray,
    k: int,
    offset: int = 0,
    segments_per_item: int = 3,
) -> list[RankedItem]:
    """Items ranked by their best segment, ranks offset..offset+k, each with its best
    `segments_per_item` segments."""
    if k <= 0:
        return []
    needed = offset + k
    take = candidates.first_take(needed)
    while True:
        rows, scores, exhausted = candidates.best(take)
        grouped: dict[int, tuple[list[int], list[float]]] = {}
        for code, row, score in zip(
            item_codes[rows].tolist(), rows.tolist(), scores.tolist(), strict=True
        ):
            entry = grouped.get(code)
            if entry is None:
                grouped[code] = ([row], [score])
            else:
                entry[0].append(row)
                entry[1].append(score)
        if len(grouped) >= needed or exhausted:
            return [
                RankedItem(
                    code, item_scores[0], rows_[:segments_per_item], item_scores[:segments_per_item]
                )
                for code, (rows_, item_scores) in list(grouped.items())[offset:needed]
            ]
        take *= 4


class ExactScan:
    """Every segment's score from one matrix product; a mask or an excluded item sets
    scores to -inf, so they never take a place."""

    def __init__(
        self,
        snapshot: Snapshot,
        query: np.ndarray,
        mask: np.ndarray | None = None,
        exclude_code: int | None = None,
    ):
        self.scores = snapshot.scores(query)
        if mask is not None:
            self.scores[~mask] = -np.inf
        if exclude_code is not None:
            self.scores[snapshot.item_codes == exclude_code] = -np.inf

    def first_take(self, needed: int) -> int:
        return max(needed * 4, 64)

    def best(self, take: int) -> tuple[np.ndarray, np.ndarray, bool]:
        scores = self.scores
        n = len(scores)
        take = min(take, n)
        top = np.argpartition(-scores, take - 1)[:take] if take < n else np.arange(n)
        top = top[np.argsort(-scores[top], kind="stable")]
        finite = top[np.isfinite(scores[top])]
        return finite, scores[finite], take >= n or len(finite) < take


class ExactRows:
    """The scores of a few rows (a selective filter's candidates), sorted once."""

    def __init__(
        self,
        snapshot: Snapshot,
        query: np.ndarray,
        rows: np.ndarray,
        exclude_code: int | None = None,
    ):
        if exclude_code is not None:
            rows = rows[snapshot.item_codes[rows] != exclude_code]
        scores = snapshot.vectors_of(rows) @ query.astype(np.float32, copy=False)
        order = np.argsort(-scores, kind="stable")
        self.rows, self.scores = rows[order], scores[order]

    def first_take(self, needed: int) -> int:
        return max(needed * 4, 64)

    def best(self, take: int) -> tuple[np.ndarray, np.ndarray, bool]:
        return self.rows[:take], self.scores[:take], take >= len(self.rows)


class AnnSearch:
    """The ANN index's nearest segments, restricted to a filter's labels when given; an
    excluded item's segments are dropped after the search, so they are asked for on top."""

    def __init__(
        self,
        snapshot: Snapshot,
        ann: SyncedIndex,
        label_map: LabelMap,
        query: np.ndarray,
        labels: np.ndarray | None = None,
        exclude_code: int | None = None,
    ):
        self.snapshot, self.ann, self.label_map = snapshot, ann, label_map
        self.query, self.labels, self.exclude_code = query, labels, exclude_code

    def first_take(self, needed: int) -> int:
        # One segment per item is the common case: twice the page is usually enough.
        excluded = 0
        if self.exclude_code is not None:
            excluded = len(self.snapshot.item_rows(self.exclude_code))
        return max(needed * 2, 16) + excluded

    def best(self, take: int) -> tuple[np.ndarray, np.ndarray, bool]:
        n = len(self.snapshot)
        take = min(take, n)
        allowed = self.labels if self.labels is not None else self.label_map.alive
        scores, labels = self.ann.search(self.query, take, allowed)
        rows = self.label_map.rows(labels)
        found = rows >= 0
        scores, rows = scores[found], rows[found]
        exhausted = take >= n or len(rows) < take
        if self.exclude_code is not None:
            keep = self.snapshot.item_codes[rows] != self.exclude_code
            scores, rows = scores[keep], rows[keep]
        return rows, scores, exhausted


class RowsInMemory:
    """Rows the ANN index does not hold yet (added since it was saved), ranked exactly
    from one product over the memory they sit in. Only the best asked for are sorted:
    tens of thousands of rows wait for a merge, every query scores them all."""

    def __init__(
        self,
        snapshot: Snapshot,
        query: np.ndarray,
        rows: np.ndarray,
        exclude_code: int | None = None,
    ):
        if exclude_code is not None:
            rows = rows[snapshot.item_codes[rows] != exclude_code]
        self.rows, self.scores = rows, snapshot.ram_scores(rows, query)

    def first_take(self, needed: int) -> int:
        return max(needed * 4, 64)

    def best(self, take: int) -> tuple[np.ndarray, np.ndarray, bool]:
        scores, n = self.scores, len(self.scores)
        take = min(take, n)
        top = np.argpartition(-scores, take - 1)[:take] if 0 < take < n else np.arange(take)
        top = top[np.argsort(-scores[top], kind="stable")]
        return self.rows[top], scores[top], take >= n


class Merged:
    """The best of two sources, as one."""

    def __init__(self, first: Candidates, second: Candidates):
        self.first, self.second = first, second

    def first_take(self, needed: int) -> int:
        return self.first.first_take(needed)

    def best(self, take: int) -> tuple[np.ndarray, np.ndarray, bool]:
        rows_a, scores_a, done_a = self.first.best(take)
        rows_b, scores_b, done_b = self.second.best(take)
        rows = np.concatenate([rows_a, rows_b])
        scores = np.concatenate([scores_a, scores_b])
        order = np.argsort(-scores, kind="stable")[:take]
        exhausted = done_a and done_b and len(rows) <= take
        return rows[order], scores[order], exhausted
