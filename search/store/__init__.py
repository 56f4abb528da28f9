"""The LanceDB store of media items, segments and spaces."""

from .locations import display_name, location_of, original_path, path_of
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
    "display_name",
    "item_id_for",
    "location_of",
    "original_path",
    "path_of",
    "segment_id_for",
]
