"""Explanations: why an indexed picture matches a text, in words and as a heatmap.

The vision-language model's work blocks, so the routes are plain functions: FastAPI
runs them in its thread pool (server.threads at a time), never on the event loop.
"""

# No `from __future__ import annotations`: FastAPI reads these routes' annotations at
# definition time (see search.py).

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from xmodal.search import QuerySettings

from ..deps import EngineDep, SignedUrl
from ..rerank_schemas import (
    MODEL_DESCRIPTION,
    MODEL_SPEC_CHARS,
    ExplainRequest,
    ExplainResponse,
    explain_request_model,
)
from ..schemas import ErrorResponse
from .search import validate_body_with

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "An empty query, or an item with no picture"},
    404: {"model": ErrorResponse, "description": "No such item"},
    503: {"model": ErrorResponse, "description": "The model cannot be loaded"},
}
# A heatmap depends on the item's file, the query and the model, all in its URL; a
# re-indexed item may change, so it is kept for an hour, by the asking browser only.
HEATMAP_CACHE = "private, max-age=3600"


def router_for(limits: QuerySettings) -> APIRouter:
    """The explanation routes, the query text bounded by `limits.max_text_chars`."""
    router = APIRouter(tags=["explain"])
    Text = Annotated[
        str,
        Query(max_length=limits.max_text_chars, description="The query text."),
    ]

    def explain(body: ExplainRequest, engine: EngineDep) -> ExplainResponse:
        """Why an indexed image or video matches a text: what the reranker's model says
        the picture (a video's frame at `t`) shows, which words of the text it supports,
        and the URL of the heatmap."""
        started = time.perf_counter()
        engine.reranking.check_offered(body.model)
        explanation = engine.explain(body.text, body.item_id, body.t, body.model)
        took_ms = round((time.perf_counter() - started) * 1000.0, 3)
        return ExplainResponse.answering(
            explanation, body.item_id, body.text, body.t, body.model, took_ms
        )

    validate_body_with(explain, explain_request_model(limits.max_text_chars, limits.max_id_chars))
    router.add_api_route(
        "/explain",
        explain,
        methods=["POST"],
        operation_id="explain",
        response_model=ExplainResponse,
        responses={
            **ERRORS,
            413: {"model": ErrorResponse, "description": "A body over server.max_json_bytes"},
        },
    )

    def explain_heatmap(
        item_id: Annotated[str, Path(description="The indexed image or video.")],
        engine: EngineDep,
        q: Text,
        t: Annotated[
            float | None,
            Query(ge=0, allow_inf_nan=False, description="For a video: the moment, in seconds."),
        ] = None,
        model: Annotated[
            str | None,
            Query(min_length=1, max_length=MODEL_SPEC_CHARS, description=MODEL_DESCRIPTION),
        ] = None,
    ) -> Response:
        """A PNG of the item's picture as the model sees it, coloured where the evidence
        for the query `q` lies (dark blue: none, yellow: most)."""
        engine.reranking.check_offered(model)
        png = engine.explain_heatmap(q, item_id, t, model)
        return Response(png, media_type="image/png", headers={"Cache-Control": HEATMAP_CACHE})

    router.add_api_route(
        "/items/{item_id}/explain.png",
        explain_heatmap,
        methods=["GET"],
        operation_id="explain_heatmap",
        response_class=Response,
        dependencies=[SignedUrl],
        responses={
            200: {"content": {"image/png": {}}, "description": "The heatmap"},
            **ERRORS,
        },
    )
    return router


__all__ = ["router_for"]
