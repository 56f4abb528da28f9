"""Items: metadata, thumbnails, and the original media."""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from xmodal.search.errors import OriginalMissing, UnknownItemError
from xmodal.search.media import MediaKind
from xmodal.search.store import display_name

from ..access import SearchCaller
from ..deps import EngineDep, ThumbnailsDep
from ..schemas import ErrorResponse, ItemOut

router = APIRouter(prefix="/items", tags=["items"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}


@router.get("/{item_id}", operation_id="get_item", response_model=ItemOut, responses=NOT_FOUND)
def get_item(item_id: str, engine: EngineDep, caller: SearchCaller) -> ItemOut:
    item = engine.item(item_id)
    if engine.store.leaves_roots(item):  # indexed by an older version: nothing is said
        raise UnknownItemError(item_id)
    return ItemOut.of(item, caller.sees_paths)


@router.get(
    "/{item_id}/thumbnail",
    operation_id="get_thumbnail",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/jpeg": {}}},
        404: {"model": ErrorResponse, "description": "No such item, or a sound (no picture)"},
        413: {"model": ErrorResponse, "description": "A picture over the pixel limits"},
        415: {"model": ErrorResponse, "description": "A picture that cannot be decoded"},
    },
)
async def get_thumbnail(
    item_id: str,
    engine: EngineDep,
    thumbnails: ThumbnailsDep,
    t: Annotated[
        float | None,
        Query(ge=0, allow_inf_nan=False, description="For a video: the moment, in seconds."),
    ] = None,
) -> FileResponse:
    item = await run_in_threadpool(engine.item, item_id)
    if item.kind == MediaKind.AUDIO:
        raise OriginalMissing(f"item {item_id} is a sound: it has no picture to show")
    source = await run_in_threadpool(engine.store.original_path, item)  # the roots' jail
    path = await run_in_threadpool(thumbnails.path_for, item, source, t)
    return FileResponse(
        path,
        media_type="image/jpeg",
        headers={"Cache-Control": "public, max-age=86400, immutable"},
    )


@router.get(
    "/{item_id}/media",
    operation_id="get_media",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The original file, as its type",
            "content": {
                media: {} for media in ("image/*", "video/*", "audio/*", "application/octet-stream")
            },
        },
        206: {"description": "A byte range"},
        **NOT_FOUND,
    },
)
def get_media(item_id: str, engine: EngineDep) -> FileResponse:
    """The original file (Range requests supported), only from inside an indexed root."""
    item = engine.item(item_id)
    path = engine.store.original_path(item)  # 404 outside the indexed roots
    # The name it was indexed under (not a link's target), readable: a header cannot
    # carry bytes that are not UTF-8.
    name = PurePath(display_name(item.uri)).name
    return FileResponse(path, filename=name, content_disposition_type="inline")
