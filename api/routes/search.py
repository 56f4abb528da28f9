"""Search: by text, by indexed item, by uploaded image or sound.

The routes are built for an engine's query limits (`router_for`), so that the request
schemas, their validation and the OpenAPI document say what the engine accepts: a
server configured with `query.max_k = 5000` takes k = 5000.
"""

# No `from __future__ import annotations`: FastAPI reads these routes' annotations at
# definition time, and they name the request model built in `router_for`.

import inspect
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

import anyio.to_thread
import numpy as np
from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from pydantic import BaseModel

from xmodal.search import QuerySettings
from xmodal.search.errors import InvalidQueryError
from xmodal.search.filters import parse_filter_json
from xmodal.search.media import MediaKind
from xmodal.search.rerank.settings import RerankSettings

from ..access import SearchCaller, refuse_path_filters
from ..deps import EngineDep, MediaLinksDep, SettingsDep, UploadLimiterDep
from ..errors import PayloadTooLarge
from ..schemas import (
    K_DESCRIPTION,
    ErrorResponse,
    ExplainedBy,
    MediaKindName,
    SearchRequest,
    SearchResponse,
    search_request_model,
)
from ..settings import ServerSettings

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 409, 413, 415, 503)
}
FILTER_FORM = "Metadata filter as JSON."
KINDS_FORM = "Only these kinds of media."
# The routes that take an upload: their bodies may be as large as server.max_upload_bytes
# (api/limits.py); every other body is bounded by server.max_json_bytes.
UPLOAD_PATHS = ("/search/image", "/search/audio")


def router_for(
    limits: QuerySettings,
    rerank: RerankSettings | None = None,
    server: ServerSettings | None = None,
) -> APIRouter:
    """The search routes, their schemas bounded by `limits` and the `rerank` settings,
    their forms by the `server` settings (one file; fields no longer than a JSON body)."""
    server = server or ServerSettings()
    router = APIRouter(
        tags=["search"],
        form_limits={
            "max_files": 1,
            "max_fields": 16,
            "max_part_size": server.max_json_bytes,
        },
    )
    PageSize = Annotated[int, Form(ge=1, le=limits.max_k, description=K_DESCRIPTION)]

    def search(
        body: SearchRequest,
        engine: EngineDep,
        response: Response,
        caller: SearchCaller,
        links: MediaLinksDep,
    ) -> SearchResponse:
        """Text -> media, indexed item -> similar media (the item itself excluded), or
        vector of a space -> the media nearest to it.

        Text queries may rerank their first hits and explain some of them (`rerank`,
        `explain`). The `Server-Timing` header splits the time: encode, search, fetch,
        and rerank and explain when asked (milliseconds)."""
        refuse_path_filters(caller, body.filter)
        rerank_request = body.rerank_request()
        if rerank_request is not None:
            engine.reranking.check_offered(rerank_request.model)
        if body.text:
            result = engine.search_text(
                body.text,
                body.k,
                body.offset,
                body.filter,
                body.kinds,
                body.min_score,
                rerank=rerank_request,
                explain=body.explain,
            )
        elif rerank_request is not None or body.explain:
            by = "`vector`" if body.vector else "`item_id`"
            raise InvalidQueryError(f"rerank and explain apply to text queries only, not to {by}")
        elif body.vector:
            result = engine.search_vector(
                np.asarray(body.vector), body.k, body.offset, body.filter, body.kinds, body.space
            )
        else:
            result = engine.search_similar(
                str(body.item_id), body.k, body.offset, body.filter, body.kinds
            )
        response.headers["Server-Timing"] = server_timing(result.timings)
        model = None if rerank_request is None else rerank_request.model
        explained = ExplainedBy(body.text or "", model)
        return SearchResponse.of(result, explained, caller.sees_paths, links)

    validate_body_with(search, search_request_model(limits, rerank))
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
            caller: SearchCaller,
            links: MediaLinksDep,
            uploads: UploadLimiterDep,
            file: Annotated[UploadFile, File(description=upload)],
            # Not nullable: a multipart form has no null, only absent fields.
            kinds: Annotated[
                list[MediaKindName],
                Form(default_factory=list, max_length=len(MediaKind), description=KINDS_FORM),
            ],
            k: PageSize = 10,
            offset: Annotated[int, Form(ge=0)] = 0,
            filter: Annotated[str | None, Form(description=FILTER_FORM)] = None,
        ) -> SearchResponse:
            data = await read_upload(request, file, settings.server.max_upload_bytes)
            filter_spec = parse_filter_json(filter, limits)
            refuse_path_filters(caller, filter_spec)
            search_by = getattr(engine, query_by)
            # Decoding an upload can take seconds of CPU: uploads have their own threads
            # (server.upload_threads), so that four of them could not hold every thread
            # while /health waited 1.6 s.
            result = await anyio.to_thread.run_sync(
                partial(search_by, data, k, offset, filter_spec, kinds or None), limiter=uploads
            )
            response.headers["Server-Timing"] = server_timing(result.timings)
            return SearchResponse.of(result, full_paths=caller.sees_paths, links=links)

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
        UPLOAD_PATHS[0],
        "search_image",
        "search_image",
        "The query image (JPEG, PNG, WebP, ...).",
        "Uploaded image -> similar media (by their pictures).",
    )
    upload_route(
        UPLOAD_PATHS[1],
        "search_audio",
        "search_audio",
        "The query sound (WAV, FLAC, MP3, Ogg, Opus, M4A, ...).",
        "Uploaded sound -> similar sounds (audio files and the soundtracks of videos).\n"
        "Only the first `query.max_query_audio_seconds` of the upload are used.",
    )
    return router


def validate_body_with(route: Callable[..., Any], model: type[BaseModel]) -> None:
    """Make FastAPI validate (and document) the route's `body` parameter with `model`, a
    request model built at run time with the server's limits: FastAPI reads the type
    from the signature."""
    signature = inspect.signature(route)
    route.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[
            p.replace(annotation=model) if p.name == "body" else p
            for p in signature.parameters.values()
        ]
    )


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


__all__ = ["UPLOAD_PATHS", "read_upload", "router_for", "server_timing", "validate_body_with"]
