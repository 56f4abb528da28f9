"""Background writes: batches go to the store while the next batch is encoded."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from xmodal.search.store import ItemRecord, SegmentRecord, Store


class ItemWriter(Protocol):
    """Where an indexing run hands each finished item: BatchWriter writes the item rows
    and their segments; a migration writes only the segments of its new space
    (indexer/migrate.py)."""

    seconds: float  # spent writing

    def add(
        self, item: ItemRecord, segments: dict[str, list[SegmentRecord]], replaces: bool
    ) -> None: ...

    def close(self) -> None: ...


@dataclass
class WriteBatch:
    items: list[ItemRecord] = field(default_factory=list)
    segments: dict[str, list[SegmentRecord]] = field(default_factory=dict)  # by space
    replace_segments_of: list[str] = field(default_factory=list)  # re-embedded items

    def __len__(self) -> int:
        return len(self.items)


class BatchWriter:
    """Buffers rows and commits them from one background thread, in order.

    Per batch: old segments of re-embedded items are deleted (in every space), new
    segments are written space by space, then the item rows. An item row is the commit
    marker of its item: segments without one are orphans, removed by the next run.
    """

    def __init__(self, store: Store, batch_size: int, max_pending: int = 4):
        self.store = store
        self.batch_size = batch_size
        self.seconds = 0.0
        self._buffer = WriteBatch()
        self._queue: queue.Queue[WriteBatch | None] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="xmodal-writer", daemon=True)
        self._thread.start()

    def add(
        self, item: ItemRecord, segments: dict[str, list[SegmentRecord]], replaces: bool
    ) -> None:
        """Queue an item with its segments per space; `replaces`: drop its old segments."""
        self._raise_if_failed()
        self._buffer.items.append(item)
        for space, rows in segments.items():
            self._buffer.segments.setdefault(space, []).extend(rows)
        if replaces:
            self._buffer.replace_segments_of.append(item.id)
        if len(self._buffer) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if len(self._buffer):
            self._queue.put(self._buffer)
            self._buffer = WriteBatch()

    def close(self) -> None:
        """Write what is buffered and wait for every write to be committed."""
        if self._thread.is_alive():
            self.flush()
            self._queue.put(None)
            self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self._error is not None:
                continue  # drain without writing after a failure
            started = time.perf_counter()
            try:
                if batch.replace_segments_of:
                    for space in self.store.spaces():
                        self.store.delete_segments(space.name, batch.replace_segments_of)
                for space_name, rows in batch.segments.items():
                    self.store.upsert_segments(space_name, rows)
                self.store.upsert_items(batch.items)
            except BaseException as error:  # surfaced to the caller on its next call
                self._error = error
            self.seconds += time.perf_counter() - started
