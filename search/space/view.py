"""One store version of a space as queries see it: the snapshot, the ANN index and which
row each of its labels stands for (when the space uses one), and the rows each filter
allows."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from xmodal.search.ann.synced import SyncedIndex
from xmodal.search.settings import AnnSettings

from .labels import LabelMap
from .ranking import (
    AnnSearch,
    Candidates,
    ExactRows,
    ExactScan,
    Merged,
    RankedItem,
    RowsInMemory,
    rank_items,
)
from .snapshot import Snapshot

MASK_CACHE_SIZE = 32


@dataclass(frozen=True)
class RowFilter:
    """A query's restriction as rows and labels, computed once per snapshot and filter."""

    rows: np.ndarray  # bool per snapshot row
    count: int
    labels: np.ndarray | None  # bool per ANN label; None without an ANN index


class SpaceView:
    def __init__(
        self,
        snapshot: Snapshot,
        settings: AnnSettings,
        ann: SyncedIndex | None = None,
        label_map: LabelMap | None = None,
    ):
        self.snapshot = snapshot
        self.settings = settings
        self.ann = ann
        self.label_map = label_map
        self._filters: OrderedDict[str, RowFilter | None] = OrderedDict()
        self._filters_lock = threading.Lock()

    @property
    def version(self) -> tuple[int, int]:
        return self.snapshot.version

    @property
    def kind(self) -> str:
        return "exact" if self.ann is None else self.ann.kind

    def row_filter(self, spec: dict[str, Any], kinds: tuple[str, ...] | None) -> RowFilter | None:
        """The rows a validated filter and kinds allow; cached (masks cost ~O(items))."""
        if not spec and kinds is None:
            return None
        key = json.dumps([spec, kinds], sort_keys=True, default=str)
        with self._filters_lock:
            if key in self._filters:
                self._filters.move_to_end(key)
                return self._filters[key]
        built = self._build_filter(spec, kinds)
        with self._filters_lock:
            self._filters[key] = built
            while len(self._filters) > MASK_CACHE_SIZE:
                self._filters.popitem(last=False)
        return built

    def _build_filter(self, spec: dict[str, Any], kinds: tuple[str, ...] | None) -> RowFilter:
        snapshot = self.snapshot
        mask = snapshot.item_mask(spec, kinds)
        rows = mask[snapshot.item_codes] & snapshot.servable
        count = int(rows.sum())
        labels = None
        label_map = self.label_map
        if label_map is not None and count > self.settings.exact_filter_below:
            labels = np.zeros(label_map.labels, bool)
            held = label_map.label_of_row[rows]
            labels[held[held >= 0]] = True
            labels.setflags(write=False)  # shared by queries; lets FAISS reuse its selector
        return RowFilter(rows, count, labels)

    def rank(
        self,
        query: np.ndarray,
        k: int,
        offset: int = 0,
        allowed: RowFilter | None = None,
        exclude_code: int | None = None,
        segments_per_item: int = 3,
    ) -> list[RankedItem]:
        """Items ranked by their best segment; ranks offset..offset+k."""
        if len(self.snapshot) == 0:
            return []
        candidates = self._candidates(query, allowed, exclude_code)
        return rank_items(candidates, self.snapshot.item_codes, k, offset, segments_per_item)

    def _candidates(
        self, query: np.ndarray, allowed: RowFilter | None, exclude_code: int | None
    ) -> Candidates:
        """Where the best segments come from: the ANN index when the space has one and
        the filter (if any) is broad; the few rows of a selective filter; else a scan."""
        snapshot = self.snapshot
        broad = allowed is None or allowed.labels is not None
        if self.ann is not None and self.label_map is not None and broad:
            labels = None if allowed is None else allowed.labels
            indexed = AnnSearch(snapshot, self.ann, self.label_map, query, labels, exclude_code)
            growing = self.label_map.growing
            if allowed is not None:
                growing = growing[allowed.rows[growing]]
            if not len(growing):
                return indexed
            return Merged(indexed, RowsInMemory(snapshot, query, growing, exclude_code))
        if allowed is None:
            return ExactScan(snapshot, query, None, exclude_code)
        if self.ann is None and allowed.count > self.settings.exact_filter_below:
            return ExactScan(snapshot, query, allowed.rows, exclude_code)
        return ExactRows(snapshot, query, np.flatnonzero(allowed.rows), exclude_code)
