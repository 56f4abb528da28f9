"""The LanceDB store: media items, segments with vectors per space, and spaces.

LanceDB is the source of truth. Every write is one LanceDB commit, so a crash
leaves each table at its last committed version. Segments are written before
their items: a segment whose item row is missing is an orphan from an
interrupted run, ignored by queries and removed by the next `index` run.

One process writes at a time (writer_lock.py): every write method holds the data
directory's writer lock, and a run holds it from its plan to its last commit with
`writing()`. Stores written before that lock existed can hold duplicate rows of an
item or a segment; readers tolerate them (the space snapshot keeps one of each) and
the next write run repairs them (`repair_duplicates`). A table Lance cannot read is
reported as StoreDamagedError, one line naming the table and `xmodal repair`
(repair.py).
"""

from __future__ import annotations

import copy
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from xmodal.search.errors import (
    ModelMismatchError,
    StoreDamagedError,
    StoreError,
    UnknownItemError,
    XmodalError,
)
from xmodal.search.media.kinds import MediaKind

from .locations import leaves_roots, original_path
from .media_store import MediaStore
from .records import (
    CATALOG_ROOT,
    INDEXED,
    ItemRecord,
    LedgerEntry,
    SegmentRecord,
    SpaceRecord,
    catalog_item_id,
)
from .schema import (
    ITEMS,
    ITEMS_SCHEMA,
    LEDGER_SCHEMA,
    META,
    META_SCHEMA,
    ROOTS,
    ROOTS_SCHEMA,
    SPACES,
    SPACES_SCHEMA,
    STORE_FORMAT,
    FragmentTarget,
    ledger_table_name,
    segments_arrow,
    segments_schema,
    segments_table_name,
)
from .writer_lock import DEFAULT_WAIT_SECONDS, WriterHolder, WriterLock

_ID_CHUNK = 2000  # ids per SQL IN list
# Coarse filesystem clocks tick every few ms; a folder changed more recently than this
# may change again without its mtime moving.
MTIME_MARGIN_NS = 100_000_000
# mtime_ns of an item whose vectors must be embedded again: no file has it, so the next
# run sees the file as changed, and with its content hash cleared it is embedded again
# rather than "touched" (repairs mark items whose segments are in doubt).
STALE_MTIME_NS = -1
CORE_TABLES = (ITEMS, SPACES, ROOTS, META)
# Marks the name of a space that queries do not read: "image-text@next", a migration's
# space being built, and "image-text@previous", the one it replaced.
STAGED_MARK = "@"


def sql_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _in_list(ids: Sequence[str]) -> str:
    return "(" + ", ".join(sql_quote(i) for i in ids) + ")"


@dataclass(frozen=True)
class DuplicateRepair:
    """What `Store.repair_duplicates` found and mended."""

    item_rows: int = 0  # surplus item rows removed (one row per id is kept)
    segment_rows: int = 0  # surplus segment rows removed, all spaces together
    items: int = 0  # items concerned: marked to be embedded again by the next run

    def __bool__(self) -> bool:
        return bool(self.item_rows or self.segment_rows)


def damage_cause(error: BaseException) -> str:
    """The first line of a Lance error, without the Rust source location it ends with."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    for marker in (", /rustc/", ", /root/", ", /home/", ", src/"):
        text = text.split(marker)[0]
    return text if len(text) <= 160 else text[:157] + "..."


def is_lance_failure(error: BaseException) -> bool:
    """An error Lance raised reading or writing a table (not one of ours, not Ctrl-C):
    Python exceptions, and the PanicException a Rust panic becomes (a BaseException)."""
    if isinstance(error, XmodalError | KeyboardInterrupt | SystemExit | GeneratorExit):
        return False
    return isinstance(error, Exception) or type(error).__name__ == "PanicException"


class Store:
    """A data directory holding xmodal's LanceDB tables.

    `writer_wait`: seconds a write waits for another process's writer lock when the
    caller did not take it with `writing()` first."""

    def __init__(self, path: str | Path, writer_wait: float = DEFAULT_WAIT_SECONDS):
        import lancedb

        self.path = Path(path).expanduser()
        self.writer_wait = writer_wait
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # Readers must see other processes' commits (an indexer writing while the API
            # serves): re-check the table version on every read.
            self._db = lancedb.connect(self.path / "lance", read_consistency_interval=timedelta(0))
        except OSError as error:
            raise StoreError(f"cannot open data directory {self.path}: {error}") from error
        self.writer = WriterLock.shared(self.path)
        self.media = MediaStore(self.path / "media")  # catalog items' media, by content hash
        if not set(CORE_TABLES) <= set(self._table_names()):
            with self.writing():  # a new data directory: one process creates the tables
                names = set(self._table_names())
                for name, schema in zip(
                    CORE_TABLES,
                    (ITEMS_SCHEMA, SPACES_SCHEMA, ROOTS_SCHEMA, META_SCHEMA),
                    strict=True,
                ):
                    if name not in names:
                        self._db.create_table(name, schema=schema, exist_ok=True)
        self._items = self._open(ITEMS)
        self._spaces = self._open(SPACES)
        self._roots = self._open(ROOTS)
        self._meta = self._open(META)
        self._check_format()
        # Caches keyed by table name (not space name: a space's table changes when a
        # migration switches it), shared with the store's pinned copies (`pinned`).
        self._segment_tables: dict[str, Any] = {}
        self._version_folders: dict[str, tuple[str, ...]] = {}
        self._versions: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}
        self._space_cache: list[tuple[int, list[SpaceRecord]]] = []  # (mtime token, rows)
        self._pins: dict[str, str] = {}  # space -> the table it reads, whatever its row says

    # -- the writer lock and damage -------------------------------------
    def writing(
        self,
        wait: float | None = None,
        on_wait: Callable[[WriterHolder | None], None] | None = None,
    ) -> AbstractContextManager[None]:
        """Hold the data directory's writer lock for a block (re-entrant): a run that
        plans from what it reads must hold it from the plan to its last commit.
        `wait`: seconds to wait for another writer (default: writer_wait; 0: not at
        all); `on_wait` hears once who it waits for. Raises WriterBusyError."""
        return self.writer.holding(self.writer_wait if wait is None else wait, on_wait)

    @contextmanager
    def _reading(self, table: str) -> Iterator[None]:
        """Turn Lance's failure to read a table into one line naming it and the way out."""
        try:
            yield
        except BaseException as error:
            if not is_lance_failure(error):
                raise
            raise StoreDamagedError(
                f"the {table} table in {self.path} is damaged or unreadable "
                f"({damage_cause(error)}); run `xmodal repair --data {self.path}` to restore "
                "its last good version",
                table,
            ) from error

    def reading(self, table: str) -> AbstractContextManager[None]:
        """For readers of a table outside this class (Lance datasets, `dataset`): its
        damage is reported as StoreDamagedError naming it, as the store's own reads do."""
        return self._reading(table)

    @contextmanager
    def _writing(self, table: str) -> Iterator[None]:
        """A write: under the writer lock, and a damaged table named as on reads."""
        with self.writing(), self._reading(table):
            yield

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

    def _open(self, name: str) -> Any:
        with self._reading(name):
            return self._db.open_table(name)

    def _check_format(self) -> None:
        with self._reading(META):
            rows = self._meta.search().where("key = 'format'").to_list()
        if not rows:
            with self._writing(META):
                if not self._meta.search().where("key = 'format'").to_list():
                    self._meta.add([{"key": "format", "value": str(STORE_FORMAT)}])
            return
        found = int(rows[0]["value"])
        if found > STORE_FORMAT:
            raise StoreError(
                f"{self.path} was written by a newer xmodal (store format {found}, this one "
                f"reads {STORE_FORMAT}); upgrade xmodal"
            )
        if found < STORE_FORMAT:
            with self._writing(META):
                self._migrate(found)

    def _migrate(self, found: int) -> None:
        """Bring an older store up to STORE_FORMAT, one step at a time."""
        names = self._items.schema.names
        if found < 2 and "duration" not in names:
            self._items.add_columns({"duration": "CAST(NULL AS DOUBLE)"})
        if found < 3:
            added = {
                "external_id": "CAST(NULL AS STRING)",
                "source_etag": "CAST('' AS STRING)",
                "source_modified": "CAST('' AS STRING)",
            }
            missing = {name: sql for name, sql in added.items() if name not in names}
            if missing:
                self._items.add_columns(missing)
        self._meta.update(where="key = 'format'", values={"value": str(STORE_FORMAT)})

    @property
    def format_version(self) -> int:
        return STORE_FORMAT

    # -- spaces ----------------------------------------------------------
    def _space_records(self) -> list[SpaceRecord]:
        """Every row of the spaces table, one per name. Read again only when the table
        changed, which its `_versions` folder's mtime tells for a stat (as in `version`):
        queries resolve their space's table through it."""
        token = _mtime_ns(self.path / "lance" / f"{SPACES}.lance" / "_versions")
        cached = self._space_cache[0] if self._space_cache else None
        if token is not None and cached is not None and cached[0] == token:
            return cached[1]
        with self._reading(SPACES):
            rows = self._spaces.to_arrow().to_pylist()
        records: dict[str, SpaceRecord] = {}  # by name: a racing older version wrote two
        for r in rows:
            records.setdefault(
                r["name"],
                SpaceRecord(
                    r["name"],
                    r["model_spec"],
                    r["model_identity"],
                    int(r["dim"]),
                    r.get("segments_table") or segments_table_name(r["name"]),
                ),
            )
        found = list(records.values())
        if token is not None and time.time_ns() - token > MTIME_MARGIN_NS:
            self._space_cache[:] = [(token, found)]
        return found

    def spaces(self) -> list[SpaceRecord]:
        """The spaces queries read (a migration's "@next" and "@previous" are not)."""
        return [s for s in self._space_records() if STAGED_MARK not in s.name]

    def all_spaces(self) -> list[SpaceRecord]:
        """Every space, a migration's staged ones ("image-text@next") included."""
        return list(self._space_records())

    def space(self, name: str) -> SpaceRecord | None:
        return next((s for s in self._space_records() if s.name == name), None)

    def bind_space(self, name: str, model_spec: str, model_identity: str, dim: int) -> SpaceRecord:
        """Create the space, or check that it was built with this very model."""
        existing = self.space(name)
        if existing is None:
            with self.writing():
                existing = self.space(name)  # another writer may have bound it meanwhile
                if existing is None:
                    return self.add_space(
                        SpaceRecord(
                            name, model_spec, model_identity, dim, segments_table_name(name)
                        )
                    )
        if existing.model_identity != model_identity or existing.dim != dim:
            raise ModelMismatchError(
                f"the {name} space in {self.path} was built with {existing.model_spec} "
                f"({existing.model_identity}, {existing.dim}-d), not {model_spec} "
                f"({model_identity}, {dim}-d). Use --model {existing.model_spec} with this store, "
                "or index into a new --data directory to use the other model "
                "(or move this store to it: `xmodal migrate --model ...`)."
            )
        return existing

    def add_space(self, record: SpaceRecord) -> SpaceRecord:
        """Create a space: its segments table (one left by an interrupted attempt is
        kept), then its row. StoreError when a space of that name exists."""
        with self.writing():
            if self.space(record.name) is not None:
                raise StoreError(f"the space {record.name} exists already in {self.path}")
            table = record.segments_table
            with self._writing(table):
                self._db.create_table(table, schema=segments_schema(record.dim), exist_ok=True)
            with self._writing(SPACES):
                self._spaces.add([record.__dict__])
        return record

    def set_spaces(self, rows: Sequence[SpaceRecord], remove: Sequence[str] = ()) -> None:
        """Write these space rows (a row of the same name is replaced) and delete the
        rows named in `remove`, in one commit of the spaces table: a reader sees all of
        it or nothing, and a crash leaves the spaces as they were (a migration's switch)."""
        if not rows:
            if remove:
                with self._writing(SPACES):
                    self._spaces.delete(f"name IN {_in_list(remove)}")
            return
        data = pa.Table.from_pylist([r.__dict__ for r in rows], schema=SPACES_SCHEMA)
        merge = self._spaces.merge_insert("name").when_matched_update_all()
        merge = merge.when_not_matched_insert_all()
        if remove:
            merge = merge.when_not_matched_by_source_delete(f"name IN {_in_list(remove)}")
        with self._writing(SPACES):
            merge.execute(data)

    def forget_empty_space(self, space: str) -> bool:
        """Remove a space that holds no segment, with its table: one a run bound and
        could not fill (its model did not load where it runs). False, and nothing
        changed, when the space holds segments or does not exist."""
        record = self.space(space)
        if record is None or self.count_segments(space) > 0:
            return False
        self.set_spaces([], remove=[space])
        self.drop_table(record.segments_table)
        return True

    def drop_table(self, name: str) -> bool:
        """Delete a segments table no space names any more (a migration's old or
        abandoned one), or a ledger; False when there was none."""
        if name in CORE_TABLES or name in {s.segments_table for s in self.all_spaces()}:
            raise StoreError(f"the table {name} is in use in {self.path}: not dropped")
        with self._writing(name):
            if name not in self._table_names():
                return False
            self._db.drop_table(name)
        self._segment_tables.pop(name, None)
        self._versions.pop(name, None)
        return True

    def segments_table_of(self, space: str) -> str:
        """The name of the LanceDB table holding a space's segments: the one its row in
        the spaces table names (a migration's switch points it to another), or the one
        this store is pinned to (`pinned`)."""
        pinned = self._pins.get(space)
        if pinned is not None:
            return pinned
        record = self.space(space)
        return record.segments_table if record is not None else segments_table_name(space)

    def pinned(self, space: str) -> Store:
        """This store with `space` read from the table it resolves to now, whatever the
        spaces table says later: an engine's space answers from the vectors of its own
        model until a new one replaces it after a migration's switch (search/engine.py).
        Shares everything else (connection, caches, writer lock) with this store."""
        view = copy.copy(self)
        view._pins = {**self._pins, space: self.segments_table_of(space)}
        return view

    def _segments(self, space: str, table: str | None = None) -> Any:
        """The open segments table of a space (`table`: its name, already resolved)."""
        name = table or self.segments_table_of(space)
        handle = self._segment_tables.get(name)
        if handle is None:
            if name not in self._table_names():
                raise StoreError(f"space {space!r} does not exist in {self.path}")
            handle = self._segment_tables[name] = self._open(name)
        return handle

    # -- a migration's ledger (search/store/migration.py) ------------------
    def ledger(self, segments_table: str) -> dict[str, LedgerEntry]:
        """What a migration embedded into a segments table, by item id ({} when none)."""
        name = ledger_table_name(segments_table)
        table = self._ledger_table(name)
        if table is None:
            return {}
        with self._reading(name):
            rows = table.to_arrow().to_pylist()
        return {
            r["item_id"]: LedgerEntry(
                r["item_id"], r["content_hash"] or "", int(r["segments"] or 0), r["error"] or ""
            )
            for r in rows
        }

    def record_ledger(
        self, segments_table: str, entries: Sequence[LedgerEntry], replace: bool = False
    ) -> None:
        """Add or replace these items' entries in a segments table's ledger (`replace`:
        the ledger becomes exactly `entries`)."""
        name = ledger_table_name(segments_table)
        data = pa.Table.from_pylist([e.__dict__ for e in entries], schema=LEDGER_SCHEMA)
        with self._writing(name):
            if name not in self._table_names():
                self._db.create_table(name, data=data, schema=LEDGER_SCHEMA)
            elif replace:
                self._db.create_table(name, data=data, schema=LEDGER_SCHEMA, mode="overwrite")
            elif entries:
                table = self._db.open_table(name)
                table.merge_insert(
                    "item_id"
                ).when_matched_update_all().when_not_matched_insert_all().execute(data)

    def ledger_version(self, segments_table: str) -> int | None:
        """The version of a segments table's ledger; None when it has none."""
        name = ledger_table_name(segments_table)
        table = self._ledger_table(name)
        if table is None:
            return None
        with self._reading(name):
            return int(table.version)

    def _ledger_table(self, name: str) -> Any:
        """A ledger table, or None when there is none: also when a switch dropped it
        between the listing and the opening (a status read racing a migration's end)."""
        if name not in self._table_names():
            return None
        try:
            return self._db.open_table(name)
        except Exception as error:
            if "not found" in str(error).lower() or "does not exist" in str(error).lower():
                return None
            raise

    def forget_ledger(self, segments_table: str, item_ids: Sequence[str]) -> None:
        """Remove these items' entries from a segments table's ledger."""
        name = ledger_table_name(segments_table)
        if not item_ids or name not in self._table_names():
            return
        table = self._db.open_table(name)
        for start in range(0, len(item_ids), _ID_CHUNK):
            with self._writing(name):
                table.delete(f"item_id IN {_in_list(item_ids[start : start + _ID_CHUNK])}")

    # -- roots -----------------------------------------------------------
    def roots(self) -> list[str]:
        with self._reading(ROOTS):
            paths = [r["path"] for r in self._roots.to_arrow().to_pylist()]
        return list(dict.fromkeys(paths))

    def original_path(self, item: ItemRecord) -> Path:
        """The item's file: a catalog item's kept media, or a file checked against the
        indexed roots (see locations.original_path)."""
        if item.root == CATALOG_ROOT:
            return self.media.existing(item.content_hash)
        return original_path(item.id, item.uri, self.roots())

    def leaves_roots(self, item: ItemRecord) -> bool:
        """Whether the item's file lies outside the indexed roots (see locations)."""
        return item.root != CATALOG_ROOT and leaves_roots(item.uri, self.roots())

    def add_root(self, path: str) -> None:
        with self._writing(ROOTS):
            if path not in self.roots():
                self._roots.add([{"path": path}])

    # -- items -----------------------------------------------------------
    def item(self, item_id: str) -> ItemRecord:
        with self._reading(ITEMS):
            rows = self._items.search().where(f"id = {sql_quote(item_id)}").limit(1).to_list()
        if not rows:
            raise UnknownItemError(item_id)
        return item_from_row(rows[0])

    def find_item(self, name: str) -> ItemRecord:
        """An item by either id: the caller's own (`external_id`) or xmodal's. A name
        that is both (one item's SKU, another's id) means the SKU."""
        candidates = [catalog_item_id(name), name]
        with self._reading(ITEMS):
            rows = self._items.search().where(f"id IN {_in_list(candidates)}").limit(None).to_list()
        for wanted in candidates:
            for row in rows:
                if row["id"] == wanted:
                    return item_from_row(row)
        raise UnknownItemError(name)

    def items(self, item_ids: Sequence[str]) -> dict[str, ItemRecord]:
        found: dict[str, ItemRecord] = {}
        for start in range(0, len(item_ids), _ID_CHUNK):
            chunk = item_ids[start : start + _ID_CHUNK]
            with self._reading(ITEMS):
                rows = self._items.search().where(f"id IN {_in_list(chunk)}").limit(None).to_list()
            found.update((row["id"], item_from_row(row)) for row in rows)
        return found

    def items_table(self, columns: Sequence[str] | None = None) -> pa.Table:
        """All item rows as Arrow (for diffing, filters and `info`)."""
        with self._reading(ITEMS):
            table = self._items.to_arrow()
        return table.select(list(columns)) if columns else table

    def item_ids_matching(
        self, spec: dict[str, Any] | None, status: str | None = INDEXED
    ) -> list[str]:
        """Ids of the items (with this status) a filter selects, each once, in no set
        order: by a LanceDB query when the filter translates to SQL (item fields only),
        else evaluated over the items table (search/filters.py; metadata keys)."""
        # The filter language reads ItemRecord's declarations from this package.
        from xmodal.search.filters import ItemTable, filter_to_sql, validate_filter

        spec = validate_filter(spec)
        where = filter_to_sql(spec)
        if where is not None:
            if status is not None:
                where = f"status = {sql_quote(status)} AND ({where})"
            with self._reading(ITEMS):
                ids = self._items.search().where(where).select(["id"]).limit(None).to_arrow()
            return list(dict.fromkeys(ids.column("id").to_pylist()))
        items = self.items_table()
        if status is not None:
            items = items.filter(pc.equal(items.column("status"), status))
        mask = ItemTable.of(items).matching(spec)
        matched = items.column("id").filter(pa.array(mask)).to_pylist()
        return list(dict.fromkeys(matched))

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
        with self._writing(ITEMS):
            self._items.merge_insert(
                "id"
            ).when_matched_update_all().when_not_matched_insert_all().execute(data)

    def delete_items(self, item_ids: Sequence[str]) -> None:
        """Remove items and their segments in every space (segments first), and the
        kept media no other catalog item holds."""
        held = {r.content_hash for r in self.items(item_ids).values() if r.root == CATALOG_ROOT}
        for space in self.all_spaces():
            self.delete_segments(space.name, item_ids)
        for start in range(0, len(item_ids), _ID_CHUNK):
            with self._writing(ITEMS):
                self._items.delete(f"id IN {_in_list(item_ids[start : start + _ID_CHUNK])}")
        self.prune_media(held)

    def prune_media(self, content_hashes: Iterable[str]) -> int:
        """Remove the kept media of these hashes that no catalog item holds any more."""
        wanted = sorted({h for h in content_hashes if h})
        still_held: set[str] = set()
        for start in range(0, len(wanted), _ID_CHUNK):
            chunk = _in_list(wanted[start : start + _ID_CHUNK])
            with self._reading(ITEMS):
                rows = (
                    self._items.search()
                    .where(f"content_hash IN {chunk} AND root = {sql_quote(CATALOG_ROOT)}")
                    .select(["content_hash"])
                    .limit(None)
                    .to_arrow()
                )
            still_held.update(rows.column("content_hash").to_pylist())
        return self.media.discard(set(wanted) - still_held)

    def count_items(self, status: str | None = INDEXED) -> int:
        """Item rows (with this status); a store written before the writer lock may
        count an item twice until its next write run."""
        with self._reading(ITEMS):
            return int(
                self._items.count_rows(None if status is None else f"status = {sql_quote(status)}")
            )

    # -- segments --------------------------------------------------------
    def upsert_segments(self, space: str, segments: Sequence[SegmentRecord]) -> None:
        if not segments:
            return
        data = segments_arrow(segments)
        dim = int(data.schema.field("vector").type.list_size)
        name = self.segments_table_of(space)
        table = self._segments(space, name)
        with self._writing(name):
            self._check_dim(space, table, dim)
            table.merge_insert(
                "id"
            ).when_matched_update_all().when_not_matched_insert_all().execute(data)

    @staticmethod
    def _check_dim(space: str, table: Any, dim: int) -> None:
        held = int(table.schema.field("vector").type.list_size)
        if held != dim:
            # The space moved to another model (a migration's switch) while these
            # vectors were embedded with the old one: refuse them, clearly.
            raise ModelMismatchError(
                f"the {space} space now holds {held}-d vectors (its model changed, "
                f"e.g. a migration's switch), not {dim}-d ones: write again"
            )

    # -- segments written elsewhere (Ray workers) ---------------------------------
    def fragment_target(self, space: str) -> FragmentTarget:
        """Where other processes write a space's segment rows as uncommitted Lance
        fragments (indexer/fragments.py); `append_fragments` commits them. The data
        directory must be at the same path for them (a shared file system)."""
        name = self.segments_table_of(space)
        dataset = self.dataset(name)
        dim = int(dataset.schema.field("vector").type.list_size)
        return FragmentTarget(space, dataset.uri, dim, str(dataset.data_storage_version))

    def append_fragments(self, space: str, fragments: Sequence[str], dim: int) -> None:
        """Commit fragments of segment rows written by other processes (JSON, as
        lance's FragmentMetadata.to_json gives them), all in one commit. Rows are added,
        not merged on their ids: the caller deleted the rows they replace first."""
        if not fragments:
            return
        import lance
        from lance.fragment import FragmentMetadata

        name = self.segments_table_of(space)
        with self._writing(name):
            self._check_dim(space, self._segments(space, name), dim)
            dataset = self.dataset(name)
            lance.LanceDataset.commit(
                dataset.uri,
                lance.LanceOperation.Append([FragmentMetadata.from_json(f) for f in fragments]),
                read_version=dataset.version,
            )

    def delete_segments(self, space: str, item_ids: Sequence[str]) -> None:
        name = self.segments_table_of(space)
        table = self._segments(space, name)
        for start in range(0, len(item_ids), _ID_CHUNK):
            with self._writing(name):
                table.delete(f"item_id IN {_in_list(item_ids[start : start + _ID_CHUNK])}")

    def count_segments(self, space: str) -> int:
        name = self.segments_table_of(space)
        with self._reading(name):
            return int(self._segments(space, name).count_rows())

    def segments_table(self, space: str) -> pa.Table:
        """All segments of a space (ids, spans, vectors) as Arrow."""
        name = self.segments_table_of(space)
        with self._reading(name):
            return self._segments(space, name).to_arrow()

    def segment_batches(
        self,
        space: str,
        columns: Sequence[str],
        batch_rows: int = 65_536,
        version: int | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """A space's segments, `columns` only, in record batches of at most `batch_rows`
        rows, so that a caller never holds every vector at once (export.py). `version`:
        that version of the segments table (see segments_version), not the latest."""
        name = self.segments_table_of(space)
        table = self._segments(space, name)
        with self._reading(name):
            if version is not None:
                # A handle of its own: checking out the shared one would pin every reader.
                table = self._db.open_table(name)
                table.checkout(version)
            reader = table.search().select(list(columns)).limit(None).to_batches(batch_rows)
            yield from reader

    def dataset(self, table: str, version: int | None = None) -> Any:
        """A Lance dataset of one table, at `version` or the latest: readers that apply a
        new version from its changed fragments (search/space/snapshot.py) read through it."""
        import lance

        with self._reading(table):
            return lance.dataset(str(self.path / "lance" / f"{table}.lance"), version=version)

    def segments_version(self, space: str) -> int:
        """The segments table's current version (one LanceDB commit each)."""
        name = self.segments_table_of(space)
        with self._reading(name):
            return int(self._segments(space, name).version)

    def item_vectors(self, space: str, item_id: str) -> np.ndarray:
        """(n, dim) vectors of one item's segments in a space."""
        name = self.segments_table_of(space)
        with self._reading(name):
            rows = (
                self._segments(space, name)
                .search()
                .where(f"item_id = {sql_quote(item_id)}")
                .select(["id", "vector"])
                .limit(None)
                .to_arrow()
            )
        if pc.count_distinct(rows.column("id")).as_py() < rows.num_rows:
            rows = rows.take(pa.array(last_of_each(rows.column("id"))))
        return vector_matrix(rows.column("vector"))

    def vectors_by_hash(self, space: str, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Vectors of already indexed items with these content hashes (exact duplicates)."""
        wanted = sorted(set(hashes))
        if not wanted:
            return {}
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(wanted), _ID_CHUNK):
            chunk = wanted[start : start + _ID_CHUNK]
            with self._reading(ITEMS):
                rows = (
                    self._items.search()
                    .where(
                        f"content_hash IN {_in_list(chunk)} AND status = '{INDEXED}' "
                        f"AND mtime_ns <> {STALE_MTIME_NS}"
                    )
                    .select(["id", "content_hash"])
                    .limit(None)
                    .to_arrow()
                    .to_pylist()
                )
            by_item = {row["id"]: row["content_hash"] for row in rows}
            if not by_item:
                continue
            name = self.segments_table_of(space)
            with self._reading(name):
                segments = (
                    self._segments(space, name)
                    .search()
                    .where(f"item_id IN {_in_list(list(by_item))}")
                    .select(["item_id", "vector"])
                    .limit(None)
                    .to_arrow()
                )
            vectors = vector_matrix(segments.column("vector"))
            for item_id, vector in zip(
                segments.column("item_id").to_pylist(), vectors, strict=True
            ):
                found.setdefault(by_item[item_id], vector)
        return found

    def segment_item_ids(self, space: str) -> list[str]:
        """The item id of every segment of a space (repeated per segment)."""
        # Only the item_id column: reading the whole table would load every vector.
        name = self.segments_table_of(space)
        with self._reading(name):
            item_ids = (
                self._segments(space, name).search().select(["item_id"]).limit(None).to_arrow()
            )
        return item_ids.column("item_id").to_pylist()

    def remove_orphan_segments(self, space: str) -> int:
        """Delete segments whose item row is missing (left by an interrupted run)."""
        segment_items = set(self.segment_item_ids(space))
        known = set(self.items_table(["id"]).column("id").to_pylist())
        orphans = sorted(segment_items - known)
        if orphans:
            self.delete_segments(space, orphans)
        return len(orphans)

    # -- duplicates left by writers racing before the writer lock ----------
    def repair_duplicates(self) -> DuplicateRepair:
        """Keep one row per item id (the newest) and per segment id, in every table.

        Items that had duplicate rows of either kind are marked to be embedded again
        (STALE_MTIME_NS), because which copy of their segments belongs to which copy of
        their row cannot be told: the next run re-embeds them and replaces their segments.
        Order of commits, crash-safe at each step: the items' rows are replaced first
        (marked), then their segments; a crash in between leaves marked items, which the
        next run re-embeds anyway."""
        with self.writing():
            with self._reading(ITEMS):
                items = self._items.to_arrow()
            surplus_items = _surplus(items.column("id"))
            affected = set(items.column("id").take(pa.array(surplus_items)).to_pylist())
            segment_surplus: dict[str, int] = {}
            for space in self.all_spaces():
                name = space.segments_table
                with self._reading(name):
                    ids = (
                        self._segments(space.name, name)
                        .search()
                        .select(["id", "item_id"])
                        .limit(None)
                        .to_arrow()
                    )
                extra = _surplus(ids.column("id"))
                if len(extra):
                    segment_surplus[space.name] = len(extra)
                    affected.update(ids.column("item_id").take(pa.array(extra)).to_pylist())
            if not affected:
                return DuplicateRepair()
            self._replace_item_rows(items, sorted(affected))
            for space in self.all_spaces():
                if space.name in segment_surplus:
                    self._dedupe_segments(space.name, sorted(affected))
            return DuplicateRepair(len(surplus_items), sum(segment_surplus.values()), len(affected))

    def _replace_item_rows(self, items: pa.Table, item_ids: list[str]) -> None:
        """Replace all rows of these items by their newest one, marked stale."""
        wanted = pc.is_in(items.column("id"), value_set=pa.array(item_ids))
        rows = items.filter(wanted)
        kept = rows.take(pa.array(newest_of_each(rows.column("id"), rows.column("indexed_at"))))
        stale = {"mtime_ns": pa.array([STALE_MTIME_NS] * kept.num_rows, pa.int64())}
        stale["content_hash"] = pa.array([""] * kept.num_rows, pa.string())
        for column, values in stale.items():
            at = kept.schema.get_field_index(column)
            kept = kept.set_column(
                at, kept.schema.field(at), values.cast(kept.schema.field(at).type)
            )
        kept = kept.cast(ITEMS_SCHEMA)
        for start in range(0, len(item_ids), _ID_CHUNK):
            with self._writing(ITEMS):
                self._items.delete(f"id IN {_in_list(item_ids[start : start + _ID_CHUNK])}")
        with self._writing(ITEMS):
            self._items.add(kept)

    def _dedupe_segments(self, space: str, item_ids: list[str]) -> None:
        name = self.segments_table_of(space)
        table = self._segments(space, name)
        rows = []
        for start in range(0, len(item_ids), _ID_CHUNK):
            chunk = _in_list(item_ids[start : start + _ID_CHUNK])
            with self._reading(name):
                rows.append(table.search().where(f"item_id IN {chunk}").limit(None).to_arrow())
        found = pa.concat_tables(rows)
        kept = found.take(pa.array(last_of_each(found.column("id"))))
        self.delete_segments(space, item_ids)
        with self._writing(name):
            table.add(kept.cast(table.schema))

    def mark_stale(self, item_ids: Sequence[str]) -> int:
        """Mark items to be embedded again by the next run (their segments are in doubt,
        e.g. after `xmodal repair` restored an older segments table). Returns how many."""
        marked = 0
        for start in range(0, len(item_ids), _ID_CHUNK):
            chunk = _in_list(item_ids[start : start + _ID_CHUNK])
            with self._writing(ITEMS):
                marked += int(self._items.count_rows(f"id IN {chunk}"))
                self._items.update(
                    where=f"id IN {chunk}",
                    values={"mtime_ns": STALE_MTIME_NS, "content_hash": ""},
                )
        return marked

    # -- versions and upkeep ------------------------------------------------
    def version(self, space: str, table: str | None = None) -> tuple[int, int]:
        """(items version, segments version): changes whenever anything a query reads changes.
        `table`: that segments table rather than the one the space names now.

        Asking LanceDB costs ~0.4 ms a table (a round trip through its event loop
        thread), which every query pays. A commit adds a manifest to the table's
        `_versions` folder and so changes the folder's mtime; while neither folder's
        mtime changed, the version cannot have changed either. Folders modified within
        the last MTIME_MARGIN are always re-read, because a filesystem's mtime clock
        ticks coarsely and a second commit in the same tick would leave it unchanged.
        """
        name = table or self.segments_table_of(space)
        token = self._change_token(name)
        cached = self._versions.get(name)
        if token is not None and cached is not None and cached[0] == token:
            return cached[1]
        with self._reading(f"{ITEMS} or {name}"):
            version = (self._items.version, self._segments(space, name).version)
        if token is not None and time.time_ns() - max(token) > MTIME_MARGIN_NS:
            self._versions[name] = (token, version)
        return version

    def _change_token(self, table: str) -> tuple[int, int] | None:
        """mtimes of the items table's and a segments table's `_versions` folders."""
        folders = self._version_folders.get(table)
        if folders is None:
            folders = self._version_folders[table] = tuple(
                str(self.path / "lance" / f"{name}.lance" / "_versions") for name in (ITEMS, table)
            )
        try:
            return (os.stat(folders[0]).st_mtime_ns, os.stat(folders[1]).st_mtime_ns)
        except OSError:  # not a local folder layout we know: always ask LanceDB
            return None

    def table_versions(self) -> dict[str, int]:
        tables = {ITEMS: self._items}
        for space in self.all_spaces():
            tables[space.segments_table] = self._segments(space.name, space.segments_table)
        versions = {}
        for name, table in tables.items():
            with self._reading(name):
                versions[name] = table.version
        return versions

    def compact(self) -> None:
        """Merge the small fragments that batched writes leave behind."""
        tables = {ITEMS: self._items}
        for space in self.all_spaces():
            tables[space.segments_table] = self._segments(space.name, space.segments_table)
        for name, table in tables.items():
            with self._writing(name):
                _ensure_lookup_index(table, name)
                # Also brings the lookup indexes up to the rows written since.
                table.optimize(cleanup_older_than=timedelta(days=1))


# The columns rows are found by: without an index, finding an item by id (GET /items,
# by-id search of an item not served yet, upserts matching on id) scans the table, about
# 0.1 s at a million items; with one, a few ms. Rows written since the last compaction
# are scanned (few), and `compact` folds them in.
LOOKUP_COLUMNS = {ITEMS: ("id",), "segments": ("id", "item_id")}


def _ensure_lookup_index(table: Any, name: str) -> None:
    """BTREE indexes on a table's lookup columns, created once (cheap: 0.3 s at 1M)."""
    columns = LOOKUP_COLUMNS.get(name) or (
        LOOKUP_COLUMNS["segments"] if name.startswith("segments_") else ()
    )
    present = {tuple(index.columns) for index in table.list_indices()}
    for column in columns:
        if (column,) not in present:
            with warnings.catch_warnings():
                # lancedb 0.40 marks it deprecated in favour of an async-style API.
                warnings.simplefilter("ignore")
                table.create_scalar_index(column, index_type="BTREE")


def _mtime_ns(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:  # not a local folder layout we know: always ask LanceDB
        return None


def _surplus(ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Positions of the rows beyond the first of each id (empty when ids are unique)."""
    if pc.count_distinct(ids).as_py() == len(ids):
        return np.zeros(0, np.int64)
    first = set(last_of_each(ids).tolist())
    return np.array([i for i in range(len(ids)) if i not in first], np.int64)


def last_of_each(ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Positions of one row per id, the last one of each, in table order."""
    keys = pd.Index(ids.to_numpy(zero_copy_only=False))
    return np.flatnonzero(~keys.duplicated(keep="last"))


def newest_of_each(
    ids: pa.ChunkedArray | pa.Array, indexed_at: pa.ChunkedArray | pa.Array
) -> np.ndarray:
    """Positions of one row per id: the one indexed last (among equals, the last one),
    in table order. What a snapshot serves and what `repair_duplicates` keeps."""
    keys = ids.to_numpy(zero_copy_only=False)
    when = np.nan_to_num(
        np.asarray(indexed_at.to_numpy(zero_copy_only=False), dtype=np.float64), nan=0.0
    )
    order = np.lexsort((np.arange(len(keys)), when))  # by time, then position
    ranked = pd.Index(keys[order])
    chosen = order[~ranked.duplicated(keep="last")]
    return np.sort(chosen)


def vector_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """(rows, dim) numpy of a fixed-size-list vector column."""
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
    for key in ("content_hash", "error", "root", "source_etag", "source_modified"):
        fields[key] = fields.get(key) or ""
    return ItemRecord(**fields)
