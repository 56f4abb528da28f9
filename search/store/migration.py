"""A space's move to another model, as the store records it; the run that embeds is
xmodal.indexer.migrate.

    image-text            the space queries read: its row names its table and model
    image-text@next       the space being built with the new model, in a table of its own
    image-text@previous   the space it replaced, kept for a rollback until dropped

A staged space's table has a ledger (Store.ledger): one row per item, the content hash
it embedded and its segment count, or why it could not be embedded. An item is done
when its ledger row has the item's current content hash (and its segments are there):
an interrupted run goes on with the others, and an item changed or indexed meanwhile is
embedded again by the switch. The items of a space are the indexed items with segments
in its active table (a video with no sound has none in audio-text).

The switch is one commit of the spaces table (Store.set_spaces): a reader sees the old
space or the new one, never a mix, and a crash before it leaves the old one in place.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from xmodal.search.errors import MigrationError, StoreError

from .records import INDEXED, LedgerEntry, SpaceRecord
from .schema import index_root, ledger_table_name
from .store import STAGED_MARK, Store

T = TypeVar("T")

NEXT = f"{STAGED_MARK}next"
PREVIOUS = f"{STAGED_MARK}previous"
LOCK_FILE = "migration.lock"

BUILDING = "building"  # the new space is being built; queries use the old one
READY = "ready"  # every item is in the new space: the next run switches
SWITCHED = "switched"  # the new space answers; the old one is kept for a rollback


def next_name(space: str) -> str:
    return space + NEXT


def previous_name(space: str) -> str:
    return space + PREVIOUS


def active_name(staged: str) -> str:
    """ "image-text" for "image-text@next" or "image-text@previous"."""
    return staged.split(STAGED_MARK, 1)[0]


@dataclass
class MigrationPlan:
    """What bringing a staged space up to date with the active one takes."""

    items: dict[str, str]  # the active space's items: id -> content hash
    todo: list[str]  # items not embedded yet, or embedded from other content
    gone: list[str]  # in the staged space (segments or ledger) but no item of the space
    failed: int  # items done, as failed
    segment_counts: Counter[str] = field(default_factory=Counter)  # active table, per item

    @property
    def done(self) -> int:
        return len(self.items) - len(self.todo)


def plan_migration(store: Store, space: str, staged: SpaceRecord) -> MigrationPlan:
    """Compare the active space's items with what the staged one holds. Reads the items'
    ids, statuses and hashes, and the item ids of both segments tables (no vectors)."""
    items = store.items_table(["id", "status", "content_hash"]).to_pylist()
    counts = Counter(store.segment_item_ids(space))
    members = {
        row["id"]: row["content_hash"] or ""
        for row in items
        if row["status"] == INDEXED and row["id"] in counts
    }
    ledger = store.ledger(staged.segments_table)
    present = set(store.segment_item_ids(staged.name))
    todo = [i for i, content in members.items() if not _done(ledger.get(i), content, i in present)]
    waiting = set(todo)
    failed = sum(1 for i in members if i not in waiting and ledger[i].error)
    gone = sorted((present | ledger.keys()) - members.keys())
    return MigrationPlan(members, todo, gone, failed, counts)


def _done(entry: LedgerEntry | None, content_hash: str, present: bool) -> bool:
    if entry is None or entry.content_hash != content_hash:
        return False
    return bool(entry.error) or entry.segments == 0 or present


@dataclass(frozen=True)
class MigrationStatus:
    """Where a space's migration stands (`xmodal migrate --status`, `info`, /health)."""

    space: str
    state: str  # BUILDING, READY or SWITCHED
    old_model: str  # the model queries used before (for SWITCHED: the one kept)
    old_identity: str
    new_model: str  # the model being built (for SWITCHED: the one queries use)
    new_identity: str
    done: int  # items embedded with the new model, or recorded as failed
    total: int  # items of the space
    failed: int  # items the new model could not embed (their files could not be read)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def migration_status(store: Store, space: str) -> MigrationStatus | None:
    """The migration of one space: None when there is none (no staged space)."""
    active = store.space(space)
    staged = store.space(next_name(space))
    previous = store.space(previous_name(space))
    if active is None or (staged is None and previous is None):
        return None
    if staged is not None:
        plan = plan_migration(store, space, staged)
        state = READY if not plan.todo else BUILDING
        return MigrationStatus(
            space,
            state,
            active.model_spec,
            active.model_identity,
            staged.model_spec,
            staged.model_identity,
            plan.done,
            len(plan.items),
            plan.failed,
        )
    assert previous is not None
    items = len(set(store.segment_item_ids(space)))
    return MigrationStatus(
        space,
        SWITCHED,
        previous.model_spec,
        previous.model_identity,
        active.model_spec,
        active.model_identity,
        items,
        items,
        0,
    )


def migration_statuses(store: Store) -> list[MigrationStatus]:
    """Every space's migration (building, ready to switch, or switched with the old
    space kept); [] when none, which costs one cached read of the spaces table."""
    return following_switches(store, lambda staged: _statuses_of(store, staged))


def _statuses_of(store: Store, staged: list[SpaceRecord]) -> list[MigrationStatus]:
    spaces = sorted({active_name(s.name) for s in staged})
    found = (migration_status(store, space) for space in spaces)
    return [status for status in found if status is not None]


READ_ATTEMPTS = 5  # listings a status read follows before a store error stands


def following_switches(store: Store, read: Callable[[list[SpaceRecord]], T]) -> T:
    """`read(staged spaces)`, taken again from a new listing when a switch, rollback or
    drop committed between the listing and the reads that follow it (a status asked for
    while a migration ends: the staged space it reads no longer exists). A store error
    while the listing stands still is a real one."""
    for attempt in range(READ_ATTEMPTS):
        staged = _staged(store)
        try:
            return read(staged)
        except StoreError:
            if staged == _staged(store) or attempt == READ_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _staged(store: Store) -> list[SpaceRecord]:
    return [s for s in store.all_spaces() if STAGED_MARK in s.name]


class MigrationWatch:
    """migration_statuses, worked out again only when a table it reads changed: cheap
    enough for every /health (the store's versions are stats of folders)."""

    def __init__(self, store: Store):
        self.store = store
        self._cached: tuple[tuple[Any, ...], list[MigrationStatus]] | None = None

    def statuses(self) -> list[MigrationStatus]:
        return following_switches(self.store, self._statuses)

    def _statuses(self, staged: list[SpaceRecord]) -> list[MigrationStatus]:
        if not staged:
            return []
        key = self._key(staged)
        cached = self._cached
        if cached is not None and cached[0] == key:
            return cached[1]
        statuses = _statuses_of(self.store, staged)
        self._cached = (key, statuses)
        return statuses

    def _key(self, staged: list[SpaceRecord]) -> tuple[Any, ...]:
        parts: list[Any] = []
        for record in staged:
            space = active_name(record.name)
            parts += [
                record,
                self.store.space(space),
                self.store.version(space),
                self.store.version(record.name),
                self.store.ledger_version(record.segments_table),
            ]
        return tuple(parts)


class MigrationLock:
    """One migration, rollback or drop per data directory at a time, across processes
    and threads: a second is refused at once (MigrationError). Released from any thread
    (a server's job releases the lock its request took)."""

    def __init__(self, data: Path):
        self.data = Path(data).expanduser()
        self._lock = FileLock(str(self.data / LOCK_FILE), thread_local=False, is_singleton=False)

    def acquire(self) -> MigrationLock:
        self.data.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise MigrationError(
                f"a migration of {self.data} is running already (in a server or another "
                "`xmodal migrate`); see `xmodal migrate --status`"
            ) from None
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()

    @contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


def old_space_ledger(store: Store, space: str, plan: MigrationPlan) -> None:
    """Record what the active table holds before it becomes the previous one: its items'
    content hashes now, so that a rollback embeds again only what changes after."""
    entries = [
        LedgerEntry(item_id, content, plan.segment_counts[item_id])
        for item_id, content in plan.items.items()
    ]
    record = store.space(space)
    assert record is not None
    store.record_ledger(record.segments_table, entries, replace=True)


def switch(store: Store, space: str, staged: SpaceRecord) -> SpaceRecord:
    """Make the staged space the one queries read and keep the active one as
    "<space>@previous", in one commit of the spaces table. Returns the old active row.
    The caller holds the writer lock and has brought the staged space up to date."""
    old = store.space(space)
    assert old is not None
    previous = previous_name(space)
    removed = [staged.name] if staged.name != previous else []
    store.set_spaces(
        [
            SpaceRecord(
                space, staged.model_spec, staged.model_identity, staged.dim, staged.segments_table
            ),
            SpaceRecord(previous, old.model_spec, old.model_identity, old.dim, old.segments_table),
        ],
        remove=removed,
    )
    # The table queries read now keeps no ledger: indexing runs write it as they go.
    store.drop_table(ledger_table_name(staged.segments_table))
    return old


def drop_staged(store: Store, staged: SpaceRecord) -> None:
    """Remove a staged space: its row (one commit), then its table and ledger, then its
    saved vector index. A crash in between leaves unused files, no staged space."""
    with store.writing():
        store.set_spaces([], remove=[staged.name])
        store.drop_table(staged.segments_table)
        store.drop_table(ledger_table_name(staged.segments_table))
    base = staged.name.split("@")[0]  # the space it was staged or kept for
    _remove_tree(index_root(store.path, base, staged.segments_table))


def _remove_tree(folder: Path) -> None:
    if folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)


__all__ = [
    "BUILDING",
    "NEXT",
    "PREVIOUS",
    "READY",
    "SWITCHED",
    "MigrationLock",
    "MigrationPlan",
    "MigrationStatus",
    "MigrationWatch",
    "drop_staged",
    "migration_status",
    "migration_statuses",
    "next_name",
    "old_space_ledger",
    "plan_migration",
    "previous_name",
    "switch",
]
