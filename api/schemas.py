"""HTTP request and response bodies (apart from the store's records)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from search.hits import Hit, SearchResult
from search.store import ItemRecord

MediaKind = Literal["image", "video", "audio"]


class SearchRequest(BaseModel):
    text: str | None = Field(None, description="Find media matching this text.", max_length=2000)
    item_id: str | None = Field(None, description="Find media similar to this indexed item.")
    k: int = Field(10, ge=1, le=1000, description="Results per page.")
    offset: int = Field(0, ge=0, description="Skip this many results (pagination).")
    filter: dict[str, Any] | None = Field(
        None,
        description='Metadata filter, e.g. {"category": "shoes", "width": {"$gte": 800}}.',
    )
    kinds: list[MediaKind] | None = Field(None, description="Only these kinds of media.")

    @model_validator(mode="after")
    def exactly_one_query(self) -> SearchRequest:
        given = [name for name in ("text", "item_id") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("give exactly one of `text` or `item_id`")
        return self


class SegmentOut(BaseModel):
    id: str
    score: float
    start: float | None = None
    end: float | None = None


class ItemOut(BaseModel):
    id: str
    uri: str
    kind: str
    width: int
    height: int
    duration: float | None = None
    bytes: int
    content_hash: str
    status: str
    error: str | None = None
    metadata: dict[str, Any]

    @classmethod
    def of(cls, item: ItemRecord) -> ItemOut:
        return cls(
            id=item.id,
            uri=item.uri,
            kind=item.kind,
            width=item.width,
            height=item.height,
            duration=item.duration,
            bytes=item.bytes,
            content_hash=item.content_hash,
            status=item.status,
            error=item.error or None,
            metadata=item.metadata,
        )


class HitOut(BaseModel):
    id: str
    uri: str
    kind: str
    score: float
    width: int
    height: int
    duration: float | None = None
    segments: list[SegmentOut] = Field(description="An image's segment, or a video's best moments.")
    metadata: dict[str, Any]

    @classmethod
    def of(cls, hit: Hit) -> HitOut:
        item = hit.item
        return cls(
            id=item.id,
            uri=item.uri,
            kind=item.kind,
            score=hit.score,
            width=item.width,
            height=item.height,
            duration=item.duration,
            segments=[SegmentOut(**s.__dict__) for s in hit.segments],
            metadata=item.metadata,
        )


class SearchResponse(BaseModel):
    hits: list[HitOut]
    took_ms: float

    @classmethod
    def of(cls, result: SearchResult) -> SearchResponse:
        return cls(hits=[HitOut.of(h) for h in result.hits], took_ms=result.took_ms)


class SpaceOut(BaseModel):
    name: str
    model: str
    model_identity: str
    dim: int
    index: str | None = Field(
        None, description='Vector index in use ("exact", "hnsw", ...); null before the first query.'
    )


class HealthResponse(BaseModel):
    status: str
    items: int
    spaces: list[SpaceOut]
    store_format: int


class ErrorResponse(BaseModel):
    detail: str
