"""HTTP request and response bodies (apart from the store's records)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, get_args, get_type_hints

from pydantic import BaseModel, Field, create_model, model_validator

from xmodal.search.hits import Hit, SearchResult
from xmodal.search.media import MediaKind
from xmodal.search.settings import QuerySettings
from xmodal.search.store import ItemRecord
from xmodal.search.store.records import ITEM_COLUMNS

# A kind a request may name: a Literal of the table's values rather than the enum, so
# that the OpenAPI schema keeps its inline enum ["image", "video", "audio"] and a bad
# value the same validation error.
if TYPE_CHECKING:
    MediaKindName = str
else:
    MediaKindName = Literal[tuple(kind.value for kind in MediaKind)]


TEXT_DESCRIPTION = "Find media matching this text."
K_DESCRIPTION = "Results per page."


class SearchRequest(BaseModel):
    """A query by text or by indexed item. `text` and `k` are bounded by the engine's
    query limits: `search_request_model` builds the model a server validates with."""

    text: str | None = Field(None, description=TEXT_DESCRIPTION)
    item_id: str | None = Field(None, description="Find media similar to this indexed item.")
    k: int = Field(10, ge=1, description=K_DESCRIPTION)
    offset: int = Field(0, ge=0, description="Skip this many results (pagination).")
    filter: dict[str, Any] | None = Field(
        None,
        description='Metadata filter, e.g. {"category": "shoes", "width": {"$gte": 800}}.',
    )
    kinds: list[MediaKindName] | None = Field(None, description="Only these kinds of media.")
    min_score: float | None = Field(
        None,
        description="Text queries: drop hits whose calibrated_score is below this (default: "
        "the server's query.min_score setting). 3 keeps matches well above what unrelated "
        "queries reach.",
    )

    @model_validator(mode="after")
    def exactly_one_query(self) -> SearchRequest:
        given = [name for name in ("text", "item_id") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("give exactly one of `text` or `item_id`")
        return self


def search_request_model(limits: QuerySettings) -> type[SearchRequest]:
    """SearchRequest with `text` and `k` bounded by the query limits, so that what the
    schema accepts and documents is what the engine answers."""
    return create_model(
        "SearchRequest",
        __base__=SearchRequest,
        __doc__=SearchRequest.__doc__,
        text=(
            str | None,
            Field(None, description=TEXT_DESCRIPTION, max_length=limits.max_text_chars),
        ),
        k=(int, Field(10, ge=1, le=limits.max_k, description=K_DESCRIPTION)),
    )


class SegmentOut(BaseModel):
    id: str
    score: float
    start: float | None = None
    end: float | None = None


def item_fields(view: str) -> dict[str, Any]:
    """The fields of ItemRecord shown in `view` ("item": GET /items/{id}; "hit": search
    results), typed as the JSON shows them; the record declares which (Column.shown_in)."""
    hints = get_type_hints(ItemRecord)
    shown: dict[str, Any] = {}
    for name, column in ITEM_COLUMNS.items():
        if view not in column.shown_in:
            continue
        annotation = str if hints[name] is MediaKind else hints[name]
        if column.empty_is_null:
            annotation = annotation | None
        optional = type(None) in get_args(annotation)
        default = None if optional else ...
        shown[name] = (annotation, Field(default, description=column.description))
    return shown


def item_values(item: ItemRecord, view: str) -> dict[str, Any]:
    """An item's values for the fields of `view` (see item_fields)."""
    values: dict[str, Any] = {}
    for name, column in ITEM_COLUMNS.items():
        if view in column.shown_in:
            value = getattr(item, name)
            values[name] = None if column.empty_is_null and not value else value
    return values


# The item parts of the two responses, derived from ItemRecord's declaration.
if TYPE_CHECKING:
    ItemFields = BaseModel
    HitItemFields = BaseModel
else:
    ItemFields = create_model("ItemFields", **item_fields("item"))
    HitItemFields = create_model("HitItemFields", **item_fields("hit"))


class ItemOut(ItemFields):
    @classmethod
    def of(cls, item: ItemRecord) -> ItemOut:
        return cls(**item_values(item, "item"))


class HitOut(HitItemFields):
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
    segments: list[SegmentOut] = Field(
        description="An image's segment, or the best moments (start, end in seconds) of a "
        "video or a sound, adjacent windows merged."
    )

    @classmethod
    def of(cls, hit: Hit) -> HitOut:
        return cls(
            **item_values(hit.item, "hit"),
            score=hit.score,
            matched=hit.matched,
            calibrated_score=None if hit.calibrated is None else round(hit.calibrated, 4),
            segments=[SegmentOut(**s.__dict__) for s in hit.segments],
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
