"""Exact (brute-force) search over one space, as of one store version.

The vectors are read from the store once per store version into one float32
matrix; a query is then a single matrix-vector product. Deleted or updated
items cannot be returned: any write changes the version and the next query
rebuilds the snapshot first.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from xmodal.search.filters import ItemTable
from xmodal.search.store import INDEXED, ItemRecord, Store
from xmodal.search.store.store import item_from_row

_FILTER_FIELDS = ("id", "uri", "kind", "width", "height", "bytes", "mtime_ns")


@dataclass(frozen=True)
class RankedItem:
    item_code: int
    score: float
    segment_rows: list[int]  # rows of the snapshot, best first
    segment_scores: list[float]


class SpaceSnapshot:
    def __init__(self, store: Store, space: str, version: tuple[int, int]):
        self.version = version
        # Items are read once per version too, so that building hits needs no store query.
        items = store.items_table()
        indexed = pc.equal(items.column("status"), INDEXED)
        # One chunk: `take` over a many-chunked table cost ~0.6 ms per page of hits.
        self.item_table = items.filter(indexed).combine_chunks()
        ids = self.item_table.column("id").to_numpy(zero_copy_only=False)
        # Filter columns and metadata are built on the first filter that needs them: most
        # queries have none, and at a million items they take seconds per store version.
        self.items = ItemTable(ids, self._filter_fields, self._metadata_json)
        self.code_of = pd.Index(ids)

        segments = store.segments_table(space)
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

    def _filter_fields(self) -> pd.DataFrame:
        fields = self.item_table.select(list(_FILTER_FIELDS)).to_pandas()
        fields["mtime"] = fields.pop("mtime_ns") / 1e9
        return fields

    def _metadata_json(self) -> list[str]:
        return self.item_table.column("metadata").to_pylist()

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

    def rank(
        self,
        query: np.ndarray,
        k: int,
        offset: int = 0,
        row_mask: np.ndarray | None = None,
        exclude_code: int | None = None,
        segments_per_item: int = 3,
    ) -> list[RankedItem]:
        """Items ranked by their best segment; returns ranks offset..offset+k.
        `row_mask` (bool per row) keeps only the rows a filter allows."""
        n = len(self)
        if n == 0 or k <= 0:
            return []
        # One product at a time: BLAS already uses every core for one, and concurrent
        # requests each starting BLAS threads oversubscribe the machine (50 concurrent
        # queries ran 200x slower than serial ones before this lock).
        with self._score_lock:
            scores = self.vectors @ query.astype(np.float32, copy=False)
        if row_mask is not None:
            scores[~row_mask] = -np.inf
        if exclude_code is not None:
            scores[self.item_codes == exclude_code] = -np.inf
        needed = offset + k
        take = min(n, max(needed * 4, 64))
        while True:
            top = np.argpartition(-scores, take - 1)[:take] if take < n else np.arange(n)
            top = top[np.argsort(-scores[top], kind="stable")]
            top = top[np.isfinite(scores[top])]
            ranked = group_by_item(top, scores[top], self.item_codes)
            if len(ranked) >= needed or take >= n or len(top) < take:
                break
            take = min(n, take * 4)
        return page(ranked, offset, needed, segments_per_item)

    def rank_rows(
        self,
        query: np.ndarray,
        rows: np.ndarray,
        k: int,
        offset: int = 0,
        exclude_code: int | None = None,
        segments_per_item: int = 3,
    ) -> list[RankedItem]:
        """Like `rank`, over a subset of rows only (a selective filter's candidates)."""
        if exclude_code is not None:
            rows = rows[self.item_codes[rows] != exclude_code]
        scores = self.vectors[rows] @ query.astype(np.float32, copy=False)
        order = np.argsort(-scores, kind="stable")
        ranked = group_by_item(rows[order], scores[order], self.item_codes)
        return page(ranked, offset, offset + k, segments_per_item)


Grouped = dict[int, tuple[list[int], list[float]]]


def group_by_item(rows: np.ndarray, scores: np.ndarray, item_codes: np.ndarray) -> Grouped:
    """Segment rows (best first) grouped by item, items in order of their best segment."""
    grouped: Grouped = {}
    codes = item_codes[rows].tolist()
    for code, row, score in zip(codes, rows.tolist(), scores.tolist(), strict=True):
        entry = grouped.get(code)
        if entry is None:
            grouped[code] = ([row], [score])
        else:
            entry[0].append(row)
            entry[1].append(score)
    return grouped


def page(grouped: Grouped, offset: int, needed: int, segments_per_item: int) -> list[RankedItem]:
    """Ranks offset..needed of grouped items, each with its best few segments."""
    return [
        RankedItem(code, scores[0], rows[:segments_per_item], scores[:segments_per_item])
        for code, (rows, scores) in list(grouped.items())[offset:needed]
    ]
