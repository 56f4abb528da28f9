"""One space as of one store version: its items, its segments and their vectors.

The vectors are read from the store once per store version into one float32
matrix, so an exact query is a single matrix-vector product (search/space/ranking.py).
Deleted or updated items cannot be returned: any write changes the version and the
next query builds a new snapshot first.

A store written before the writer lock can hold two rows of one item or one segment
(racing runs); a snapshot keeps one of each (the newest item row, the last segment
row) so queries never see an item twice, until the next write run repairs the store.
"""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from xmodal.search.filters import ItemTable
from xmodal.search.store import INDEXED, ItemRecord, Store
from xmodal.search.store.store import item_from_row, last_of_each, newest_of_each


class Snapshot:
    def __init__(self, store: Store, space: str, version: tuple[int, int]):
        self.version = version
        # Items are read once per version too, so that building hits needs no store query.
        items = store.items_table()
        indexed = pc.equal(items.column("status"), INDEXED)
        # One chunk: `take` over a many-chunked table cost ~0.6 ms per page of hits.
        self.item_table = items.filter(indexed).combine_chunks()
        ids = self.item_table.column("id").to_numpy(zero_copy_only=False)
        if not pd.Index(ids).is_unique:
            table = self.item_table
            keep = newest_of_each(table.column("id"), table.column("indexed_at"))
            self.item_table = table.take(pa.array(keep)).combine_chunks()
            ids = self.item_table.column("id").to_numpy(zero_copy_only=False)
        # Filter columns and metadata are built on the first filter that needs them: most
        # queries have none, and at a million items they take seconds per store version.
        self.items = ItemTable.of(self.item_table, ids)
        self.code_of = pd.Index(ids)

        segments = store.segments_table(space)
        if pc.count_distinct(segments.column("id")).as_py() < segments.num_rows:
            segments = segments.take(pa.array(last_of_each(segments.column("id"))))
        item_ids = segments.column("item_id").to_numpy(zero_copy_only=False)
        codes = self.code_of.get_indexer(item_ids)
        keep = codes >= 0  # orphans of an interrupted run have no item row
        every = bool(keep.all())  # the usual case: no copies below

        def column(name: str) -> np.ndarray:
            values = segments.column(name).to_numpy(zero_copy_only=False)
            return values if every else values[keep]

        self.item_codes = (codes if every else codes[keep]).astype(np.int64)
        self.segment_ids = column("id")
        self.starts = column("start")
        self.ends = column("end")
        vector_column = segments.column("vector").combine_chunks()
        dim = vector_column.type.list_size
        matrix = vector_column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        self.vectors = np.ascontiguousarray(matrix if every else matrix[keep], dtype=np.float32)
        self._score_lock = threading.Lock()
        # Rows grouped by item, so one item's segments are a slice (video moments need them all).
        self._rows_by_item = np.argsort(self.item_codes, kind="stable")
        self._item_offsets = np.searchsorted(
            self.item_codes[self._rows_by_item], np.arange(len(self.items.ids) + 1)
        )

    def __len__(self) -> int:
        return len(self.item_codes)

    def records(self, codes: list[int]) -> list[ItemRecord]:
        """Item records by code, as of this snapshot's version."""
        rows = self.item_table.take(pa.array(codes, type=pa.int64())).to_pylist()
        return [item_from_row(row) for row in rows]

    def item_rows(self, code: int) -> np.ndarray:
        """Snapshot rows of one item's segments."""
        return self._rows_by_item[self._item_offsets[code] : self._item_offsets[code + 1]]

    def item_vectors(self, code: int) -> np.ndarray:
        """(n, dim) vectors of one item's segments."""
        return self.vectors[self.item_rows(code)]

    def scores(self, query: np.ndarray) -> np.ndarray:
        """Cosine similarity of every segment to a unit query vector (a new array)."""
        # One product at a time: BLAS already uses every core for one, and concurrent
        # requests each starting BLAS threads oversubscribe the machine (50 concurrent
        # queries ran 200x slower than serial ones before this lock).
        with self._score_lock:
            return self.vectors @ query.astype(np.float32, copy=False)
