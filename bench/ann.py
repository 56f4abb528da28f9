"""ANN indexes: xmodal's FAISS wrapper versus raw FAISS, and LanceDB's own vector index.

    .venv/bin/python bench/ann.py                                  # 100k x 512, all kinds
    .venv/bin/python bench/ann.py --sweep                          # + knob sweeps
    .venv/bin/python bench/ann.py --sizes 1000000 --kinds hnsw --sweep   # 1M, ~20 min
    .venv/bin/python bench/ann.py --sizes 1000000 --kinds ivfpq lancedb --nlist 2048 \
        --train-size 262144 --sweep

Defaults (the engine's, tuned on this data with --sweep): HNSW M=32, efConstruction=160,
efSearch=64; IVF-PQ nlist=4*sqrt(n), m=dim/8 (64 at 512-d), nprobe=8, exact re-rank of
k*32 candidates. The re-rank factor, not nprobe, is what limits IVF-PQ recall on 512-d
data: the PQ distances alone misorder the top candidates.

For each size it:
  1. generates seeded clustered unit vectors (1000-4000 clusters of unequal size, each
     with its own Gaussian spread around a centre that shares a common direction, like
     CLIP's embedding cone; queries are fresh draws from the same clusters);
  2. writes them through the store's real write path (`Store.upsert_items` and
     `Store.upsert_segments`, --write-batch at a time) and reads them back;
  3. computes exact top-k (numpy matmul in chunks), unfiltered and with an `allowed`
     set of ~10% of the rows;
  4. per FAISS kind: builds xmodal's index the way `xmodal index` does (SpaceIndex:
     store snapshot, segment keys, sync, save), loads it again as a starting server
     does, and builds the equivalent raw FAISS index on the same vectors (IVF-PQ with
     the same exact re-rank done by hand, filtered searches widened the same way);
     reports build time, bytes per vector, recall@k, single-query QPS on one thread
     (one query per call, as a server does) and batched QPS (all queries, all threads)
     through xmodal's layer (labels mapped back to store rows) and raw FAISS, their
     ratio (target >= 0.67, i.e. within 1.5x), filtered recall and QPS, and the whole
     engine's `search_vector` (version check, ANN, grouping, item records);
     for HNSW also the churn of an indexing run (1% new items: sync, delete, save);
  5. "lancedb": LanceDB's IVF_PQ index on the segments table, single-query QPS and recall
     with nprobes/refine_factor, and brute force (no index) latency on a few queries;
  6. prints one table per size.

Single-query loops stop after --max-seconds (the QPS is over the queries that ran);
recall always uses all queries. Other processes' CPU use is printed per phase: above 5%
the timings are disturbed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("LANCE_LOG", "error")  # LanceDB's per-query deprecation warnings

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import CpuMeter, fresh_dir, parse_args  # noqa: E402  (bench/ is the script folder)

SPACE = "image-text"
TARGET_RECALL = 0.95
TARGET_QPS = 2000
TARGET_RATIO = 0.67


# -- data -----------------------------------------------------------------------------
def clusters_for(n: int) -> int:
    return int(min(4000, max(1000, n // 250)))


def make_data(n: int, nq: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    nc = clusters_for(n)
    common = rng.standard_normal(dim).astype(np.float32)
    common /= np.linalg.norm(common)
    centres = rng.standard_normal((nc, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    centres = centres + 0.6 * common  # a shared direction: the "cone" of CLIP embeddings
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = rng.uniform(0.55, 1.0, nc).astype(np.float32)  # cos to centre ~0.7-0.88
    weights = rng.lognormal(0.0, 1.0, nc)  # unequal cluster sizes
    weights /= weights.sum()

    def draw(count: int) -> np.ndarray:
        out = np.empty((count, dim), np.float32)
        for start in range(0, count, 100_000):
            m = min(100_000, count - start)
            which = rng.choice(nc, size=m, p=weights)
            noise = rng.standard_normal((m, dim), dtype=np.float32)
            block = centres[which] + noise * (spread[which, None] / np.sqrt(dim))
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            out[start : start + m] = block
        return out

    return draw(n), draw(nq), nc


def write_store(path: Path, vectors: np.ndarray, batch: int, start: int = 0) -> dict[str, float]:
    from xmodal.search.store import Store
    from xmodal.search.store.records import ItemRecord, SegmentRecord, item_id_for, segment_id_for

    store = Store(path)
    store.bind_space(SPACE, "bench", "bench:random-clustered", vectors.shape[1])
    t_items = t_segments = 0.0
    for first in range(0, len(vectors), batch):
        stop = min(len(vectors), first + batch)
        items, segments = [], []
        for i in range(first, stop):
            uri = f"/bench/images/{start + i:08d}.jpg"
            item_id = item_id_for(uri)
            items.append(ItemRecord(item_id, uri, "image", "/bench/images"))
            segments.append(SegmentRecord(segment_id_for(item_id, 0), item_id, vectors[i]))
        t0 = time.perf_counter()
        store.upsert_segments(SPACE, segments)  # segments first, as the indexer does
        t1 = time.perf_counter()
        store.upsert_items(items)
        t_items += time.perf_counter() - t1
        t_segments += t1 - t0
    return {"segments_s": t_segments, "items_s": t_items}


def read_store(path: Path) -> tuple[np.ndarray, list[str]]:
    from xmodal.search.store import Store

    table = Store(path).segments_table(SPACE)
    column = table.column("vector").combine_chunks()
    dim = column.type.list_size
    vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    return np.ascontiguousarray(vectors, dtype=np.float32), table.column("id").to_pylist()


def exact_topk(
    vectors: np.ndarray, queries: np.ndarray, k: int, subset: np.ndarray | None = None
) -> np.ndarray:
    """Labels (row numbers) of the exact top k; within `subset` when given."""
    base = vectors if subset is None else vectors[subset]
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.full((len(queries), k), -1, np.int64)
    for start in range(0, len(base), 200_000):
        scores = queries @ base[start : start + 200_000].T
        top = (
            np.argpartition(-scores, k - 1, axis=1)[:, :k]
            if scores.shape[1] > k
            else (np.tile(np.arange(scores.shape[1]), (len(queries), 1)))
        )
        s = np.take_along_axis(scores, top, axis=1)
        all_s = np.concatenate([best_s, s], axis=1)
        all_i = np.concatenate([best_i, top + start], axis=1)
        keep = np.argsort(-all_s, axis=1)[:, :k]
        best_s = np.take_along_axis(all_s, keep, axis=1)
        best_i = np.take_along_axis(all_i, keep, axis=1)
    return best_i if subset is None else subset[best_i]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


# -- timing ---------------------------------------------------------------------------
def threads(n: int) -> None:
    import faiss

    faiss.omp_set_num_threads(n)


def single_qps(search_one, queries: np.ndarray, max_seconds: float) -> float:
    """One query per call on one thread, as a server handles requests."""
    threads(1)
    try:
        search_one(queries[:1])  # warm-up
        t0 = time.perf_counter()
        done = 0
        for q in queries:
            search_one(q[None, :])
            done += 1
            if time.perf_counter() - t0 > max_seconds:
                break
        return done / (time.perf_counter() - t0)
    finally:
        threads(os.cpu_count() or 1)


def batched(search_all, queries: np.ndarray) -> tuple[float, np.ndarray]:
    threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    labels = search_all(queries)
    return len(queries) / (time.perf_counter() - t0), labels


# -- raw FAISS baselines ----------------------------------------------------------------
@dataclass
class Params:
    hnsw_m: int
    ef_construction: int
    ef_search: int
    nlist: int
    pq_m: int
    nprobe: int
    refine_factor: int


class RawFaiss:
    """The plain FAISS equivalent of each xmodal kind, with nothing around it."""

    def __init__(self, kind: str, vectors: np.ndarray, p: Params, train_size: int = 0):
        import faiss

        self.faiss, self.kind, self.vectors = faiss, kind, vectors
        self.p = dataclasses.replace(p)  # sweeps change it; the caller's stays as it was
        d = vectors.shape[1]
        if kind == "flat":
            self.index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(d, p.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = p.ef_construction
            self.index.hnsw.efSearch = p.ef_search
        else:
            quantizer = faiss.IndexFlatIP(d)
            self.index = faiss.IndexIVFPQ(
                quantizer, d, p.nlist, p.pq_m or d // 8, 8, faiss.METRIC_INNER_PRODUCT
            )
            self.index.train(vectors[:train_size] if train_size else vectors)
            self.index.nprobe = p.nprobe
            self.quantizer = quantizer
        self.index.add(vectors)
        self.params: Any = None

    def set_filter(self, allowed: np.ndarray | None) -> None:
        """The selector is built once per filter, not per call."""
        faiss = self.faiss
        if allowed is None:
            self.params, self._sel = None, None
            return
        self._sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        # The same widening xmodal applies (search/ann/faiss_index._search_params).
        widen = min(16.0, self.index.ntotal / max(1, len(allowed)))
        if self.kind == "hnsw":
            ef = int(self.p.ef_search * widen)
            self.params = faiss.SearchParametersHNSW(sel=self._sel, efSearch=ef)
        elif self.kind == "ivfpq":
            nprobe = int(self.p.nprobe * widen)
            self.params = faiss.SearchParametersIVF(sel=self._sel, nprobe=nprobe)
        else:
            self.params = faiss.SearchParameters(sel=self._sel)

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        if self.kind != "ivfpq":
            return self.index.search(queries, k, params=self.params)[1]
        _, cand = self.index.search(queries, k * self.p.refine_factor, params=self.params)
        if len(queries) == 1:
            c = cand[0][cand[0] >= 0]
            exact = self.vectors[c] @ queries[0]
            out = np.full((1, k), -1, np.int64)
            order = np.argsort(-exact)[:k]
            out[0, : len(order)] = c[order]
            return out
        # row by row: gathering all candidates at once ((nq, k*refine, dim) floats, 330 MB
        # for 1000 queries x 160) measured 3-7x slower than this loop
        out = np.full((len(queries), k), -1, np.int64)
        for row, (query, found) in enumerate(zip(queries, cand, strict=True)):
            found = found[found >= 0]
            order = np.argsort(-(self.vectors[found] @ query))[:k]
            out[row, : len(order)] = found[order]
        return out


def index_bytes(index: Any) -> int:
    import faiss

    return int(faiss.serialize_index(index).nbytes)


# -- results --------------------------------------------------------------------------
@dataclass
class Row:
    kind: str
    build_s: float = float("nan")
    bytes_per_vector: str = ""
    recall: float = float("nan")
    single_qps: float = float("nan")
    batched_qps: float = float("nan")
    f_recall: float = float("nan")
    f_qps: float = float("nan")
    raw_single_qps: float = float("nan")
    raw_batched_qps: float = float("nan")
    raw_build_s: float = float("nan")
    raw_recall: float = float("nan")
    raw_f_recall: float = float("nan")
    raw_f_qps: float = float("nan")
    engine_recall: float = float("nan")
    engine_qps: float = float("nan")
    notes: list[str] = field(default_factory=list)


def fmt(value: float, digits: int = 0) -> str:
    if value != value:  # nan
        return "-"
    return f"{value:,.{digits}f}"


def print_table(n: int, rows: list[Row]) -> None:
    head = [
        "kind",
        "build s",
        "bytes/vec",
        "recall@k",
        "1-thr QPS",
        "batch QPS",
        "filt rec",
        "filt QPS",
        "raw 1-thr",
        "raw batch",
        "raw filt",
        "ratio 1thr",
        "ratio batch",
        "ratio filt",
        "engine rec",
        "engine QPS",
    ]
    lines = []
    for r in rows:
        ratio = r.single_qps / r.raw_single_qps if r.raw_single_qps == r.raw_single_qps else np.nan
        ratio_b = (
            r.batched_qps / r.raw_batched_qps if r.raw_batched_qps == r.raw_batched_qps else np.nan
        )
        ratio_f = r.f_qps / r.raw_f_qps if r.raw_f_qps == r.raw_f_qps else np.nan
        lines.append(
            [
                r.kind,
                fmt(r.build_s, 1),
                r.bytes_per_vector,
                fmt(r.recall, 3),
                fmt(r.single_qps),
                fmt(r.batched_qps),
                fmt(r.f_recall, 3),
                fmt(r.f_qps),
                fmt(r.raw_single_qps),
                fmt(r.raw_batched_qps),
                fmt(r.raw_f_qps),
                fmt(ratio, 2),
                fmt(ratio_b, 2),
                fmt(ratio_f, 2),
                fmt(r.engine_recall, 3),
                fmt(r.engine_qps),
            ]
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    print(f"\n=== n={n:,} ===")
    print("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    for line in lines:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
    print("raw FAISS build s / recall / filtered recall:")
    for r in rows:
        if r.raw_build_s == r.raw_build_s:
            print(
                f"  {r.kind}: {fmt(r.raw_build_s, 1)} / {fmt(r.raw_recall, 3)} / "
                f"{fmt(r.raw_f_recall, 3)}"
            )
    for r in rows:
        for note in r.notes:
            print(f"  {r.kind}: {note}")
    print(
        f"targets: at 1M x 512 recall@10 >= {TARGET_RECALL} at >= {TARGET_QPS:,} single-thread "
        f"QPS; xmodal/raw QPS ratio >= {TARGET_RATIO} (within 1.5x)"
    )


def phase(name: str, meter: CpuMeter, extra: str = "") -> None:
    m = meter.stop()
    warn = "  (DISTURBED: other processes busy)" if m["foreign_share"] > 0.05 else ""
    print(
        f"[{name}] {m['wall']:.1f} s wall, {m['own']:.1f} s CPU, others "
        f"{m['foreign_share']:.0%}{warn} {extra}",
        flush=True,
    )


# -- per kind -------------------------------------------------------------------------
class VectorsOnly:
    """The engine needs an encoder bound to the space; these queries come as vectors."""

    spec = "bench"
    identity = "bench:random-clustered"
    input_size = (8, 8)

    def __init__(self, dim: int):
        self.dim = dim

    def load(self) -> None: ...


def ann_options(kind: str, p: Params, train_size: int) -> Any:
    from xmodal.search import AnnSettings

    return AnnSettings(
        kind=kind,
        ef_search=p.ef_search,
        nprobe=p.nprobe,
        hnsw_m=p.hnsw_m,
        ef_construction=p.ef_construction,
        nlist=p.nlist,
        pq_m=p.pq_m,
        refine_factor=p.refine_factor,
        train_size=train_size,
    )


def rows_of(ann: Any, label_map: Any, query: np.ndarray, k: int, allowed: Any = None) -> Any:
    """What the engine's ANN path does per query: search, then labels to snapshot rows."""
    mask = allowed if allowed is not None else label_map.alive
    scores, labels = ann.search(query, k, mask)
    rows = label_map.rows(labels)
    return scores[rows >= 0], rows[rows >= 0]


def bench_faiss(
    kind: str,
    data_dir: Path,
    vectors: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    allowed: np.ndarray,
    f_truth: np.ndarray,
    k: int,
    p: Params,
    max_seconds: float,
    train_size: int = 0,
    churn: bool = False,
) -> tuple[Row, RawFaiss, Any]:
    """xmodal's index built the way the indexer builds it (store snapshot, keys, sync,
    save), searched through its layer (labels mapped back to store rows) and through the
    whole engine (hits with item records), against raw FAISS on the same vectors."""
    from xmodal.search import Engine, Store
    from xmodal.search.space import SpaceIndex

    row = Row(kind)
    n, dim = vectors.shape
    options = ann_options(kind, p, train_size)
    meter = CpuMeter()
    space = SpaceIndex(Store(data_dir), SPACE, options)
    report = space.refresh(save=True)
    row.build_s = time.perf_counter() - meter.wall
    phase(
        f"{kind} xmodal build",
        meter,
        f"(store snapshot + keys + build {report.seconds:.1f} s, then save)",
    )
    view = space.view()
    assert view.ann is not None and view.label_map is not None
    ann, label_map = view.ann, view.label_map

    meter = CpuMeter()
    fresh = SpaceIndex(Store(data_dir), SPACE, options)
    fresh.view()
    loaded = fresh.last_refresh
    assert loaded is not None and not loaded.built
    phase(f"{kind} xmodal load", meter, "(a server starting: snapshot, saved index mmap, keys)")
    del fresh

    meter = CpuMeter()
    raw = RawFaiss(kind, vectors, p, train_size)
    row.raw_build_s = time.perf_counter() - meter.wall
    phase(f"{kind} raw build", meter)

    x_bytes = index_bytes(ann.index._index) / n  # type: ignore[attr-defined]
    raw_bytes = index_bytes(raw.index) / n
    if kind == "ivfpq":
        row.bytes_per_vector = f"{x_bytes:.0f}+{dim * 4}"
        row.notes.append(
            f"bytes/vec: {x_bytes:.0f} index (raw {raw_bytes:.0f}) + {dim * 4} full float32 "
            "vectors for the exact re-rank (vectors.npy, memory-mapped by servers)"
        )
    else:
        row.bytes_per_vector = f"{x_bytes:.0f}"
        row.notes.append(
            f"bytes/vec: {x_bytes:.0f} serialized (raw {raw_bytes:.0f}); IndexIDMap2 adds 8 B "
            f"on disk plus a reverse map in RAM; vectors.npy holds another {dim * 4} "
            "B/vec on disk, memory-mapped by servers (moments, selective filters)"
        )

    def layer_batch(q: np.ndarray) -> np.ndarray:
        _, labels = ann.index.search(q, k)
        return np.stack([label_map.rows(row_labels) for row_labels in labels])

    def layer_one(q: np.ndarray) -> Any:
        return rows_of(ann, label_map, q[0], k)

    meter = CpuMeter()
    row.batched_qps, found = batched(layer_batch, queries)
    row.recall = recall(found, truth)
    row.raw_batched_qps, raw_found = batched(lambda q: raw.search(q, k), queries)
    row.raw_recall = recall(raw_found, truth)
    row.single_qps = single_qps(layer_one, queries, max_seconds)
    row.raw_single_qps = single_qps(lambda q: raw.search(q, k), queries, max_seconds)
    phase(f"{kind} search", meter)

    # The whole engine: version check, ANN (k items need 64 candidates), hits, records.
    meter = CpuMeter()
    # The index saved above, read into memory (not memory-mapped), as the one just built.
    in_memory = options.model_copy(update={"mmap": False})
    engine = Engine(space.store, VectorsOnly(dim), ann=in_memory)  # type: ignore[arg-type]
    engine.refresh_indexes()
    code_of_item = {item_id: code for code, item_id in enumerate(view.snapshot.lookup.ids)}
    row_of_code = {int(c): r for r, c in enumerate(view.snapshot.item_codes)}  # one segment each
    engine_found = np.array(
        [
            [row_of_code[code_of_item[h.item.id]] for h in engine.search_vector(q, k=k).hits]
            for q in queries
        ]
    )
    row.engine_recall = recall(engine_found, truth)
    row.engine_qps = single_qps(lambda q: engine.search_vector(q[0], k=k), queries, max_seconds)
    phase(f"{kind} engine search", meter)

    meter = CpuMeter()
    allowed_labels = np.zeros(len(label_map.row_of_label), bool)
    allowed_labels[label_map.label_of_row[allowed]] = True
    _, f_labels = ann.index.search(queries, k, allowed=allowed_labels)
    f_found = np.stack([label_map.rows(r) for r in f_labels])
    row.f_recall = recall(f_found, f_truth)
    row.f_qps = single_qps(
        lambda q: rows_of(ann, label_map, q[0], k, allowed_labels), queries, max_seconds
    )
    raw.set_filter(allowed)
    _, raw_f_found = batched(lambda q: raw.search(q, k), queries)
    row.raw_f_recall = recall(raw_f_found, f_truth)
    row.raw_f_qps = single_qps(lambda q: raw.search(q, k), queries, max_seconds)
    raw.set_filter(None)
    phase(f"{kind} filtered search", meter)
    row.notes.append("filtered QPS is single-thread, one query per call")
    if churn:
        row.notes.append(churn_figures(space, vectors, n))
    return row, raw, view


def churn_figures(space: Any, vectors: np.ndarray, n: int) -> str:
    """Writes 1% new items, syncs, deletes them again, syncs: what an indexer run between
    two queries costs the next query."""
    from xmodal.search.store.records import item_id_for

    extra = max(1, n // 100)
    meter = CpuMeter()
    rng = np.random.default_rng(7)
    new = vectors[rng.choice(n, extra, replace=False)] + 0.01
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    write_store(space.store.path, new.astype(np.float32), 50_000, start=n)
    written = time.perf_counter() - meter.wall
    t0 = time.perf_counter()
    space.view()
    added = space.last_refresh
    t_add = time.perf_counter() - t0
    ids = [item_id_for(f"/bench/images/{i:08d}.jpg") for i in range(n, n + extra)]
    space.store.delete_items(ids)
    t0 = time.perf_counter()
    space.view()
    removed = space.last_refresh
    t_remove = time.perf_counter() - t0
    t0 = time.perf_counter()
    space.refresh(save=True)
    t_save = time.perf_counter() - t0
    phase("churn", meter)
    return (
        f"churn: +{extra:,} items written in {written:.1f} s; next query's sync "
        f"{t_add:.1f} s (+{added.added:,}, rebuilt {added.built}); delete them, sync "
        f"{t_remove:.1f} s (-{removed.removed:,}); save {t_save:.1f} s"
    )


def sweep(
    kind: str,
    raw: RawFaiss,
    view: Any,
    queries: np.ndarray,
    truth: np.ndarray,
    k: int,
    max_seconds: float,
) -> None:
    """Recall / single-thread QPS across the search-time knob: raw FAISS and xmodal's
    layer (the same index as built by SpaceIndex) at each setting."""
    ann, label_map = view.ann, view.label_map
    params = ann.index.params
    sub_q, sub_t = queries[:300], truth[:300]

    def xmodal_point() -> tuple[float, float]:
        _, labels = ann.index.search(sub_q, k)
        found = np.stack([label_map.rows(r) for r in labels])
        qps = single_qps(lambda q: rows_of(ann, label_map, q[0], k), sub_q, max_seconds / 6)
        return recall(found, sub_t), qps

    if kind == "hnsw":
        for ef in (32, 64, 96, 128, 160, 192, 256):
            raw.index.hnsw.efSearch = ef
            _, lab = raw.index.search(sub_q, k)
            qps = single_qps(lambda q: raw.index.search(q, k), sub_q, max_seconds / 6)
            ann.index.params = dataclasses.replace(params, ef_search=ef)
            x_recall, x_qps = xmodal_point()
            print(
                f"  sweep hnsw efSearch={ef}: raw recall {recall(lab, sub_t):.3f} QPS {qps:,.0f}"
                f" | xmodal recall {x_recall:.3f} QPS {x_qps:,.0f} (ratio {x_qps / qps:.2f})"
            )
        raw.index.hnsw.efSearch = raw.p.ef_search
    elif kind == "ivfpq":
        for nprobe in (8, 16, 32, 64):
            for rf in (8, 16, 32, 64):
                raw.index.nprobe = nprobe
                raw.p.refine_factor = rf
                lab = raw.search(sub_q, k)
                qps = single_qps(lambda q: raw.search(q, k), sub_q, max_seconds / 6)
                ann.index.params = dataclasses.replace(params, nprobe=nprobe, refine_factor=rf)
                x_recall, x_qps = xmodal_point()
                print(
                    f"  sweep ivfpq nprobe={nprobe} refine={rf}: raw recall "
                    f"{recall(lab, sub_t):.3f} QPS {qps:,.0f} | xmodal recall {x_recall:.3f} "
                    f"QPS {x_qps:,.0f}"
                )
        raw.index.nprobe = raw.p.nprobe
    ann.index.params = params


def bench_lancedb(
    data_dir: Path,
    ids: list[str],
    queries: np.ndarray,
    truth: np.ndarray,
    k: int,
    p: Params,
    max_seconds: float,
) -> Row:
    import lancedb
    from lancedb.index import IvfPq

    from xmodal.search.store.schema import segments_table_name

    row = Row("lancedb")
    position = {sid: i for i, sid in enumerate(ids)}
    db = lancedb.connect(data_dir / "lance")
    table = db.open_table(segments_table_name(SPACE))
    n = table.count_rows()

    def labels_of(result) -> np.ndarray:
        out = np.full(k, -1, np.int64)
        got = [position[s] for s in result.column("id").to_pylist()][:k]
        out[: len(got)] = got
        return out

    # brute force first, before the index exists
    meter = CpuMeter()
    lat = []
    for q in queries[:5]:
        t0 = time.perf_counter()
        table.search(q).metric("dot").select(["id", "_distance"]).limit(k).to_arrow()
        lat.append(time.perf_counter() - t0)
    phase("lancedb brute force", meter)
    row.notes.append(f"brute force (no index): {np.median(lat) * 1000:.0f} ms/query median of 5")

    meter = CpuMeter()
    table.create_index(
        "vector",
        config=IvfPq(
            distance_type="dot",
            num_partitions=p.nlist,
            num_sub_vectors=p.pq_m or queries.shape[1] // 8,
        ),
    )
    row.build_s = time.perf_counter() - meter.wall
    phase("lancedb index build", meter)
    idx_dir = data_dir / "lance" / f"{segments_table_name(SPACE)}.lance" / "_indices"
    size = (
        sum(f.stat().st_size for f in idx_dir.rglob("*") if f.is_file()) if idx_dir.exists() else 0
    )
    row.bytes_per_vector = f"{size / n:.0f}+{queries.shape[1] * 4}"
    row.notes.append(
        f"bytes/vec: {size / n:.0f} on-disk index + full vectors in the table for the refine"
    )

    def one(q: np.ndarray):
        return (
            table.search(q)
            .metric("dot")
            .nprobes(p.nprobe)
            .refine_factor(p.refine_factor)
            .select(["id", "_distance"])
            .limit(k)
            .to_arrow()
        )

    meter = CpuMeter()
    one(queries[0])
    found = []
    t0 = time.perf_counter()
    done = 0
    for q in queries:
        found.append(labels_of(one(q)))
        done += 1
        if time.perf_counter() - t0 > max_seconds * 3:
            break
    elapsed = time.perf_counter() - t0
    row.single_qps = done / elapsed
    row.recall = recall(np.stack(found), truth[:done])
    phase("lancedb search", meter, f"({done} queries; LanceDB uses its own thread pool)")
    row.notes.append(
        f"nprobes={p.nprobe} refine_factor={p.refine_factor}; recall over {done} queries; "
        "QPS is one query per call on LanceDB's own threads (not pinned to 1)"
    )
    return row


# -- main -----------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivfpq", "lancedb"])
    ap.add_argument(
        "--data-dir", type=Path, default=None, help="scratch store (default: a temp dir)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the scratch store")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-batch", type=int, default=50_000)
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=160)
    ap.add_argument("--ef-search", type=int, default=64)
    ap.add_argument("--nlist", type=int, default=0, help="0: 4*sqrt(n)")
    ap.add_argument("--pq-m", type=int, default=0, help="0: dim/8")
    ap.add_argument("--nprobe", type=int, default=8)
    ap.add_argument("--refine-factor", type=int, default=32)
    ap.add_argument(
        "--train-size",
        type=int,
        default=0,
        help="IVF-PQ: train on the first N vectors (0: all; faiss samples 256/cell)",
    )
    ap.add_argument("--filter-share", type=float, default=0.1)
    ap.add_argument("--max-seconds", type=float, default=10.0, help="cap per single-query loop")
    ap.add_argument("--sweep", action="store_true", help="also sweep efSearch / nprobe x refine")
    args = parse_args(
        ap,
        None,
        sizes=[5000],
        queries=100,
        max_seconds=2.0,
        kinds=["flat", "hnsw", "ivfpq", "lancedb"],
    )

    import faiss

    print(
        f"faiss {faiss.__version__}, {os.cpu_count()} CPUs, dim {args.dim}, k {args.k}, "
        f"{args.queries} queries",
        flush=True,
    )
    base = args.data_dir or Path(tempfile.mkdtemp(prefix="xmodal-ann-"))
    for n in args.sizes:
        nlist = args.nlist or max(16, int(4 * np.sqrt(n)))
        p = Params(
            args.hnsw_m,
            args.ef_construction,
            args.ef_search,
            nlist,
            args.pq_m,
            args.nprobe,
            args.refine_factor,
        )
        print(f"\n##### n={n:,}  params {p}", flush=True)
        data_dir = fresh_dir(base / f"n{n}")

        meter = CpuMeter()
        generated, queries, nc = make_data(n, args.queries, args.dim, args.seed)
        phase("generate", meter, f"({nc} clusters)")

        meter = CpuMeter()
        times = write_store(data_dir, generated, args.write_batch)
        wall = time.perf_counter() - meter.wall
        phase(
            "store write",
            meter,
            f"{n / wall:,.0f} vectors/s (segments {times['segments_s']:.1f} s, "
            f"items {times['items_s']:.1f} s, batches of {args.write_batch:,})",
        )
        del generated

        meter = CpuMeter()
        vectors, ids = read_store(data_dir)
        wall = time.perf_counter() - meter.wall
        phase("store read", meter, f"{n / wall:,.0f} vectors/s")
        assert vectors.shape == (n, args.dim), vectors.shape

        meter = CpuMeter()
        rng = np.random.default_rng(args.seed + 1)
        allowed = np.sort(
            rng.choice(n, size=max(args.k, int(n * args.filter_share)), replace=False)
        )
        truth = exact_topk(vectors, queries, args.k)
        f_truth = exact_topk(vectors, queries, args.k, allowed)
        phase("ground truth", meter)

        rows = []
        for kind in args.kinds:
            if kind == "lancedb":
                rows.append(
                    bench_lancedb(data_dir, ids, queries, truth, args.k, p, args.max_seconds)
                )
                continue
            row, raw, view = bench_faiss(
                kind,
                data_dir,
                vectors,
                queries,
                truth,
                allowed,
                f_truth,
                args.k,
                p,
                args.max_seconds,
                args.train_size,
                churn=kind == "hnsw",
            )
            rows.append(row)
            if args.sweep and kind in ("hnsw", "ivfpq"):
                meter = CpuMeter()
                sweep(kind, raw, view, queries, truth, args.k, args.max_seconds)
                phase(f"{kind} sweep", meter)
            del raw, view
        print_table(n, rows)
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    if not args.keep and args.data_dir is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
