"""One writer at a time per data directory, across processes.

Two `xmodal index` runs on one data directory used to race: each planned the same files,
and their commits either conflicted (a Lance "commit conflict" traceback) or both
landed, leaving duplicate item and segment rows. Every write to the store (an indexing
run, `xmodal reindex`, `xmodal repair`, any direct Store write) now holds an operating
system lock on `<data>/writer.lock` for its whole length. Readers (search, serve) never
take it: Lance gives them a consistent version while a writer commits.

The lock is an flock (filelock's FileLock): the kernel drops it when its process dies,
SIGKILL included, so a crashed writer never leaves the directory locked. Who holds it
(pid, command, since when) is written next to it, in `writer.json`, for the message a
waiting writer prints. On a network file system the lock is as good as that file
system's flock support.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from filelock import FileLock, Timeout

from xmodal.search.errors import WriterBusyError

LOCK_FILE = "writer.lock"
HOLDER_FILE = "writer.json"
# How long a writer waits for another by default (seconds): long enough for a second
# scheduled run to queue behind a first, short enough that runs never pile up forever.
DEFAULT_WAIT_SECONDS = 600.0


@dataclass(frozen=True)
class WriterHolder:
    """Who holds (or last held) a data directory's writer lock."""

    pid: int
    command: str
    since: float  # seconds since the epoch
    host: str = ""

    def describe(self) -> str:
        started = time.strftime("%H:%M:%S", time.localtime(self.since))
        where = f" on {self.host}" if self.host and self.host != socket.gethostname() else ""
        return f"pid {self.pid}{where} ({self.command}), writing since {started}"


def this_command() -> str:
    """This process's command line, shortened for a message."""
    argv = [Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:]]
    text = " ".join(argv)
    return text if len(text) <= 120 else text[:117] + "..."


class WriterLock:
    """The writer lock of one data directory. Re-entrant within the object, from any
    thread (an indexing run holds it while its writer thread commits and while it saves
    the ANN index); other objects, in this process or another, wait for it.

    `WriterLock.shared(data)` is this process's one lock object for a directory: every
    Store of the directory uses it, so a command that takes the lock before it opens
    the store (which may create the tables) does not wait for itself."""

    _shared: ClassVar[dict[Path, WriterLock]] = {}
    _shared_guard: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def shared(cls, data: Path) -> WriterLock:
        key = Path(data).expanduser().resolve()
        with cls._shared_guard:
            lock = cls._shared.get(key)
            if lock is None:
                lock = cls._shared[key] = cls(key)
            return lock

    def __init__(self, data: Path):
        self.data = data
        self._lock = FileLock(
            str(data / LOCK_FILE), thread_local=False, is_singleton=False, poll_interval=0.1
        )
        self._depth = 0
        self._guard = threading.RLock()

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._depth > 0

    def holder(self) -> WriterHolder | None:
        """Who holds the lock, as that writer recorded it (None: unknown or nobody)."""
        try:
            raw = json.loads((self.data / HOLDER_FILE).read_text())
            return WriterHolder(
                int(raw["pid"]), str(raw["command"]), float(raw["since"]), str(raw.get("host", ""))
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @contextmanager
    def holding(
        self,
        wait: float = DEFAULT_WAIT_SECONDS,
        on_wait: Callable[[WriterHolder | None], None] | None = None,
    ) -> Iterator[None]:
        """Hold the lock for the block. `wait`: seconds to wait for another writer (0:
        give up at once); `on_wait` is called once, before waiting, with who holds it.
        Raises WriterBusyError when it cannot be had in time."""
        self.acquire(wait, on_wait)
        try:
            yield
        finally:
            self.release()

    def acquire(
        self,
        wait: float = DEFAULT_WAIT_SECONDS,
        on_wait: Callable[[WriterHolder | None], None] | None = None,
    ) -> None:
        with self._guard:
            if self._depth:
                self._depth += 1
                return
            self.data.mkdir(parents=True, exist_ok=True)
            try:
                self._lock.acquire(timeout=0)
            except Timeout:
                holder = self.holder()
                if wait <= 0:
                    raise WriterBusyError(self._busy_message(holder, 0.0)) from None
                if on_wait is not None:
                    on_wait(holder)
                try:
                    self._lock.acquire(timeout=wait)
                except Timeout:
                    raise WriterBusyError(self._busy_message(self.holder(), wait)) from None
            self._depth = 1
            self._write_holder()

    def release(self) -> None:
        with self._guard:
            if not self._depth:
                return
            self._depth -= 1
            if self._depth:
                return
            # Only a message's detail goes; the lock itself is what counts.
            with contextlib.suppress(OSError):
                (self.data / HOLDER_FILE).unlink(missing_ok=True)
            self._lock.release()

    def _write_holder(self) -> None:
        record = {
            "pid": os.getpid(),
            "command": this_command(),
            "since": time.time(),
            "host": socket.gethostname(),
        }
        staged = self.data / f"{HOLDER_FILE}.{os.getpid()}"
        try:
            staged.write_text(json.dumps(record))
            staged.replace(self.data / HOLDER_FILE)
        except OSError:
            pass  # a read-only detail; the lock is held all the same

    def _busy_message(self, holder: WriterHolder | None, waited: float) -> str:
        who = holder.describe() if holder is not None else "another process"
        after = f" after waiting {waited:g} s" if waited else ""
        return (
            f"another writer holds {self.data}: {who}; gave up{after}. Run again when it "
            "is done (or wait longer with --wait SECONDS)"
        )
