"""Search: by text, by indexed item, by uploaded image or sound.

The routes are built for an engine's query limits (`router_for`), so that the request
schemas, their validation and the OpenAPI document say what the engine accepts: a
server configured with `query.max_k = 5000` takes k = 5000.
"""

# No `from __future__ import annotations`: FastAPI reads these routes' annotations at
# definition time, and they name the request model built in `router_for`.

import inspect
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from xmodal.search import QuerySettings, SearchResult
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

    @router.post(
        "/search/image",
        operation_id="search_image",
        response_model=SearchResponse,
        responses=ERRORS,
    )
    async def search_image(
        request: Request,
        response: Response,
        engine: EngineDep,
        settings: SettingsDep,
        file: Annotated[UploadFile, File(description="The query image (JPEG, PNG, WebP, ...).")],
        k: PageSize = 10,
        offset: Annotated[int, Form(ge=0)] = 0,
        filter: Annotated[str | None, Form(description=FILTER_FORM)] = None,
        kinds: Annotated[list[MediaKindName] | None, Form(description=KINDS_FORM)] = None,
    ) -> SearchResponse:
        """Uploaded image -> similar media (by their pictures)."""
        return await search_upload(
            request, response, engine.search_image, settings.server.max_upload_bytes,
            file, k, offset, filter, kinds,
        )  # fmt: skip

    @router.post(
        "/search/audio",
        operation_id="search_audio",
        response_model=SearchResponse,
        responses=ERRORS,
    )
    async def search_audio(
        request: Request,
        response: Response,
        engine: EngineDep,
        settings: SettingsDep,
        file: Annotated[
            UploadFile, File(description="The query sound (WAV, FLAC, MP3, Ogg, Opus, M4A, ...).")
        ],
        k: PageSize = 10,
        offset: Annotated[int, Form(ge=0)] = 0,
        filter: Annotated[str | None, Form(description=FILTER_FORM)] = None,
        kinds: Annotated[list[MediaKindName] | None, Form(description=KINDS_FORM)] = None,
    ) -> SearchResponse:
        """Uploaded sound -> similar sounds (audio files and the soundtracks of videos).
        Only the first `query.max_query_audio_seconds` of the upload are used."""
        return await search_upload(
            request, response, engine.search_audio, settings.server.max_upload_bytes,
            file, k, offset, filter, kinds,
        )  # fmt: skip

    return router


async def search_upload(
    request: Request,
    response: Response,
    search: Callable[..., SearchResult],
    limit: int,
    file: UploadFile,
    k: int,
    offset: int,
    filter: str | None,
    kinds: list[str] | None,
) -> SearchResponse:
    """Read an upload within `limit` bytes and run a query by example on it."""
    data = await read_upload(request, file, limit)
    filter_spec = parse_filter_json(filter)
    result = await run_in_threadpool(search, data, k, offset, filter_spec, kinds)
    response.headers["Server-Timing"] = server_timing(result.timings)
    return SearchResponse.of(result)


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
