"""One embedding space as the engine queries it: its encoder, its vectors and index,
a cache of text vectors, and the calibration of its scores.

    Space          the encoder, the text cache and batcher, the calibration (this file)
    SpaceIndex     keeps the vectors and the ANN index in step with the store (index.py)
    SpaceView      one store version: snapshot, synced ANN index, filters (view.py)
    Snapshot       the items, segments and vectors of one version (snapshot.py)
    rank_items     best segments -> items -> a page, for every query path (ranking.py)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from xmodal.search.encoders import Encoder
from xmodal.search.encoders.batching import TextBatcher
from xmodal.search.media import kinds_in_space
from xmodal.search.settings import AnnSettings
from xmodal.search.store import SpaceRecord, Store

from .calibration import Calibration, null_queries
from .index import SpaceIndex
from .view import SpaceView

E = TypeVar("E", bound=Encoder)


class Space(Generic[E]):
    """Queries one space; `encoder` is typed (image-text or audio-text), so callers need
    no casts."""

    def __init__(
        self,
        store: Store,
        space: str,
        encoder: E,
        ann: AnnSettings | None = None,
        text_cache_size: int = 4096,
        text_batch_wait_ms: float = 0.0,
    ):
        # Pinned to the table the space has now: after a migration switched it to
        # another model's table, this Space still answers from the vectors of its own
        # model until the engine replaces it (search/engine.py).
        self.store = store.pinned(space)
        self.name = space
        self.encoder: E = encoder
        self.index = SpaceIndex(self.store, space, ann)
        self.kinds: frozenset[str] = kinds_in_space(space)  # a video has pictures and sound
        self.text_cache_size = text_cache_size
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._text_lock = threading.Lock()
        # Concurrent text queries share forward passes (bench/text_batching.py).
        self._text_batcher = TextBatcher(
            lambda texts: self.encoder.encode_texts(texts), max_wait_ms=text_batch_wait_ms
        )
        self._exists = False
        self._null_vectors: np.ndarray | None = None
        self._calibration: tuple[tuple[int, int], Calibration] | None = None
        self._null_best: NullBest | None = None  # what the last calibration was fitted on
        self._calibration_lock = threading.Lock()

    def ensure_space(self) -> SpaceRecord:
        """Create the space for this encoder, or check that the store's was built with it."""
        return self.store.bind_space(
            self.name, self.encoder.spec, self.encoder.identity, self.encoder.dim
        )

    def view(self) -> SpaceView | None:
        """The space as of the store's current version; None before anything was indexed."""
        if not self._exists:
            if self.store.space(self.name) is None:
                return None
            self._exists = True  # spaces are never removed
        return self.index.view()

    def serve_live(self) -> None:
        """Queries never wait for a new store version (SpaceIndex.background); each new
        view gets its calibration before it serves."""
        self.index.background = True
        self.index.prepare = self._prepare

    def _prepare(self, view: SpaceView) -> None:
        if self._null_vectors is not None:  # text queries came: they will want it
            self.calibration(view)

    def holds_any(self, kinds: frozenset[str] | None) -> bool:
        return kinds is None or bool(kinds & self.kinds)

    def text_vector(self, text: str) -> np.ndarray:
        """The text tower's output, from an LRU cache: repeated queries skip the model."""
        with self._text_lock:
            cached = self._text_cache.get(text)
            if cached is not None:
                self._text_cache.move_to_end(text)
                return cached
        vector = self._text_batcher.encode(text)
        vector.setflags(write=False)
        with self._text_lock:
            self._text_cache[text] = vector
            while len(self._text_cache) > self.text_cache_size:
                self._text_cache.popitem(last=False)
        return vector

    def calibration(self, view: SpaceView) -> Calibration:
        """How text-query similarities in this view compare with unrelated queries'
        (calibration.py); computed once per store version."""
        cached = self._calibration
        if cached is not None and cached[0] == view.version:
            return cached[1]
        with self._calibration_lock:
            cached = self._calibration
            if cached is not None and cached[0] == view.version:
                return cached[1]
            if self._null_vectors is None:
                self._null_vectors = self.encoder.encode_texts(null_queries())
            best = NullBest.after(self._null_best, view, self._null_vectors)
            calibration = Calibration.fit(best.scores)
            self._null_best = best
            self._calibration = (view.version, calibration)
            return calibration

    def warm(self) -> None:
        self.encoder.load()
        view = self.view()
        if view is not None:
            self.calibration(view)


@dataclass(frozen=True)
class NullBest:
    """Each calibration query's best similarity over a snapshot's servable rows, and the
    row it came from. A newer snapshot of the same lineage (snapshot.py: rows only ever
    appended) that still serves every best row needs only its new rows compared: a
    commit of a thousand rows into a million refits the calibration from a thousand."""

    lineage: object
    rows: int  # the snapshot's row count when fitted
    scores: np.ndarray
    best_rows: np.ndarray  # -1: none (an empty space)

    @classmethod
    def after(cls, last: NullBest | None, view: SpaceView, queries: np.ndarray) -> NullBest:
        snapshot = view.snapshot
        held = last is not None and last.lineage is snapshot.lineage and last.rows <= snapshot.rows
        if last is not None and held:
            kept = last.best_rows[last.best_rows >= 0]
            if snapshot.servable[kept].all():
                new = np.arange(last.rows, snapshot.rows)
                scores, rows = last.scores.copy(), last.best_rows.copy()
                if len(new := new[snapshot.servable[new]]):
                    block = snapshot.vectors_of(new) @ queries.T  # (new rows, queries)
                    top = block.argmax(axis=0)
                    better = block[top, np.arange(len(queries))] > scores
                    scores[better] = block[top, np.arange(len(queries))][better]
                    rows[better] = new[top[better]]
                return cls(snapshot.lineage, snapshot.rows, scores, rows)
        scores, rows = null_best_scores(view, queries)
        return cls(snapshot.lineage, snapshot.rows, scores, rows)


def null_best_scores(view: SpaceView, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best similarity over the view's segments, and its row (-1: none)."""
    snapshot = view.snapshot
    if len(snapshot) == 0:
        return np.full(len(queries), -np.inf), np.full(len(queries), -1, np.int64)
    if view.ann is None:
        return snapshot.best_scores(queries)
    found = [view.rank(q, 1) for q in queries]
    scores = np.array([r[0].score if r else -np.inf for r in found], np.float32)
    rows = np.array([r[0].segment_rows[0] if r else -1 for r in found], np.int64)
    return scores, rows
