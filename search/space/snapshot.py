"""One space as of one store version: its items, its segments and their vectors.

The first snapshot of a space reads its tables whole; every later one is the previous
snapshot plus what the new version changed (changes.py), so a commit of a thousand
rows costs about a thousand rows, not the table. Nothing is ever changed in place: a
snapshot serving queries stays as it is while the next one is built beside it.

Rows are kept where they were first put, and a row the store no longer has is only
marked dead, so positions never move:
- **codes** number item ids, once and for good (`CodeLookup`): a segment names its
  item by code, and a new version of an item's row keeps its code, so a metadata
  update never touches its segments. `code_row` points each code at its current item
  row, or at -1 while the item is deleted, failed, or not written yet (the indexer
  commits segments before their item).
- **segment rows** carry their Lance row address; a deleted one is marked dead. A row
  is *servable* while it lives and its item does.
- **vectors** live in one place each: in a memory-mapped file by ANN label (`Mapped`,
  saved with the index by the writer), or in memory (`ram`) for rows the saved file
  does not hold (a space searched exactly, rows added since the save). `slot` says
  where: below `mapped.rows` a label, above it a position in `ram` plus that count.

A store written before the writer lock can hold two rows of one item or one segment
(racing runs); the first snapshot keeps one of each (the newest item row, the last
segment row), so queries never see an item twice, until the next write run repairs it.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from xmodal.search.ann.synced import segment_keys
from xmodal.search.filters import ItemTable
from xmodal.search.store import INDEXED, ItemRecord, Store
from xmodal.search.store.schema import ITEMS
from xmodal.search.store.store import item_from_row, last_of_each, newest_of_each, vector_matrix

from .changes import ROW_ADDRESS, TableChange, fragment_deletions, read_rows

SEGMENT_COLUMNS = ("id", "item_id", "start", "end", "vector")
# Per-row arrays new versions append to (Appendable) rather than copy.
APPENDABLE = (
    "item_codes",
    "segment_ids",
    "starts",
    "ends",
    "addresses",
    "slot",
    "keys",
    "live",
    "ram",
    "item_addresses",
    "item_row_code",
    "code_row",  # per code: codes only ever added (CodeLookup); see _set_code_rows
)


class Appendable:
    """An append-only column shared by a chain of snapshots, each seeing its own prefix:
    appending writes past every existing snapshot's end (doubling the buffer when full),
    so a commit of a thousand rows copies a thousand, not the column. A second append to
    the same prefix (a failed apply retried) copies instead of overwriting the first's."""

    __slots__ = ("_end", "data", "length")

    def __init__(self, data: np.ndarray, length: int | None = None, end: list[int] | None = None):
        self.data = data
        self.length = len(data) if length is None else length
        self._end = end if end is not None else [self.length]  # shared: the longest prefix

    @classmethod
    def with_room(cls, values: np.ndarray) -> Appendable:
        """`values` with room for an eighth more rows: the first commits after a whole
        read append in place instead of copying every row once (80 ms at a million)."""
        data = np.empty(
            (len(values) + max(1024, len(values) // 8), *values.shape[1:]), values.dtype
        )
        data[: len(values)] = values
        return cls(data, len(values))

    @property
    def values(self) -> np.ndarray:
        return self.data[: self.length]

    def appended(self, more: np.ndarray) -> Appendable:
        need = self.length + len(more)
        if need <= len(self.data) and self._end[0] == self.length:
            self.data[self.length : need] = more
            self._end[0] = need
            return Appendable(self.data, need, self._end)
        grown = np.empty((max(need, 2 * self.length, 1024), *self.data.shape[1:]), self.data.dtype)
        grown[: self.length] = self.data[: self.length]
        grown[self.length : need] = more
        return Appendable(grown, need)


class CodeLookup:
    """Item ids to codes, append-only: a big sealed index from the first read plus a
    small dict of ids met since, copied when it grows (never changed in place)."""

    def __init__(self, sealed: pd.Index, grown: dict[str, int], ids: Appendable):
        self.sealed, self.grown, self._ids = sealed, grown, ids

    @property
    def ids(self) -> np.ndarray:
        """Item id by code."""
        return self._ids.values

    def __len__(self) -> int:
        return self._ids.length

    def get(self, item_id: str) -> int:
        code = self.grown.get(item_id)
        if code is not None:
            return code
        try:
            return int(self.sealed.get_loc(item_id))
        except KeyError:
            return -1

    def with_ids(self, ids: np.ndarray) -> tuple[CodeLookup, np.ndarray]:
        """Codes of `ids`, new ids numbered from the end; and the lookup knowing them."""
        codes = (
            self.sealed.get_indexer(ids) if len(self.sealed) else np.full(len(ids), -1, np.int64)
        ).astype(np.int64)
        missing = np.flatnonzero(codes < 0)
        if not len(missing):
            return self, codes
        grown, new = dict(self.grown), list[str]()
        for position in missing.tolist():
            key = ids[position]
            code = grown.get(key)
            if code is None:
                code = grown[key] = len(self.ids) + len(new)
                new.append(key)
            codes[position] = code
        if not new:
            return CodeLookup(self.sealed, grown, self._ids), codes
        return CodeLookup(self.sealed, grown, self._ids.appended(np.array(new, object))), codes


@dataclass(frozen=True)
class Mapped:
    """Vectors by ANN label in a memory-mapped file the writer saved with the index;
    `label_of` finds the label of a segment by its key (segment_keys)."""

    vectors: np.ndarray  # (labels, dim) float32, memory-mapped
    keys: pd.Index  # key of every live label -> position in `labels`
    labels: np.ndarray  # int64 labels, aligned with `keys`

    @property
    def rows(self) -> int:
        return len(self.vectors)

    def label_of(self, keys: np.ndarray) -> np.ndarray:
        found = self.keys.get_indexer(keys)
        return np.where(found >= 0, self.labels[np.maximum(found, 0)], -1)


class Snapshot:
    """Build the first with `Snapshot.read`, the next ones with `apply`."""

    version: tuple[int, int]  # (items, segments) table versions
    lineage: object  # shared by the snapshots applied from one read: row numbers agree
    table: str  # the segments table
    item_fragments: dict[int, int]  # fragment_deletions of the items table version
    segment_fragments: dict[int, int]
    # items: rows as read (sealed) and added since (grown), codes and where they point
    sealed_items: pa.Table
    grown_items: pa.Table
    item_table: pa.Table  # sealed then grown rows
    item_addresses: np.ndarray  # uint64 Lance row address per item row
    item_row_code: np.ndarray  # code per item row
    lookup: CodeLookup
    code_row: np.ndarray  # item row per code, -1: not indexed in this version
    # segments: one entry per row, in the order rows were met
    item_codes: np.ndarray
    segment_ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    addresses: np.ndarray
    live: np.ndarray  # the store still has the row
    slot: np.ndarray  # where its vector is (see the module's docstring)
    keys: np.ndarray | None  # segment_keys, kept for spaces with an ANN index
    mapped: Mapped | None
    ram: np.ndarray  # vectors held in memory
    dim: int
    sealed_segments: int  # rows read by the first snapshot of the chain
    servable: np.ndarray
    count: int
    item_count: int
    _sealed_order: np.ndarray
    _sealed_offsets: np.ndarray
    _grown_order: np.ndarray
    _grown_sorted: np.ndarray
    _sealed_filters: ItemTable
    _grown_filters: ItemTable | None
    _score_lock: threading.Lock
    _columns: dict[str, Appendable]
    _gone: np.ndarray  # rows the last applied change deleted
    _assigned: list[np.ndarray]  # codes the change being applied pointed elsewhere
    flipped: np.ndarray  # rows that came to serve, or stopped, against the previous snapshot

    # -- reading a version whole ------------------------------------------------
    @classmethod
    def read(
        cls,
        store: Store,
        table: str,
        version: tuple[int, int],
        mapped: Mapped | None = None,
        keyed: bool = False,
    ) -> Snapshot:
        """The space in `table` as of `version` (items, segments). With `mapped`, the
        vectors of rows found in it are not kept in memory; `keyed` keeps every row's
        key (spaces with an ANN index need them to save it)."""
        self = cls.__new__(cls)
        self.version, self.table = version, table
        self.lineage = object()
        with store.reading(ITEMS):
            items_set = store.dataset(ITEMS, version[0])
            self.item_fragments = fragment_deletions(items_set)
            items = items_set.to_table(with_row_address=True)
        items = items.filter(pc.equal(items.column("status"), INDEXED)).combine_chunks()
        ids = items.column("id").to_numpy(zero_copy_only=False)
        keep = np.arange(len(ids))
        if not pd.Index(ids).is_unique:
            keep = newest_of_each(items.column("id"), items.column("indexed_at"))
        unique = pd.unique(ids).astype(object)
        lookup = CodeLookup(pd.Index(unique), {}, Appendable(unique))
        codes = lookup.sealed.get_indexer(ids).astype(np.int64)
        self._set_items(items, ids, codes, keep, lookup)

        segments_set = store.dataset(table, version[1])
        self.segment_fragments = fragment_deletions(segments_set)
        parts: dict[str, list[np.ndarray]] = {
            n: [] for n in (*SEGMENT_COLUMNS, ROW_ADDRESS, "key", "slot")
        }
        ram: list[np.ndarray] = []
        ram_count, dim = 0, int(segments_set.schema.field("vector").type.list_size)
        for batch in _guarded(store, table, read_rows(segments_set, SEGMENT_COLUMNS)):
            vectors = vector_matrix(batch.column("vector"))
            segment_ids = batch.column("id").to_numpy(zero_copy_only=False)
            keys = segment_keys(segment_ids, vectors) if keyed or mapped else None
            labels = mapped.label_of(keys) if mapped is not None and keys is not None else None
            in_ram = np.ones(len(vectors), bool) if labels is None else labels < 0
            slots = np.empty(len(vectors), np.int64)
            base = mapped.rows if mapped is not None else 0
            slots[in_ram] = base + ram_count + np.arange(int(in_ram.sum()))
            if labels is not None:
                slots[~in_ram] = labels[~in_ram]
            ram.append(np.ascontiguousarray(vectors[in_ram], dtype=np.float32))
            ram_count += int(in_ram.sum())
            parts["id"].append(segment_ids)
            parts["item_id"].append(batch.column("item_id").to_numpy(zero_copy_only=False))
            parts["start"].append(_floats(batch.column("start")))
            parts["end"].append(_floats(batch.column("end")))
            parts[ROW_ADDRESS].append(batch.column(ROW_ADDRESS).to_numpy())
            parts["slot"].append(slots)
            if keys is not None:
                parts["key"].append(keys)

        def joined(name: str, dtype: Any) -> np.ndarray:
            return np.concatenate(parts[name]) if parts[name] else np.zeros(0, dtype)

        segment_ids = joined("id", object)
        self.lookup, self.item_codes = self.lookup.with_ids(joined("item_id", object))
        self.code_row = _padded(self.code_row, len(self.lookup))
        self.segment_ids = segment_ids
        self.starts, self.ends = joined("start", np.float64), joined("end", np.float64)
        self.addresses = joined(ROW_ADDRESS, np.uint64).astype(np.uint64)
        self.slot = joined("slot", np.int64)
        self.keys = joined("key", np.int64) if parts["key"] else None
        self.live = np.ones(len(segment_ids), bool)
        if len(segment_ids) and not pd.Index(segment_ids).is_unique:
            self.live[:] = False
            self.live[last_of_each(pa.array(segment_ids, pa.string()))] = True
        self.mapped = mapped
        self.ram = np.concatenate(ram) if ram else np.zeros((0, dim), np.float32)
        self.dim = dim
        self.sealed_segments = len(segment_ids)
        order = np.argsort(self.item_codes, kind="stable")
        self._sealed_order = order
        self._sealed_offsets = np.searchsorted(
            self.item_codes[order], np.arange(len(self.lookup) + 1)
        )
        self._gone = np.zeros(0, np.int64)
        self._assigned = []
        self._columns = {
            name: Appendable.with_room(getattr(self, name))
            for name in APPENDABLE
            if getattr(self, name) is not None
        }
        for name, column in self._columns.items():  # the arrays queries read: views
            setattr(self, name, column.values)
        self._finish(None)
        return self

    def _set_items(
        self,
        items: pa.Table,
        ids: np.ndarray,
        codes: np.ndarray,
        keep: np.ndarray,
        lookup: CodeLookup,
    ) -> None:
        self.sealed_items = items
        self.grown_items = items.schema.empty_table()
        self.item_table = items
        self.item_addresses = items.column(ROW_ADDRESS).to_numpy().astype(np.uint64)
        self.item_row_code = codes
        self.lookup = lookup
        self.code_row = np.full(len(lookup), -1, np.int64)
        self.code_row[codes[keep]] = keep
        # Filter columns and metadata are built on the first filter that needs them: most
        # queries have none, and at a million items they take seconds. The sealed part's
        # stay with every later snapshot; only the rows grown since are built again.
        self._sealed_filters = ItemTable.of(items, ids)
        self._grown_filters: ItemTable | None = None

    def _finish(self, before: Snapshot | None) -> None:
        """What follows from the rows: which serve (from `before`'s, where it is given:
        only new rows and rows of items that came or went are looked at), and the grown
        rows grouped by item."""
        if before is None:
            item_live = self.code_row >= 0
            servable = self.live & item_live[self.item_codes]
            self.flipped = np.zeros(0, np.int64)
            self.item_count = int(item_live.sum())
        else:
            # Only what the change touched is looked at: new rows, rows deleted, rows of
            # items whose code came to point at an item row or stopped (O(change), not
            # O(rows): at a million rows each whole pass costs the queries beside it).
            old, known = before.rows, len(before.code_row)
            servable = np.empty(self.rows, bool)
            servable[:old] = before.servable
            servable[old:] = self.live[old:] & (self.code_row[self.item_codes[old:]] >= 0)
            assigned = np.unique(np.concatenate([np.zeros(0, np.int64), *self._assigned]))
            earlier = assigned[assigned < known]
            was, now = before.code_row[earlier] >= 0, self.code_row[earlier] >= 0
            changed = earlier[was != now]
            touched = np.union1d(before.rows_of_codes(changed), self._gone)
            servable[touched] = self.live[touched] & (self.code_row[self.item_codes[touched]] >= 0)
            self.flipped = touched[servable[touched] != before.servable[touched]]
            self.item_count = (
                before.item_count
                + int(now.sum())
                - int(was.sum())
                + int((self.code_row[known:] >= 0).sum())
            )
        servable.setflags(write=False)
        self.servable = servable
        self.count = int(servable.sum())
        grown_codes = self.item_codes[self.sealed_segments :]
        self._grown_order = self.sealed_segments + np.argsort(grown_codes, kind="stable")
        self._grown_sorted = self.item_codes[self._grown_order]
        self._gone = np.zeros(0, np.int64)
        self._assigned = []
        self._score_lock = threading.Lock()

    def rows_of_codes(self, codes: np.ndarray) -> np.ndarray:
        """Every row (servable or not) of the items with these codes."""
        if not len(codes):
            return np.zeros(0, np.int64)
        sealed = codes[codes + 1 < len(self._sealed_offsets)]
        starts, ends = self._sealed_offsets[sealed], self._sealed_offsets[sealed + 1]
        lengths = ends - starts
        positions = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(
            int(lengths.sum())
        )
        grown = self._grown_order[np.isin(self._grown_sorted, codes)]
        return np.concatenate([self._sealed_order[positions], grown])

    # -- applying a newer version --------------------------------------------------
    def apply(
        self, version: tuple[int, int], items: TableChange, segments: TableChange
    ) -> Snapshot:
        """This snapshot brought to `version` by the changes of its two tables."""
        new = copy.copy(self)
        new.version = version
        new.__dict__.pop("live_items", None)
        new.item_fragments, new.segment_fragments = items.fragments, segments.fragments
        new._assigned = []
        new._apply_items(items)
        new._apply_segments(segments)
        new._finish(self)
        return new

    def _apply_items(self, change: TableChange) -> None:
        assignments: list[tuple[np.ndarray, np.ndarray]] = []  # (codes, rows), in order
        gone = np.flatnonzero(change.deleted(self.item_addresses))
        if len(gone):
            codes = self.item_row_code[gone]
            current = self.code_row[codes] == gone
            assignments.append((codes[current], np.full(int(current.sum()), -1, np.int64)))
        added = change.added
        if added.num_rows:
            added = added.filter(pc.equal(added.column("status"), INDEXED))
        if added.num_rows:
            ids = added.column("id").to_numpy(zero_copy_only=False)
            self.lookup, codes = self.lookup.with_ids(ids)
            first = self.item_table.num_rows
            latest = np.flatnonzero(~pd.Index(ids).duplicated(keep="last"))
            assignments.append((codes[latest], first + latest))
            self.grown_items = pa.concat_tables([self.grown_items, added]).combine_chunks()
            self.item_table = pa.concat_tables([self.sealed_items, self.grown_items])
            self._append("item_addresses", added.column(ROW_ADDRESS).to_numpy().astype(np.uint64))
            self._append("item_row_code", codes)
            self._grown_filters = None
        self._set_code_rows(assignments)

    def _set_code_rows(self, assignments: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """code_row[codes] = rows for each assignment in turn, with room for the codes
        the lookup gained. Codes new to this snapshot are appended (the column is shared
        with older snapshots, which never see past their end); pointing a code they
        know elsewhere (an item re-indexed or removed) copies the column instead, so
        that they go on answering as they did."""
        known = len(self.code_row)
        tail = np.full(len(self.lookup) - known, -1, np.int64)
        copied: Appendable | None = None
        for codes, rows in assignments:
            new = codes >= known
            tail[codes[new] - known] = rows[new]
            if not new.all():
                if copied is None:
                    copied = Appendable.with_room(self.code_row)
                copied.data[codes[~new]] = rows[~new]
            self._assigned.append(codes)
        if copied is not None:
            column = copied.appended(tail)
            self._columns = {**self._columns, "code_row": column}
            self.code_row = column.values
        elif len(tail):
            self._append("code_row", tail)

    def _apply_segments(self, change: TableChange) -> None:
        gone = np.flatnonzero(change.deleted(self.addresses))
        if len(gone):
            live = self.live.copy()
            live[gone] = False
            self._columns = {**self._columns, "live": Appendable(live)}
            self.live = live
        self._gone = gone
        added = change.added
        if added.num_rows:
            vectors = vector_matrix(added.column("vector"))
            segment_ids = added.column("id").to_numpy(zero_copy_only=False)
            self.lookup, codes = self.lookup.with_ids(
                added.column("item_id").to_numpy(zero_copy_only=False)
            )
            self._set_code_rows([])  # codes of items not indexed yet: -1
            base = (self.mapped.rows if self.mapped is not None else 0) + len(self.ram)
            self._append("item_codes", codes)
            self._append("segment_ids", segment_ids)
            self._append("starts", _floats(added.column("start")))
            self._append("ends", _floats(added.column("end")))
            self._append("addresses", added.column(ROW_ADDRESS).to_numpy().astype(np.uint64))
            self._append("slot", base + np.arange(len(vectors)))
            if self.keys is not None:
                self._append("keys", segment_keys(segment_ids, vectors))
            self._append("live", np.ones(len(vectors), bool))
            self._append("ram", np.ascontiguousarray(vectors, dtype=np.float32))

    def _append(self, name: str, values: np.ndarray) -> None:
        """Rows added to a column: appended past the previous snapshot's end."""
        column = self._columns[name].appended(values)
        self._columns = {**self._columns, name: column}
        setattr(self, name, column.values)

    def with_mapped(self, mapped: Mapped, labels: np.ndarray, keys: np.ndarray) -> Snapshot:
        """The same version with the vectors of rows holding a label (`labels` per row,
        -1 for none) read from `mapped` instead of memory (after the writer saved them)."""
        new = copy.copy(self)
        labelled = labels >= 0
        kept = np.flatnonzero(~labelled)
        slots = np.empty(len(labels), np.int64)
        slots[labelled] = labels[labelled]
        slots[kept] = mapped.rows + np.arange(len(kept))
        new.ram = np.ascontiguousarray(self.vectors_of(kept))
        new.slot, new.mapped, new.keys = slots, mapped, keys
        new._columns = {
            **self._columns,
            "ram": Appendable(new.ram),
            "slot": Appendable(slots),
            "keys": Appendable(keys),
        }
        return new

    # -- what queries read -----------------------------------------------------
    def __len__(self) -> int:
        """Servable segments."""
        return self.count

    @property
    def rows(self) -> int:
        """Segment rows, dead ones included (the length of every per-row array)."""
        return len(self.item_codes)

    def item_id(self, code: int) -> str:
        return str(self.lookup.ids[code])

    def code_for(self, item_id: str) -> int | None:
        """The code of an indexed item of this version, None for any other id."""
        code = self.lookup.get(item_id)
        return code if code >= 0 and self.code_row[code] >= 0 else None

    def records(self, codes: Sequence[int]) -> list[ItemRecord]:
        """Item records by code, as of this snapshot's version."""
        rows = self.code_row[np.asarray(codes, np.int64)]
        # Taken from each part on its own: `take` over a table of two chunks joins them
        # first, a copy of every item row per query (a million: tens of ms).
        sealed = self.sealed_items.num_rows
        found: list[dict[str, Any]] = [{}] * len(rows)
        for part, positions, offset in (
            (self.sealed_items, np.flatnonzero(rows < sealed), 0),
            (self.grown_items, np.flatnonzero(rows >= sealed), sealed),
        ):
            if len(positions):
                taken = part.take(pa.array(rows[positions] - offset, type=pa.int64()))
                for position, row in zip(positions.tolist(), taken.to_pylist(), strict=True):
                    found[position] = row
        return [item_from_row(row) for row in found]

    def item_rows(self, code: int) -> np.ndarray:
        """Servable rows of one item's segments."""
        parts = []
        if code + 1 < len(self._sealed_offsets):
            parts.append(
                self._sealed_order[self._sealed_offsets[code] : self._sealed_offsets[code + 1]]
            )
        lo, hi = np.searchsorted(self._grown_sorted, [code, code + 1])
        parts.append(self._grown_order[lo:hi])
        rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return rows[self.servable[rows]]

    def item_vectors(self, code: int) -> np.ndarray:
        """(n, dim) vectors of one item's segments."""
        return self.vectors_of(self.item_rows(code))

    def vectors_of(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), dim) float32 vectors of segment rows, from wherever each is kept."""
        slots = self.slot[rows]
        if self.mapped is None:
            return self.ram[slots]
        out = np.empty((len(slots), self.dim), np.float32)
        inside = slots < self.mapped.rows
        if inside.any():
            out[inside] = self.mapped.vectors[slots[inside]]
        if not inside.all():
            out[~inside] = self.ram[slots[~inside] - self.mapped.rows]
        return out

    def scores(self, query: np.ndarray) -> np.ndarray:
        """Cosine similarity of every row to a unit query vector (a new array; -inf for
        rows that do not serve). Spaces searched exactly keep every vector in memory."""
        # One product at a time: BLAS already uses every core for one, and concurrent
        # requests each starting BLAS threads oversubscribe the machine (50 concurrent
        # queries ran 200x slower than serial ones before this lock).
        with self._score_lock:
            if self.mapped is None:
                scores = self.ram @ query.astype(np.float32, copy=False)
                scores = scores[self.slot] if len(scores) != len(self.slot) else scores
            else:
                scores = np.empty(self.rows, np.float32)
                for start in range(0, self.rows, 65_536):
                    rows = np.arange(start, min(start + 65_536, self.rows))
                    scores[rows] = self.vectors_of(rows) @ query
        scores[~self.servable] = -np.inf
        return scores

    def best_scores(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each query's best similarity over the servable rows (a block at a time), and
        the row it came from (-1: no servable row)."""
        best = np.full(len(queries), -np.inf, np.float32)
        where = np.full(len(queries), -1, np.int64)
        for start in range(0, self.rows, 65_536):
            rows = np.arange(start, min(start + 65_536, self.rows))
            rows = rows[self.servable[rows]]
            if len(rows):
                block = self.vectors_of(rows) @ queries.T
                top = block.argmax(axis=0)
                scores = block[top, np.arange(len(queries))]
                better = scores > best
                best[better], where[better] = scores[better], rows[top[better]]
        return best, where

    def ram_scores(self, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Scores of rows whose vectors are in memory, from one product over the part of
        memory they span (the rows added since the index was saved sit together)."""
        if not len(rows):
            return np.zeros(0, np.float32)
        base = self.mapped.rows if self.mapped is not None else 0
        positions = self.slot[rows] - base
        low = int(positions.min())
        block = self.ram[low : int(positions.max()) + 1]
        # einsum, not BLAS: a few thousand rows per query, beside the ANN search's own
        # threads; BLAS starts threads of its own for each product, and with four
        # queries at once on two cores that cost more than the product (bench/live_latency.py).
        scores = np.einsum("ij,j->i", block, query.astype(np.float32, copy=False))
        return scores[positions - low]

    def item_mask(self, spec: dict[str, Any], kinds: Sequence[str] | None) -> np.ndarray:
        """Bool per code: the live items a validated filter and kinds allow."""
        parts = [self._sealed_filters]
        if self.grown_items.num_rows:
            if self._grown_filters is None:
                self._grown_filters = ItemTable.of(self.grown_items)
            parts.append(self._grown_filters)
        physical = np.ones(self.item_table.num_rows, bool)
        if spec:
            physical &= np.concatenate([part.matching(spec) for part in parts])
        if kinds is not None:
            physical &= np.concatenate(
                [part.fields["kind"].isin(list(kinds)).to_numpy(dtype=bool) for part in parts]
            )
        live = self.code_row >= 0
        mask = np.zeros(len(self.code_row), bool)
        mask[live] = physical[self.code_row[live]]
        return mask

    @cached_property
    def live_items(self) -> ItemTable:
        """The indexed items, one row each (facets read them)."""
        rows = np.sort(self.code_row[self.code_row >= 0])
        sealed = self.sealed_items.num_rows
        parts = [
            self.sealed_items.take(pa.array(rows[rows < sealed], type=pa.int64())),
            self.grown_items.take(pa.array(rows[rows >= sealed] - sealed, type=pa.int64())),
        ]
        return ItemTable.of(pa.concat_tables(parts).combine_chunks())


def _guarded(
    store: Store, table: str, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """Record batches of a table, damage reported as the store reports it."""
    with store.reading(table):
        yield from batches


def _padded(values: np.ndarray, length: int) -> np.ndarray:
    if len(values) >= length:
        return values
    return np.concatenate([values, np.full(length - len(values), -1, values.dtype)])


def _floats(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
