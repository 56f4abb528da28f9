"""xmodal: cross-modal semantic search over images, videos and sounds.

    from xmodal import Engine, index_paths
    engine = Engine.open("~/xmodal-data", model="xmodal-ref")
    index_paths(engine, ["~/Pictures"])
    engine.search_text("a red bicycle", k=5)

The layers are subpackages: `xmodal.search` (the engine: encoders, store, indexes,
queries), `xmodal.indexer` (bulk ingestion), `xmodal.api` (HTTP and the command line)
and `xmodal.web` (the page and the widget). Names below are imported on first use, so
that `import xmodal` (and `xmodal --help`) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xmodal._lazy import lazy_exports

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "Engine": "xmodal.search",
    "Hit": "xmodal.search",
    "SearchResult": "xmodal.search",
    "SegmentHit": "xmodal.search",
    "Store": "xmodal.search",
    "create_encoder": "xmodal.search",
    "list_encoders": "xmodal.search",
    "XmodalError": "xmodal.search",
    "RerankRequest": "xmodal.search",
    "RerankSettings": "xmodal.search",
    "IndexOptions": "xmodal.indexer",
    "IndexReport": "xmodal.indexer",
    "index_paths": "xmodal.indexer",
    "Settings": "xmodal.api",
    "create_app": "xmodal.api",
}

__all__ = [
    "Engine",
    "Hit",
    "IndexOptions",
    "IndexReport",
    "RerankRequest",
    "RerankSettings",
    "SearchResult",
    "SegmentHit",
    "Settings",
    "Store",
    "XmodalError",
    "__version__",
    "create_app",
    "create_encoder",
    "index_paths",
    "list_encoders",
]

if TYPE_CHECKING:
    from xmodal.api import Settings, create_app
    from xmodal.indexer import IndexOptions, IndexReport, index_paths
    from xmodal.search import (
        Engine,
        Hit,
        RerankRequest,
        RerankSettings,
        SearchResult,
        SegmentHit,
        Store,
        XmodalError,
        create_encoder,
        list_encoders,
    )


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
