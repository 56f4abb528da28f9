"""The engine's reranking: one loaded model per spec per process, scores cached and
batched across concurrent searches, and a time budget that no search waits past.

A search hands over its query and candidates (a key and a way to fetch the picture
each); it gets back scores for the candidates that have a picture, or none, with a
report saying why (the budget ran out, the model cannot load). Nothing here raises
for a model that fails: the search then answers in its first order.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import partial
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
MIN_SCORE = 1e-30  # a score of 0 (underflow) still has a finite log

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
    `picture` decodes it at least `side` pixels on its short side where it can (a JPEG
    draft), or returns None for a hit with none (a sound)."""

    key: Hashable
    picture: Callable[[int], Image.Image | None]


@dataclass
class RerankOutcome:
    scores: dict[int, float] = field(default_factory=dict)  # candidate index -> score
    report: RerankReport | None = None
    answer_tokens: int = 1  # what the scores are per-token means over (Reranker.answer_tokens)

    def log_likelihood(self, index: int) -> float:
        """The reranker's log-probability of the query for candidate `index`."""
        return self.answer_tokens * math.log(max(self.scores[index], MIN_SCORE))


class RerankService:
    def __init__(self, settings: RerankSettings | None = None, device: str = "auto"):
        self.settings = settings or RerankSettings()
        self.device = device
        self._rerankers: dict[str, Reranker] = {}
        self._failed: dict[str, tuple[float, str]] = {}  # spec -> (when, why)
        self._loaders: dict[str, threading.Thread] = {}  # spec -> the thread loading it
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
                found = self._rerankers[spec] = create_reranker(
                    spec, device=self.device, batch=self.settings.batch_pairs
                )
            return found

    def check_offered(self, spec: str | None) -> None:
        """For a request from outside (HTTP): refuse a model the settings do not offer
        (`model` and `allowed_models`), before anything is loaded."""
        if spec is None or spec.strip() == self.settings.model.strip():
            return
        if spec.strip() in {allowed.strip() for allowed in self.settings.allowed_models}:
            return
        offered = ", ".join([self.settings.model, *self.settings.allowed_models])
        raise InvalidQueryError(
            f"this server does not offer the reranker {spec.strip()[:200]!r}; it offers "
            f"{offered} (setting rerank.allowed_models)"
        )

    def preload(self) -> None:
        """Start loading the configured reranker in the background; a failure is logged
        (searches then fall back, saying why)."""
        try:
            reranker = self.reranker()
        except ModelSpecError as error:
            log.warning("the reranker is not available: %s", error)
            return
        self._ready(reranker, 0.0)

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

    def picture(self, candidate: Candidate, reranker: Reranker) -> Image.Image | None:
        """The candidate's picture as `reranker` takes it (decoded, shrunk to its input;
        cached per model)."""
        key = (reranker.identity, candidate.key)
        found = self._pictures.get(key)
        if found is None:
            height, width = reranker.input_size
            decoded = candidate.picture(min(height, width))
            if decoded is not None:
                found = reranker.fit_picture(decoded)
                self._pictures.put(key, found)
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
        if not self._ready(reranker, budget):
            if reranker.spec in self._failed:
                return done(f"model unavailable: {self._failed[reranker.spec][1]}")
            return done("timeout: the model is still loading")
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
                picture = self.picture(candidate, reranker)
            except Exception:  # an unreadable original is left unscored
                picture = None
            if picture is not None:
                todo.append((index, key, picture))
            if time.perf_counter() - started > budget:
                return done("timeout")
        if todo:
            # Passes of batch_pairs: on timeout the ones not started are dropped, so a
            # slow model builds no backlog; the running one finishes and fills the cache.
            size = self.settings.batch_pairs
            chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
            futures = [
                self.batcher.submit(reranker, method, [query] * len(c), [p for _, _, p in c])
                for c in chunks
            ]
            try:
                for chunk, future in zip(chunks, futures, strict=True):
                    remaining = budget - (time.perf_counter() - started)
                    scores = future.result(timeout=max(remaining, 0.0))
                    for (index, key, _), score in zip(chunk, scores, strict=True):
                        self._scores.put(key, score)
                        outcome.scores[index] = score
            except FutureTimeout:
                for chunk, future in zip(chunks, futures, strict=True):
                    if not future.cancel():
                        future.add_done_callback(partial(self._keep, todo=chunk))
                return done("timeout")
            except (ModelLoadError, ModelSpecError) as error:
                self._failed[reranker.spec] = (time.monotonic(), str(error))
                return done(f"model unavailable: {error}")
            except Exception as error:  # reranking never fails a search
                return done(f"rerank failed: {type(error).__name__}: {error}")
            self._failed.pop(reranker.spec, None)
        report.scored = len(outcome.scores)
        outcome.answer_tokens = reranker.answer_tokens(query, method)
        return done()

    def _ready(self, reranker: Reranker, budget: float) -> bool:
        """Whether the model is loaded, waiting for its load (in a thread of its own,
        one per model) at most `budget` seconds; a failed load is remembered."""
        if reranker.loaded:
            return True
        with self._lock:
            loader = self._loaders.get(reranker.spec)
            if loader is None or not loader.is_alive():

                def load() -> None:
                    try:
                        reranker.load()
                    except Exception as error:  # remembered; searches fall back
                        self._failed[reranker.spec] = (time.monotonic(), str(error))

                loader = threading.Thread(target=load, name="xmodal-rerank-load", daemon=True)
                self._loaders[reranker.spec] = loader
                loader.start()
        loader.join(budget)
        return reranker.loaded

    def _identity(self, reranker: Reranker) -> str | None:
        try:
            return reranker.identity
        except ModelLoadError as error:
            self._failed[reranker.spec] = (time.monotonic(), str(error))
            return None

    def _keep(self, future: Any, *, todo: list[tuple[int, tuple[Any, ...], Image.Image]]) -> None:
        if not future.cancelled() and future.exception() is None:
            for (_, key, _), score in zip(todo, future.result(), strict=True):
                self._scores.put(key, score)
