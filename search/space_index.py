"""The vectors of one space kept in step with the store.

Every store version gets an exact snapshot (search/exact_index.py): the item table,
the segment rows and their vectors. Past `ann_min_segments` segments (or when an
index kind is set) an ANN index answers unfiltered and broadly filtered queries; it is
synced to each snapshot before that snapshot serves a query, so a deleted or
re-embedded segment is never returned. Selective filters are answered exactly over
their few candidate rows, where graph search would wander.

The ANN index is saved under `<data>/indexes/<space>/` by the indexer after each run
(and by `xmodal reindex`); a server loads it once and applies later changes in memory.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.search.ann.faiss_index import HNSW_UP_TO, FaissIndex, list_index_kinds
from xmodal.search.ann.synced import (
    REBUILD_DEAD_SHARE,
    IndexDirectory,
    LabelMap,
    SyncedIndex,
    empty_index,
    segment_keys,
)
from xmodal.search.errors import InvalidQueryError, StoreError
from xmodal.search.exact_index import RankedItem, SpaceSnapshot, group_by_item, page
from xmodal.search.store import Store

log = logging.getLogger(__name__)

INDEX_KINDS = ("auto", "exact", *list_index_kinds())
MASK_CACHE_SIZE = 32


@dataclass(frozen=True)
class AnnOptions:
    # "auto": exact up to `auto_min_segments`, then HNSW, IVF-PQ past HNSW_UP_TO segments.
    kind: str = "auto"
    # bench/ann.py: exact search stays under ~5 ms a query to about this size on 2 cores.
    auto_min_segments: int = 50_000
    ef_search: int = 64
    nprobe: int = 8
    # Build-time parameters (search/ann/faiss_index.IndexParams); 0: its default.
    hnsw_m: int = 32
    ef_construction: int = 160
    nlist: int = 0
    pq_m: int = 0
    refine_factor: int = 32
    train_size: int = 0
    # A filter leaving at most this many segments is ranked exactly over those rows.
    exact_filter_below: int = 20_000
    # Build a missing index when a query needs it (else search exactly until `reindex`).
    build_if_missing: bool = True
    mmap: bool = True

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise InvalidQueryError(f"index kind must be one of {list(INDEX_KINDS)}")

    @classmethod
    def from_settings(cls, settings: Any) -> AnnOptions:
        return cls(
            kind=settings.index_kind,
            auto_min_segments=settings.ann_min_segments,
            ef_search=settings.ann_ef_search,
            nprobe=settings.ann_nprobe,
            exact_filter_below=settings.ann_exact_filter_below,
        )

    def kind_for(self, segments: int) -> str:
        if self.kind != "auto":
            return self.kind
        if segments <= self.auto_min_segments:
            return "exact"
        return "hnsw" if segments <= HNSW_UP_TO else "ivfpq"


@dataclass(frozen=True)
class RowFilter:
    """A query's restriction as rows and labels, computed once per snapshot and filter."""

    rows: np.ndarray  # bool per snapshot row
    count: int
    labels: np.ndarray | None  # bool per ANN label; None without an ANN index


class SpaceView:
    """One store version of a space: its snapshot and, when used, the ANN index synced to it."""

    def __init__(
        self,
        snapshot: SpaceSnapshot,
        options: AnnOptions,
        ann: SyncedIndex | None = None,
        label_map: LabelMap | None = None,
    ):
        self.snapshot = snapshot
        self.options = options
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
        mask = snapshot.items.matching(spec) if spec else None
        if kinds is not None:
            wanted = snapshot.items.fields["kind"].isin(list(kinds)).to_numpy(dtype=bool)
            mask = wanted if mask is None else mask & wanted
        assert mask is not None
        rows = mask[snapshot.item_codes]
        count = int(rows.sum())
        labels = None
        if self.label_map is not None and count > self.options.exact_filter_below:
            labels = np.zeros(len(self.label_map.row_of_label), bool)
            labels[self.label_map.label_of_row[rows]] = True
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
        snapshot = self.snapshot
        if allowed is not None and (self.ann is None or allowed.labels is None):
            if self.ann is None and allowed.count > self.options.exact_filter_below:
                return snapshot.rank(
                    query, k, offset, allowed.rows, exclude_code, segments_per_item
                )
            rows = np.flatnonzero(allowed.rows)
            return snapshot.rank_rows(query, rows, k, offset, exclude_code, segments_per_item)
        if self.ann is None or self.label_map is None:
            return snapshot.rank(query, k, offset, None, exclude_code, segments_per_item)
        needed = offset + k
        n = len(snapshot)
        excluded = 0 if exclude_code is None else len(snapshot.item_rows(exclude_code))
        # One segment per item is the common case: twice the page is usually enough.
        take = max(needed * 2, 16) + excluded
        labels = None if allowed is None else allowed.labels
        while True:
            take = min(take, n)
            scores, rows = self.ann.search_rows(query, take, self.label_map, labels)
            returned = len(rows)
            if exclude_code is not None:
                keep = snapshot.item_codes[rows] != exclude_code
                scores, rows = scores[keep], rows[keep]
            grouped = group_by_item(rows, scores, snapshot.item_codes)
            # Many segments per item (video keyframes) can crowd out whole items: ask for more.
            if len(grouped) >= needed or take >= n or returned < take:
                return page(grouped, offset, needed, segments_per_item)
            take *= 4


@dataclass(frozen=True)
class RefreshReport:
    kind: str
    segments: int
    added: int
    removed: int
    built: bool
    saved: bool
    seconds: float


class SpaceIndex:
    """Keeps a SpaceView in step with the store; one per engine and space."""

    def __init__(self, store: Store, space: str, options: AnnOptions | None = None):
        self.store = store
        self.space = space
        self.options = options or AnnOptions()
        self.directory = IndexDirectory(index_root(store.path, space))
        self._view: SpaceView | None = None
        self._ann: SyncedIndex | None = None
        self._lock = threading.Lock()
        self.last_refresh: RefreshReport | None = None

    def view(self) -> SpaceView:
        """The view of the store's current version (built on the first query after a write)."""
        version = self.store.version(self.space)
        current = self._view
        if current is not None and current.version == version:
            return current
        with self._lock:
            if self._view is None or self._view.version != version:
                self._view = self._build_view(version)
            return self._view

    def wanted_kind(self) -> str:
        """The kind of index the space's current size calls for ("exact": none)."""
        return self.options.kind_for(self.store.count_segments(self.space))

    def refresh(self, save: bool = False, rebuild: bool = False) -> RefreshReport:
        """Bring the index to the store's current version now; `save` persists it,
        `rebuild` starts from an empty index instead of the saved one."""
        with self._lock:
            if rebuild:
                self._ann = None
                self.directory.clear()
            version = self.store.version(self.space)
            saved = self.directory.state()
            if (
                save
                and not rebuild
                and self._view is None
                and saved is not None
                and saved["store_version"] == list(version)
                and saved["kind"] == self.wanted_kind()
            ):
                # Nothing changed since the last save (an indexing run with nothing to
                # do): skip reading the whole space.
                return RefreshReport(saved["kind"], saved["count"], 0, 0, False, False, 0.0)
            view = self._view
            behind = view is not None and view.version != version
            if (
                view is None
                or behind
                or rebuild
                or view.kind != self.options.kind_for(len(view.snapshot))
            ):
                self._view = self._build_view(version, force_build=True)
            report = self.last_refresh
            assert report is not None
            ann = self._ann
            stale = saved is None or saved["store_version"] != list(version) or rebuild
            if save and ann is not None and (stale or report.built):
                with ann.lock.reading():  # no sync may change it while it is written
                    self.directory.save(ann)
                report = replace(report, saved=True)
            self.last_refresh = report
            return report

    def _build_view(self, version: tuple[int, int], force_build: bool = False) -> SpaceView:
        started = time.perf_counter()
        snapshot = SpaceSnapshot(self.store, self.space, version)
        kind = self.options.kind_for(len(snapshot))
        ann, built = None, False
        if kind != "exact" and len(snapshot):
            ann, built = self._ann_for(kind, snapshot.vectors.shape[1], force_build)
        self._ann = ann
        if ann is None:
            self.last_refresh = RefreshReport(
                "exact", len(snapshot), 0, 0, False, False, time.perf_counter() - started
            )
            return SpaceView(snapshot, self.options)
        keys = segment_keys(snapshot.segment_ids, snapshot.vectors)
        label_map, sync = ann.sync(keys, snapshot.vectors, version)
        if ann.dead_share > REBUILD_DEAD_SHARE:
            log.info("rebuilding the %s index: %.0f%% removed", kind, 100 * ann.dead_share)
            ann, built = empty_index(kind, snapshot.vectors.shape[1], **self._params()), True
            label_map, sync = ann.sync(keys, snapshot.vectors, version)
        if isinstance(ann.index, FaissIndex):
            vectors, row_of = snapshot.vectors, label_map.rows
            ann.index.full_vectors = lambda labels: vectors[row_of(labels)]
        self._ann = ann
        self.last_refresh = RefreshReport(
            kind,
            len(snapshot),
            sync.added,
            sync.removed,
            built,
            False,
            time.perf_counter() - started,
        )
        return SpaceView(snapshot, self.options, ann, label_map)

    def _ann_for(self, kind: str, dim: int, force_build: bool) -> tuple[SyncedIndex | None, bool]:
        """The index to sync: the one in memory, else the saved one, else a new one."""
        if self._ann is not None and self._ann.kind == kind:
            return self._ann, False
        saved = self.directory.current()
        state = None if saved is None else self.directory.state(saved)
        if saved is not None and state is not None and state.get("kind") == kind:
            try:
                loaded = SyncedIndex.load(saved, mmap=self.options.mmap)
            except (RuntimeError, OSError, ValueError, KeyError, TypeError, StoreError) as error:
                # A damaged save costs a rebuild, never the server: the store has the truth.
                log.warning("saved %s index in %s unreadable (%s): rebuilding", kind, saved, error)
                return self._new_index(kind, dim, force_build)
            if isinstance(loaded.index, FaissIndex):  # search-time knobs follow the settings
                loaded.index.params = replace(
                    loaded.index.params,
                    ef_search=self.options.ef_search,
                    nprobe=self.options.nprobe,
                )
            return loaded, False
        return self._new_index(kind, dim, force_build)

    def _new_index(self, kind: str, dim: int, force_build: bool) -> tuple[SyncedIndex | None, bool]:
        if not (self.options.build_if_missing or force_build):
            log.warning(
                "no saved %s index for %s: searching exactly until `xmodal reindex`",
                kind,
                self.space,
            )
            return None, False
        log.info("building a %s index for %s", kind, self.space)
        return empty_index(kind, dim, **self._params()), True

    def _params(self) -> dict[str, Any]:
        o = self.options
        return {
            "ef_search": o.ef_search,
            "nprobe": o.nprobe,
            "hnsw_m": o.hnsw_m,
            "ef_construction": o.ef_construction,
            "nlist": o.nlist,
            "pq_m": o.pq_m,
            "refine_factor": o.refine_factor,
            "train_size": o.train_size,
        }


def index_root(data: Path, space: str) -> Path:
    return data / "indexes" / space
