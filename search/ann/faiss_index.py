"""FAISS indexes: exact (flat), HNSW, and IVF-PQ re-ranked on full vectors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.search.errors import StoreError
from xmodal.search.settings import AnnSettings

from .base import VectorIndex

# Filtered searches widen efSearch / nprobe by 1/share of allowed vectors, up to this.
MAX_FILTER_WIDENING = 16.0
# Defaults and the reasons for them are declared once, in AnnSettings.
_DEFAULTS = AnnSettings()


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
    hnsw_m: int = _DEFAULTS.hnsw_m
    ef_construction: int = _DEFAULTS.ef_construction
    ef_search: int = _DEFAULTS.ef_search
    nlist: int = _DEFAULTS.nlist
    pq_m: int = _DEFAULTS.pq_m
    nprobe: int = _DEFAULTS.nprobe
    refine_factor: int = _DEFAULTS.refine_factor
    train_size: int = _DEFAULTS.train_size
    use_gpu: bool = True  # search flat and IVF-PQ on the GPU when faiss-gpu sees one


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
        # (key, selector) of the last `allowed` set: one attribute, so that concurrent
        # queries never pair one set's key with another set's selector.
        self._allowed: tuple[bytes, Any, float, np.ndarray] | None = None
        self._plain_params: tuple[IndexParams, Any] | None = None
        self._gpu: Any = None  # a GPU copy for unfiltered search, made on first use
        self.source: Path | None = None  # the file it was loaded from
        self.heap_bytes: int | None = None  # its size once measured (search/space/memory.py)

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
        # k-means needs a point per cell, and each PQ codebook 256 points (8-bit codes).
        if len(vectors) < max(nlist, 256):
            raise StoreError(
                f"an IVF-PQ index needs at least {max(nlist, 256)} vectors to train, not "
                f"{len(vectors)}: use hnsw or exact for a collection this small"
            )
        quantizer = faiss.IndexFlatIP(p.dim)
        pq_m = p.pq_m or max(m for m in range(1, max(1, p.dim // 8) + 1) if p.dim % m == 0)
        ivf = faiss.IndexIVFPQ(quantizer, p.dim, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
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

    def train(self, vectors: np.ndarray) -> None:
        """Train IVF-PQ's quantizers on a sample before the first add (else the first add
        trains on what it is given); other kinds need no training."""
        if self.kind == "ivfpq" and self._index is None:
            self._index = self._train_ivfpq(np.ascontiguousarray(vectors, dtype=np.float32))

    def copy(self) -> FaissIndex:
        """An independent copy in memory (of a memory-mapped index too)."""
        copied = FaissIndex(self.params, self._index, self.full_vectors)
        if self._index is not None:
            try:
                copied._index = self._faiss.clone_index(self._index)
            except RuntimeError:
                # Memory-mapped inverted lists (IVF) can be neither cloned nor serialized:
                # read the file they map into memory instead.
                if self.source is None:
                    raise
                copied._index = self._faiss.read_index(str(self.source))
        copied._removed = set(self._removed)
        return copied

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if self._index is None:
            self._index = self._train_ivfpq(vectors)
        self._gpu = None
        self.heap_bytes = None
        if self._removed:
            self._removed.difference_update(labels.tolist())
            self._removed_selector = None
        self._index.add_with_ids(vectors, labels)

    def remove(self, labels: np.ndarray) -> None:
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if self._index is None or len(labels) == 0:
            return
        self._gpu = None
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
        selector, share = (None, 1.0) if allowed is None else self._selector_for(allowed)
        if self._removed:
            if self._removed_selector is None:
                batch = faiss.IDSelectorBatch(np.fromiter(self._removed, np.int64))
                self._removed_selector = faiss.IDSelectorNot(batch)
            gone = self._removed_selector
            selector = gone if selector is None else faiss.IDSelectorAnd(selector, gone)
        rerank = self.kind == "ivfpq" and self.full_vectors is not None
        fetch = k * self.params.refine_factor if rerank else k
        index = self._index if selector is not None else self._gpu_or_cpu()
        if index is self._index:
            params = self._search_params(selector, share)
            scores, found = index.search(queries, fetch, params=params)
        else:  # GPU indexes take no search parameters; nprobe is set on the copy
            scores, found = index.search(queries, fetch)
        return self._rerank(queries, found, k) if rerank else (scores, found)

    def _selector_for(self, allowed: np.ndarray) -> Any:
        """A bool mask over labels becomes a bitmap selector (one bit per label, cheap to
        build); an int64 label array an IDSelectorBatch, which hashes every label: built
        per query it cost 40-80% of filtered QPS in bench/ann.py, so the last one is kept
        while the same set comes back."""
        cached = self._allowed
        # A read-only array cannot have changed since it was seen: the engine's cached
        # filter masks come back as the same object, and hashing a million-label mask
        # per query cost about a quarter of a filtered search at 1M.
        if cached is not None and cached[3] is allowed and not allowed.flags.writeable:
            return cached[1], cached[2]
        key = hashlib.blake2b(
            np.ascontiguousarray(allowed).tobytes(),
            digest_size=16,
            person=allowed.dtype.str.encode(),
        ).digest()
        if cached is not None and cached[0] == key:
            self._allowed = (key, cached[1], cached[2], allowed)
            return cached[1], cached[2]
        if allowed.dtype == np.bool_:
            bits = np.packbits(allowed, bitorder="little")
            selector = self._faiss.IDSelectorBitmap(len(bits), self._faiss.swig_ptr(bits))  # bytes
            # FAISS reads the bitmap in place: it must live as long as the selector does,
            # including in a concurrent query still holding the previous one.
            selector.bits = bits
        else:
            selector = self._faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        count = int(np.count_nonzero(allowed)) if allowed.dtype == np.bool_ else len(allowed)
        share = min(1.0, count / max(1, int(self._index.ntotal)))
        self._allowed = (key, selector, share, allowed)
        return selector, share

    def _gpu_or_cpu(self) -> Any:
        """The GPU copy when FAISS has GPU support and a GPU is present (flat and IVF-PQ;
        FAISS has no GPU HNSW), else the CPU index. Filtered searches stay on the CPU:
        GPU indexes do not take ID selectors."""
        faiss = self._faiss
        if (
            not self.params.use_gpu
            or self.kind == "hnsw"
            or not hasattr(faiss, "StandardGpuResources")
        ):
            return self._index
        if self._gpu is None:
            if faiss.get_num_gpus() < 1:
                return self._index
            options = faiss.GpuMultipleClonerOptions()
            options.useFloat16 = True  # halves GPU memory; the re-rank restores exact scores
            self._gpu = faiss.index_cpu_to_all_gpus(self._index, co=options)
            if self.kind == "ivfpq":
                faiss.GpuParameterSpace().set_index_parameter(
                    self._gpu, "nprobe", self.params.nprobe
                )
        return self._gpu

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

    def _search_params(self, selector: Any, share: float = 1.0) -> Any:
        """A filter allowing a `share` of the vectors leaves that share of the candidates a
        graph walk or a probed cell yields: widen the search by as much (capped), or
        recall drops (HNSW at ef 64 with 10% allowed: 0.79 in bench/ann.py)."""
        p = self.params
        if selector is None:
            # Unfiltered: one parameter object per setting, shared by every query (FAISS
            # only reads it), instead of a new SWIG object per query.
            cached = self._plain_params
            if cached is None or cached[0] != p:
                cached = self._plain_params = (p, self._build_params(None, 1.0))
            return cached[1]
        return self._build_params(selector, share)

    def _build_params(self, selector: Any, share: float) -> Any:
        faiss, p = self._faiss, self.params
        widen = min(MAX_FILTER_WIDENING, 1.0 / max(share, 1e-9))
        if p.kind == "hnsw":
            return faiss.SearchParametersHNSW(
                sel=selector, efSearch=max(1, int(p.ef_search * widen))
            )
        if p.kind == "ivfpq":
            return faiss.SearchParametersIVF(sel=selector, nprobe=max(1, int(p.nprobe * widen)))
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
        loaded.source = path
        return loaded


def create_index(
    kind: str,
    dim: int,
    full_vectors: Callable[[np.ndarray], np.ndarray] | None = None,
    **overrides: Any,
) -> FaissIndex:
    """An empty index of a kind ("flat", "hnsw", "ivfpq"); overrides set IndexParams fields."""
    return FaissIndex(IndexParams(kind=kind, dim=dim, **overrides), full_vectors=full_vectors)
