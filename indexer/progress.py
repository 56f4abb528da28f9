"""How a run reports progress; the CLI draws a bar (or logs lines when not on a
terminal), the library stays silent."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, total: int) -> None:
        """The run has `total` files to read (unchanged ones are not counted)."""

    def advance(self, count: int = 1, failed: int = 0) -> None:
        """`count` more files are done, `failed` of them not indexed (recorded with why)."""

    def finish(self) -> None: ...


class NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, count: int = 1, failed: int = 0) -> None:
        pass

    def finish(self) -> None:
        pass
