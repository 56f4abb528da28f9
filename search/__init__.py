"""xmodal's search engine: encoders, the store, indexes and queries. No HTTP, no bulk jobs.

Names below are imported on first use (PEP 562), so that `import xmodal.search.errors`
(the command line's error types) does not load the store, LanceDB or pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xmodal._lazy import lazy_exports

if TYPE_CHECKING:
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
    from xmodal.search.rerank import create_reranker
    from xmodal.search.rerank.service import RerankRequest
    from xmodal.search.rerank.settings import RerankSettings
    from xmodal.search.settings import AnnSettings, QuerySettings
    from xmodal.search.space import RefreshReport, saved_index_state
    from xmodal.search.store import ItemRecord, Store

# module -> the names it gives this package's public surface
_MODULES = {
    "xmodal.search.encoders": (
        "DEFAULT_MODEL",
        "IMAGE_TEXT",
        "ImageTextEncoder",
        "create_encoder",
        "list_encoders",
    ),
    "xmodal.search.engine": ("Engine", "EngineSettings", "model_for_store"),
    "xmodal.search.errors": (
        "IndexingAborted",
        "InvalidQueryError",
        "MediaDecodeError",
        "ModelLoadError",
        "ModelMismatchError",
        "ModelSpecError",
        "SourceError",
        "StoreError",
        "UnknownItemError",
        "XmodalError",
    ),
    "xmodal.search.hits": ("Hit", "SearchResult", "SegmentHit"),
    "xmodal.search.media": ("ImageLimits", "MediaKind", "decode_image"),
    "xmodal.search.rerank": ("create_reranker",),
    "xmodal.search.rerank.service": ("RerankRequest",),
    "xmodal.search.rerank.settings": ("RerankSettings",),
    "xmodal.search.settings": ("AnnSettings", "QuerySettings"),
    "xmodal.search.space": ("RefreshReport", "saved_index_state"),
    "xmodal.search.store": ("ItemRecord", "Store"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

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
    "RerankRequest",
    "RerankSettings",
    "SearchResult",
    "SegmentHit",
    "SourceError",
    "Store",
    "StoreError",
    "UnknownItemError",
    "XmodalError",
    "create_encoder",
    "create_reranker",
    "decode_image",
    "list_encoders",
    "model_for_store",
    "saved_index_state",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
