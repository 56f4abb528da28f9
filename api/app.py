"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI

from xmodal import __version__
from xmodal.api.settings import Settings
from xmodal.search import Engine

from .access import ACCESS_ERRORS, Access, install_access, require_admin, require_search
from .catalog_service import catalog_for, job_runner_for
from .errors import install_error_handlers
from .keys import KeyRing
from .limits import BodyLimit, BodyLimits
from .metrics import Metrics
from .migration_service import MigrationRunner
from .observe import ObserveRequests
from .pages import install_pages
from .routes import admin, catalog, explain, facets, health, items, keys, metrics, search
from .thumbnails import ThumbnailCache

DESCRIPTION = """Cross-modal semantic search over indexed media.

Once keys exist (`xmodal keys create`), every route but `/health` needs one, sent as
`Authorization: Bearer KEY` or `X-API-Key: KEY`: the search, item and explain routes a
key of scope `search` (or `write`, `admin`; or a `publishable` key from one of its web
origins), the key and `/admin` routes `admin`. Without `admin`, item locations are shown relative to
their indexed folder. Too many requests get 429 with `Retry-After`. The thumbnail, media
and heatmap URLs in answers are signed (`exp`, `sig`): they need no key until they
expire. The search page (`/`) and its files are open: they hold no data."""


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the API over a store. Tests inject settings and an engine with a tiny model."""
    settings = settings or Settings()
    engine = engine or Engine.from_settings(settings)
    if settings.server.live_refresh:
        engine.serve_live()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Sync endpoints run in anyio's worker threads (40 by default).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.server.threads
        # Uploads are decoded in threads of their own (routes/search.py).
        app.state.upload_limiter = anyio.CapacityLimiter(settings.server.upload_threads)
        # Jobs left unfinished by an earlier run (a restart, a crash) go on now.
        app.state.jobs.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(app.state.migrations.stop)
            await anyio.to_thread.run_sync(app.state.jobs.stop)
            app.state.catalog.close()

    app = FastAPI(
        lifespan=lifespan,
        title="xmodal",
        version=__version__,
        description=DESCRIPTION,
    )
    app.state.settings = settings
    app.state.engine = engine
    # Replaced by the lifespan's on each start; this one serves an app run without it.
    app.state.upload_limiter = anyio.CapacityLimiter(settings.server.upload_threads)
    app.state.thumbnails = ThumbnailCache(
        settings.data / "thumbnails", settings.server.thumbnail_size, settings.images
    )
    access = Access(
        KeyRing.of_data(settings.data),
        settings.security,
        hidden_paths=lambda: [*engine.store.roots(), str(Path(settings.data).resolve())],
    )
    install_access(app, settings, access)
    app.state.catalog = catalog_for(engine, settings)
    app.state.jobs = job_runner_for(app.state.catalog, settings)
    # Model migrations hold the catalog's writes off for their commits and switch.
    app.state.migrations = MigrationRunner(engine, settings, app.state.catalog.holding)
    install_error_handlers(app)
    server = settings.server
    # Room for an upload's other form fields (a filter) and the multipart framing.
    upload = BodyLimit(
        server.max_upload_bytes, "server.max_upload_bytes", "upload", server.max_json_bytes
    )
    writes = BodyLimit(settings.catalog.max_request_bytes, "catalog.max_request_bytes")
    app.add_middleware(
        BodyLimits,
        default=BodyLimit(server.max_json_bytes, "server.max_json_bytes"),
        by_path=dict.fromkeys(search.UPLOAD_PATHS, upload),
        by_prefix={catalog.CATALOG_BODY_PREFIX: writes},
    )
    searching = [Depends(require_search)]
    for router in (
        search.router_for(engine.query, engine.reranking.settings, server),
        explain.router_for(engine.query),
        items.router,
        facets.router,
    ):
        app.include_router(router, dependencies=searching, responses=ACCESS_ERRORS)
    app.include_router(keys.router, responses=ACCESS_ERRORS)  # admin: the router says so
    app.include_router(admin.router, responses=ACCESS_ERRORS)  # admin: the router says so
    app.include_router(catalog.router, responses=ACCESS_ERRORS)  # write: the router says so
    app.include_router(health.router)
    install_pages(app)  # GET /, /widget.js, /static/...: open, no data in them
    observed = Metrics(engine, app.state.catalog.counters) if settings.server.metrics else None
    if observed is not None:
        app.state.metrics = observed
        # Figures about the library (sizes, staleness) are for operators: admin keys.
        app.include_router(
            metrics.router, dependencies=[Depends(require_admin)], responses=ACCESS_ERRORS
        )
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
