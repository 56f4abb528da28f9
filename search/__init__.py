"""xmodal's search engine: encoders, the store, and queries. No HTTP, no bulk jobs."""

from xmodal.search.encoders import (
    DEFAULT_MODEL,
    IMAGE_TEXT,
    ImageTextEncoder,
    create_encoder,
    list_encoders,
)
from xmodal.search.engine import Engine, EngineSettings, model_for_store
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
from xmodal.search.settings import AnnSettings, QuerySettings
from xmodal.search.space import RefreshReport, saved_index_state
from xmodal.search.store import ItemRecord, Store

__all__ = [
    "DEFAULT_MODEL",
    "IMAGE_TEXT",
    "AnnSettings",
    "Engine",
    "EngineSettings",
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
    "QuerySettings",
    "RefreshReport",
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
    "saved_index_state",
]
