"""Store records: what one row of each table holds; an item's fields are declared once,
here, with how each is stored, filtered and shown."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pyarrow as pa

from xmodal.search.media.kinds import MediaKind

from .locations import location_of

INDEXED = "indexed"
FAILED = "failed"


# The root of catalog items (pushed through the API or read from URLs and manifests):
# not a folder, so no folder run ever lists or removes them. Their media are kept in
# the data directory's media store (media_store.py), by content hash.
CATALOG_ROOT = "catalog:"
MAX_EXTERNAL_ID_CHARS = 512


def item_id_for(uri: str) -> str:
    """Stable id of a media item, derived from its location only: a path or its stored
    form (location_of) give the same id, also for a name that is not valid UTF-8."""
    return hashlib.sha1(location_of(uri).encode("utf-8")).hexdigest()[:16]


def catalog_item_id(external_id: str) -> str:
    """The id of the item a caller named `external_id` (its SKU): derived from that id
    alone, so the same name always reaches the same item. The prefix keeps it apart
    from ids of locations, which are absolute paths or URLs."""
    return hashlib.sha1(("external-id:" + external_id).encode("utf-8")).hexdigest()[:16]


def segment_id_for(item_id: str, index: int) -> str:
    return f"{item_id}:{index}"


@dataclass(frozen=True)
class Column:
    """How one field of an item is stored, filtered on and shown: declared once, on the
    field, and read by the Arrow schema (schema.py), filters (search/filters.py and the
    space snapshot) and the HTTP schemas (xmodal.api.schemas)."""

    arrow: pa.DataType
    description: str
    nullable: bool = True
    filter_key: str | None = None  # its key in metadata filters, when it can be filtered on
    filter_divisor: float = 1.0  # filters see the value divided by this (ns -> seconds)
    shown_in: frozenset[str] = frozenset({"item", "hit"})  # HTTP: GET /items/{id}, hits
    empty_is_null: bool = False  # HTTP: an empty string is shown as null


def column(arrow: pa.DataType, description: str, **options: Any) -> dict[str, Column]:
    return {"column": Column(arrow, description, **options)}


ITEM_ONLY = frozenset({"item"})
NOWHERE: frozenset[str] = frozenset()


@dataclass
class ItemRecord:
    id: str = field(
        metadata=column(
            pa.string(),
            "Stable id, derived from the location, or from `external_id` when it has one.",
            nullable=False,
        )
    )
    uri: str = field(
        metadata=column(
            pa.string(),
            "Absolute path of the file (over HTTP, keys without the admin scope are shown "
            "it relative to the folder it was indexed from).",
            nullable=False,
            filter_key="uri",
        )
    )
    kind: MediaKind = field(  # stored as its value
        metadata=column(pa.string(), "image, video or audio.", nullable=False, filter_key="kind")
    )
    root: str = field(
        metadata=column(
            pa.string(), "The indexed folder (or file) it was found under.", shown_in=NOWHERE
        )
    )
    content_hash: str = field(
        default="",
        metadata=column(
            pa.string(),
            "sha256 of the file's bytes; detects change and exact duplicates.",
            shown_in=ITEM_ONLY,
        ),
    )
    bytes: int = field(
        default=0,
        metadata=column(pa.int64(), "File size.", filter_key="bytes", shown_in=ITEM_ONLY),
    )
    mtime_ns: int = field(
        default=0,
        metadata=column(
            pa.int64(),
            "Modification time, ns since the epoch (filters: `mtime`, in seconds).",
            filter_key="mtime",
            filter_divisor=1e9,
            shown_in=NOWHERE,
        ),
    )
    width: int = field(
        default=0,
        metadata=column(
            pa.int32(), "Pixels, after EXIF orientation (0 for sound).", filter_key="width"
        ),
    )
    height: int = field(
        default=0, metadata=column(pa.int32(), "Pixels (0 for sound).", filter_key="height")
    )
    duration: float | None = field(
        default=None, metadata=column(pa.float64(), "Seconds, for videos and sounds.")
    )
    metadata: dict[str, Any] = field(  # stored as a JSON object
        default_factory=dict, metadata=column(pa.string(), "The user's metadata.")
    )
    status: str = field(
        default=INDEXED,
        metadata=column(pa.string(), "indexed, or failed (see error).", shown_in=ITEM_ONLY),
    )
    error: str = field(
        default="",
        metadata=column(
            pa.string(),
            "Why it could not be indexed, or what of it was skipped.",
            shown_in=ITEM_ONLY,
            empty_is_null=True,
        ),
    )
    indexed_at: float = field(
        default=0.0, metadata=column(pa.float64(), "Unix seconds.", shown_in=NOWHERE)
    )
    external_id: str | None = field(
        default=None,
        metadata=column(
            pa.string(),
            "The caller's own id (a SKU), for items pushed through the catalog API or read "
            "from a manifest; null for items indexed from folders.",
            filter_key="external_id",
        ),
    )
    # HTTP validators of the source, for conditional re-fetches (catalog items).
    source_etag: str = field(
        default="", metadata=column(pa.string(), "The source's ETag.", shown_in=NOWHERE)
    )
    source_modified: str = field(
        default="",
        metadata=column(pa.string(), "The source's Last-Modified.", shown_in=NOWHERE),
    )


# Every item field with its column, in declaration order.
ITEM_COLUMNS: dict[str, Column] = {f.name: f.metadata["column"] for f in fields(ItemRecord)}
# Filter key -> the column it reads ({"mtime": "mtime_ns", "kind": "kind", ...}).
ITEM_FILTER_COLUMNS: dict[str, str] = {
    c.filter_key: name for name, c in ITEM_COLUMNS.items() if c.filter_key
}


@dataclass
class SegmentRecord:
    id: str
    item_id: str
    vector: np.ndarray  # float32, unit length
    start: float | None = None  # seconds, for time-based media
    end: float | None = None


@dataclass(frozen=True)
class SpaceRecord:
    # e.g. "image-text"; a migration's spaces beside it are "image-text@next" (being
    # built with a new model) and "image-text@previous" (kept for a rollback).
    name: str
    model_spec: str  # as the user wrote it when the space was created
    model_identity: str  # architecture and weights, e.g. open_clip:ViT-B-32/laion2b_s34b_b79k
    dim: int
    segments_table: str = ""  # the LanceDB table of its segments (Store.segments_table_of)


@dataclass(frozen=True)
class LedgerEntry:
    """What a migration did with one item (search/store/migration.py): the content it
    embedded into the space being built, how many segments that gave, or why it failed."""

    item_id: str
    content_hash: str  # the item's content hash when it was embedded
    segments: int = 0
    error: str = ""  # not empty: the item could not be embedded with the new model
