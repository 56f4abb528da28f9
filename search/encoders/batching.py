"""Batch concurrent single-text queries into shared forward passes of the text tower.

batcher = TextBatcher(encoder.encode_texts)
vector = batcher.encode("a red bicycle")      # from any thread

The batching is "natural": there is no timer. A caller that finds no pass running
leads one at once, on its own text plus whatever is already queued, so a lone client
pays nothing extra. Callers that arrive while a pass runs queue up; when the pass
ends, the oldest of them is woken to lead the next pass and takes the others with it
(up to `max_batch`). Under load, batches grow by themselves to about the number of
concurrent callers, and each pass costs far less than one pass per text.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

EncodeTexts = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class BatcherStats:
    """Counters since creation (or `reset_stats`)."""

    passes: int = 0  # calls of encode_texts, failed ones included
    failed_passes: int = 0
    requests: int = 0  # encode() calls that were part of a pass
    texts_encoded: int = 0  # distinct texts sent to encode_texts
    largest_batch: int = 0  # most requests in one pass

    @property
    def mean_batch(self) -> float:
        return self.requests / self.passes if self.passes else 0.0


class _Request:
    __slots__ = ("error", "lead", "ready", "taken", "text", "vector")

    def __init__(self, text: str):
        self.text = text
        # Set when the result is in, or when this request's thread is to lead a pass.
        self.ready = threading.Event()
        self.lead = False
        self.taken = False  # part of a pass (its outcome will be delivered)
        self.vector: np.ndarray | None = None
        self.error: BaseException | None = None

    def outcome(self) -> np.ndarray:
        if self.error is not None:
            raise self.error
        assert self.vector is not None
        return self.vector


class TextBatcher:
    """Thread-safe `encode(text)` over a batch function `encode_texts(list[str]) -> (n, dim)`.

    At most one pass runs at a time, so `encode_texts` is never called concurrently
    through one batcher. Identical texts in a pass are encoded once. If a pass raises,
    every caller whose text was in it gets that exception (the same instance, as
    concurrent.futures does); queued callers are served by the next pass.

    `max_wait_ms` > 0 lets a leader wait up to that long for company, but only after a
    pass that had company, and only until as many requests as that pass had are queued.
    A steady crowd is then gathered into one pass instead of alternating between two
    half-sized ones, while a lone caller waits at most once, right after a crowd left.
    Default 0: never wait.
    """

    def __init__(self, encode_texts: EncodeTexts, max_batch: int = 64, max_wait_ms: float = 0.0):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        self._encode_texts = encode_texts
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._busy = False  # a leader exists (running a pass, or about to)
        self._last_batch = 1  # requests in the latest pass: the crowd a leader may wait for
        self._stats = BatcherStats()

    # -- public --------------------------------------------------------------
    def encode(self, text: str) -> np.ndarray:
        """The (dim,) vector of one text, as `encode_texts([text])[0]` would return it."""
        request = _Request(text)
        with self._cond:
            if self._busy:
                self._queue.append(request)
                if self.max_wait_ms > 0:
                    self._cond.notify()  # a leader may be waiting for company
            else:
                self._busy = True
                request.lead = True
        try:
            if not request.lead:
                request.ready.wait()
            if request.lead:
                self._lead(request)
        except BaseException:
            # Interrupted while queued or before leading: leave no pass unled
            # and no request that nobody will collect.
            self._abandon(request)
            raise
        return request.outcome()

    def stats(self) -> BatcherStats:
        with self._cond:
            return self._stats

    def reset_stats(self) -> None:
        with self._cond:
            self._stats = BatcherStats()

    @property
    def pending(self) -> int:
        """Requests queued for a later pass (not counting a pass that is running)."""
        with self._cond:
            return len(self._queue)

    # -- leading a pass ----------------------------------------------------------
    def _lead(self, request: _Request) -> None:
        with self._cond:
            company = min(self.max_batch, self._last_batch) - 1
            if self.max_wait_ms > 0 and company > 0:
                self._cond.wait_for(lambda: len(self._queue) >= company, self.max_wait_ms / 1000)
            batch = [request]
            while self._queue and len(batch) < self.max_batch:
                batch.append(self._queue.popleft())
            for member in batch:
                member.taken = True
        try:
            self._run(batch)
        finally:
            with self._cond:
                successor = self._hand_off()
            # The successor first: the next pass is on the critical path, delivering is not.
            if successor is not None:
                successor.ready.set()
            for member in batch:
                if member is not request:
                    member.ready.set()

    def _run(self, batch: list[_Request]) -> None:
        """One call of encode_texts; fills every member's vector or error."""
        row_of: dict[str, int] = {}
        for member in batch:
            row_of.setdefault(member.text, len(row_of))
        failed = False
        try:
            vectors = np.asarray(self._encode_texts(list(row_of)))
            if vectors.ndim != 2 or len(vectors) != len(row_of):
                raise ValueError(
                    f"encode_texts returned shape {vectors.shape} for {len(row_of)} texts"
                )
            for member in batch:
                # A copy each: callers may write to their vector (normalise in place,
                # setflags), which must not reach another caller's, as without batching.
                member.vector = np.array(vectors[row_of[member.text]])
        except BaseException as error:
            failed = True
            for member in batch:
                member.vector = None
                member.error = error
        with self._cond:
            self._last_batch = len(batch)
            s = self._stats
            self._stats = BatcherStats(
                passes=s.passes + 1,
                failed_passes=s.failed_passes + failed,
                requests=s.requests + len(batch),
                texts_encoded=s.texts_encoded + len(row_of),
                largest_batch=max(s.largest_batch, len(batch)),
            )

    def _hand_off(self) -> _Request | None:
        """Under the lock: name the oldest queued request the next leader, or go idle."""
        if self._queue:
            successor = self._queue.popleft()
            successor.lead = True
            return successor
        self._busy = False
        return None

    def _abandon(self, request: _Request) -> None:
        successor = None
        with self._cond:
            if request in self._queue:
                self._queue.remove(request)
            elif request.lead and not request.taken:
                successor = self._hand_off()
        if successor is not None:
            successor.ready.set()
