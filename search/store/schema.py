"""Arrow schemas of the LanceDB tables (format version STORE_FORMAT)."""

from __future__ import annotations

import pyarrow as pa

from .records import ITEM_COLUMNS

STORE_FORMAT = 3  # 2: items.duration; 3: items.external_id, source_etag, source_modified

ITEMS = "items"
SPACES = "spaces"
ROOTS = "roots"
META = "meta"

# Derived from ItemRecord's declaration (records.py).
ITEMS_SCHEMA = pa.schema(
    [pa.field(name, c.arrow, nullable=c.nullable) for name, c in ITEM_COLUMNS.items()]
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
