"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from xmodal import __version__
from xmodal.api.settings import Settings
from xmodal.search import Engine

from .errors import install_error_handlers
from .metrics import Metrics
from .observe import ObserveRequests
from .routes import explain, health, items, metrics, search
from .thumbnails import ThumbnailCache


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the API over a store. Tests inject settings and an engine with a tiny model."""
    settings = settings or Settings()
    engine = engine or Engine.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Sync endpoints run in anyio's worker threads (40 by default).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.server.threads
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
        settings.data / "thumbnails", settings.server.thumbnail_size, settings.images
    )
    install_error_handlers(app)
    app.include_router(search.router_for(engine.query, engine.reranking.settings))
    app.include_router(explain.router_for(engine.query))
    app.include_router(items.router)
    app.include_router(health.router)
    observed = Metrics(engine) if settings.server.metrics else None
    if observed is not None:
        app.state.metrics = observed
        app.include_router(metrics.router)
    # Added last, so outermost: it times, counts and logs every answer, those of the
    # middleware inside it (rejections included). Keep it the last one added.
    if observed is not None or settings.log.access:
        app.add_middleware(
            ObserveRequests,
            metrics=None if observed is None else observed.http,
            access=settings.log.access,
            routes=app.router.routes,
        )
    return app
