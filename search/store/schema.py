"""Arrow schemas of the LanceDB tables (format version STORE_FORMAT)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .records import ITEM_COLUMNS, SegmentRecord

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


@dataclass(frozen=True)
class FragmentTarget:
    """A space's segments table as processes that write fragments for it need it."""

    space: str
    uri: str  # the Lance dataset
    dim: int
    storage_version: str  # the dataset's data storage version: new files must match it


def segments_arrow(segments: Sequence[SegmentRecord]) -> pa.Table:
    """Segment rows as the segments table holds them (one non-empty list)."""
    dim = int(segments[0].vector.shape[-1])
    vectors = np.stack([s.vector for s in segments]).astype(np.float32, copy=False)
    return pa.table(
        {
            "id": pa.array([s.id for s in segments], pa.string()),
            "item_id": pa.array([s.item_id for s in segments], pa.string()),
            "start": pa.array([s.start for s in segments], pa.float64()),
            "end": pa.array([s.end for s in segments], pa.float64()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
        },
        schema=segments_schema(dim),
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


# A migration's ledger (search/store/migration.py): one row per item of the space being
# built, saying which content it embedded; a table per segments table.
LEDGER_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("content_hash", pa.string()),
        pa.field("segments", pa.int32()),
        pa.field("error", pa.string()),
    ]
)


def index_root(data: Path, space: str, table: str | None = None) -> Path:
    """Where a space's vector index is saved: `<data>/indexes/<space>/`, or by table name
    for a space a model migration moved to another table (each model its own index)."""
    if table is None or table == segments_table_name(space):
        return data / "indexes" / space
    return data / "indexes" / table


def segments_table_name(space: str) -> str:
    """The table of a space created by indexing (a migration's tables are named by
    their model: model_table_name)."""
    return "segments_" + space.replace("-", "_")


def model_table_name(space: str, model_identity: str) -> str:
    """The segments table a migration builds for `space` with a model: its own name per
    model, so that the old and the new table live side by side."""
    digest = hashlib.sha256(model_identity.encode("utf-8")).hexdigest()[:8]
    return f"{segments_table_name(space)}__{digest}"


def ledger_table_name(segments_table: str) -> str:
    return f"ledger_{segments_table}"
