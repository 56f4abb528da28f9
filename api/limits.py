"""Request bodies bounded while they stream in (docs/http.md#limits).

A pure ASGI middleware: a body whose declared size (Content-Length) is over its route's
limit is answered 413 before any of it is read; one that does not declare its size
(chunked) is cut off with a 413 as soon as the bytes received pass the limit. Without
it, a 200 MiB upload was spooled to a temporary file in full before its 413.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class BodyLimit:
    """The most bytes a request body may hold, and the setting that says so."""

    bytes: int  # the setting's value, named in the 413's message
    setting: str
    what: str = "request body"
    slack: int = 0  # allowed beyond `bytes`: an upload's form fields and framing

    @property
    def most(self) -> int:
        return self.bytes + self.slack

    def message(self) -> str:
        return f"{self.what} larger than {self.bytes:,} bytes (setting {self.setting})"


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes its limit. An HTTPException, so
    that FastAPI's body parsing lets it through to the JSON error handler (it turns any
    other error while parsing into a 400)."""

    def __init__(self, limit: BodyLimit):
        super().__init__(status_code=413, detail=limit.message())


class BodyLimits:
    """Bounds every request body: `by_path` limits for some paths (uploads), `default`
    for the rest."""

    def __init__(
        self,
        app: ASGIApp,
        default: BodyLimit,
        by_path: Mapping[str, BodyLimit] | None = None,
        by_prefix: Mapping[str, BodyLimit] | None = None,
    ):
        """`by_path`: limits of exact paths; `by_prefix`: of every path under a prefix
        (the catalog's writes, whose ids are in the path)."""
        self.app = app
        self.default = default
        self.by_path = dict(by_path or {})
        self.by_prefix = dict(by_prefix or {})

    def limit_for(self, path: str) -> BodyLimit:
        found = self.by_path.get(path)
        if found is not None:
            return found
        for prefix, limit in self.by_prefix.items():
            if path.startswith(prefix):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit.most:
            await _refuse(limit, scope, receive, send)
            return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit.most:
                    raise BodyTooLarge(limit)
            return message

        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, watched_send)
        except BodyTooLarge:
            # Read outside FastAPI's body parsing (no error handler saw it).
            if started:
                raise
            await _refuse(limit, scope, receive, send)


async def _refuse(limit: BodyLimit, scope: Scope, receive: Receive, send: Send) -> None:
    # The unread rest of the body makes the server close the connection after answering.
    response = JSONResponse({"detail": limit.message()}, status_code=413)
    await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None


__all__ = ["BodyLimit", "BodyLimits", "BodyTooLarge"]
