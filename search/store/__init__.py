"""The LanceDB store of media items, segments and spaces."""

from .locations import display_name, location_of, original_path, path_of
from .media_store import MediaStore
from .records import (
    CATALOG_ROOT,
    FAILED,
    INDEXED,
    ItemRecord,
    SegmentRecord,
    SpaceRecord,
    catalog_item_id,
    item_id_for,
    segment_id_for,
)
from .schema import STORE_FORMAT, FragmentTarget, segments_arrow
from .store import Store

__all__ = [
    "CATALOG_ROOT",
    "FAILED",
    "INDEXED",
    "STORE_FORMAT",
    "FragmentTarget",
    "ItemRecord",
    "MediaStore",
    "SegmentRecord",
    "SpaceRecord",
    "Store",
    "catalog_item_id",
    "display_name",
    "item_id_for",
    "location_of",
    "original_path",
    "path_of",
    "segment_id_for",
    "segments_arrow",
]
