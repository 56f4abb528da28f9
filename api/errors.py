"""Library errors -> HTTP responses with a JSON message (never a stack trace)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from xmodal.search.errors import (
    InvalidQueryError,
    MediaDecodeError,
    ModelLoadError,
    ModelMismatchError,
    ModelSpecError,
    OriginalMissing,
    StoreError,
    UnknownItemError,
    XmodalError,
)

from .keys import AccessRefused, NotAuthenticated, RateLimited, UnknownKeyError

log = logging.getLogger("xmodal.api")


class PayloadTooLarge(XmodalError):
    """An upload over the configured size limit."""


STATUS_BY_ERROR: list[tuple[type[XmodalError], int]] = [
    (UnknownItemError, 404),
    (OriginalMissing, 404),
    (UnknownKeyError, 404),
    (NotAuthenticated, 401),
    (AccessRefused, 403),
    (RateLimited, 429),
    (InvalidQueryError, 400),
    (ModelSpecError, 400),  # e.g. a request's rerank model names no reranker
    (MediaDecodeError, 415),
    (PayloadTooLarge, 413),
    (ModelMismatchError, 409),
    (ModelLoadError, 503),
    (StoreError, 503),
]


def status_for(error: XmodalError) -> int:
    return next((code for kind, code in STATUS_BY_ERROR if isinstance(error, kind)), 400)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(XmodalError)
    async def xmodal_error(request: Request, error: XmodalError) -> JSONResponse:
        # Errors about access carry their headers (WWW-Authenticate, Retry-After).
        headers = getattr(error, "headers", None)
        detail = str(error)
        access = getattr(request.app.state, "access", None)
        if access is not None:  # callers who may not see the server's paths do not
            detail = access.redact_paths(request, detail)
        return JSONResponse({"detail": detail}, status_code=status_for(error), headers=headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the server log"}, status_code=500)
