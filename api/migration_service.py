"""The server's model migration (POST /admin/migrate): one at a time, in a thread of its
own, while the server goes on answering from the old model (xmodal.indexer.migrate).

Its commits and its switch hold the catalog's lock with the writer lock, since the
server's threads share the writer lock; once switched, the engine takes up the new
model off the request path and swaps it in when loaded."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal

from xmodal.api.settings import Settings
from xmodal.indexer.migrate import MigrationProgress, MigrationReport, Migrator, PreparedMigration
from xmodal.indexer.options import DecodeOptions
from xmodal.search import Engine
from xmodal.search.errors import MigrationError, XmodalError
from xmodal.search.store.migration import MigrationWatch

log = logging.getLogger("xmodal.api")

JobKind = Literal["migrate", "rollback"]
JobState = Literal["running", "completed", "failed", "stopped"]


class MigrationStopped(XmodalError):
    """The server stopped while a migration ran: it goes on with the next one started."""


@dataclass
class MigrationJob:
    """The server's current or last migration (or rollback)."""

    kind: JobKind
    space: str
    model: str  # the model it embeds with
    state: JobState = "running"
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    progress: MigrationProgress | None = None
    report: MigrationReport | None = None
    error: str | None = None


class MigrationRunner:
    """Starts migrations in a thread and says how they go; `watch` says where the store's
    migrations stand (for /health)."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        guard: Callable[[], AbstractContextManager[object]],
    ):
        self.engine = engine
        self.settings = settings
        self.guard = guard
        self.watch = MigrationWatch(engine.store)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.job: MigrationJob | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, model: str | None, space: str) -> MigrationJob:
        """Start a migration of `space` to `model`, or a rollback when `model` is None.
        Checked here (ModelSpecError, ModelLoadError, MigrationError) before it runs."""
        with self._lock:
            if self.running and self.job is not None:
                raise MigrationError(
                    f"a {self.job.kind} of the {self.job.space} space to {self.job.model} is "
                    "running: see GET /admin/migrate"
                )
            migrator = Migrator(
                self.engine,
                self.settings.indexing,
                DecodeOptions.from_settings(self.settings),
                guard=self.guard,
                on_commit=self._committed,
            )
            if model is None:
                prepared = migrator.prepare_rollback(space)
            else:
                prepared = migrator.prepare(model, space)
            kind: JobKind = "migrate" if model is not None else "rollback"
            job = MigrationJob(kind, space, prepared.encoder.spec)
            self.job = job
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._run, args=(migrator, prepared, job), name="xmodal-migrate", daemon=True
            )
            self._thread.start()
            return job

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the commit in flight (the next run goes on from there)."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _committed(self, progress: MigrationProgress) -> None:
        if self.job is not None:
            self.job.progress = progress
        if self._stopping.is_set():
            raise MigrationStopped("the server stopped")

    def _run(self, migrator: Migrator, prepared: PreparedMigration, job: MigrationJob) -> None:
        try:
            report = migrator.run(prepared)
            # The new model answers before the job says it is done (not on a later query).
            self.engine.follow_store()
            job.report, job.state = report, "completed"
            log.info("%s", report.summary())
        except MigrationStopped:
            job.state = "stopped"
        except Exception as error:
            job.state, job.error = "failed", str(error)
            if isinstance(error, XmodalError):
                log.error("migration of %s to %s failed: %s", job.space, job.model, error)
            else:
                log.exception("migration of %s to %s failed", job.space, job.model)
        finally:
            job.finished_at = time.time()
