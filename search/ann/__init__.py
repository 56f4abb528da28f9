"""Approximate nearest-neighbour indexes behind one interface (FAISS implementations).

Groundwork for serving a million vectors: the engine still ranks with its exact
snapshot (search/exact_index.py) until these are kept in step with the store.
"""

from .base import VectorIndex
from .faiss_index import choose_index_kind, create_index, list_index_kinds

__all__ = ["VectorIndex", "choose_index_kind", "create_index", "list_index_kinds"]
