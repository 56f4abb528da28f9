"""Library errors -> HTTP responses with a JSON message (never a stack trace)."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from xmodal.indexer.jobs import UnknownJobError
from xmodal.search.errors import (
    InvalidQueryError,
    MediaDecodeError,
    MediaTooLarge,
    MigrationError,
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
    (UnknownJobError, 404),
    (NotAuthenticated, 401),
    (AccessRefused, 403),
    (RateLimited, 429),
    (InvalidQueryError, 400),
    (ModelSpecError, 400),  # e.g. a request's rerank model names no reranker
    (MediaTooLarge, 413),  # over images.max_pixels or images.max_decoded_pixels
    (MediaDecodeError, 415),
    (PayloadTooLarge, 413),
    (ModelMismatchError, 409),
    (MigrationError, 409),
    (ModelLoadError, 503),
    (StoreError, 503),
]


def status_for(error: XmodalError) -> int:
    return next((code for kind, code in STATUS_BY_ERROR if isinstance(error, kind)), 400)


# A 422 says what was wrong, not what was sent: a 20 MiB `text` used to come back whole.
SHOWN_ERRORS = 20  # validation errors listed in one 422
SHOWN_CHARS = 100  # of a string input, or a name in an error's location


def short_validation_error(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error as a 422 lists it: its input only when a short scalar (a string
    cut to SHOWN_CHARS), the names in its location cut likewise."""
    shown: dict[str, Any] = {
        "type": error.get("type"),
        "loc": [_cut(part) if isinstance(part, str) else part for part in error.get("loc", ())],
        "msg": _cut(str(error.get("msg", "")), 500),
    }
    value = error.get("input")
    if isinstance(value, str):
        shown["input"] = _cut(value)
    elif isinstance(value, float) and not math.isfinite(value):
        shown["input"] = str(value)  # NaN and Infinity are not JSON
    elif isinstance(value, bool | int | float) or value is None:
        shown["input"] = value
    context = error.get("ctx")
    if context:
        shown["ctx"] = {
            key: _cut(str(item)) if not isinstance(item, bool | int | float) else item
            for key, item in context.items()
        }
    return shown


def _cut(text: str, most: int = SHOWN_CHARS) -> str:
    return text if len(text) <= most else f"{text[:most]}..."


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = error.errors()
        detail = [short_validation_error(e) for e in errors[:SHOWN_ERRORS]]
        return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=422)

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
