"""`xmodal repair`: bring a damaged data directory back to the last state it can read.

A table Lance cannot read (a data file or a manifest truncated by a power cut or a full
disk) stops every reader with StoreDamagedError. Repair, under the writer lock:

1. reads each table in full at its newest version; a table that reads is left alone;
2. otherwise tries its older versions, newest first, until one reads in full, and
   restores it (a new version with that content: Lance's history is kept). A newest
   manifest that cannot even be opened is moved aside into `<data>/damaged/<time>/`
   first. When no version reads, the rows that can still be read are kept;
3. marks the items whose vectors may have been lost with the restored segments (those
   indexed after the restored version, and those left with no segment where their kind
   must have some) so the next `xmodal index` embeds them again; items lost with a
   restored items table are indexed again as new files by that run;
4. merges duplicated rows (Store.repair_duplicates) and removes saved vector indexes that
   do not load (rebuilt by the next run).

What was lost is reported per table: the rows the damaged version counted and the rows
kept.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from xmodal.search.errors import StoreError
from xmodal.search.media import kinds_in_space

from .records import INDEXED
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
    segments_schema,
    segments_table_name,
)
from .store import Store, damage_cause, is_lance_failure
from .writer_lock import DEFAULT_WAIT_SECONDS, WriterHolder, WriterLock

# Items indexed this long before a restored segments version are embedded again too: the
# version's timestamp and the items' clock may differ a little.
CLOCK_MARGIN_SECONDS = 300.0
_BATCH_ROWS = 16_384


@dataclass
class TableRepair:
    """What repair found in one table and did about it."""

    table: str
    state: str  # "ok", "restored", "salvaged" (rows read before the damage) or "emptied"
    cause: str = ""  # why the newest version did not read
    damaged_version: int | None = None
    restored_version: int | None = None  # the older version whose content was restored
    rows_before: int | None = None  # rows the damaged version counted, when it opened
    rows_after: int = 0
    restored_time: float = 0.0  # when the restored content was written (Unix seconds)
    set_aside: list[str] = field(default_factory=list)  # manifests moved to damaged/

    @property
    def rows_lost(self) -> int | None:
        return None if self.rows_before is None else max(0, self.rows_before - self.rows_after)


@dataclass
class RepairReport:
    tables: list[TableRepair] = field(default_factory=list)
    items_to_embed_again: int = 0  # marked: the next `xmodal index` embeds them again
    duplicate_item_rows: int = 0
    duplicate_segment_rows: int = 0
    indexes_removed: list[str] = field(default_factory=list)  # spaces whose save was dropped

    @property
    def damaged(self) -> list[TableRepair]:
        return [t for t in self.tables if t.state != "ok"]

    @property
    def changed(self) -> bool:
        return bool(
            self.damaged
            or self.items_to_embed_again
            or self.duplicate_item_rows
            or self.duplicate_segment_rows
            or self.indexes_removed
        )


def repair_store(
    data: Path,
    wait: float = DEFAULT_WAIT_SECONDS,
    on_wait: Callable[[WriterHolder | None], None] | None = None,
) -> RepairReport:
    """Repair the data directory `data` (see the module's docstring); holds its writer
    lock, waiting up to `wait` seconds for another writer."""
    data = Path(data).expanduser()
    if not (data / "lance").is_dir():
        raise StoreError(f"no xmodal store in {data} (no lance folder): nothing to repair")
    report = RepairReport()
    with WriterLock.shared(data).holding(wait, on_wait):
        restored_at: dict[str, float] = {}  # segments table -> restored version's time
        for name in _table_names(data):
            repair = _repair_table(data, name)
            report.tables.append(repair)
            if repair.state != "ok" and name.startswith("segments_"):
                restored_at[name] = repair.restored_time
        store = Store(data, writer_wait=wait)
        if any(t.state != "ok" for t in report.tables):
            report.items_to_embed_again = _mark_items_in_doubt(store, restored_at)
        duplicates = store.repair_duplicates()
        report.duplicate_item_rows = duplicates.item_rows
        report.duplicate_segment_rows = duplicates.segment_rows
        report.items_to_embed_again += duplicates.items
        report.indexes_removed = _drop_unreadable_indexes(store)
    return report


# -- one table -----------------------------------------------------------------------
def _table_names(data: Path) -> list[str]:
    folder = data / "lance"
    if not folder.is_dir():
        return []
    names = sorted(p.name[: -len(".lance")] for p in folder.iterdir() if p.suffix == ".lance")
    core = [n for n in (ITEMS, SPACES, ROOTS, META) if n in names]
    return core + [n for n in names if n not in core]


def _connect(data: Path) -> Any:
    import lancedb

    return lancedb.connect(data / "lance", read_consistency_interval=timedelta(0))


def _reads_fully(table: Any) -> tuple[bool, str, int]:
    """(whether every row of the checked-out version reads, why not, rows read)."""
    rows = 0
    try:
        for batch in table.search().limit(None).to_batches(_BATCH_ROWS):
            rows += batch.num_rows
    except BaseException as error:
        if not is_lance_failure(error):
            raise
        return False, damage_cause(error), rows
    return True, "", rows


def _repair_table(data: Path, name: str) -> TableRepair:
    repair = TableRepair(name, "ok")
    table = _open_newest(data, name, repair)
    if table is None:
        return _recreate_empty(data, name, repair)
    newest = int(table.version)
    reads, cause, rows = _reads_fully(table)
    if reads and not repair.set_aside:
        repair.rows_after = rows
        return repair
    repair.cause = repair.cause or cause
    repair.damaged_version = repair.damaged_version or newest
    if not repair.set_aside:  # the damaged version's own count (its manifest opened)
        repair.rows_before = _counted_rows(table)
    versions = sorted((int(v["version"]) for v in table.list_versions()), reverse=True)
    for version in versions:
        if version == newest and not reads:
            continue
        if version != newest:
            table.checkout(version)
            ok, _, rows = _reads_fully(table)
            if not ok:
                continue
        when = _version_time(table, version)
        if version != newest:
            table.restore()
        repair.state = "restored"
        repair.restored_version = version
        repair.rows_after = rows
        repair.restored_time = when
        return repair
    return _salvage(data, name, table, repair)


def _open_newest(data: Path, name: str, repair: TableRepair) -> Any:
    """The table at its newest version that opens; newer manifests that do not open are
    moved aside into `<data>/damaged/`. None when no manifest opens."""
    db = _connect(data)
    versions_folder = data / "lance" / f"{name}.lance" / "_versions"
    while True:
        try:
            table = db.open_table(name)
            table.count_rows()  # reads the manifest and the fragments' row counts
            return table
        except BaseException as error:
            if not is_lance_failure(error):
                raise
            repair.cause = repair.cause or damage_cause(error)
            manifests = _manifests_newest_first(versions_folder)
            if not manifests:
                return None
            version, newest = manifests[0]
            repair.damaged_version = repair.damaged_version or version
            repair.set_aside.append(_set_aside(data, newest))
            hint = versions_folder / "latest_version_hint.json"
            if hint.exists():
                _set_aside(data, hint)
            db = _connect(data)


def _manifests_newest_first(folder: Path) -> list[tuple[int, Path]]:
    """(version, manifest file) by version, newest first. Lance names a manifest by its
    version, or (V2 naming) by u64::MAX minus its version, so that names sort newest
    first."""
    found = []
    for path in folder.glob("*.manifest") if folder.is_dir() else []:
        try:
            number = int(path.stem)
        except ValueError:
            continue
        version = 2**64 - 1 - number if number >= 2**63 else number
        found.append((version, path))
    return sorted(found, reverse=True)


def _set_aside(data: Path, path: Path) -> str:
    """Move a damaged file under `<data>/damaged/<time>/`, keeping its relative path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = data / "damaged" / stamp / path.relative_to(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), str(target))
    return str(target.relative_to(data))


def _counted_rows(table: Any) -> int | None:
    try:
        return int(table.count_rows())
    except BaseException as error:
        if not is_lance_failure(error):
            raise
        return None


def _version_time(table: Any, version: int) -> float:
    for entry in table.list_versions():
        if int(entry["version"]) == version:
            stamp = entry["timestamp"]
            return float(stamp.timestamp()) if hasattr(stamp, "timestamp") else 0.0
    return 0.0


def _salvage(data: Path, name: str, table: Any, repair: TableRepair) -> TableRepair:
    """No version reads in full: keep the rows read before the damage, at the newest."""
    table.checkout_latest()
    kept: list[pa.RecordBatch] = []
    try:
        for batch in table.search().limit(None).to_batches(_BATCH_ROWS):
            kept.append(batch)
    except BaseException as error:
        if not is_lance_failure(error):
            raise
    schema = table.schema
    rows = pa.Table.from_batches(kept, schema=schema) if kept else schema.empty_table()
    _connect(data).create_table(name, data=rows, schema=schema, mode="overwrite")
    repair.state = "salvaged" if rows.num_rows else "emptied"
    repair.rows_after = rows.num_rows
    return repair


def _recreate_empty(data: Path, name: str, repair: TableRepair) -> TableRepair:
    """No manifest opens at all: an empty table of the same shape (everything in it is
    indexed again by the next run)."""
    schemas = {ITEMS: ITEMS_SCHEMA, SPACES: SPACES_SCHEMA, ROOTS: ROOTS_SCHEMA, META: META_SCHEMA}
    schema = schemas.get(name)
    if schema is None and name.startswith("ledger_"):
        schema = LEDGER_SCHEMA  # a migration's: it embeds again what the ledger lost
    if schema is None:
        schema = segments_schema(_space_dim(data, name))
    folder = data / "lance" / f"{name}.lance"
    if folder.exists():
        repair.set_aside.append(_set_aside(data, folder))
    _connect(data).create_table(name, schema=schema, mode="overwrite")
    repair.state = "emptied"
    return repair


def _space_dim(data: Path, table_name: str) -> int:
    spaces = _connect(data).open_table(SPACES).to_arrow().to_pylist()
    for row in spaces:
        if (row.get("segments_table") or segments_table_name(row["name"])) == table_name:
            return int(row["dim"])
    raise FileNotFoundError(f"no space in {data} owns the table {table_name}")


# -- what the restored tables mean for the items -------------------------------------------
def _mark_items_in_doubt(store: Store, restored_at: dict[str, float]) -> int:
    """Mark items whose segments may be gone: those indexed after (or just before) a
    restored segments version, and indexed items left with no segment in a space their
    kind always has segments in."""
    items = store.items_table(["id", "kind", "status", "indexed_at"]).to_pylist()
    indexed = [row for row in items if row["status"] == INDEXED]
    doubtful: set[str] = set()
    for space in store.spaces():
        table = space.segments_table
        with_segments = set(store.segment_item_ids(space.name))
        # A video may have no sound: only the kinds that always have segments here count.
        always = {k.value for k in kinds_in_space(space.name)}
        if space.name == "audio-text":
            always = {"audio"}
        since = restored_at.get(table)
        for row in indexed:
            if (row["kind"] in always and row["id"] not in with_segments) or (
                since is not None and (row["indexed_at"] or 0.0) >= since - CLOCK_MARGIN_SECONDS
            ):
                doubtful.add(row["id"])
    return store.mark_stale(sorted(doubtful)) if doubtful else 0


def _drop_unreadable_indexes(store: Store) -> list[str]:
    from xmodal.search.ann.synced import IndexDirectory

    dropped = []
    root = store.path / "indexes"
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        directory = IndexDirectory(folder)
        if directory.current() is not None and not directory.loads():
            directory.clear()
            dropped.append(folder.name)
    return dropped


__all__ = ["RepairReport", "TableRepair", "repair_store"]
