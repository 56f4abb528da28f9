"""xmodal's search engine: encoders, the store, and queries. No HTTP, no bulk jobs."""

from xmodal.search.encoders import (
    DEFAULT_MODEL,
    IMAGE_TEXT,
    ImageTextEncoder,
    create_encoder,
    list_encoders,
)
from xmodal.search.engine import Engine, model_for_store
from xmodal.search.errors import (
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
from xmodal.search.hits import Hit, SearchResult, SegmentHit
from xmodal.search.media import ImageLimits, MediaKind, decode_image
from xmodal.search.store import ItemRecord, Store

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
    "MediaKind",
    "ModelLoadError",
    "ModelMismatchError",
    "ModelSpecError",
    "SearchResult",
    "SegmentHit",
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
