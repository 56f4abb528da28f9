"""One ASGI middleware that times each HTTP request once, for the metrics and the
access log.

Plain ASGI rather than Starlette's BaseHTTPMiddleware: that one runs every request in
a task of its own and buffers streamed bodies (media files, thumbnails).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import UNMATCHED, HttpMetrics

access_log = logging.getLogger("xmodal.access")


def route_template(scope: Scope, routes: Sequence[BaseRoute] = ()) -> str:
    """The path template of the route that answered (`/items/{item_id}`), or UNMATCHED;
    never the raw path, which holds ids. A request answered before routing (a
    middleware refused it) is matched against `routes` here."""
    route = scope.get("route")
    if route is None:
        route = next((r for r in routes if r.matches(scope)[0] != Match.NONE), None)
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class ObserveRequests:
    """Counts and times requests into `metrics` (when given) and writes one access log
    line per request (when `access` is set)."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: HttpMetrics | None,
        access: bool,
        routes: Sequence[BaseRoute] = (),
    ):
        self.app = app
        self.metrics = metrics
        self.access = access
        self.routes = routes  # the app's, to name the route of requests refused before routing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: the app raised
        server_timing: bytes | None = None

        async def observed_send(message: Message) -> None:
            nonlocal status, server_timing
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"server-timing":
                        server_timing = value
            await send(message)

        metrics = self.metrics
        if metrics is not None:
            metrics.in_flight.inc()
        try:
            await self.app(scope, receive, observed_send)
        finally:
            seconds = time.perf_counter() - started
            route = route_template(scope, self.routes)
            method = scope.get("method", "")
            if metrics is not None:
                metrics.in_flight.dec()
                metrics.observe(method, route, status, seconds, server_timing)
            if self.access:
                log_access(scope, method, route, status, seconds)


def log_access(scope: Scope, method: str, route: str, status: int, seconds: float) -> None:
    client: Any = scope.get("client")
    host = f"{client[0]}" if client else "-"
    path = scope.get("path", "")
    milliseconds = round(seconds * 1000.0, 3)
    access_log.info(
        '%s "%s %s" %d %.1f ms',
        host,
        method,
        path,
        status,
        milliseconds,
        extra={
            "client": host,
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "duration_ms": milliseconds,
        },
    )


__all__ = ["ObserveRequests", "log_access", "route_template"]
