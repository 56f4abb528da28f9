"""Liveness and what the store holds."""

from __future__ import annotations

import os

from fastapi import APIRouter

from ..deps import EngineDep
from ..schemas import HealthResponse, SpaceOut

router = APIRouter(tags=["health"])


@router.get("/health", operation_id="health", response_model=HealthResponse)
def health(engine: EngineDep) -> HealthResponse:
    store = engine.store
    loaded = {name: r.kind for name, r in engine.index_reports().items() if r is not None}
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
        data=str(store.path.resolve()),
        model=engine.encoder.spec,
        audio_model=None if engine.audio_encoder is None else engine.audio_encoder.spec,
        pid=os.getpid(),
    )
