"""Approximate nearest-neighbour indexes behind one interface.

FAISS (flat, HNSW, IVF-PQ; on GPU with faiss-gpu) for serving, LanceDB's own IVF-PQ
index as a disk-based alternative. search/space/index.py keeps one in step with the store.
"""

from pathlib import Path
from typing import Any

from .base import VectorIndex
from .faiss_index import create_index as create_faiss_index
from .faiss_index import list_index_kinds


def create_index(kind: str, dim: int, path: Path | None = None, **overrides: Any) -> VectorIndex:
    """An empty index: "flat", "hnsw", "ivfpq" (FAISS, in memory) or "lancedb" (a LanceDB
    table at `path`); overrides set the kind's parameters."""
    if kind == "lancedb":
        from .lancedb_index import LanceDbIndex, LanceDbParams

        if path is None:
            raise ValueError("a lancedb index needs a path")
        return LanceDbIndex(path, dim, LanceDbParams(**overrides))
    return create_faiss_index(kind, dim, **overrides)


__all__ = ["VectorIndex", "create_index", "list_index_kinds"]
