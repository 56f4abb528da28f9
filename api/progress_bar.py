"""How `xmodal index` and `xmodal eval` show a run's progress: a rich bar on a
terminal (items, items/s, time left), and plain log lines elsewhere (cron, containers,
CI logs), where a bar would be a stream of control codes."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from xmodal.indexer import Progress as RunProgress

from .logs import LogSettings

progress_log = logging.getLogger("xmodal.progress")


class ItemsPerSecond(TextColumn):
    def __init__(self) -> None:
        super().__init__("")

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:6.1f} items/s" if speed else "   ... items/s")


class RichProgress:
    def __init__(self, console: Console, activity: str = "indexing"):
        self._progress = Progress(
            TextColumn(activity),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            ItemsPerSecond(),
            TextColumn("{task.fields[failed]} failed"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None
        self._failed = 0

    def start(self, total: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task("index", total=total, failed=0)

    def advance(self, count: int = 1, failed: int = 0) -> None:
        if self._task is not None:
            self._failed += failed
            self._progress.update(self._task, advance=count, failed=self._failed)

    def finish(self) -> None:
        self._progress.stop()


class LineProgress:
    """A run's progress as log lines (logger `xmodal.progress`, at info): when it starts,
    at least every `every_seconds`, each time another `every_percent` of the files is
    done, and at the end. Each line has its figures as fields too (JSON logs): done,
    total, percent, failed, items_per_second, eta_seconds."""

    def __init__(
        self,
        every_seconds: float = 30.0,
        every_percent: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        activity: str = "indexing",  # what the lines say the run does
    ):
        self.activity = activity
        self.every_seconds = every_seconds
        self.every_percent = every_percent
        self._clock = clock
        self.total = 0
        self.done = 0
        self.failed = 0
        self._started = 0.0
        self._last_line = 0.0
        self._next_percent = every_percent
        self._reported = -1  # `done` when the last line was written

    def start(self, total: int) -> None:
        self.total, self.done, self.failed = total, 0, 0
        self._started = self._last_line = self._clock()
        self._next_percent = self.every_percent
        progress_log.info("%s %d file(s)", self.activity, total, extra={"total": total})

    def advance(self, count: int = 1, failed: int = 0) -> None:
        self.done += count
        self.failed += failed
        now = self._clock()
        if now - self._last_line >= self.every_seconds or self._percent() >= self._next_percent:
            self._line(now)

    def finish(self) -> None:
        if self.done != self._reported and self.total:
            self._line(self._clock())

    def _percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0

    def _line(self, now: float) -> None:
        percent = self._percent()
        elapsed = now - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = left / rate if rate > 0 else None
        progress_log.info(
            "%s: %d/%d files (%.0f%%), %.1f items/s, %d failed, ETA %s",
            self.activity,
            self.done,
            self.total,
            percent,
            rate,
            self.failed,
            format_eta(eta) if left else "0 s",
            extra={
                "done": self.done,
                "total": self.total,
                "percent": round(percent, 1),
                "failed": self.failed,
                "items_per_second": round(rate, 2),
                "eta_seconds": None if eta is None else round(eta, 1),
            },
        )
        self._last_line = now
        self._reported = self.done
        steps = math.floor(percent / self.every_percent) + 1
        self._next_percent = steps * self.every_percent


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def progress_for(
    console: Console, settings: LogSettings, activity: str = "indexing"
) -> RunProgress:
    """A bar when `console` is a terminal, else log lines at the settings' pace;
    `activity` names what the run does ("indexing", "migrating")."""
    if console.is_terminal:
        return RichProgress(console, activity)
    return LineProgress(settings.progress_seconds, settings.progress_percent, activity=activity)


__all__ = ["LineProgress", "RichProgress", "format_eta", "progress_for"]
