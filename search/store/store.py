"""The LanceDB store: media items, segments with vectors per space, and spaces.

LanceDB is the source of truth. Every write is one LanceDB commit, so a crash
leaves each table at its last committed version. Segments are written before
their items: a segment whose item row is missing is an orphan from an
interrupted run, ignored by queries and removed by the next `index` run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from xmodal.search.errors import ModelMismatchError, StoreError, UnknownItemError
from xmodal.search.media.kinds import MediaKind

from .locations import leaves_roots, original_path
from .records import INDEXED, ItemRecord, SegmentRecord, SpaceRecord
from .schema import (
    ITEMS,
    ITEMS_SCHEMA,
    META,
    META_SCHEMA,
    ROOTS,
    ROOTS_SCHEMA,
    SPACES,
    SPACES_SCHEMA,
    STORE_FORMAT,
    segments_schema,
    segments_table_name,
)

_ID_CHUNK = 2000  # ids per SQL IN list
# Coarse filesystem clocks tick every few ms; a folder changed more recently than this
# may change again without its mtime moving.
MTIME_MARGIN_NS = 100_000_000


def sql_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _in_list(ids: Sequence[str]) -> str:
    return "(" + ", ".join(sql_quote(i) for i in ids) + ")"


class Store:
    """A data directory holding xmodal's LanceDB tables."""

    def __init__(self, path: str | Path):
        import lancedb

        self.path = Path(path).expanduser()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # Readers must see other processes' commits (an indexer writing while the API
            # serves): re-check the table version on every read.
            self._db = lancedb.connect(self.path / "lance", read_consistency_interval=timedelta(0))
        except OSError as error:
            raise StoreError(f"cannot open data directory {self.path}: {error}") from error
        names = set(self._table_names())
        self._items = self._open_or_create(ITEMS, ITEMS_SCHEMA, names)
        self._spaces = self._open_or_create(SPACES, SPACES_SCHEMA, names)
        self._roots = self._open_or_create(ROOTS, ROOTS_SCHEMA, names)
        self._meta = self._open_or_create(META, META_SCHEMA, names)
        self._check_format()
        self._segment_tables: dict[str, Any] = {}
        self._version_folders: dict[str, tuple[str, ...]] = {}
        self._versions: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}

    # -- tables ----------------------------------------------------------
    def _table_names(self) -> list[str]:
        names: list[str] = []
        page_token = None
        while True:
            page = self._db.list_tables(page_token=page_token)
            names.extend(page.tables)
            page_token = page.page_token
            if not page_token:
                return names

    def _open_or_create(self, name: str, schema: pa.Schema, names: set[str]) -> Any:
        if name in names:
            return self._db.open_table(name)
        return self._db.create_table(name, schema=schema, exist_ok=True)

    def _check_format(self) -> None:
        rows = self._meta.search().where("key = 'format'").to_list()
        if not rows:
            self._meta.add([{"key": "format", "value": str(STORE_FORMAT)}])
            return
        found = int(rows[0]["value"])
        if found > STORE_FORMAT:
            raise StoreError(
                f"{self.path} was written by a newer xmodal (store format {found}, this one "
                f"reads {STORE_FORMAT}); upgrade xmodal"
            )
        if found < STORE_FORMAT:
            self._migrate(found)

    def _migrate(self, found: int) -> None:
        """Bring an older store up to STORE_FORMAT, one step at a time."""
        if found < 2 and "duration" not in self._items.schema.names:
            self._items.add_columns({"duration": "CAST(NULL AS DOUBLE)"})
        self._meta.update(where="key = 'format'", values={"value": str(STORE_FORMAT)})

    @property
    def format_version(self) -> int:
        return STORE_FORMAT

    # -- spaces ----------------------------------------------------------
    def spaces(self) -> list[SpaceRecord]:
        return [
            SpaceRecord(r["name"], r["model_spec"], r["model_identity"], int(r["dim"]))
            for r in self._spaces.to_arrow().to_pylist()
        ]

    def space(self, name: str) -> SpaceRecord | None:
        return next((s for s in self.spaces() if s.name == name), None)

    def bind_space(self, name: str, model_spec: str, model_identity: str, dim: int) -> SpaceRecord:
        """Create the space, or check that it was built with this very model."""
        existing = self.space(name)
        if existing is None:
            record = SpaceRecord(name, model_spec, model_identity, dim)
            table = segments_table_name(name)
            self._db.create_table(table, schema=segments_schema(dim), exist_ok=True)
            self._spaces.add([{**record.__dict__, "segments_table": table}])
            return record
        if existing.model_identity != model_identity or existing.dim != dim:
            raise ModelMismatchError(
                f"the {name} space in {self.path} was built with {existing.model_spec} "
                f"({existing.model_identity}, {existing.dim}-d), not {model_spec} "
                f"({model_identity}, {dim}-d). Use --model {existing.model_spec} with this store, "
                "or index into a new --data directory to use the other model."
            )
        return existing

    def _segments(self, space: str) -> Any:
        table = self._segment_tables.get(space)
        if table is None:
            name = segments_table_name(space)
            if name not in self._table_names():
                raise StoreError(f"space {space!r} does not exist in {self.path}")
            table = self._segment_tables[space] = self._db.open_table(name)
        return table

    # -- roots -----------------------------------------------------------
    def roots(self) -> list[str]:
        return [r["path"] for r in self._roots.to_arrow().to_pylist()]

    def original_path(self, item: ItemRecord) -> Path:
        """The item's file, checked against the indexed roots (see locations.original_path)."""
        return original_path(item.id, item.uri, self.roots())

    def leaves_roots(self, item: ItemRecord) -> bool:
        """Whether the item's file lies outside the indexed roots (see locations)."""
        return leaves_roots(item.uri, self.roots())

    def add_root(self, path: str) -> None:
        if path not in self.roots():
            self._roots.add([{"path": path}])

    # -- items -----------------------------------------------------------
    def item(self, item_id: str) -> ItemRecord:
        rows = self._items.search().where(f"id = {sql_quote(item_id)}").limit(1).to_list()
        if not rows:
            raise UnknownItemError(item_id)
        return item_from_row(rows[0])

    def items(self, item_ids: Sequence[str]) -> dict[str, ItemRecord]:
        found: dict[str, ItemRecord] = {}
        for start in range(0, len(item_ids), _ID_CHUNK):
            chunk = item_ids[start : start + _ID_CHUNK]
            rows = (
                self._items.search().where(f"id IN {_in_list(chunk)}").limit(len(chunk)).to_list()
            )
            found.update((row["id"], item_from_row(row)) for row in rows)
        return found

    def items_table(self, columns: Sequence[str] | None = None) -> pa.Table:
        """All item rows as Arrow (for diffing, filters and `info`)."""
        table = self._items.to_arrow()
        return table.select(list(columns)) if columns else table

    def upsert_items(self, records: Sequence[ItemRecord]) -> None:
        if not records:
            return
        now = time.time()
        rows = [
            {
                **r.__dict__,
                "metadata": json.dumps(r.metadata, sort_keys=True),
                "indexed_at": r.indexed_at or now,
            }
            for r in records
        ]
        data = pa.Table.from_pylist(rows, schema=ITEMS_SCHEMA)
        self._items.merge_insert(
            "id"
        ).when_matched_update_all().when_not_matched_insert_all().execute(data)

    def delete_items(self, item_ids: Sequence[str]) -> None:
        """Remove items and their segments in every space (segments first)."""
        for space in self.spaces():
            self.delete_segments(space.name, item_ids)
        for start in range(0, len(item_ids), _ID_CHUNK):
            self._items.delete(f"id IN {_in_list(item_ids[start : start + _ID_CHUNK])}")

    def count_items(self, status: str | None = INDEXED) -> int:
        return self._items.count_rows(None if status is None else f"status = {sql_quote(status)}")

    # -- segments --------------------------------------------------------
    def upsert_segments(self, space: str, segments: Sequence[SegmentRecord]) -> None:
        if not segments:
            return
        dim = int(segments[0].vector.shape[-1])
        vectors = np.stack([s.vector for s in segments]).astype(np.float32, copy=False)
        data = pa.table(
            {
                "id": pa.array([s.id for s in segments], pa.string()),
                "item_id": pa.array([s.item_id for s in segments], pa.string()),
                "start": pa.array([s.start for s in segments], pa.float64()),
                "end": pa.array([s.end for s in segments], pa.float64()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
            },
            schema=segments_schema(dim),
        )
        table = self._segments(space)
        table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(
            data
        )

    def delete_segments(self, space: str, item_ids: Sequence[str]) -> None:
        table = self._segments(space)
        for start in range(0, len(item_ids), _ID_CHUNK):
            table.delete(f"item_id IN {_in_list(item_ids[start : start + _ID_CHUNK])}")

    def count_segments(self, space: str) -> int:
        return int(self._segments(space).count_rows())

    def segments_table(self, space: str) -> pa.Table:
        """All segments of a space (ids, spans, vectors) as Arrow."""
        return self._segments(space).to_arrow()

    def item_vectors(self, space: str, item_id: str) -> np.ndarray:
        """(n, dim) vectors of one item's segments in a space."""
        rows = (
            self._segments(space)
            .search()
            .where(f"item_id = {sql_quote(item_id)}")
            .select(["vector"])
            .limit(None)
            .to_arrow()
        )
        return _vectors(rows.column("vector"))

    def vectors_by_hash(self, space: str, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Vectors of already indexed items with these content hashes (exact duplicates)."""
        wanted = sorted(set(hashes))
        if not wanted:
            return {}
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(wanted), _ID_CHUNK):
            chunk = wanted[start : start + _ID_CHUNK]
            rows = (
                self._items.search()
                .where(f"content_hash IN {_in_list(chunk)} AND status = '{INDEXED}'")
                .select(["id", "content_hash"])
                .limit(None)
                .to_arrow()
                .to_pylist()
            )
            by_item = {row["id"]: row["content_hash"] for row in rows}
            if not by_item:
                continue
            segments = (
                self._segments(space)
                .search()
                .where(f"item_id IN {_in_list(list(by_item))}")
                .select(["item_id", "vector"])
                .limit(None)
                .to_arrow()
            )
            vectors = _vectors(segments.column("vector"))
            for item_id, vector in zip(
                segments.column("item_id").to_pylist(), vectors, strict=True
            ):
                found.setdefault(by_item[item_id], vector)
        return found

    def remove_orphan_segments(self, space: str) -> int:
        """Delete segments whose item row is missing (left by an interrupted run)."""
        # Only the item_id column: reading the whole table would load every vector.
        item_ids = self._segments(space).search().select(["item_id"]).limit(None).to_arrow()
        segment_items = set(item_ids.column("item_id").to_pylist())
        known = set(self.items_table(["id"]).column("id").to_pylist())
        orphans = sorted(segment_items - known)
        if orphans:
            self.delete_segments(space, orphans)
        return len(orphans)

    # -- versions and upkeep ------------------------------------------------
    def version(self, space: str) -> tuple[int, int]:
        """(items version, segments version): changes whenever anything a query reads changes.

        Asking LanceDB costs ~0.4 ms a table (a round trip through its event loop
        thread), which every query pays. A commit adds a manifest to the table's
        `_versions` folder and so changes the folder's mtime; while neither folder's
        mtime changed, the version cannot have changed either. Folders modified within
        the last MTIME_MARGIN are always re-read, because a filesystem's mtime clock
        ticks coarsely and a second commit in the same tick would leave it unchanged.
        """
        token = self._change_token(space)
        cached = self._versions.get(space)
        if token is not None and cached is not None and cached[0] == token:
            return cached[1]
        version = (self._items.version, self._segments(space).version)
        if token is not None and time.time_ns() - max(token) > MTIME_MARGIN_NS:
            self._versions[space] = (token, version)
        return version

    def _change_token(self, space: str) -> tuple[int, int] | None:
        folders = self._version_folders.get(space)
        if folders is None:
            folders = self._version_folders[space] = tuple(
                str(self.path / "lance" / f"{name}.lance" / "_versions")
                for name in (ITEMS, segments_table_name(space))
            )
        try:
            return (os.stat(folders[0]).st_mtime_ns, os.stat(folders[1]).st_mtime_ns)
        except OSError:  # not a local folder layout we know: always ask LanceDB
            return None

    def table_versions(self) -> dict[str, int]:
        tables = {ITEMS: self._items}
        for space in self.spaces():
            tables[segments_table_name(space.name)] = self._segments(space.name)
        return {name: table.version for name, table in tables.items()}

    def compact(self) -> None:
        """Merge the small fragments that batched writes leave behind."""
        tables = [self._items] + [self._segments(s.name) for s in self.spaces()]
        for table in tables:
            table.optimize(cleanup_older_than=timedelta(days=1))


def _vectors(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    dim = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def item_from_row(row: dict[str, Any]) -> ItemRecord:
    fields = {k: row[k] for k in ItemRecord.__dataclass_fields__ if k in row}
    fields["kind"] = MediaKind(fields["kind"])
    fields["metadata"] = json.loads(row.get("metadata") or "{}")
    for key in ("bytes", "mtime_ns", "width", "height"):
        fields[key] = int(fields.get(key) or 0)
    for key in ("content_hash", "error", "root"):
        fields[key] = fields.get(key) or ""
    return ItemRecord(**fields)
