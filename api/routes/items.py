"""Items: metadata, thumbnails, and the original media."""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from xmodal.search.errors import OriginalMissing, UnknownItemError
from xmodal.search.filters import parse_filter_json
from xmodal.search.media import KINDS, SNIFF_BYTES, MediaKind
from xmodal.search.store import CATALOG_ROOT, display_name

from ..access import SearchCaller, refuse_path_filters
from ..deps import EngineDep, MediaLinksDep, SignedUrl, ThumbnailsDep
from ..schemas import ErrorResponse, ItemOut, MediaKindName, SearchResponse

router = APIRouter(prefix="/items", tags=["items"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}


@router.get("/{item_id}", operation_id="get_item", response_model=ItemOut, responses=NOT_FOUND)
def get_item(
    item_id: str, engine: EngineDep, caller: SearchCaller, links: MediaLinksDep
) -> ItemOut:
    item = engine.item(item_id)
    if engine.store.leaves_roots(item):  # indexed by an older version: nothing is said
        raise UnknownItemError(item_id)
    return ItemOut.of(item, caller.sees_paths, links)


@router.get(
    "/{item_id}/similar",
    operation_id="similar_items",
    response_model=SearchResponse,
    responses={code: {"model": ErrorResponse} for code in (400, 404)},
)
def similar_items(
    item_id: str,
    engine: EngineDep,
    caller: SearchCaller,
    links: MediaLinksDep,
    k: Annotated[int, Query(ge=1, description="Results per page.")] = 10,
    offset: Annotated[int, Query(ge=0)] = 0,
    filter: Annotated[
        str | None,
        Query(
            max_length=2048,
            description='Metadata filter as JSON, e.g. {"category": "shoes", "in_stock": true}.',
        ),
    ] = None,
    kinds: Annotated[list[MediaKindName] | None, Query(max_length=len(MediaKind))] = None,
) -> SearchResponse:
    """Items like this one (named by the caller's id or xmodal's), itself excluded: the
    "find similar" call of a product page. An image or video is compared by its
    pictures, a sound by its sound."""
    spec = parse_filter_json(filter, engine.query)
    refuse_path_filters(caller, spec)
    result = engine.search_similar(item_id, k, offset, spec, kinds or None)
    return SearchResponse.of(result, full_paths=caller.sees_paths, links=links)


@router.get(
    "/{item_id}/thumbnail",
    operation_id="get_thumbnail",
    response_class=FileResponse,
    dependencies=[SignedUrl],
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
    dependencies=[SignedUrl],
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
    if item.root == CATALOG_ROOT:
        # Kept by content hash, without a name: its type is what its bytes say.
        with open(path, "rb") as file:
            mime = KINDS[item.kind].sniff(file.read(SNIFF_BYTES))
        name = PurePath(urlsplit(item.uri).path).name or f"{item.external_id or item.id}"
        return FileResponse(
            path,
            media_type=mime or "application/octet-stream",
            filename=name,
            content_disposition_type="inline",
        )
    # The name it was indexed under (not a link's target), readable: a header cannot
    # carry bytes that are not UTF-8.
    name = PurePath(display_name(item.uri)).name
    return FileResponse(path, filename=name, content_disposition_type="inline")
