"""The vectors of one space kept in step with the store, without stalling queries.

Every store version gets a snapshot (search/space/snapshot.py): the first one reads
the space whole, each later one is the previous plus what the commit changed. Past
`ann.min_segments` segments (or when an index kind is set) an ANN index answers
unfiltered and broadly filtered queries; selective filters are answered exactly over
their few candidate rows, where graph search would wander.

The ANN index and every label's vector are saved under `<data>/indexes/<space>/` by the
writer after each run (and by `xmodal reindex`); a server memory-maps them and never
changes them while they serve: segments deleted since are masked out, segments added
since are ranked exactly beside the index (labels.py), and past `ann.max_growing` of
those a merged copy replaces it.

A server (`background = True`) answers from the version it has while the next one is
built in a background thread, then switches with one assignment; other callers (an
indexing run, a library user) wait for the store's current version, so they read
their own writes. Either way a deleted or re-embedded segment is never returned once
its version serves.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from xmodal.search.ann.faiss_index import FaissIndex
from xmodal.search.ann.synced import REBUILD_DEAD_SHARE, IndexDirectory, SyncedIndex
from xmodal.search.settings import AnnSettings
from xmodal.search.store import Store
from xmodal.search.store.schema import ITEMS, index_root

from .changes import table_change
from .labels import LabelMap
from .memory import MemoryUse, release_memory, view_memory
from .snapshot import SEGMENT_COLUMNS, Mapped, Snapshot
from .view import SpaceView

log = logging.getLogger(__name__)
# A change adding more than this share of a snapshot's rows is read whole instead.
READ_WHOLE_SHARE = 0.5
# A writer commits a batch's segments and then its items, moments apart. Woken by the
# first, the background refresher waits this long so that it applies both as one
# version rather than two (each applied version costs the queries beside it CPU).
COALESCE_SECONDS = 0.05
# The background refresher's nice value above the process's: on cores shared with the
# threads that answer queries, the kernel runs those first.
REFRESH_NICENESS = 10


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
    growing: int = 0  # segments ranked exactly beside the ANN index (added since its save)
    memory: MemoryUse | None = None  # bytes the served view holds, by part

    @property
    def up_to_date(self) -> bool:
        """Whether queries see the store as it is now (else a newer version is applied)."""
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
    """Keeps a SpaceView in step with the store; one per engine and space. The segments
    table is the one the space names when this is made: a model migration points the
    space at a new table, and this one goes on reading the old until it is replaced."""

    def __init__(self, store: Store, space: str, settings: AnnSettings | None = None):
        self.store = store
        self.space = space
        self.table = store.segments_table_of(space)
        self.settings = settings or AnnSettings()
        self.directory = IndexDirectory(index_root(store.path, space, self.table))
        # Queries never wait for a new version (a server); else they read their writes.
        self.background = False
        # Run on each new view before it serves (e.g. a calibration), off the request path.
        self.prepare: Callable[[SpaceView], None] | None = None
        self.last_refresh: RefreshReport | None = None
        self.refresh_error: str | None = None
        self._view: SpaceView | None = None
        self._view_built_at: float | None = None  # Unix time of the current view
        self._lock = threading.Lock()  # one builder at a time
        self._worker_lock = threading.Lock()
        self._wanted = False
        self._worker: threading.Thread | None = None

    def store_version(self) -> tuple[int, int]:
        return self.store.version(self.space, self.table)

    def state(self) -> IndexState:
        """The served view's size and versions (IndexState); builds nothing."""
        view, built_at = self._view, self._view_built_at
        store_version = self.store_version()
        if view is None:
            return IndexState(self.space, "none", 0, 0, None, store_version, None)
        snapshot = view.snapshot
        growing = 0 if view.label_map is None else len(view.label_map.growing)
        return IndexState(
            self.space,
            view.kind,
            len(snapshot),
            snapshot.item_count,
            view.version,
            store_version,
            built_at,
            growing,
            view_memory(view),
        )

    # -- the view queries read ------------------------------------------------------
    def view(self, wait: bool | None = None) -> SpaceView:
        """The view to answer from: the store's current version, or, with `background`
        (unless `wait`), the newest one ready while the current one is being built."""
        version = self.store_version()
        current = self._view
        if current is not None and current.version == version:
            return current
        if current is not None and not (wait if wait is not None else not self.background):
            self._catch_up_in_background()
            return current
        with self._lock:
            version = self.store_version()
            if self._view is None or self._view.version != version:
                self._install(self._next_view(self._view, version))
            assert self._view is not None
            return self._view

    def _install(self, view: SpaceView) -> None:
        self._view = view
        self._view_built_at = time.time()

    def _catch_up_in_background(self) -> None:
        with self._worker_lock:
            self._wanted = True
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._catch_up, name=f"xmodal-refresh-{self.space}", daemon=True
                )
                self._worker.start()

    def _catch_up(self) -> None:
        lower_priority()
        while True:
            with self._worker_lock:
                if not self._wanted:
                    self._worker = None
                    return
                self._wanted = False
            time.sleep(COALESCE_SECONDS)
            try:
                with self._lock:
                    version = self.store_version()
                    current = self._view
                    if current is None or current.version == version:
                        continue
                    view = self._next_view(current, version)
                    if self.prepare is not None:
                        self.prepare(view)
                    self._install(view)
                    self.refresh_error = None
                self._wanted = True  # look again: another commit may have come meanwhile
            except Exception as error:  # the previous view goes on serving
                self.refresh_error = f"{type(error).__name__}: {error}"
                log.exception("applying a new version of %s failed", self.space)
                with self._worker_lock:
                    self._worker = None
                return

    def wanted_kind(self) -> str:
        """The kind of index the space's current size calls for ("exact": none)."""
        return self.settings.kind_for(self.store.count_segments(self.space))

    # -- saving (a writer) ----------------------------------------------------------
    def refresh(
        self, save: bool = False, rebuild: bool = False, *, locked: bool = True
    ) -> RefreshReport:
        """Bring the index to the store's current version now; `save` persists it (with
        the rows added since merged in), `rebuild` starts from an empty index instead of
        the saved one. Saving is a write: it holds the data directory's writer lock
        (re-entrant within an indexing run), unless `locked` is False because the caller
        holds a lock that covers this index alone (a migration, its staged space's)."""
        if save and locked:
            with self.store.writing():
                return self._refresh(save, rebuild)
        return self._refresh(save, rebuild)

    def _refresh(self, save: bool, rebuild: bool) -> RefreshReport:
        with self._lock:
            if rebuild:
                self.directory.clear()
            version = self.store_version()
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
            if view is None or rebuild or view.version != version:
                view = self._next_view(None if rebuild else view, version, force_build=True)
            wanted = self.settings.kind_for(len(view.snapshot))
            if wanted != view.kind and (wanted == "exact" or len(view.snapshot)):
                view = self._read_view(version, force_build=True)
            report = self.last_refresh
            assert report is not None
            if save and view.ann is not None:
                view, merged = self._merged(view, version, always=True)
                stale = saved is None or saved["store_version"] != list(version)
                if stale or merged or report.built or rebuild:
                    view = self._saved(view)
                    report = replace(report, saved=True, built=report.built or merged)
            self._install(view)
            self.last_refresh = report
            return report

    def _saved(self, view: SpaceView) -> SpaceView:
        """Save the view's index as a new generation, then serve the saved files
        (memory-mapped) instead of the copies in memory."""
        assert view.ann is not None and view.label_map is not None
        generation = self.directory.save(view.ann)
        loaded = SyncedIndex.load(generation, mmap=self.settings.mmap)
        self._tune(loaded)
        snapshot, labels = view.snapshot, view.label_map.label_of_row
        if loaded.mapped is not None and snapshot.keys is not None:
            snapshot = snapshot.with_mapped(_mapped(loaded), labels, snapshot.keys)
        return SpaceView(
            snapshot, self.settings, loaded, LabelMap(labels, loaded.labels, snapshot.servable)
        )

    # -- building views -------------------------------------------------------------
    def _next_view(
        self, current: SpaceView | None, version: tuple[int, int], force_build: bool = False
    ) -> SpaceView:
        """The view of `version`: `current` plus the change when there is one to apply,
        else the version read whole."""
        if current is None or current.snapshot.table != self.table:
            return self._read_view(version, force_build)
        started = time.perf_counter()
        snapshot = current.snapshot
        with self.store.reading(ITEMS):
            items = table_change(
                snapshot.item_fragments,
                self.store.dataset(ITEMS, version[0]),
                snapshot.item_table.schema.names[:-1],  # all but _rowaddr, which comes anyway
            )
        with self.store.reading(self.table):
            segments = table_change(
                snapshot.segment_fragments,
                self.store.dataset(self.table, version[1]),
                SEGMENT_COLUMNS,
            )
        added = items.added.num_rows + segments.added.num_rows
        if added > READ_WHOLE_SHARE * max(snapshot.rows, 1) and added > 10_000:
            return self._read_view(version, force_build)
        before = len(snapshot)
        snapshot = snapshot.apply(version, items, segments)
        if self.settings.kind_for(len(snapshot)) != self.settings.kind_for(before):
            return self._read_view(version, force_build)  # past a threshold: another kind
        view = SpaceView(
            snapshot,
            self.settings,
            current.ann,
            None if current.label_map is None else current.label_map.extended(snapshot),
        )
        view, merged = self._merged(view, version)
        self.last_refresh = RefreshReport(
            view.kind,
            len(snapshot),
            segments.added.num_rows,
            max(0, before + segments.added.num_rows - len(snapshot)),
            merged,
            False,
            time.perf_counter() - started,
        )
        return view

    def _read_view(self, version: tuple[int, int], force_build: bool = False) -> SpaceView:
        """The version read whole, with the saved index when it is of the right kind."""
        started = time.perf_counter()
        kind = self.settings.kind_for(self.store.count_segments(self.space))
        saved = self._load_saved(kind) if kind != "exact" else None
        mapped = _mapped(saved) if saved is not None and saved.mapped is not None else None
        snapshot = Snapshot.read(self.store, self.table, version, mapped, keyed=kind != "exact")
        kind = self.settings.kind_for(len(snapshot))
        ann, labels, built = None, None, False
        if kind != "exact" and len(snapshot):
            if saved is not None and saved.kind == kind:
                ann = saved
                assert snapshot.keys is not None
                label_of_row = (
                    np.where(snapshot.slot < saved.labels, snapshot.slot, -1)
                    if mapped is not None
                    else _mapped_keys(saved).label_of(snapshot.keys)
                )
                labels = LabelMap(label_of_row, saved.labels, snapshot.servable)
            elif self.settings.build_if_missing or force_build:
                log.info("building a %s index for %s", kind, self.space)
                ann, labels = self._built(snapshot, kind, version), None
                built = True
            else:
                log.warning(
                    "no saved %s index for %s: searching exactly until `xmodal reindex`",
                    kind,
                    self.space,
                )
        if ann is not None and labels is None:
            rows = np.flatnonzero(snapshot.servable)
            label_of_row = np.full(snapshot.rows, -1, np.int64)
            label_of_row[rows] = np.arange(len(rows))
            labels = LabelMap(label_of_row, ann.labels, snapshot.servable)
        view = SpaceView(snapshot, self.settings, ann, labels)
        view, merged = self._merged(view, version)
        release_memory()
        self.last_refresh = RefreshReport(
            view.kind,
            len(snapshot),
            0 if labels is None else len(labels.growing),
            0 if labels is None else labels.dead,
            built or merged,
            False,
            time.perf_counter() - started,
        )
        return view

    def _built(self, snapshot: Snapshot, kind: str, version: tuple[int, int]) -> SyncedIndex:
        """A new index of the snapshot's servable rows, labels in row order."""
        rows = np.flatnonzero(snapshot.servable)
        assert snapshot.keys is not None
        built = SyncedIndex.build(
            kind,
            snapshot.dim,
            snapshot.keys[rows],
            lambda labels: snapshot.vectors_of(rows[labels]),
            version,
            **self._params(len(rows), kind),
        )
        self._tune(built)
        return built

    def _merged(
        self, view: SpaceView, version: tuple[int, int], always: bool = False
    ) -> tuple[SpaceView, bool]:
        """The view with the rows added since its index was made merged into a new copy
        of the index (and the dead ones taken out), when there are more than
        `ann.max_growing` of them, too many dead, or `always` and any of either."""
        ann, labels, snapshot = view.ann, view.label_map, view.snapshot
        if ann is None or labels is None:
            return view, False
        grow = labels.growing
        dead_share = labels.dead / max(labels.labels, 1)
        if not (
            len(grow) > self.settings.max_growing
            or dead_share > REBUILD_DEAD_SHARE
            or (always and (len(grow) or labels.dead > ann.labels - len(ann)))
        ):
            return view, False
        if dead_share > REBUILD_DEAD_SHARE or snapshot.keys is None:
            log.info(
                "rebuilding the %s index of %s: %.0f%% removed",
                ann.kind,
                self.space,
                100 * dead_share,
            )
            rebuilt = self._built(snapshot, ann.kind, version)
            rows = np.flatnonzero(snapshot.servable)
            label_of_row = np.full(snapshot.rows, -1, np.int64)
            label_of_row[rows] = np.arange(len(rows))
            return SpaceView(
                snapshot,
                self.settings,
                rebuilt,
                LabelMap(label_of_row, rebuilt.labels, snapshot.servable),
            ), True
        assert snapshot.keys is not None
        alive = labels.alive
        remove = np.zeros(0, np.int64) if alive is None else np.flatnonzero(~alive & ann.alive)
        grown = ann.extended(
            remove,
            snapshot.keys[grow],
            snapshot.vectors_of(grow),
            version,
            lambda offsets: snapshot.vectors_of(grow[offsets]),
        )
        self._tune(grown)
        label_of_row = labels.label_of_row.copy()
        label_of_row[grow] = ann.labels + np.arange(len(grow))
        log.info(
            "merged %d new and %d removed segments into the %s index of %s",
            len(grow),
            len(remove),
            ann.kind,
            self.space,
        )
        return SpaceView(
            snapshot, self.settings, grown, LabelMap(label_of_row, grown.labels, snapshot.servable)
        ), True

    def _load_saved(self, kind: str) -> SyncedIndex | None:
        """The saved index when it is of `kind` and loads; None otherwise."""
        saved = self.directory.current()
        state = None if saved is None else self.directory.state(saved)
        if saved is None or state is None or state.get("kind") != kind:
            return None
        try:
            loaded = SyncedIndex.load(saved, mmap=self.settings.mmap)
        except Exception as error:
            # A damaged save costs a rebuild, never the server: the store has the truth.
            # One line says so; the writer's next save replaces the damaged files.
            log.warning(
                "saved %s index in %s unreadable (%s: %s): %s",
                kind,
                saved,
                type(error).__name__,
                error,
                "rebuilding it from the store"
                if self.settings.build_if_missing
                else "searching exactly until `xmodal reindex`",
            )
            return None
        self._tune(loaded)
        return loaded

    def _tune(self, synced: SyncedIndex) -> None:
        """Search-time knobs follow the settings, whatever the index was saved with."""
        index = synced.index
        if isinstance(index, FaissIndex):
            index.params = replace(
                index.params, ef_search=self.settings.ef_search, nprobe=self.settings.nprobe
            )

    def _params(self, count: int, kind: str) -> dict[str, Any]:
        params = self.settings.index_params()
        if kind == "ivfpq" and not params.get("nlist"):
            params["nlist"] = max(16, int(4 * np.sqrt(max(count, 1))))
        return params


def lower_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: nice applies per thread); where
    the system does not allow it, the thread runs as it is."""
    try:
        thread = threading.get_native_id()
        os.setpriority(
            os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + REFRESH_NICENESS
        )
    except (AttributeError, OSError):
        pass


def _mapped(saved: SyncedIndex) -> Mapped:
    assert saved.mapped is not None
    return Mapped(saved.mapped, *_live_keys(saved))


def _live_keys(saved: SyncedIndex) -> tuple[pd.Index, np.ndarray]:
    labels = np.flatnonzero(saved.alive).astype(np.int64)
    return pd.Index(saved.keys[labels]), labels


def _mapped_keys(saved: SyncedIndex) -> Mapped:
    """Key lookup of an index saved without its vectors (before issue 17)."""
    return Mapped(np.zeros((saved.labels, 0), np.float32), *_live_keys(saved))


def saved_index_state(store: Store, space: str) -> dict[str, Any] | None:
    """The saved index of a space as the indexer left it (kind, vectors, store version),
    and whether it reflects the store's current version; None when none is saved.
    Reads two small files: no model, no vectors."""
    state = IndexDirectory(index_root(store.path, space, store.segments_table_of(space))).state()
    if state is None:
        return None
    return {**state, "up_to_date": state["store_version"] == list(store.version(space))}
