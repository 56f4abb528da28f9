"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
from fastapi import FastAPI

from xmodal import __version__
from xmodal.api.settings import Settings
from xmodal.search import Engine

from .errors import install_error_handlers
from .limits import BodyLimit, BodyLimits
from .routes import explain, health, items, search
from .thumbnails import ThumbnailCache


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the API over a store. Tests inject settings and an engine with a tiny model."""
    settings = settings or Settings()
    engine = engine or Engine.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Sync endpoints run in anyio's worker threads (40 by default).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.server.threads
        # Uploads are decoded in threads of their own (routes/search.py).
        app.state.upload_limiter = anyio.CapacityLimiter(settings.server.upload_threads)
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="xmodal",
        version=__version__,
        description="Cross-modal semantic search over indexed media.",
    )
    app.state.settings = settings
    app.state.engine = engine
    # Replaced by the lifespan's on each start; this one serves an app run without it.
    app.state.upload_limiter = anyio.CapacityLimiter(settings.server.upload_threads)
    app.state.thumbnails = ThumbnailCache(
        settings.data / "thumbnails", settings.server.thumbnail_size, settings.images
    )
    install_error_handlers(app)
    server = settings.server
    # Room for an upload's other form fields (a filter) and the multipart framing.
    upload = BodyLimit(
        server.max_upload_bytes, "server.max_upload_bytes", "upload", server.max_json_bytes
    )
    app.add_middleware(
        BodyLimits,
        default=BodyLimit(server.max_json_bytes, "server.max_json_bytes"),
        by_path=dict.fromkeys(search.UPLOAD_PATHS, upload),
    )
    app.include_router(search.router_for(engine.query, engine.reranking.settings, server))
    app.include_router(explain.router_for(engine.query))
    app.include_router(items.router)
    app.include_router(health.router)
    return app
