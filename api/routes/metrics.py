"""Prometheus metrics (api/metrics.py; docs/operations.md lists them)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    operation_id="metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics(request: Request) -> Response:
    """Requests, latencies, index size and staleness, indexing runs, in Prometheus' text
    exposition format."""
    exported = request.app.state.metrics
    return Response(exported.exposition(), media_type=exported.content_type)
