"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from xmodal import __version__
from xmodal.api.settings import Settings
from xmodal.search import Engine
from xmodal.search.media import ImageLimits
from xmodal.search.space_index import AnnOptions

from .errors import install_error_handlers
from .routes import health, items, search
from .thumbnails import ThumbnailCache


def open_engine(settings: Settings) -> Engine:
    return Engine.open(
        settings.data,
        model=settings.model,
        audio_model=settings.audio_model,
        device=settings.device,
        limits=ImageLimits.from_settings(settings),
        max_k=settings.max_k,
        ann=AnnOptions.from_settings(settings),
        text_batch_wait_ms=settings.text_batch_wait_ms,
        min_score=settings.min_score,
        max_query_audio_seconds=settings.max_query_audio_seconds,
    )


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the API over a store. Tests inject settings and an engine with a tiny model."""
    settings = settings or Settings()
    engine = engine or open_engine(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Sync endpoints run in anyio's worker threads (40 by default).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="xmodal",
        version=__version__,
        description="Cross-modal semantic search over indexed media.",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.thumbnails = ThumbnailCache(
        settings.data / "thumbnails", settings.thumbnail_size, ImageLimits.from_settings(settings)
    )
    install_error_handlers(app)
    app.include_router(search.router)
    app.include_router(items.router)
    app.include_router(health.router)
    return app
