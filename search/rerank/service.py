"""The engine's reranking: one loaded model per spec per process, scores cached and
batched across concurrent searches, and a time budget that no search waits past.

A search hands over its query and candidates (a key and a way to fetch the picture
each); it gets back scores for the candidates that have a picture, or none, with a
report saying why (the budget ran out, the model cannot load). Nothing here raises
for a model that fails: the search then answers in its first order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from PIL import Image

from xmodal.search.errors import InvalidQueryError, ModelLoadError, ModelSpecError

from . import create_reranker
from .base import METHODS, Reranker
from .batcher import PairBatcher
from .settings import RerankSettings

log = logging.getLogger(__name__)

# After a model failed to load, searches asking for it fall back at once for this long
# rather than each paying for another attempt.
LOAD_RETRY_SECONDS = 60.0

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A thread-safe least-recently-used map; size 0 keeps nothing."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class RerankRequest:
    """What a search asks of the reranker; None fields take the settings' values."""

    top_n: int | None = None
    model: str | None = None
    method: str | None = None  # "caption", "vqa", or None/"auto": the model's own
    timeout_ms: float | None = None


@dataclass
class RerankReport:
    """How a search's reranking went; `applied` False says why in `reason`."""

    applied: bool
    model: str
    method: str | None = None
    reason: str | None = None
    candidates: int = 0  # hits considered (the top_n)
    scored: int = 0  # of them with a picture, scored
    cached: int = 0  # of the scored, answered from the cache
    took_ms: float = 0.0


@dataclass(frozen=True)
class Candidate:
    """A hit to rerank: `key` names its picture (item, content, moment) for the caches;
    `picture` decodes it, or returns None for a hit with none (a sound)."""

    key: Hashable
    picture: Callable[[], Image.Image | None]


@dataclass
class RerankOutcome:
    scores: dict[int, float] = field(default_factory=dict)  # candidate index -> score
    report: RerankReport | None = None


class RerankService:
    def __init__(self, settings: RerankSettings | None = None, device: str = "auto"):
        self.settings = settings or RerankSettings()
        self.device = device
        self._rerankers: dict[str, Reranker] = {}
        self._failed: dict[str, tuple[float, str]] = {}  # spec -> (when, why)
        self._lock = threading.Lock()
        self._scores: LruCache[tuple[Any, ...], float] = LruCache(self.settings.cache_size)
        self._pictures: LruCache[Hashable, Image.Image] = LruCache(self.settings.picture_cache_size)
        self.batcher = PairBatcher(self.settings.batch_pairs)

    # -- models ------------------------------------------------------------
    def reranker(self, spec: str | None = None) -> Reranker:
        """The process's reranker for a spec (created once; loaded on first use).
        Raises ModelSpecError for a spec that names no reranker."""
        spec = (spec or self.settings.model).strip()
        with self._lock:
            found = self._rerankers.get(spec)
            if found is None:
                found = self._rerankers[spec] = create_reranker(spec, device=self.device)
            return found

    def preload(self) -> threading.Thread:
        """Load the configured reranker in a background thread; a failure is logged
        (searches then fall back, saying why)."""

        def load() -> None:
            try:
                self.reranker().load()
            except (ModelLoadError, ModelSpecError) as error:
                log.warning("the reranker is not available: %s", error)

        thread = threading.Thread(target=load, name="xmodal-rerank-load", daemon=True)
        thread.start()
        return thread

    def top_n(self, request: RerankRequest) -> int:
        top_n = request.top_n or self.settings.top_n
        if not 1 <= top_n <= self.settings.max_top_n:
            raise InvalidQueryError(f"rerank top_n must be between 1 and {self.settings.max_top_n}")
        return top_n

    def method_for(self, reranker: Reranker, request: RerankRequest) -> str:
        method = request.method or self.settings.method
        if method == "auto":
            return reranker.default_method
        if method not in METHODS:
            raise InvalidQueryError(f"rerank method must be auto or one of {', '.join(METHODS)}")
        return method

    def picture(self, candidate: Candidate) -> Image.Image | None:
        found = self._pictures.get(candidate.key)
        if found is None:
            found = candidate.picture()
            if found is not None:
                self._pictures.put(candidate.key, found)
        return found

    # -- scoring -----------------------------------------------------------
    def rerank(
        self, query: str, candidates: Sequence[Candidate], request: RerankRequest
    ) -> RerankOutcome:
        """Scores for the candidates with a picture, within the budget; never raises for
        a model that cannot load or a picture that cannot be read (that one is skipped)."""
        started = time.perf_counter()
        reranker = self.reranker(request.model)
        budget = (request.timeout_ms or self.settings.timeout_ms) / 1000.0
        report = RerankReport(False, reranker.spec, None, candidates=len(candidates))
        outcome = RerankOutcome(report=report)

        def done(reason: str | None = None) -> RerankOutcome:
            report.applied = reason is None
            report.reason = reason
            report.took_ms = round((time.perf_counter() - started) * 1000.0, 3)
            if reason is not None:
                outcome.scores = {}
            return outcome

        failed = self._failed.get(reranker.spec)
        if failed is not None and time.monotonic() - failed[0] < LOAD_RETRY_SECONDS:
            return done(f"model unavailable: {failed[1]}")
        identity = self._identity(reranker)
        if identity is None:
            return done(f"model unavailable: {self._failed[reranker.spec][1]}")
        method = report.method = self.method_for(reranker, request)
        todo: list[tuple[int, tuple[Any, ...], Image.Image]] = []
        for index, candidate in enumerate(candidates):
            key = (identity, method, query, candidate.key)
            cached = self._scores.get(key)
            if cached is not None:
                outcome.scores[index] = cached
                report.cached += 1
                continue
            try:
                picture = self.picture(candidate)
            except Exception:  # an unreadable original is left unscored
                picture = None
            if picture is not None:
                todo.append((index, key, picture))
            if time.perf_counter() - started > budget:
                return done("timeout")
        if todo:
            future = self.batcher.submit(
                reranker, method, [query] * len(todo), [picture for _, _, picture in todo]
            )
            remaining = budget - (time.perf_counter() - started)
            try:
                scores = future.result(timeout=max(remaining, 0.0))
            except FutureTimeout:
                # The pass goes on; its scores still fill the cache for the next search.
                future.add_done_callback(lambda f: self._keep(f, todo))
                return done("timeout")
            except (ModelLoadError, ModelSpecError) as error:
                self._failed[reranker.spec] = (time.monotonic(), str(error))
                return done(f"model unavailable: {error}")
            except Exception as error:  # reranking never fails a search
                return done(f"rerank failed: {type(error).__name__}: {error}")
            self._failed.pop(reranker.spec, None)
            for (index, key, _), score in zip(todo, scores, strict=True):
                self._scores.put(key, score)
                outcome.scores[index] = score
        report.scored = len(outcome.scores)
        return done()

    def _identity(self, reranker: Reranker) -> str | None:
        try:
            return reranker.identity
        except ModelLoadError as error:
            self._failed[reranker.spec] = (time.monotonic(), str(error))
            return None

    def _keep(self, future: Any, todo: list[tuple[int, tuple[Any, ...], Image.Image]]) -> None:
        if future.exception() is None:
            for (_, key, _), score in zip(todo, future.result(), strict=True):
                self._scores.put(key, score)
