"""Segment rows written where they were embedded, committed by the run's driver.

A Ray run's embedding actors write each batch's segment rows into the spaces' Lance
tables as uncommitted fragments (`write_fragments`, Lance's two-phase distributed
write) and hand the driver their metadata instead of the vectors. The driver commits
them (FragmentWriter) in the order a local run writes (indexer/writer.BatchWriter):
the older rows of re-embedded items deleted, the new rows added, then the item rows
that mark them committed. Rows of a batch whose fragments were never committed (the
driver died first) are files no version refers to: never read, and deleted by the
store's compaction (Lance's cleanup of old versions) once they are a week old. Committed rows whose item rows never came are orphans,
which the next run removes, as after a local run's crash.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from xmodal.search.store import FragmentTarget, ItemRecord, SegmentRecord, Store, segments_arrow


@dataclass
class WrittenRows:
    """What a worker wrote for one batch of files."""

    fragments: dict[str, list[str]] = field(default_factory=dict)  # per space, JSON each
    replaced: list[str] = field(default_factory=list)  # items whose older rows these replace


def write_fragments(
    rows: Mapping[str, Sequence[SegmentRecord]], targets: Mapping[str, FragmentTarget]
) -> dict[str, list[str]]:
    """Rows per space written as uncommitted fragments of its table; their metadata."""
    from lance.fragment import write_fragments as lance_write_fragments

    written: dict[str, list[str]] = {}
    for space, records in rows.items():
        if not records:
            continue
        target = targets[space]
        table = segments_arrow(records)
        fragments = lance_write_fragments(
            table, target.uri, schema=table.schema, data_storage_version=target.storage_version
        )
        written[space] = [json.dumps(f.to_json()) for f in fragments]
    return written


class FragmentWriter:
    """The writer (indexer/writer.ItemWriter) of a run whose segment rows the workers
    wrote: `expect` hands it a batch's fragments before any of its items is added; each
    flush commits every fragment expected so far (after deleting the rows they
    replace), then the item rows added. The segment records `add` receives carry no
    vectors (their ids and count only)."""

    def __init__(self, store: Store, batch_size: int, dims: Mapping[str, int]):
        self.store = store
        self.batch_size = batch_size
        self.dims = dict(dims)
        self.seconds = 0.0
        self._expected: list[WrittenRows] = []
        self._replaced: set[str] = set()  # for the whole run: their rows are deleted once
        self._items: list[ItemRecord] = []
        self._deletes: list[str] = []
        self._failed = False  # a write failed: nothing more is written (as BatchWriter)

    def expect(self, rows: WrittenRows) -> None:
        self._expected.append(rows)
        self._replaced.update(rows.replaced)

    def add(
        self, item: ItemRecord, segments: dict[str, list[SegmentRecord]], replaces: bool
    ) -> None:
        self._items.append(item)
        if replaces and item.id not in self._replaced:
            self._deletes.append(item.id)  # re-indexed and failed: its old rows go
        if len(self._items) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if self._failed:
            return
        self._failed = True  # until this flush's writes all went through
        started = time.perf_counter()
        expected, self._expected = self._expected, []
        deletes = [i for rows in expected for i in rows.replaced] + self._deletes
        if deletes:
            for record in self.store.spaces():
                self.store.delete_segments(record.name, deletes)
        by_space: dict[str, list[str]] = {}
        for rows in expected:
            for space, fragments in rows.fragments.items():
                by_space.setdefault(space, []).extend(fragments)
        for space, fragments in by_space.items():
            self.store.append_fragments(space, fragments, self.dims[space])
        if self._items:
            self.store.upsert_items(self._items)
        self._items, self._deletes = [], []
        self.seconds += time.perf_counter() - started
        self._failed = False

    def close(self) -> None:
        self.flush()
