"""LanceDB's own IVF-PQ index behind the VectorIndex interface.

Why pick it over the FAISS indexes: the vectors live only in LanceDB's on-disk table
(no second copy in RAM, nothing to rebuild at start-up), the index is disk-based too,
and rows written since the last build are still searched (exhaustively, until
`optimize()` folds them into the index). The price is speed: bench/ann.py measured
about 115 QPS single-query at 100k vectors on a small machine, far below HNSW, so this
is an alternative for memory-constrained deployments, not the default.

LanceDB conventions this module relies on (checked against lancedb 0.40 and covered by
tests/search/test_ann_lancedb.py):
- with distance type "dot", `_distance` is 1 - inner product, so score = 1 - distance;
  the distances are exact on a flat search and, with an index, after the refine step
  (without one they are PQ approximations);
- unindexed rows (added after the build) are flat-searched and merged with the index's
  candidates; deleted rows are masked out of both;
- with the index, `nprobes` alone is a hard cap on the partitions read, so a selective
  prefilter or a large limit can come back short; a maximum of 0 lets LanceDB keep
  probing until the limit is met.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import IvfPq
from lancedb.query import LanceVectorQueryBuilder

from xmodal.search.errors import InvalidQueryError, StoreError

from .base import VectorIndex

TABLE = "vectors"
VECTOR_COLUMN = "vector"
# Labels per `label IN (...)` delete: parsing the predicate is linear in its length and
# every delete writes a table version, so neither one huge list nor one per label.
DELETE_CHUNK = 2000


@dataclass(frozen=True)
class LanceDbParams:
    num_partitions: int = 0  # IVF partitions; 0: about sqrt(rows) when the index is built
    num_sub_vectors: int = 0  # PQ sub-vectors; 0: dim // 8 when 8 divides dim
    nprobes: int = 20  # partitions read at least; more only if the limit is not met
    refine_factor: int = 10  # re-rank this many times the limit on the full vectors; 0: off
    index_min_rows: int = 5000  # below this, no index: LanceDB's exact flat search
    # `allowed` sets up to this size always go into a prefilter; an IN list costs about
    # 2 ms per 1000 labels per query at 100k rows (measured), so big sets over-fetch
    prefilter_max_labels: int = 2000
    # over-fetching past this many rows per query costs more than the big IN list
    overfetch_max_limit: int = 2000


def _schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("label", pa.int64(), nullable=False),
            pa.field(VECTOR_COLUMN, pa.list_(pa.float32(), dim), nullable=False),
        ]
    )


def _in_list(labels: np.ndarray) -> str:
    return "label IN (" + ",".join(map(str, labels.tolist())) + ")"


class LanceDbIndex(VectorIndex):
    """A LanceDB database at `path` holding one table of (label, vector) rows."""

    kind = "lancedb"

    def __init__(
        self,
        path: Path,
        dim: int,
        params: LanceDbParams | None = None,
        *,
        create: bool = True,
    ):
        if dim < 1:
            raise StoreError(f"vector dimension must be positive, not {dim}")
        self.path = Path(path)
        self.params = params or LanceDbParams()
        self._dim = dim
        self._check_params()
        self._db = lancedb.connect(self.path)
        if TABLE in self._db.list_tables().tables:
            self._table = self._db.open_table(TABLE)
            stored = self._table.schema.field(VECTOR_COLUMN).type
            if not (
                pa.types.is_fixed_size_list(stored)
                and stored.list_size == dim
                and stored.value_type == pa.float32()
            ):
                raise StoreError(
                    f"the LanceDB index at {self.path} holds {stored} vectors, not {dim}-dim float32"
                )
        elif create:
            self._table = self._db.create_table(TABLE, schema=_schema(dim))
        else:
            raise StoreError(f"no LanceDB index table {TABLE!r} at {self.path}")

    def _check_params(self) -> None:
        p = self.params
        if p.num_sub_vectors and self._dim % p.num_sub_vectors:
            raise StoreError(f"num_sub_vectors {p.num_sub_vectors} does not divide dim {self._dim}")
        if p.nprobes < 1 or p.refine_factor < 0 or p.index_min_rows < 1:
            raise StoreError(f"invalid LanceDB index parameters: {p}")

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return int(self._table.count_rows())

    @property
    def has_index(self) -> bool:
        return bool(self._vector_indexes())

    def _vector_indexes(self) -> list[str]:
        return [c.name for c in self._table.list_indices() if list(c.columns) == [VECTOR_COLUMN]]

    def _check_vectors(self, vectors: np.ndarray, what: str) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self._dim:
            raise StoreError(
                f"{what} must have shape (n, {self._dim}) for this index, not {vectors.shape}"
            )
        return vectors

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        """Labels must not be live already (remove them first to replace their vectors):
        checking every add against the table would cost a filtered scan each time."""
        vectors = self._check_vectors(vectors, "vectors")
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if labels.ndim != 1 or len(labels) != len(vectors):
            raise StoreError(
                f"{len(vectors)} vectors need {len(vectors)} labels, not {labels.shape}"
            )
        if len(labels) == 0:
            return
        if len(np.unique(labels)) != len(labels):
            raise StoreError("labels given to add() must be distinct")
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        rows = pa.Table.from_arrays(
            [pa.array(labels, type=pa.int64()), pa.FixedSizeListArray.from_arrays(flat, self._dim)],
            schema=_schema(self._dim),
        )
        self._table.add(rows)

    def remove(self, labels: np.ndarray) -> None:
        labels = np.unique(np.asarray(labels, dtype=np.int64))
        for start in range(0, len(labels), DELETE_CHUNK):
            self._table.delete(_in_list(labels[start : start + DELETE_CHUNK]))

    def build(self) -> bool:
        """(Re)train the IVF-PQ index on the current rows; True when one now exists.

        Below `index_min_rows` any old index is dropped instead: flat search is exact and
        quick there, and PQ training wants a few thousand vectors anyway."""
        p, rows = self.params, len(self)
        if rows < p.index_min_rows:
            for name in self._vector_indexes():
                self._table.drop_index(name)
            return False
        sub_vectors = p.num_sub_vectors or (self._dim // 8 if self._dim % 8 == 0 else None)
        config = IvfPq(
            distance_type="dot",
            num_partitions=p.num_partitions or max(1, round(math.sqrt(rows))),
            num_sub_vectors=sub_vectors,
        )
        self._table.create_index(VECTOR_COLUMN, config=config, replace=True)
        return True

    def optimize(self, cleanup_older_than: timedelta | None = None) -> None:
        """Compact the table, purge deleted rows and add unindexed rows to the index
        without retraining it (call `build()` when the data has drifted a lot); builds the
        index if there is none and the table has grown past `index_min_rows`.

        `cleanup_older_than` also deletes older table versions; timedelta(0) frees the
        most disk but breaks any other process still reading an old version."""
        self._table.optimize(cleanup_older_than=cleanup_older_than)
        if not self.has_index and len(self) >= self.params.index_min_rows:
            self.build()

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = self._check_vectors(np.atleast_2d(queries), "queries")
        if k < 1:
            raise InvalidQueryError(f"k must be at least 1, not {k}")
        scores = np.full((len(queries), k), -np.inf, np.float32)
        labels = np.full((len(queries), k), -1, np.int64)
        total = len(self)
        if total == 0 or len(queries) == 0:
            return scores, labels
        if allowed is not None and allowed.dtype == np.bool_:
            allowed = np.flatnonzero(allowed).astype(np.int64)  # a mask indexed by label
        if allowed is None:
            self._fill(scores, labels, np.arange(len(queries)), *self._query(queries, k))
            return scores, labels
        allowed = np.unique(np.asarray(allowed, dtype=np.int64))
        if len(allowed) == 0:
            return scores, labels
        p = self.params
        # enough rows that, if allowed labels are spread evenly, k of them are among them
        first = max(k, math.ceil(2 * k * total / len(allowed)))
        pending = np.arange(len(queries))
        if len(allowed) > p.prefilter_max_labels and first <= p.overfetch_max_limit:
            pending = self._overfetch(queries, k, allowed, first, total, scores, labels)
        if len(pending):
            found = self._query(queries[pending], k, where=_in_list(allowed))
            self._fill(scores, labels, pending, *found)
        return scores, labels

    def _overfetch(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray,
        limit: int,
        total: int,
        scores: np.ndarray,
        labels: np.ndarray,
    ) -> np.ndarray:
        """Fetch `limit` best rows unfiltered and keep the allowed ones, growing the limit
        for the queries still short of k, until k are found or every row has been seen.
        Returns the queries given up on at `overfetch_max_limit`, for the prefilter."""
        pending = np.arange(len(queries))
        while len(pending):
            which, found, score = self._query(queries[pending], limit)
            returned = np.bincount(which, minlength=len(pending))
            keep = np.isin(found, allowed)
            which, found, score = which[keep], found[keep], score[keep]
            kept = np.bincount(which, minlength=len(pending))
            # fewer rows than the limit: LanceDB ran out of rows, so all have been seen
            done = (kept >= k) | (returned < limit) | (limit >= total)
            rows = done[which]
            self._fill(scores, labels, pending, which[rows], found[rows], score[rows])
            pending = pending[~done]
            limit = min(4 * limit, total)
            if limit > self.params.overfetch_max_limit:
                break
        return pending

    def _query(
        self, queries: np.ndarray, limit: int, where: str | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Query positions, labels and inner-product scores of up to `limit` rows each."""
        p = self.params
        vector_query = self._table.search(queries, vector_column_name=VECTOR_COLUMN)
        # search() is typed for every query kind; a vector gets the vector builder
        assert isinstance(vector_query, LanceVectorQueryBuilder)
        builder = (
            vector_query.distance_type("dot")
            .minimum_nprobes(p.nprobes)
            .maximum_nprobes(0)
            .select(["label", "_distance"])
            .limit(limit)
        )
        if p.refine_factor:
            builder = builder.refine_factor(p.refine_factor)
        if where is not None:
            builder = builder.where(where, prefilter=True)
        result = builder.to_arrow()
        found = result.column("label").to_numpy().astype(np.int64, copy=False)
        # LanceDB names the query only when it was given several
        if "query_index" in result.column_names:
            which = result.column("query_index").to_numpy().astype(np.int64)
        else:
            which = np.zeros(len(found), np.int64)
        score = 1.0 - result.column("_distance").to_numpy().astype(np.float64)
        return which, found, score.astype(np.float32)

    @staticmethod
    def _fill(
        scores: np.ndarray,
        labels: np.ndarray,
        rows: np.ndarray,
        which: np.ndarray,
        found: np.ndarray,
        score: np.ndarray,
    ) -> None:
        """Write each query's best results into `rows[which]`, best first, at most k."""
        order = np.lexsort((-score, which))
        which, found, score = which[order], found[order], score[order]
        starts = np.searchsorted(which, which, side="left")
        rank = np.arange(len(which)) - starts
        keep = rank < scores.shape[1]
        scores[rows[which[keep]], rank[keep]] = score[keep]
        labels[rows[which[keep]], rank[keep]] = found[keep]

    def save(self, path: Path) -> None:
        """The rows are already on disk: write only a sidecar (path.with_suffix(".json"))
        naming the database relative to it, so moving both together keeps it valid."""
        sidecar = path.with_suffix(".json")
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        description: dict[str, Any] = {
            "kind": self.kind,
            "dim": self._dim,
            "params": asdict(self.params),
            "database": os.path.relpath(self.path.resolve(), sidecar.parent.resolve()),
            "table": TABLE,
        }
        sidecar.write_text(json.dumps(description, indent=2))

    @classmethod
    def load(cls, path: Path) -> LanceDbIndex:
        sidecar = path.with_suffix(".json")
        try:
            description = json.loads(sidecar.read_text())
        except (OSError, ValueError) as error:
            raise StoreError(f"cannot read the LanceDB index sidecar {sidecar}: {error}") from error
        if description.get("kind") != cls.kind:
            raise StoreError(f"{sidecar} describes a {description.get('kind')!r} index")
        database = sidecar.parent / description["database"]
        params = LanceDbParams(**description["params"])
        return cls(database, int(description["dim"]), params, create=False)
