"""xmodal's search engine: encoders, the store, and queries. No HTTP, no bulk jobs."""

from search.encoders import IMAGE_TEXT, ImageTextEncoder, create_encoder, list_encoders
from search.engine import Engine, model_for_store
from search.errors import (
    IndexingAborted,
    InvalidQueryError,
    MediaDecodeError,
    ModelLoadError,
    ModelMismatchError,
    ModelSpecError,
    SourceError,
    StoreError,
    UnknownItemError,
    XmodalError,
)
from search.hits import Hit, SearchResult, SegmentHit
from search.images import ImageLimits, decode_image
from search.settings import DEFAULT_MODEL, Settings
from search.store import ItemRecord, Store

__all__ = [
    "DEFAULT_MODEL",
    "IMAGE_TEXT",
    "Engine",
    "Hit",
    "ImageLimits",
    "ImageTextEncoder",
    "IndexingAborted",
    "InvalidQueryError",
    "ItemRecord",
    "MediaDecodeError",
    "ModelLoadError",
    "ModelMismatchError",
    "ModelSpecError",
    "SearchResult",
    "SegmentHit",
    "Settings",
    "SourceError",
    "Store",
    "StoreError",
    "UnknownItemError",
    "XmodalError",
    "create_encoder",
    "decode_image",
    "list_encoders",
    "model_for_store",
]
