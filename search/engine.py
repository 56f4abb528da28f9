"""The query engine: a store plus the encoder of its image-text space.

engine = Engine.open("~/xmodal-data")
result = engine.search_text("a red bicycle", k=5)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from search.encoders import IMAGE_TEXT, ImageTextEncoder, create_encoder
from search.encoders.batching import TextBatcher
from search.errors import InvalidQueryError, UnknownItemError
from search.exact_index import RankedItem, SpaceSnapshot
from search.filters import validate_filter
from search.hits import Hit, SearchResult, SegmentHit
from search.images import ImageLimits, decode_image
from search.settings import DEFAULT_MODEL
from search.space_index import AnnOptions, RowFilter, SpaceIndex, SpaceView
from search.store import INDEXED, SpaceRecord, Store

MEDIA_KINDS = frozenset({"image", "video", "audio"})

MAX_TEXT_CHARS = 2000


class Engine:
    """Answers queries over one store. The encoder is injected (tests pass tiny models)."""

    def __init__(
        self,
        store: Store,
        encoder: ImageTextEncoder,
        limits: ImageLimits = ImageLimits(),
        max_k: int = 1000,
        moment_margin: float = 0.03,
        max_moments: int = 3,
        text_cache_size: int = 4096,
        ann: AnnOptions | None = None,
        text_batch_wait_ms: float = 0.0,
    ):
        self.store = store
        self.encoder = encoder
        self.limits = limits
        self.max_k = max_k
        self.moment_margin = moment_margin  # cosine below an item's best that still makes a moment
        self.max_moments = max_moments
        self.text_cache_size = text_cache_size
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._text_lock = threading.Lock()
        # Concurrent text queries share forward passes (bench/text_batching.py).
        self._text_batcher = TextBatcher(
            lambda texts: self.encoder.encode_texts(texts), max_wait_ms=text_batch_wait_ms
        )
        self.index = SpaceIndex(store, IMAGE_TEXT, ann)
        self._space_known = False
        if store.space(IMAGE_TEXT) is not None:
            # Refuse a different model before any work is done with it.
            self.ensure_space()

    @classmethod
    def open(
        cls,
        data: str | Path,
        model: str | None = None,
        device: str = "auto",
        **options: Any,
    ) -> Engine:
        """Open (or create) a store; the model defaults to the one the store was built with."""
        store = Store(data)
        encoder = create_encoder(model_for_store(store, model), device=device)
        return cls(store, encoder, **options)

    # -- space binding ---------------------------------------------------
    def ensure_space(self) -> SpaceRecord:
        """Create the image-text space for this encoder, or check it matches."""
        return self.store.bind_space(
            IMAGE_TEXT, self.encoder.spec, self.encoder.identity, self.encoder.dim
        )

    # -- queries ---------------------------------------------------------
    def search_text(
        self,
        text: str,
        k: int = 10,
        offset: int = 0,
        filter: dict[str, Any] | None = None,
        kinds: Sequence[str] | None = None,
    ) -> SearchResult:
        started = time.perf_counter()
        text = (text or "").strip()
        if not text:
            raise InvalidQueryError("empty text query")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidQueryError(f"text query longer than {MAX_TEXT_CHARS} characters")
        self._check_page(k, offset)
        vector = self._text_vector(text)
        return self._search(vector, k, offset, Query(filter, kinds), started, time.perf_counter())

    def search_image(
        self,
        image: bytes | Path | Image.Image,
        k: int = 10,
        offset: int = 0,
        filter: dict[str, Any] | None = None,
        kinds: Sequence[str] | None = None,
    ) -> SearchResult:
        """Query by an image: file path, encoded bytes, or a PIL image."""
        started = time.perf_counter()
        self._check_page(k, offset)
        if isinstance(image, Image.Image):
            pil = image.convert("RGB")
        else:
            pil = decode_image(image, self.limits, draft_to=self.encoder.input_size).image
        vector = self.encoder.encode_images([pil])[0]
        return self._search(vector, k, offset, Query(filter, kinds), started, time.perf_counter())

    def search_similar(
        self,
        item_id: str,
        k: int = 10,
        offset: int = 0,
        filter: dict[str, Any] | None = None,
        kinds: Sequence[str] | None = None,
    ) -> SearchResult:
        """Items similar to an indexed item, the item itself excluded."""
        started = time.perf_counter()
        self._check_page(k, offset)
        view = self._view()
        snapshot = None if view is None else view.snapshot
        if snapshot is None or item_id not in snapshot.code_of:
            item = self.store.item(item_id)  # raises UnknownItemError
            if item.status != INDEXED:
                raise InvalidQueryError(f"item {item_id!r} could not be indexed: {item.error}")
            raise UnknownItemError(item_id)
        code = int(snapshot.code_of.get_loc(item_id))
        vectors = snapshot.item_vectors(code)
        if len(vectors) == 0:
            raise UnknownItemError(item_id)
        query = vectors.mean(axis=0)
        query /= np.linalg.norm(query) or 1.0
        assert view is not None
        return self._rank(
            view, query, k, offset, Query(filter, kinds), started, started, exclude_code=code
        )

    def search_vector(
        self,
        vector: np.ndarray,
        k: int = 10,
        offset: int = 0,
        filter: dict[str, Any] | None = None,
        kinds: Sequence[str] | None = None,
    ) -> SearchResult:
        """Query by a precomputed unit vector of the image-text space."""
        started = time.perf_counter()
        self._check_page(k, offset)
        query = np.asarray(vector, np.float32)
        return self._search(query, k, offset, Query(filter, kinds), started, started)

    def item(self, item_id: str):
        return self.store.item(item_id)

    # -- internals -------------------------------------------------------
    def _text_vector(self, text: str) -> np.ndarray:
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

    def _check_page(self, k: int, offset: int) -> None:
        if not 1 <= k <= self.max_k:
            raise InvalidQueryError(f"k must be between 1 and {self.max_k}")
        if offset < 0:
            raise InvalidQueryError("offset must be >= 0")

    def _view(self) -> SpaceView | None:
        """The space as of the store's current version; None before any indexing."""
        if not self._space_known:
            if self.store.space(IMAGE_TEXT) is None:
                return None
            self._space_known = True  # spaces are never removed
        return self.index.view()

    def warm(self) -> None:
        """Load the model and the space's vectors and index now, not on the first query."""
        self.encoder.load()
        self._view()

    def _search(
        self,
        vector: np.ndarray,
        k: int,
        offset: int,
        query: Query,
        started: float,
        encoded: float,
    ) -> SearchResult:
        view = self._view()
        if view is None:
            query.validate()
            return SearchResult([], _ms_since(started))
        return self._rank(view, vector, k, offset, query, started, encoded)

    def _rank(
        self,
        view: SpaceView,
        vector: np.ndarray,
        k: int,
        offset: int,
        query: Query,
        started: float,
        encoded: float,
        exclude_code: int | None = None,
    ) -> SearchResult:
        ranked = view.rank(vector, k, offset, query.rows(view), exclude_code)
        ranked_at = time.perf_counter()
        snapshot = view.snapshot
        records = snapshot.records([r.item_code for r in ranked])
        hits = []
        for record, r in zip(records, ranked, strict=True):
            if record.kind == "image":
                segments = self._segment_hits(snapshot, r)
            else:
                segments = self._moments(snapshot, r.item_code, vector)
            hits.append(Hit(record, r.score, segments))
        done = time.perf_counter()
        timings = {
            "encode": (encoded - started) * 1000.0,
            "search": (ranked_at - encoded) * 1000.0,
            "fetch": (done - ranked_at) * 1000.0,
        }
        return SearchResult(hits, _ms_since(started), timings)

    @staticmethod
    def _segment_hits(snapshot: SpaceSnapshot, ranked: RankedItem) -> list[SegmentHit]:
        return [
            SegmentHit(
                id=str(snapshot.segment_ids[row]),
                score=score,
                start=_optional(snapshot.starts[row]),
                end=_optional(snapshot.ends[row]),
            )
            for row, score in zip(ranked.segment_rows, ranked.segment_scores, strict=True)
        ]

    def _moments(self, snapshot: SpaceSnapshot, code: int, vector: np.ndarray) -> list[SegmentHit]:
        """A timed item's best moments: keyframes scoring within `moment_margin` of its best,
        adjacent ones merged into one span; best first."""
        rows = snapshot.item_rows(code)
        scores = snapshot.vectors[rows] @ vector
        best = float(scores.max())
        chosen = sorted(
            (float(snapshot.starts[row]), float(snapshot.ends[row]), float(score), int(row))
            for row, score in zip(rows, scores, strict=True)
            if score >= best - self.moment_margin
        )
        moments: list[list[Any]] = []
        for start, end, score, row in chosen:
            if moments and abs(moments[-1][1] - start) < 1e-6:
                last = moments[-1]
                last[1] = end
                if score > last[2]:
                    last[2], last[3] = score, row
            else:
                moments.append([start, end, score, row])
        moments.sort(key=lambda m: -m[2])
        return [
            SegmentHit(id=str(snapshot.segment_ids[row]), score=score, start=start, end=end)
            for start, end, score, row in moments[: self.max_moments]
        ]


@dataclass(frozen=True)
class Query:
    """What restricts a query's results: a metadata filter and media kinds."""

    filter: dict[str, Any] | None = None
    kinds: Sequence[str] | None = None

    def validate(self) -> dict[str, Any]:
        if self.kinds is not None:
            unknown = set(self.kinds) - MEDIA_KINDS
            if unknown or not self.kinds:
                raise InvalidQueryError(f"kinds must be some of {sorted(MEDIA_KINDS)}")
        return validate_filter(self.filter)

    def rows(self, view: SpaceView) -> RowFilter | None:
        spec = self.validate()
        return view.row_filter(spec, None if self.kinds is None else tuple(sorted(self.kinds)))


def model_for_store(store: Store, requested: str | None) -> str:
    """The model to use: the one asked for, else the store's, else the default."""
    if requested:
        return requested
    space = store.space(IMAGE_TEXT)
    return space.model_spec if space is not None else DEFAULT_MODEL


def _optional(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return float(value)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


__all__ = ["Engine", "model_for_store"]
