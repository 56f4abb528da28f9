"""Liveness and what the store holds."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request

from ..access import OptionalCaller
from ..deps import EngineDep
from ..schemas import HealthResponse, MigrationOut, SpaceOut

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    operation_id="health",
    response_model=HealthResponse,
    response_model_exclude_unset=True,
    # A key is optional here: `{}` says so in OpenAPI (anyone gets the liveness part).
    openapi_extra={"security": [{}]},
)
def health(request: Request, engine: EngineDep, caller: OptionalCaller) -> HealthResponse:
    """Liveness, for anyone; with a key, what the store holds; with an admin key (or on
    an open server), also the data directory and the process."""
    if caller is None:
        return HealthResponse(status="ok")
    store = engine.store
    loaded = {name: r.kind for name, r in engine.index_reports().items() if r is not None}
    # The server's paths and process: for those who may see them.
    process = {"data": str(store.path.resolve()), "pid": os.getpid()} if caller.sees_paths else {}
    # Worked out again only when a table it reads changed (MigrationWatch); left out
    # when no space is moving to another model.
    migrations = [
        MigrationOut(**status.to_dict()) for status in request.app.state.migrations.watch.statuses()
    ]
    moving: dict[str, list[MigrationOut]] = {"migrations": migrations} if migrations else {}
    return HealthResponse(
        status="ok",
        items=store.count_items(),
        spaces=[
            SpaceOut(
                name=s.name,
                model=s.model_spec,
                model_identity=s.model_identity,
                dim=s.dim,
                index=loaded.get(s.name),
            )
            for s in store.spaces()
        ],
        store_format=store.format_version,
        model=engine.encoder.spec,
        audio_model=None if engine.audio_encoder is None else engine.audio_encoder.spec,
        reranker=engine.reranking.settings.model,
        max_explain=engine.reranking.settings.max_explain,
        **process,
        **moving,
    )
