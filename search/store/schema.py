"""Arrow schemas of the LanceDB tables (format version STORE_FORMAT)."""

from __future__ import annotations

import pyarrow as pa

STORE_FORMAT = 2  # 2: items.duration

ITEMS = "items"
SPACES = "spaces"
ROOTS = "roots"
META = "meta"

ITEMS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("root", pa.string()),
        pa.field("content_hash", pa.string()),
        pa.field("bytes", pa.int64()),
        pa.field("mtime_ns", pa.int64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("duration", pa.float64()),
        pa.field("metadata", pa.string()),  # JSON object
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        pa.field("indexed_at", pa.float64()),
    ]
)

SPACES_SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("model_spec", pa.string()),
        pa.field("model_identity", pa.string()),
        pa.field("dim", pa.int32()),
        pa.field("segments_table", pa.string()),
    ]
)

ROOTS_SCHEMA = pa.schema([pa.field("path", pa.string(), nullable=False)])

META_SCHEMA = pa.schema(
    [pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string())]
)


def segments_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("start", pa.float64()),
            pa.field("end", pa.float64()),
            pa.field("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def segments_table_name(space: str) -> str:
    return "segments_" + space.replace("-", "_")
