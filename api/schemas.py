"""HTTP request and response bodies (apart from the store's records)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, model_validator

if TYPE_CHECKING:  # only in annotations: the command line reads answers without the store
    from xmodal.search.hits import Hit, SearchResult
    from xmodal.search.store import ItemRecord

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
    min_score: float | None = Field(
        None,
        description="Text queries: drop hits whose calibrated_score is below this (default: "
        "the server's min_score setting). 3 keeps matches well above what unrelated queries "
        "reach.",
    )

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
    score: float = Field(description="Cosine similarity of the best segment, in its space.")
    matched: Literal["picture", "sound"] = Field(
        description="What matched: the pictures (images, video keyframes) or the sound "
        "(audio files, the soundtrack of a video)."
    )
    calibrated_score: float | None = Field(
        None,
        description="Text queries: the score on the scale shared by all spaces ("
        "standard deviations above the best match of unrelated queries); hits are ordered "
        "by it. Null for queries by example.",
    )
    width: int
    height: int
    duration: float | None = None
    segments: list[SegmentOut] = Field(
        description="An image's segment, or the best moments (start, end in seconds) of a "
        "video or a sound, adjacent windows merged."
    )
    metadata: dict[str, Any]

    @classmethod
    def of(cls, hit: Hit) -> HitOut:
        item = hit.item
        return cls(
            id=item.id,
            uri=item.uri,
            kind=item.kind,
            score=hit.score,
            matched=hit.matched,  # type: ignore[arg-type]
            calibrated_score=None if hit.calibrated is None else round(hit.calibrated, 4),
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
    data: str = Field(description="The data directory served, resolved.")
    model: str = Field(description="The image-text model this server queries with.")
    audio_model: str | None = Field(
        None, description="The audio-text model this server queries with; null: none."
    )
    pid: int = Field(description="The server's process id (`xmodal search` checks it).")


class ErrorResponse(BaseModel):
    detail: str
