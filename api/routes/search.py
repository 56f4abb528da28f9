"""Search: by text, by indexed item, by uploaded image or sound.

The routes are built for an engine's query limits (`router_for`), so that the request
schemas, their validation and the OpenAPI document say what the engine accepts: a
server configured with `query.max_k = 5000` takes k = 5000.
"""

# No `from __future__ import annotations`: FastAPI reads these routes' annotations at
# definition time, and they name the request model built in `router_for`.

import inspect
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from xmodal.search import QuerySettings
from xmodal.search.filters import parse_filter_json

from ..deps import EngineDep, SettingsDep
from ..errors import PayloadTooLarge
from ..schemas import (
    K_DESCRIPTION,
    ErrorResponse,
    MediaKindName,
    SearchRequest,
    SearchResponse,
    search_request_model,
)

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 409, 413, 415, 503)
}
FILTER_FORM = "Metadata filter as JSON."
KINDS_FORM = "Only these kinds of media."


def router_for(limits: QuerySettings) -> APIRouter:
    """The search routes, their schemas bounded by `limits`."""
    router = APIRouter(tags=["search"])
    PageSize = Annotated[int, Form(ge=1, le=limits.max_k, description=K_DESCRIPTION)]

    def search(body: SearchRequest, engine: EngineDep, response: Response) -> SearchResponse:
        """Text -> media, or indexed item -> similar media (the item itself excluded).

        The `Server-Timing` header splits the time: encode, search, fetch (milliseconds)."""
        if body.text:
            result = engine.search_text(
                body.text, body.k, body.offset, body.filter, body.kinds, body.min_score
            )
        else:
            result = engine.search_similar(
                str(body.item_id), body.k, body.offset, body.filter, body.kinds
            )
        response.headers["Server-Timing"] = server_timing(result.timings)
        return SearchResponse.of(result)

    # FastAPI validates the body with the model its signature names: the bounded one.
    bounded = inspect.signature(search)
    search.__signature__ = bounded.replace(  # type: ignore[attr-defined]
        parameters=[
            p.replace(annotation=search_request_model(limits)) if p.name == "body" else p
            for p in bounded.parameters.values()
        ]
    )
    router.add_api_route(
        "/search",
        search,
        methods=["POST"],
        operation_id="search",
        response_model=SearchResponse,
        responses=ERRORS,
    )

    def upload_route(path: str, name: str, query_by: str, upload: str, doc: str) -> None:
        """POST `path`: an upload, searched with the engine's method `query_by`."""

        async def route(
            request: Request,
            response: Response,
            engine: EngineDep,
            settings: SettingsDep,
            file: Annotated[UploadFile, File(description=upload)],
            k: PageSize = 10,
            offset: Annotated[int, Form(ge=0)] = 0,
            filter: Annotated[str | None, Form(description=FILTER_FORM)] = None,
            kinds: Annotated[list[MediaKindName] | None, Form(description=KINDS_FORM)] = None,
        ) -> SearchResponse:
            data = await read_upload(request, file, settings.server.max_upload_bytes)
            filter_spec = parse_filter_json(filter)
            search_by = getattr(engine, query_by)
            result = await run_in_threadpool(search_by, data, k, offset, filter_spec, kinds)
            response.headers["Server-Timing"] = server_timing(result.timings)
            return SearchResponse.of(result)

        route.__doc__ = doc
        router.add_api_route(
            path,
            route,
            methods=["POST"],
            name=name,
            operation_id=name,
            response_model=SearchResponse,
            responses=ERRORS,
        )

    upload_route(
        "/search/image",
        "search_image",
        "search_image",
        "The query image (JPEG, PNG, WebP, ...).",
        "Uploaded image -> similar media (by their pictures).",
    )
    upload_route(
        "/search/audio",
        "search_audio",
        "search_audio",
        "The query sound (WAV, FLAC, MP3, Ogg, Opus, M4A, ...).",
        "Uploaded sound -> similar sounds (audio files and the soundtracks of videos).\n"
        "Only the first `query.max_query_audio_seconds` of the upload are used.",
    )
    return router


async def read_upload(request: Request, file: UploadFile, limit: int) -> bytes:
    """The uploaded bytes; 413 before reading when the declared size is already too big."""
    declared = request.headers.get("content-length")
    too_large = f"upload larger than {limit:,} bytes (setting server.max_upload_bytes)"
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise PayloadTooLarge(too_large)
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(too_large)
    return data


def server_timing(timings: dict[str, float]) -> str:
    """The W3C Server-Timing header value: `encode;dur=1.2, search;dur=0.4, ...`."""
    return ", ".join(f"{name};dur={ms:.3f}" for name, ms in timings.items())


__all__ = ["read_upload", "router_for", "server_timing"]
