"""Dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from anyio import CapacityLimiter
from fastapi import Depends, Query, Request

from xmodal.api.settings import Settings
from xmodal.search import Engine

from .media_links import MediaLinks
from .thumbnails import ThumbnailCache


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_thumbnails(request: Request) -> ThumbnailCache:
    return request.app.state.thumbnails


def get_upload_limiter(request: Request) -> CapacityLimiter:
    """The threads uploaded queries are decoded and searched in (server.upload_threads)."""
    return request.app.state.upload_limiter


def get_media_links(request: Request) -> MediaLinks:
    """The signer of the answers' media URLs (signed on a keyed server)."""
    return request.app.state.media_links


def signed_url(
    exp: Annotated[
        int | None,
        Query(ge=0, description="A signed URL's expiry (unix seconds), as an answer gave it."),
    ] = None,
    sig: Annotated[
        str | None,
        Query(
            pattern="^[0-9a-f]{64}$",
            description="A signed URL's signature, as an answer gave it: the URL then "
            "needs no key until `exp`.",
        ),
    ] = None,
) -> None:
    """Declares (in OpenAPI) the query of a signed media URL; the access gate checks it
    (api/media_links.py) before the route runs."""


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ThumbnailsDep = Annotated[ThumbnailCache, Depends(get_thumbnails)]
UploadLimiterDep = Annotated[CapacityLimiter, Depends(get_upload_limiter)]
MediaLinksDep = Annotated[MediaLinks, Depends(get_media_links)]
SignedUrl = Depends(signed_url)
