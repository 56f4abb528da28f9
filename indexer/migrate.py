"""Moving a space to another model while it is searched: `xmodal migrate`, and the
server's `POST /admin/migrate`.

1. Stage: the space `image-text@next`, with the new model, in a table of its own
   (xmodal.search.store.migration names the spaces and keeps the ledger).
2. Build: every item of the space is embedded with the new model from its file (a
   folder item's, or a catalog item's kept media) by the indexer's own decode and
   encode stages (Indexer.embed with a SpaceTarget), and committed `write_batch_size`
   items at a time with their ledger rows. Queries keep reading the old table. The
   writer lock is held for each commit only, so indexing runs and catalog writes go on
   between them; an interrupted run goes on where it stopped.
3. Switch: under the writer lock, what the space gained or changed meanwhile is
   embedded, segments of items gone are removed, then one commit of the spaces table
   makes the new table the space's and keeps the old one as `image-text@previous`.

A rollback is the same in reverse: the previous table is brought up to date with its
own model (only items indexed or changed since the switch are embedded), then the two
swap. Dropping deletes the previous table; abandoning, a staged one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

from xmodal.search.encoders import (
    AUDIO_TEXT,
    IMAGE_TEXT,
    Encoder,
    create_audio_encoder,
    create_encoder,
)
from xmodal.search.engine import Engine
from xmodal.search.errors import MigrationError, OriginalMissing, UnknownItemError
from xmodal.search.store import (
    FAILED,
    INDEXED,
    ItemRecord,
    SegmentRecord,
    SpaceRecord,
    Store,
)
from xmodal.search.store.migration import (
    MigrationLock,
    MigrationPlan,
    drop_staged,
    next_name,
    old_space_ledger,
    plan_migration,
    previous_name,
    switch,
)
from xmodal.search.store.records import LedgerEntry
from xmodal.search.store.schema import model_table_name

from .discover import Candidate
from .options import DecodeOptions, IndexOptions
from .pipeline import Indexer, SpaceTarget
from .progress import NoProgress, Progress

SPACES = (IMAGE_TEXT, AUDIO_TEXT)
Guard = Callable[[], AbstractContextManager[object]]


@dataclass
class MigrationProgress:
    """Where a run stands after each commit (the `on_commit` hook hears it)."""

    space: str
    done: int  # items of the space embedded with the new model, or recorded as failed
    total: int  # items of the space
    embedded: int  # items this run embedded
    failed: int  # items this run could not embed


@dataclass
class MigrationReport:
    """What one run did."""

    space: str
    old_model: str  # the model queries used when the run began
    new_model: str  # the model the run embedded with
    total: int = 0  # items of the space
    embedded: int = 0  # items this run embedded
    skipped: int = 0  # items an earlier run had embedded already
    failed: list[tuple[str, str]] = field(default_factory=list)  # (location, reason), this run
    removed: int = 0  # items gone from the space: their new segments were removed
    switched: bool = False
    seconds: float = 0.0
    index: str = ""  # the index saved for the new space before the switch ("exact": none)

    def summary(self) -> str:
        done = "switched" if self.switched else "not switched"
        if self.index and self.index != "exact":
            done = f"its {self.index} index saved, {done}"
        return (
            f"{self.space}: {self.old_model} -> {self.new_model}: embedded {self.embedded}, "
            f"already done {self.skipped}, failed {len(self.failed)}, removed "
            f"{self.removed} of {self.total} item(s); {done}"
        )


@dataclass
class PreparedMigration:
    """A checked migration (or rollback) holding the migration lock: `Migrator.run`
    carries it out and releases the lock."""

    space: str
    encoder: Encoder  # the model the target space is embedded with
    old: SpaceRecord  # the active space now
    target: SpaceRecord | None  # the staged space to bring up to date; None: to be made
    lock: MigrationLock

    def release(self) -> None:
        self.lock.release()


class Migrator:
    """Runs migrations of one engine's store. `guard` is entered with the writer lock
    for every commit and for the switch: a server passes its catalog's, since its own
    threads share the writer lock. `on_commit` hears the progress after each commit (a
    test stops a run there)."""

    def __init__(
        self,
        engine: Engine,
        options: IndexOptions | None = None,
        decode: DecodeOptions | None = None,
        *,
        progress: Progress | None = None,
        guard: Guard | None = None,
        on_commit: Callable[[MigrationProgress], None] | None = None,
    ):
        self.engine = engine
        self.store: Store = engine.store
        self.options = options or IndexOptions()
        self.decode = decode or DecodeOptions(images=engine.limits)
        self.progress = progress or NoProgress()
        self.guard: Guard = guard or nullcontext
        self.on_commit = on_commit
        self._committing_now = False

    # -- what callers use ----------------------------------------------------
    def migrate(self, model: str, space: str = IMAGE_TEXT) -> MigrationReport:
        """Build `space` with `model` beside the old one and switch to it (see the
        module's docstring); a run interrupted earlier goes on where it stopped."""
        return self.run(self.prepare(model, space))

    def rollback(self, space: str = IMAGE_TEXT) -> MigrationReport:
        """Return `space` to the model it had before the last switch."""
        return self.run(self.prepare_rollback(space))

    def prepare(self, model: str, space: str = IMAGE_TEXT) -> PreparedMigration:
        """Check a migration of `space` to `model` and take the migration lock. Raises
        ModelSpecError for a spec that names no model of the space, ModelLoadError for
        weights that cannot be found, MigrationError for what the store's state refuses."""
        check_space(space)
        lock = MigrationLock(self.store.path).acquire()
        try:
            old = self._active(space)
            encoder = new_encoder(space, model, self.engine.device)
            identity = encoder.identity
            if identity == old.model_identity:
                raise MigrationError(
                    f"the {space} space already uses {model} ({identity}): nothing to migrate"
                )
            target = self._staged_for(space, identity)
            return PreparedMigration(space, encoder, old, target, lock)
        except BaseException:
            lock.release()
            raise

    def prepare_rollback(self, space: str = IMAGE_TEXT) -> PreparedMigration:
        """Check a rollback of `space` and take the migration lock (see `prepare`)."""
        check_space(space)
        lock = MigrationLock(self.store.path).acquire()
        try:
            old = self._active(space)
            previous = self.store.space(previous_name(space))
            if previous is None:
                staged = self.store.space(next_name(space))
                under_way = (
                    f"; the migration to {staged.model_spec} under way has not switched "
                    "(`xmodal migrate --abandon` stops it)"
                    if staged is not None
                    else ""
                )
                raise MigrationError(
                    f"nothing to roll back: the {space} space keeps no previous model (none "
                    f"was switched from, or it was dropped){under_way}"
                )
            encoder = new_encoder(space, previous.model_spec, self.engine.device)
            if encoder.identity != previous.model_identity:
                raise MigrationError(
                    f"cannot roll back: {previous.model_spec} is {encoder.identity} here, not "
                    f"{previous.model_identity} as its vectors were made with"
                )
            return PreparedMigration(space, encoder, old, previous, lock)
        except BaseException:
            lock.release()
            raise

    def run(self, prepared: PreparedMigration) -> MigrationReport:
        """Carry out a prepared migration or rollback; releases its lock."""
        try:
            target = prepared.target
            if target is None:
                target = self._stage(prepared.space, prepared.encoder)
            return self._build_and_switch(prepared.space, target, prepared.encoder)
        finally:
            prepared.release()

    def drop_previous(self, space: str = IMAGE_TEXT) -> SpaceRecord:
        """Delete the previous space kept for a rollback (its table, its saved index)."""
        check_space(space)
        return self._drop(
            previous_name(space), f"nothing to drop: the {space} space keeps no previous model"
        )

    def abandon(self, space: str = IMAGE_TEXT) -> SpaceRecord:
        """Stop a migration that has not switched: delete the space being built."""
        check_space(space)
        return self._drop(
            next_name(space), f"nothing to abandon: no migration of the {space} space is under way"
        )

    # -- steps ---------------------------------------------------------------
    def _active(self, space: str) -> SpaceRecord:
        old = self.store.space(space)
        if old is None:
            raise MigrationError(
                f"{self.store.path} has no {space} space yet: nothing to migrate (a new "
                "store takes the model of its first `xmodal index --model ...`)"
            )
        return old

    def _staged_for(self, space: str, identity: str) -> SpaceRecord | None:
        """The staged space a migration to a model goes on with (None: a new one)."""
        previous = self.store.space(previous_name(space))
        if previous is not None:
            if previous.model_identity == identity:
                return previous  # back to what a rollback left: only changes are embedded
            raise MigrationError(
                f"the {space} space keeps its previous model {previous.model_spec} for a "
                "rollback: drop it first (`xmodal migrate --drop-old`), or roll back to it "
                "(`xmodal migrate --rollback`)"
            )
        staged = self.store.space(next_name(space))
        if staged is not None and staged.model_identity != identity:
            raise MigrationError(
                f"a migration of the {space} space to {staged.model_spec} is under way: "
                f"finish it (`xmodal migrate --model {staged.model_spec}`) or abandon it "
                "(`xmodal migrate --abandon`)"
            )
        return staged

    def _stage(self, space: str, encoder: Encoder) -> SpaceRecord:
        # A model that cannot load fails here, before anything is written.
        encoder.load()
        table = model_table_name(space, encoder.identity)
        record = SpaceRecord(next_name(space), encoder.spec, encoder.identity, encoder.dim, table)
        return self.store.add_space(record)

    def _build_and_switch(
        self, space: str, target: SpaceRecord, encoder: Encoder
    ) -> MigrationReport:
        started = time.perf_counter()
        old = self._active(space)
        report = MigrationReport(space, old.model_spec, target.model_spec)
        plan = plan_migration(self.store, space, target)
        report.total, report.skipped = len(plan.items), plan.done
        self._embed(plan, plan.todo, space, target, encoder, report)
        # The new space's index, saved before the switch from what is embedded so far: a
        # server then loads it when it takes the new model up, where it would otherwise
        # build it first (32 s for 100k vectors on 2 cores), answering from the old
        # model meanwhile. What the switch's catch-up adds, it serves as growing rows.
        saved = self.engine.save_staged_index(target.name)
        report.index = saved.kind
        with self._committing():
            # Under the writer lock: what was indexed, changed or removed meanwhile.
            plan = plan_migration(self.store, space, target)
            self._embed(plan, plan.todo, space, target, encoder, report)
            if plan.gone:
                self.store.delete_segments(target.name, plan.gone)
                self.store.forget_ledger(target.segments_table, plan.gone)
                report.removed = len(plan.gone)
            report.total = len(plan.items)
            old_space_ledger(self.store, space, plan)
            switch(self.store, space, target)
        report.switched = True
        report.seconds = time.perf_counter() - started
        return report

    def _embed(
        self,
        plan: MigrationPlan,
        item_ids: Sequence[str],
        space: str,
        target: SpaceRecord,
        encoder: Encoder,
        report: MigrationReport,
    ) -> None:
        """Embed these items of the plan into the target space, committing as it goes."""
        if not item_ids:
            return
        records = self.store.items(list(item_ids))
        writer = LedgerWriter(
            self.store,
            target,
            space,
            plan.items,
            self.options.write_batch_size,
            self._committing,
            lambda writer: self._committed(plan, writer, report),
        )
        candidates = []
        for item_id in item_ids:
            item = records.get(item_id)
            if item is None or item.status != INDEXED:
                continue  # removed meanwhile: the switch's plan sees it gone
            candidate = self._candidate(item, writer)
            if candidate is not None:
                candidates.append(candidate)
        indexer = Indexer(
            self.engine,
            self.options,
            self.progress,
            self.decode,
            target=SpaceTarget(space, encoder),
        )
        try:
            result = indexer.embed(candidates, writer)
        finally:
            writer.close()
        report.embedded += result.embedded
        report.failed.extend(result.failed)
        report.failed.extend(writer.unreadable)

    def _candidate(self, item: ItemRecord, writer: LedgerWriter) -> Candidate | None:
        """The item's file to embed; None (recorded as failed) when it cannot be read."""
        try:
            path = self.store.original_path(item)
        except OriginalMissing:
            writer.fail(item, "its file is missing")
            return None
        except UnknownItemError:
            writer.fail(item, "its file is no longer inside an indexed folder")
            return None
        # Named by the item's own location and id, so that the item it gives is this one.
        candidate = Candidate(
            path=path,
            root=item.root,
            kind=item.kind,
            bytes=item.bytes,
            mtime_ns=item.mtime_ns,
            existed=True,
            source=item.uri,
            external_id=item.external_id,
        )
        if candidate.item_id != item.id:
            writer.fail(item, "its id does not derive from its location")
            return None
        return candidate

    def _committed(
        self, plan: MigrationPlan, writer: LedgerWriter, report: MigrationReport
    ) -> None:
        if self.on_commit is not None:
            embedded = report.embedded + writer.embedded
            failed = len(report.failed) + writer.failed
            done = min(report.skipped + embedded + failed, report.total)
            self.on_commit(MigrationProgress(report.space, done, report.total, embedded, failed))

    @contextmanager
    def _committing(self) -> Iterator[None]:
        """The guard (a server's catalog lock) and the data directory's writer lock, for
        a commit or the switch; re-entered by the switch's own commits."""
        if self._committing_now:
            yield
            return
        with self.guard(), self.store.writing():
            self._committing_now = True
            try:
                yield
            finally:
                self._committing_now = False

    def _drop(self, staged_name: str, nothing: str) -> SpaceRecord:
        with MigrationLock(self.store.path).held():
            staged = self.store.space(staged_name)
            if staged is None:
                raise MigrationError(nothing)
            with self.guard():
                drop_staged(self.store, staged)
            return staged


class LedgerWriter:
    """The writer of a migration run (indexer/writer.ItemWriter): each item's segments
    of the space go to the staged table, its outcome to the table's ledger with the
    content hash the plan had for it; item rows are left alone. Every `batch_size` items
    it commits, under `committing` (the writer lock): the staged segments of those items
    are replaced, then their ledger rows written; a crash in between only leaves items
    embedded again by the next run. A failed commit (or hook) stops it for good."""

    def __init__(
        self,
        store: Store,
        target: SpaceRecord,
        space: str,
        planned: Mapping[str, str],
        batch_size: int,
        committing: Callable[[], AbstractContextManager[None]],
        on_commit: Callable[[LedgerWriter], None],
    ):
        self.store = store
        self.target = target
        self.space = space
        self.planned = planned
        self.batch_size = batch_size
        self.committing = committing
        self.on_commit = on_commit
        self.seconds = 0.0
        self.embedded = 0  # items committed with their vectors
        self.failed = 0  # items committed as failed
        self.unreadable: list[tuple[str, str]] = []  # (location, reason): files not read
        self._entries: list[LedgerEntry] = []
        self._segments: list[SegmentRecord] = []
        self._stopped = False

    def add(
        self, item: ItemRecord, segments: dict[str, list[SegmentRecord]], replaces: bool
    ) -> None:
        rows = segments.get(self.space, [])
        error = (item.error or "not embedded") if item.status == FAILED else ""
        content = self.planned.get(item.id, item.content_hash)
        self._entries.append(LedgerEntry(item.id, content, len(rows), error))
        self._segments.extend(rows)
        if len(self._entries) >= self.batch_size:
            self.flush()

    def fail(self, item: ItemRecord, reason: str) -> None:
        """Record an item whose file cannot be read, without decoding it."""
        self.unreadable.append((item.uri, reason))
        self.add(
            ItemRecord(item.id, item.uri, item.kind, item.root, status=FAILED, error=reason),
            {},
            replaces=True,
        )

    def flush(self) -> None:
        if not self._entries or self._stopped:
            return
        entries, rows = self._entries, self._segments
        self._entries, self._segments = [], []
        started = time.perf_counter()
        try:
            with self.committing():
                self.store.delete_segments(self.target.name, [e.item_id for e in entries])
                self.store.upsert_segments(self.target.name, rows)
                self.store.record_ledger(self.target.segments_table, entries)
            self.seconds += time.perf_counter() - started
            self.failed += sum(1 for e in entries if e.error)
            self.embedded += sum(1 for e in entries if not e.error)
            self.on_commit(self)
        except BaseException:
            self._stopped = True  # what is buffered is not committed after an error
            raise

    def close(self) -> None:
        self.flush()


def check_space(space: str) -> None:
    if space not in SPACES:
        raise MigrationError(f"unknown space {space!r}: migrate one of {', '.join(SPACES)}")


def new_encoder(space: str, model: str, device: str) -> Encoder:
    """The model for a space as `xmodal index --model` makes it (not loaded)."""
    if space == AUDIO_TEXT:
        return create_audio_encoder(model, device=device)
    return create_encoder(model, device=device)


__all__ = [
    "LedgerWriter",
    "MigrationProgress",
    "MigrationReport",
    "Migrator",
    "PreparedMigration",
]
