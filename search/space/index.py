"""The vectors of one space kept in step with the store.

Every store version gets a snapshot (search/space/snapshot.py): the item table,
the segment rows and their vectors. Past `ann.min_segments` segments (or when an
index kind is set) an ANN index answers unfiltered and broadly filtered queries; it is
synced to each snapshot before that snapshot serves a query, so a deleted or
re-embedded segment is never returned. Selective filters are answered exactly over
their few candidate rows, where graph search would wander.

The ANN index is saved under `<data>/indexes/<space>/` by the indexer after each run
(and by `xmodal reindex`); a server loads it once and applies later changes in memory.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from xmodal.search.ann.faiss_index import FaissIndex
from xmodal.search.ann.synced import (
    REBUILD_DEAD_SHARE,
    IndexDirectory,
    SyncedIndex,
    empty_index,
    segment_keys,
)
from xmodal.search.settings import AnnSettings
from xmodal.search.store import Store

from .snapshot import Snapshot
from .view import SpaceView

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexState:
    """What a space serves queries from now, read without touching the store's data
    (for monitoring): cheap enough to ask on every metrics scrape."""

    space: str
    kind: str  # "exact", "hnsw", ...; "none" before the space served a query
    segments: int  # vectors in the served view
    items: int  # indexed items in the served view
    served_version: tuple[int, int] | None  # (items, segments) table versions served
    store_version: tuple[int, int]  # the store's current versions
    refreshed_at: float | None  # Unix time the served view was brought up to date

    @property
    def up_to_date(self) -> bool:
        """Whether queries see the store as it is now (else the next query syncs first)."""
        return self.served_version == self.store_version


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

    def __init__(self, store: Store, space: str, settings: AnnSettings | None = None):
        self.store = store
        self.space = space
        self.settings = settings or AnnSettings()
        self.directory = IndexDirectory(index_root(store.path, space))
        self._view: SpaceView | None = None
        self._ann: SyncedIndex | None = None
        self._lock = threading.Lock()
        self.last_refresh: RefreshReport | None = None
        self._view_built_at: float | None = None  # Unix time of the current view

    def state(self) -> IndexState:
        """The served view's size and versions (IndexState); builds nothing."""
        view, built_at = self._view, self._view_built_at
        store_version = self.store.version(self.space)
        if view is None:
            return IndexState(self.space, "none", 0, 0, None, store_version, None)
        snapshot = view.snapshot
        return IndexState(
            self.space,
            view.kind,
            len(snapshot),
            len(snapshot.items.ids),
            view.version,
            store_version,
            built_at,
        )

    def view(self) -> SpaceView:
        """The view of the store's current version (built on the first query after a write)."""
        version = self.store.version(self.space)
        current = self._view
        if current is not None and current.version == version:
            return current
        with self._lock:
            if self._view is None or self._view.version != version:
                self._view = self._build_view(version)
                self._view_built_at = time.time()
            return self._view

    def wanted_kind(self) -> str:
        """The kind of index the space's current size calls for ("exact": none)."""
        return self.settings.kind_for(self.store.count_segments(self.space))

    def refresh(self, save: bool = False, rebuild: bool = False) -> RefreshReport:
        """Bring the index to the store's current version now; `save` persists it,
        `rebuild` starts from an empty index instead of the saved one. Saving is a write:
        it holds the data directory's writer lock (re-entrant within an indexing run)."""
        if save:
            with self.store.writing():
                return self._refresh(save, rebuild)
        return self._refresh(save, rebuild)

    def _refresh(self, save: bool, rebuild: bool) -> RefreshReport:
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
                and self.directory.intact()
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
                or view.kind != self.settings.kind_for(len(view.snapshot))
            ):
                self._view = self._build_view(version, force_build=True)
                self._view_built_at = time.time()
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
        snapshot = Snapshot(self.store, self.space, version)
        kind = self.settings.kind_for(len(snapshot))
        ann, built = None, False
        if kind != "exact" and len(snapshot):
            ann, built = self._ann_for(kind, snapshot.vectors.shape[1], force_build)
        self._ann = ann
        if ann is None:
            self.last_refresh = RefreshReport(
                "exact", len(snapshot), 0, 0, False, False, time.perf_counter() - started
            )
            return SpaceView(snapshot, self.settings)
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
        return SpaceView(snapshot, self.settings, ann, label_map)

    def _ann_for(self, kind: str, dim: int, force_build: bool) -> tuple[SyncedIndex | None, bool]:
        """The index to sync: the one in memory, else the saved one, else a new one."""
        if self._ann is not None and self._ann.kind == kind:
            return self._ann, False
        saved = self.directory.current()
        state = None if saved is None else self.directory.state(saved)
        if saved is not None and state is not None and state.get("kind") == kind:
            try:
                loaded = SyncedIndex.load(saved, mmap=self.settings.mmap)
            except Exception as error:
                # A damaged save costs a rebuild, never the server: the store has the truth.
                # One line says so; the writer's next save replaces the damaged files.
                build = self.settings.build_if_missing or force_build
                log.warning(
                    "saved %s index in %s unreadable (%s: %s): %s",
                    kind,
                    saved,
                    type(error).__name__,
                    error,
                    "rebuilding it from the store"
                    if build
                    else "searching exactly until `xmodal reindex`",
                )
                return self._new_index(kind, dim, force_build, quiet=True)
            if isinstance(loaded.index, FaissIndex):  # search-time knobs follow the settings
                loaded.index.params = replace(
                    loaded.index.params,
                    ef_search=self.settings.ef_search,
                    nprobe=self.settings.nprobe,
                )
            return loaded, False
        return self._new_index(kind, dim, force_build)

    def _new_index(
        self, kind: str, dim: int, force_build: bool, quiet: bool = False
    ) -> tuple[SyncedIndex | None, bool]:
        if not (self.settings.build_if_missing or force_build):
            if quiet:
                return None, False
            log.warning(
                "no saved %s index for %s: searching exactly until `xmodal reindex`",
                kind,
                self.space,
            )
            return None, False
        if not quiet:
            log.info("building a %s index for %s", kind, self.space)
        return empty_index(kind, dim, **self._params()), True

    def _params(self) -> dict[str, Any]:
        return self.settings.index_params()


def index_root(data: Path, space: str) -> Path:
    return data / "indexes" / space


def saved_index_state(store: Store, space: str) -> dict[str, Any] | None:
    """The saved index of a space as the indexer left it (kind, vectors, store version),
    and whether it reflects the store's current version; None when none is saved.
    Reads two small files: no model, no vectors."""
    state = IndexDirectory(index_root(store.path, space)).state()
    if state is None:
        return None
    return {**state, "up_to_date": state["store_version"] == list(store.version(space))}
