"""Dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from anyio import CapacityLimiter
from fastapi import Depends, Request

from xmodal.api.settings import Settings
from xmodal.search import Engine

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


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ThumbnailsDep = Annotated[ThumbnailCache, Depends(get_thumbnails)]
UploadLimiterDep = Annotated[CapacityLimiter, Depends(get_upload_limiter)]
