"""Facets: the metadata keys of the indexed items, for building filters."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from ..deps import EngineDep
from ..schemas import FacetsResponse

router = APIRouter(tags=["search"])


@router.get("/facets", operation_id="facets", response_model=FacetsResponse)
async def facets(engine: EngineDep) -> FacetsResponse:
    """The indexed items' metadata keys (the 50 most common), each with its type and the
    number of items holding it; for a key with at most 50 distinct values, the values
    and their counts; for numbers, the smallest and largest. Computed once per store
    version: a page builds its filters from it (`{"key": {"$in": [...]}}`,
    `{"key": {"$gte": min, "$lte": max}}`)."""
    return FacetsResponse.of(await run_in_threadpool(engine.facets))
