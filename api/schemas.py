"""HTTP request and response bodies (apart from the store's records)."""

from __future__ import annotations

import contextlib
from pathlib import PurePath
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, get_args, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from xmodal.search.facets import Facet, Facets
from xmodal.search.hits import Hit, SearchResult
from xmodal.search.media import MediaKind
from xmodal.search.rerank.apply import moment_of
from xmodal.search.rerank.service import RerankRequest
from xmodal.search.rerank.settings import RerankSettings
from xmodal.search.settings import QuerySettings
from xmodal.search.store import ItemRecord
from xmodal.search.store.locations import FILE_URI, display_name
from xmodal.search.store.records import ITEM_COLUMNS

from .media_links import PLAIN_LINKS, MediaLinks
from .rerank_schemas import (
    ExplainReportOut,
    ExplanationOut,
    RerankOptions,
    RerankOut,
    heatmap_url,
    rerank_field,
    rerank_options_model,
)

# A kind a request may name: a Literal of the table's values rather than the enum, so
# that the OpenAPI schema keeps its inline enum ["image", "video", "audio"] and a bad
# value the same validation error.
if TYPE_CHECKING:
    MediaKindName = str
    RerankField = bool | RerankOptions | None
else:
    MediaKindName = Literal[tuple(kind.value for kind in MediaKind)]
    RerankField = rerank_field(RerankOptions)


TEXT_DESCRIPTION = "Find media matching this text."
ITEM_ID_DESCRIPTION = "Find media similar to this indexed item."
VECTOR_DESCRIPTION = (
    "Find media near this vector of the `space` (e.g. one from `xmodal export`): as many "
    "finite values as the space's dimension, not all zero; it is scaled to unit length."
)
SPACE_DESCRIPTION = (
    "`vector` queries: the space the vector belongs to. Text queries ask every space, "
    "queries by item the item's own."
)
# More values than any space has dimensions: a longer array is refused by validation.
MAX_VECTOR_VALUES = 4096
# The query fields, each with its schema when given (what `exactly_one_query` counts).
NON_EMPTY_QUERY: dict[str, Any] = {
    "text": {"type": "string", "minLength": 1},
    "item_id": {"type": "string", "minLength": 1},
    "vector": {"type": "array", "minItems": 1},
}
QUERY_FIELDS = tuple(NON_EMPTY_QUERY)
KINDS_DESCRIPTION = "Only these kinds of media."
K_DESCRIPTION = "Results per page."
RERANK_DESCRIPTION = (
    "Text queries: rerank the first hits with a vision-language model that looks at each "
    "picture while reading the query. true: with the server's rerank settings; an object: "
    "with some of them chosen. Never fails the search: the response's `rerank` says whether "
    "it was applied and why not."
)
EXPLAIN_DESCRIPTION = (
    "Text queries: explain this many of the page's first hits that have a picture (what "
    "the picture shows, which words of the query it supports, a heatmap URL)."
)


class SearchRequest(BaseModel):
    """A query by text, by indexed item or by vector. `text` and `k` are bounded by the
    engine's query limits: `search_request_model` builds the model a server validates with."""

    # What `exactly_one_query` checks, said in the schema: a non-empty text, item_id or
    # vector, only one of them.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": [name], "properties": {name: non_empty}}
                for name, non_empty in NON_EMPTY_QUERY.items()
            ]
        }
    )

    text: str | None = Field(None, description=TEXT_DESCRIPTION)
    item_id: str | None = Field(None, description=ITEM_ID_DESCRIPTION)
    vector: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        None, min_length=1, max_length=MAX_VECTOR_VALUES, description=VECTOR_DESCRIPTION
    )
    space: Literal["image-text", "audio-text"] = Field("image-text", description=SPACE_DESCRIPTION)
    k: int = Field(10, ge=1, description=K_DESCRIPTION)
    offset: int = Field(0, ge=0, description="Skip this many results (pagination).")
    filter: dict[str, Any] | None = Field(
        None,
        description='Metadata filter, e.g. {"category": "shoes", "width": {"$gte": 800}}.',
    )
    kinds: list[MediaKindName] | None = Field(
        None, max_length=len(MediaKind), description=KINDS_DESCRIPTION
    )
    min_score: float | None = Field(
        None,
        allow_inf_nan=False,
        description="Text queries: drop hits whose calibrated_score is below this (default: "
        "the server's query.min_score setting). 3 keeps matches well above what unrelated "
        "queries reach.",
    )
    rerank: RerankField = Field(None, description=RERANK_DESCRIPTION)
    explain: int = Field(0, ge=0, description=EXPLAIN_DESCRIPTION)

    @model_validator(mode="after")
    def exactly_one_query(self) -> SearchRequest:
        given = [name for name in QUERY_FIELDS if getattr(self, name)]
        if len(given) != 1:
            named = f"; given: {', '.join(f'`{name}`' for name in given)}" if given else ""
            raise ValueError(f"give exactly one of `text`, `item_id` or `vector`{named}")
        return self

    def rerank_request(self) -> RerankRequest | None:
        """What the engine is asked to rerank with; None: no reranking."""
        if isinstance(self.rerank, RerankOptions):
            return self.rerank.request()
        return RerankRequest() if self.rerank else None


def search_request_model(
    limits: QuerySettings, rerank: RerankSettings | None = None
) -> type[SearchRequest]:
    """SearchRequest with `text` and `k` bounded by the query limits, and `rerank` and
    `explain` by the rerank settings, so that what the schema accepts and documents is
    what the engine answers."""
    rerank = rerank or RerankSettings()
    return create_model(
        "SearchRequest",
        __base__=SearchRequest,
        __doc__=SearchRequest.__doc__,
        text=(
            str | None,
            Field(None, description=TEXT_DESCRIPTION, max_length=limits.max_text_chars),
        ),
        item_id=(
            str | None,
            Field(None, description=ITEM_ID_DESCRIPTION, max_length=limits.max_id_chars),
        ),
        k=(int, Field(10, ge=1, le=limits.max_k, description=K_DESCRIPTION)),
        rerank=(
            rerank_field(rerank_options_model(rerank)),
            Field(None, description=RERANK_DESCRIPTION),
        ),
        explain=(int, Field(0, ge=0, le=rerank.max_explain, description=EXPLAIN_DESCRIPTION)),
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


def item_values(item: ItemRecord, view: str, full_paths: bool = True) -> dict[str, Any]:
    """An item's values for the fields of `view` (see item_fields); without
    `full_paths`, its `uri` relative to its indexed root (see shown_uri)."""
    values: dict[str, Any] = {}
    for name, column in ITEM_COLUMNS.items():
        if view in column.shown_in:
            value = getattr(item, name)
            values[name] = None if column.empty_is_null and not value else value
    if "uri" in values and not full_paths:
        values["uri"] = shown_uri(item.uri, item.root)
    return values


def shown_uri(uri: str, root: str) -> str:
    """A file's location for a caller who may not see the server's paths: relative to
    the indexed folder it was found under (`2024/beach.jpg`), or its name when it was
    indexed on its own. A URL (an item indexed from a URI list) is shown as it is; a
    file whose name is not UTF-8 (stored as a `file://` URI) as the path it stands for."""
    if "://" in uri and not uri.startswith(FILE_URI):
        return uri
    path = PurePath(display_name(uri))
    if root:
        with contextlib.suppress(ValueError):
            relative = path.relative_to(PurePath(display_name(root)))
            if relative.parts:
                return relative.as_posix()
    return path.name


THUMBNAIL_URL_DESCRIPTION = (
    "Relative URL of the item's thumbnail (a video's at its best moment); null for a "
    "sound. Signed (`exp`, `sig`) on a keyed server: it works without a key, in an "
    "`<img>`, until it expires (security.media_url_seconds)."
)
MEDIA_URL_DESCRIPTION = (
    "Relative URL of the original file (Range requests supported); signed as "
    "`thumbnail_url` on a keyed server, for a `<video>` or `<audio>` element."
)


class MediaUrls(BaseModel):
    thumbnail_url: str | None = Field(None, description=THUMBNAIL_URL_DESCRIPTION)
    media_url: str = Field(description=MEDIA_URL_DESCRIPTION)

    @staticmethod
    def values(item: ItemRecord, links: MediaLinks, moment: float | None = None) -> dict[str, Any]:
        """The URLs of an item's thumbnail (at `moment` seconds for a video) and file."""
        picture = item.kind != MediaKind.AUDIO
        return {
            "thumbnail_url": links.thumbnail(item.id, moment) if picture else None,
            "media_url": links.media(item.id),
        }


# The item parts of the two responses, derived from ItemRecord's declaration, after
# their media URLs.
if TYPE_CHECKING:
    ItemFields = MediaUrls
    HitItemFields = MediaUrls
else:
    ItemFields = create_model("ItemFields", __base__=MediaUrls, **item_fields("item"))
    HitItemFields = create_model("HitItemFields", __base__=MediaUrls, **item_fields("hit"))


class ItemOut(ItemFields):
    @classmethod
    def of(
        cls, item: ItemRecord, full_paths: bool = True, links: MediaLinks = PLAIN_LINKS
    ) -> ItemOut:
        return cls(**item_values(item, "item", full_paths), **MediaUrls.values(item, links))


class ExplainedBy(NamedTuple):
    """What a search's explanations answer: its text, and the model it asked for (None:
    the server's), which the heatmap URLs repeat."""

    text: str
    model: str | None = None


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
    rerank_score: float | None = Field(
        None,
        description="Reranked hits: the vision-language model's score in [0, 1]; reranked "
        "pictures are ordered by it (blended with their first order when the rerank.weight "
        "setting is below 1). Null when not reranked.",
    )
    explanation: ExplanationOut | None = Field(
        None, description="When the search asked for explanations: why this hit matches."
    )

    @classmethod
    def of(
        cls,
        hit: Hit,
        explained: ExplainedBy | None = None,
        full_paths: bool = True,
        links: MediaLinks = PLAIN_LINKS,
    ) -> HitOut:
        explanation = None
        moment = moment_of(hit)
        if hit.explanation is not None:
            assert explained is not None, "an explained hit's heatmap URL needs the query"
            url = heatmap_url(hit.item.id, explained.text, moment, explained.model)
            explanation = ExplanationOut.of(hit.explanation, links.sign_relative(url))
        return cls(
            **item_values(hit.item, "hit", full_paths),
            **MediaUrls.values(hit.item, links, moment),
            score=hit.score,
            matched=hit.matched,
            calibrated_score=None if hit.calibrated is None else round(hit.calibrated, 4),
            segments=[SegmentOut(**s.__dict__) for s in hit.segments],
            rerank_score=hit.rerank_score,
            explanation=explanation,
        )


class SearchResponse(BaseModel):
    hits: list[HitOut]
    took_ms: float
    rerank: RerankOut | None = Field(
        None, description="How reranking went, when the search asked for it."
    )
    explain: ExplainReportOut | None = Field(
        None, description="How explaining went, when the search asked for explanations."
    )

    @classmethod
    def of(
        cls,
        result: SearchResult,
        explained: ExplainedBy | None = None,
        full_paths: bool = True,
        links: MediaLinks = PLAIN_LINKS,
    ) -> SearchResponse:
        """The response to a search; `explained` is needed for the hits' heatmap URLs;
        without `full_paths`, the hits' locations relative to their indexed roots;
        `links` signs the hits' media URLs on a keyed server."""
        return cls(
            hits=[HitOut.of(h, explained, full_paths, links) for h in result.hits],
            took_ms=result.took_ms,
            rerank=None if result.rerank is None else RerankOut.of(result.rerank),
            explain=None if result.explain is None else ExplainReportOut.of(result.explain),
        )


class FacetValueOut(BaseModel):
    value: str | float | bool
    count: int = Field(description="Items holding this value (a list, among its elements).")


class FacetOut(BaseModel):
    key: str = Field(description="The metadata key, nested keys dotted, as filters name it.")
    type: Literal["string", "number", "boolean", "list", "mixed"]
    count: int = Field(description="Items with a value for this key.")
    values: list[FacetValueOut] | None = Field(
        None,
        description="The distinct values (a list's elements) with their counts, the most "
        "common first; null when there are more than 50, or long ones.",
    )
    min: float | None = Field(None, description="Numbers: the smallest.")
    max: float | None = Field(None, description="Numbers: the largest.")

    @classmethod
    def of(cls, facet: Facet) -> FacetOut:
        values = None
        if facet.values is not None:
            values = [FacetValueOut(value=v.value, count=v.count) for v in facet.values]
        return cls(
            key=facet.key,
            type=facet.type,
            count=facet.count,
            values=values,
            min=facet.min,
            max=facet.max,
        )


class FacetsResponse(BaseModel):
    items: int = Field(description="Indexed items.")
    kinds: dict[str, int] = Field(description="Indexed items by kind (image, video, audio).")
    keys: list[FacetOut] = Field(description="Metadata keys, the most common first (50 at most).")
    truncated: bool = Field(description="Whether more keys exist than are listed.")

    @classmethod
    def of(cls, facets: Facets) -> FacetsResponse:
        return cls(
            items=facets.items,
            kinds=facets.kinds,
            keys=[FacetOut.of(f) for f in facets.keys],
            truncated=facets.truncated,
        )


class SpaceOut(BaseModel):
    name: str
    model: str
    model_identity: str
    dim: int
    index: str | None = Field(
        None, description='Vector index in use ("exact", "hnsw", ...); null before the first query.'
    )


class MigrationOut(BaseModel):
    """Where a space's move to another model stands (docs/operations.md)."""

    space: str
    state: Literal["building", "ready", "switched"] = Field(
        description="building: the new model's vectors are being made, queries use the old "
        "model; ready: all made, the switch comes next; switched: queries use the new model, "
        "the old one is kept for a rollback until dropped."
    )
    old_model: str
    old_identity: str
    new_model: str
    new_identity: str
    done: int = Field(description="Items embedded with the new model, or recorded as failed.")
    total: int = Field(description="Items of the space.")
    failed: int = Field(description="Items the new model could not embed.")


class HealthResponse(BaseModel):
    """Fields other than `status` are left out for callers without a key on a keyed
    server; `data` and `pid` are shown to admin keys (and on an open server) only."""

    status: str
    items: int | None = None
    spaces: list[SpaceOut] | None = None
    store_format: int | None = None
    data: str | None = Field(None, description="The data directory served, resolved.")
    model: str | None = Field(None, description="The image-text model this server queries with.")
    audio_model: str | None = Field(
        None, description="The audio-text model this server queries with; null: none."
    )
    pid: int | None = Field(
        None, description="The server's process id (`xmodal search` checks it)."
    )
    reranker: str | None = Field(
        None,
        description="The reranker a search's `rerank: true` asks for (rerank.model; it may "
        "still be unavailable: the search's `rerank` then says why).",
    )
    max_explain: int | None = Field(
        None, description="Most hits of one search a request may have explained."
    )
    migrations: list[MigrationOut] | None = Field(
        None, description="Moves of a space to another model, when there is one."
    )


class ErrorResponse(BaseModel):
    detail: str
