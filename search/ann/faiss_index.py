"""FAISS indexes: exact (flat), HNSW, and IVF-PQ re-ranked on full vectors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search.errors import StoreError

from .base import VectorIndex

# Below this many vectors exact search is fast enough and needs no training or tuning.
FLAT_UP_TO = 100_000
# HNSW keeps full vectors plus its graph (~dim*4 + 2*M*4 bytes each); past this, IVF-PQ.
HNSW_UP_TO = 5_000_000


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as error:
        raise StoreError(
            "ANN indexes need FAISS: pip install faiss-cpu (or the gpu extra)"
        ) from error
    return faiss


@dataclass(frozen=True)
class IndexParams:
    kind: str  # "flat", "hnsw" or "ivfpq"
    dim: int
    hnsw_m: int = 32  # graph degree
    ef_construction: int = 80
    ef_search: int = 128  # bench/ann.py: 64 suffices to 100k (0.995), 300k needs 96-128
    nlist: int = 0  # IVF cells; 0: about 4*sqrt(n) at training time
    pq_m: int = 64  # PQ sub-quantizers (dim must divide)
    nprobe: int = 16  # past ~8-16 probes recall no longer rises: the PQ error dominates
    refine_factor: int = 16  # IVF-PQ: re-rank this many times k candidates on full vectors
    train_size: int = 0  # IVF-PQ: train on at most this many vectors; 0: 128 per cell


def choose_index_kind(count: int) -> str:
    """The index a collection of `count` vectors gets when none is set explicitly."""
    if count <= FLAT_UP_TO:
        return "flat"
    return "hnsw" if count <= HNSW_UP_TO else "ivfpq"


def list_index_kinds() -> list[str]:
    return ["flat", "hnsw", "ivfpq"]


class FaissIndex(VectorIndex):
    """`full_vectors(labels) -> (n, dim)` lets IVF-PQ re-rank its candidates exactly on
    the stored vectors (the PQ codes alone lose recall)."""

    def __init__(
        self,
        params: IndexParams,
        index: Any = None,
        full_vectors: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        self.params = params
        self.full_vectors = full_vectors
        self.kind = params.kind
        self._faiss = _faiss()
        self._index = index if index is not None else self._build_empty()
        self._removed: set[int] = set()  # HNSW cannot delete: removed labels are filtered out
        self._removed_selector: Any = None  # built once per change of _removed, not per query
        self._allowed_key: bytes | None = None
        self._allowed_selector: Any = None  # the last `allowed` set's selector

    def _build_empty(self) -> Any:
        faiss, p = self._faiss, self.params
        if p.kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(p.dim))
        if p.kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(p.dim, p.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = p.ef_construction
            return faiss.IndexIDMap2(hnsw)
        if p.kind == "ivfpq":
            return None  # built on first add: the quantizers train on the data
        raise StoreError(f"unknown index kind {p.kind!r}; use one of {list_index_kinds()}")

    def _train_ivfpq(self, vectors: np.ndarray) -> Any:
        faiss, p = self._faiss, self.params
        nlist = p.nlist or max(16, int(4 * np.sqrt(len(vectors))))
        quantizer = faiss.IndexFlatIP(p.dim)
        ivf = faiss.IndexIVFPQ(quantizer, p.dim, nlist, p.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        # k-means costs n_train * nlist * dim per iteration: at 1M x 512 and nlist 4000,
        # training on everything takes many minutes on a small machine; 128 per cell is plenty
        limit = p.train_size or 128 * nlist
        if len(vectors) > limit:
            rows = np.random.default_rng(0).choice(len(vectors), size=limit, replace=False)
            vectors = vectors[np.sort(rows)]
        ivf.train(vectors)
        ivf.nprobe = p.nprobe
        return ivf  # IVF keeps its own ids, so selectors see labels directly

    @property
    def dim(self) -> int:
        return self.params.dim

    def __len__(self) -> int:
        total = 0 if self._index is None else int(self._index.ntotal)
        return total - len(self._removed)

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if self._index is None:
            self._index = self._train_ivfpq(vectors)
        if self._removed:
            self._removed.difference_update(labels.tolist())
            self._removed_selector = None
        self._index.add_with_ids(vectors, labels)

    def remove(self, labels: np.ndarray) -> None:
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if self._index is None or len(labels) == 0:
            return
        if self.kind == "hnsw":
            self._removed.update(labels.tolist())
            self._removed_selector = None
        else:
            self._index.remove_ids(self._faiss.IDSelectorBatch(labels))

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = self._faiss
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self._index is None or self._index.ntotal == 0:
            return np.full((len(queries), k), -np.inf, np.float32), np.full(
                (len(queries), k), -1, np.int64
            )
        selector = None if allowed is None else self._selector_for(allowed)
        if self._removed:
            if self._removed_selector is None:
                batch = faiss.IDSelectorBatch(np.fromiter(self._removed, np.int64))
                self._removed_selector = faiss.IDSelectorNot(batch)
            gone = self._removed_selector
            selector = gone if selector is None else faiss.IDSelectorAnd(selector, gone)
        params = self._search_params(selector)
        if self.kind != "ivfpq" or self.full_vectors is None:
            return self._index.search(queries, k, params=params)
        _, candidates = self._index.search(queries, k * self.params.refine_factor, params=params)
        return self._rerank(queries, candidates, k)

    def _selector_for(self, allowed: np.ndarray) -> Any:
        """IDSelectorBatch hashes every allowed label: building it per query cost 40-80%
        of filtered QPS in bench/ann.py. Reuse it while the same set comes back."""
        allowed = np.ascontiguousarray(allowed, dtype=np.int64)
        key = hashlib.blake2b(allowed.tobytes(), digest_size=16).digest()
        if key != self._allowed_key:
            self._allowed_selector = self._faiss.IDSelectorBatch(allowed)
            self._allowed_key = key
        return self._allowed_selector

    def _rerank(
        self, queries: np.ndarray, candidates: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        assert self.full_vectors is not None
        scores = np.full((len(queries), k), -np.inf, np.float32)
        labels = np.full((len(queries), k), -1, np.int64)
        for row, (query, found) in enumerate(zip(queries, candidates, strict=True)):
            found = found[found >= 0]
            exact = self.full_vectors(found) @ query
            order = np.argsort(-exact)[:k]
            scores[row, : len(order)] = exact[order]
            labels[row, : len(order)] = found[order]
        return scores, labels

    def _search_params(self, selector: Any) -> Any:
        faiss, p = self._faiss, self.params
        if p.kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(p.ef_search, 1))
        if p.kind == "ivfpq":
            return faiss.SearchParametersIVF(sel=selector, nprobe=p.nprobe)
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._faiss.write_index(self._index, str(path))
        sidecar = {"params": asdict(self.params), "removed": sorted(self._removed)}
        path.with_suffix(".json").write_text(json.dumps(sidecar))

    @classmethod
    def load(
        cls,
        path: Path,
        mmap: bool = True,
        full_vectors: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> FaissIndex:
        faiss = _faiss()
        sidecar = json.loads(path.with_suffix(".json").read_text())
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            index = faiss.read_index(str(path), flags)
        except RuntimeError:  # not every index type can be memory-mapped
            index = faiss.read_index(str(path))
        loaded = cls(IndexParams(**sidecar["params"]), index, full_vectors)
        loaded._removed = set(sidecar["removed"])
        return loaded


def create_index(
    kind: str,
    dim: int,
    full_vectors: Callable[[np.ndarray], np.ndarray] | None = None,
    **overrides: Any,
) -> FaissIndex:
    """An empty index of a kind ("flat", "hnsw", "ivfpq"); overrides set IndexParams fields."""
    return FaissIndex(IndexParams(kind=kind, dim=dim, **overrides), full_vectors=full_vectors)
