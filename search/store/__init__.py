"""The LanceDB store of media items, segments and spaces."""

from .records import (
    FAILED,
    INDEXED,
    ItemRecord,
    SegmentRecord,
    SpaceRecord,
    item_id_for,
    segment_id_for,
)
from .schema import STORE_FORMAT
from .store import Store

__all__ = [
    "FAILED",
    "INDEXED",
    "STORE_FORMAT",
    "ItemRecord",
    "SegmentRecord",
    "SpaceRecord",
    "Store",
    "item_id_for",
    "segment_id_for",
]
