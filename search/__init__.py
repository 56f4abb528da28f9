"""xmodal's search engine: encoders, the store, and queries. No HTTP, no bulk jobs.

Names below are imported on first use (PEP 562), so that `import xmodal.search.errors`
(the command line's error types) does not load the store, LanceDB or pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> module that defines it
_EXPORTS = {
    "DEFAULT_MODEL": "xmodal.search.encoders",
    "IMAGE_TEXT": "xmodal.search.encoders",
    "ImageTextEncoder": "xmodal.search.encoders",
    "create_encoder": "xmodal.search.encoders",
    "list_encoders": "xmodal.search.encoders",
    "Engine": "xmodal.search.engine",
    "model_for_store": "xmodal.search.engine",
    "IndexingAborted": "xmodal.search.errors",
    "InvalidQueryError": "xmodal.search.errors",
    "MediaDecodeError": "xmodal.search.errors",
    "ModelLoadError": "xmodal.search.errors",
    "ModelMismatchError": "xmodal.search.errors",
    "ModelSpecError": "xmodal.search.errors",
    "SourceError": "xmodal.search.errors",
    "StoreError": "xmodal.search.errors",
    "UnknownItemError": "xmodal.search.errors",
    "XmodalError": "xmodal.search.errors",
    "Hit": "xmodal.search.hits",
    "SearchResult": "xmodal.search.hits",
    "SegmentHit": "xmodal.search.hits",
    "ImageLimits": "xmodal.search.images",
    "decode_image": "xmodal.search.images",
    "ItemRecord": "xmodal.search.store",
    "Store": "xmodal.search.store",
}

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

if TYPE_CHECKING:
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
    from xmodal.search.images import ImageLimits, decode_image
    from xmodal.search.store import ItemRecord, Store


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xmodal.search' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
