"""Search: by text, by indexed item, by uploaded image or sound."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from xmodal.search.filters import parse_filter_json

from ..deps import EngineDep, SettingsDep
from ..errors import PayloadTooLarge
from ..schemas import ErrorResponse, MediaKindName, SearchRequest, SearchResponse

router = APIRouter(tags=["search"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 409, 413, 415, 503)
}


@router.post("/search", operation_id="search", response_model=SearchResponse, responses=ERRORS)
def search(body: SearchRequest, engine: EngineDep, response: Response) -> SearchResponse:
    """Text -> media, or indexed item -> similar media (the item itself excluded).

    The `Server-Timing` header splits the time: encode, search, fetch (milliseconds)."""
    if body.text:
        result = engine.search_text(
            body.text, body.k, body.offset, body.filter, body.kinds, body.min_score
        )
    else:
        assert body.item_id is not None
        result = engine.search_similar(body.item_id, body.k, body.offset, body.filter, body.kinds)
    response.headers["Server-Timing"] = server_timing(result.timings)
    return SearchResponse.of(result)


@router.post(
    "/search/image", operation_id="search_image", response_model=SearchResponse, responses=ERRORS
)
async def search_image(
    request: Request,
    response: Response,
    engine: EngineDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="The query image (JPEG, PNG, WebP, ...).")],
    k: Annotated[int, Form(ge=1, le=1000)] = 10,
    offset: Annotated[int, Form(ge=0)] = 0,
    filter: Annotated[str | None, Form(description="Metadata filter as JSON.")] = None,
    kinds: Annotated[
        list[MediaKindName] | None, Form(description="Only these kinds of media.")
    ] = None,
) -> SearchResponse:
    """Uploaded image -> similar media (by their pictures)."""
    data = await read_upload(request, file, settings.server.max_upload_bytes)
    filter_spec = parse_filter_json(filter)
    result = await run_in_threadpool(engine.search_image, data, k, offset, filter_spec, kinds)
    response.headers["Server-Timing"] = server_timing(result.timings)
    return SearchResponse.of(result)


@router.post(
    "/search/audio", operation_id="search_audio", response_model=SearchResponse, responses=ERRORS
)
async def search_audio(
    request: Request,
    response: Response,
    engine: EngineDep,
    settings: SettingsDep,
    file: Annotated[
        UploadFile, File(description="The query sound (WAV, FLAC, MP3, Ogg, Opus, M4A, ...).")
    ],
    k: Annotated[int, Form(ge=1, le=1000)] = 10,
    offset: Annotated[int, Form(ge=0)] = 0,
    filter: Annotated[str | None, Form(description="Metadata filter as JSON.")] = None,
    kinds: Annotated[
        list[MediaKindName] | None, Form(description="Only these kinds of media.")
    ] = None,
) -> SearchResponse:
    """Uploaded sound -> similar sounds (audio files and the soundtracks of videos).
    Only the first `max_query_audio_seconds` of the upload are used."""
    data = await read_upload(request, file, settings.server.max_upload_bytes)
    filter_spec = parse_filter_json(filter)
    result = await run_in_threadpool(engine.search_audio, data, k, offset, filter_spec, kinds)
    response.headers["Server-Timing"] = server_timing(result.timings)
    return SearchResponse.of(result)


async def read_upload(request: Request, file: UploadFile, limit: int) -> bytes:
    """The uploaded bytes; 413 before reading when the declared size is already too big."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise PayloadTooLarge(
            f"upload larger than {limit:,} bytes (setting server.max_upload_bytes)"
        )
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(
            f"upload larger than {limit:,} bytes (setting server.max_upload_bytes)"
        )
    return data


def server_timing(timings: dict[str, float]) -> str:
    """The W3C Server-Timing header value: `encode;dur=1.2, search;dur=0.4, ...`."""
    return ", ".join(f"{name};dur={ms:.3f}" for name, ms in timings.items())
