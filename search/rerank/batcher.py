"""Concurrent searches' (query, picture) pairs scored in shared forward passes.

One worker thread per batcher runs the passes, so a caller can stop waiting when its
budget is spent while the pass it joined finishes (and fills the cache) anyway. Jobs
queued while a pass runs are merged into the next one, up to `max_pairs`, when they
ask the same model by the same method.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from PIL import Image

from .base import Reranker


@dataclass
class Job:
    reranker: Reranker
    method: str
    queries: Sequence[str]
    images: Sequence[Image.Image]
    future: Future[list[float]] = field(default_factory=Future)


class PairBatcher:
    def __init__(self, max_pairs: int = 32):
        self.max_pairs = max(1, max_pairs)
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self.passes = 0  # forward-pass groups run (counters for tests and benches)
        self.jobs = 0

    def submit(
        self, reranker: Reranker, method: str, queries: Sequence[str], images: Sequence[Image.Image]
    ) -> Future[list[float]]:
        """Scores for the pairs, in order, when the pass that takes them is done."""
        job = Job(reranker, method, list(queries), list(images))
        with self._cond:
            self._queue.append(job)
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="xmodal-rerank", daemon=True
                )
                self._worker.start()
            self._cond.notify()
        return job.future

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue))
                batch = [self._queue.popleft()]
                pairs = len(batch[0].queries)
                for job in list(self._queue):
                    same = job.reranker is batch[0].reranker and job.method == batch[0].method
                    if same and pairs + len(job.queries) <= self.max_pairs:
                        self._queue.remove(job)
                        batch.append(job)
                        pairs += len(job.queries)
            self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        live = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not live:
            return
        queries = [q for job in live for q in job.queries]
        images = [i for job in live for i in job.images]
        try:
            scores = live[0].reranker.score(queries, images, live[0].method)
        except BaseException as error:  # delivered to every caller of the pass
            for job in live:
                job.future.set_exception(error)
            return
        finally:
            self.passes += 1
            self.jobs += len(live)
        start = 0
        for job in live:
            job.future.set_result(scores[start : start + len(job.queries)])
            start += len(job.queries)
