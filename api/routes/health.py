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
    loaded = {space.space: space.index.last_refresh for space in engine.searchers}
    return HealthResponse(
        status="ok",
        items=store.count_items(),
        spaces=[
            SpaceOut(
                name=s.name,
                model=s.model_spec,
                model_identity=s.model_identity,
                dim=s.dim,
                index=refresh.kind if (refresh := loaded.get(s.name)) is not None else None,
            )
            for s in store.spaces()
        ],
        store_format=store.format_version,
        data=str(store.path.resolve()),
        model=engine.encoder.spec,
        audio_model=None if engine.audio_encoder is None else engine.audio_encoder.spec,
        pid=os.getpid(),
    )
