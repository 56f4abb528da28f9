"""ANN indexes kept in step with the store, through the engine, against exact search."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from tests.search.test_ann import clustered
from xmodal.search import AnnSettings, Engine, Store
from xmodal.search.ann.synced import IndexDirectory, SyncedIndex, segment_keys
from xmodal.search.encoders import IMAGE_TEXT
from xmodal.search.store.records import ItemRecord, SegmentRecord, item_id_for, segment_id_for
from xmodal.search.store.schema import index_root

DIM = 32


class VectorOnlyEncoder:
    """Stands in for a model: these tests query by vector only."""

    spec = "test:vectors"
    identity = "test:vectors"
    dim = DIM
    input_size = (8, 8)

    def load(self) -> None: ...


def write_items(
    store: Store, vectors: np.ndarray, start: int = 0, segments_per_item: int = 1, group=None
) -> list[str]:
    """Items `start..` with `segments_per_item` consecutive vectors each; returns their ids."""
    ids, items, segments = [], [], []
    for n, first in enumerate(range(0, len(vectors), segments_per_item), start=start):
        uri = f"/lib/{n:06d}.jpg"
        item_id = item_id_for(uri)
        ids.append(item_id)
        metadata = {"group": group(n) if group else "all", "n": n}
        kind = "image" if segments_per_item == 1 else "video"
        items.append(ItemRecord(item_id, uri, kind, "/lib", metadata=metadata))
        for j in range(segments_per_item):
            start_s = float(j) if segments_per_item > 1 else None
            end_s = float(j + 1) if segments_per_item > 1 else None
            segments.append(
                SegmentRecord(
                    segment_id_for(item_id, j), item_id, vectors[first + j], start_s, end_s
                )
            )
    store.upsert_segments(IMAGE_TEXT, segments)
    store.upsert_items(items)
    return ids


def open_engine(path: Path, **ann) -> Engine:
    store = Store(path)
    store.bind_space(IMAGE_TEXT, VectorOnlyEncoder.spec, VectorOnlyEncoder.identity, DIM)
    return Engine(store, VectorOnlyEncoder(), ann=AnnSettings(**ann))  # type: ignore[arg-type]


def index_kind(engine: Engine) -> str:
    """The kind of index the engine searches the store's current version with."""
    probe = np.zeros(DIM, np.float32)
    probe[0] = 1.0
    engine.search_vector(probe, k=1)  # brings the space's view and index to the store's version
    report = engine.index_reports()[IMAGE_TEXT]
    assert report is not None
    return report.kind


def top_ids(engine: Engine, query: np.ndarray, k: int = 10, **kw) -> list[str]:
    return [hit.item.id for hit in engine.search_vector(query, k=k, **kw).hits]


@pytest.fixture
def library(tmp_path):
    vectors = clustered(3000, dim=DIM, seed=3)
    exact = open_engine(tmp_path / "data", kind="exact")
    ids = write_items(exact.store, vectors, group=lambda n: "rare" if n % 100 == 0 else "common")
    return tmp_path / "data", vectors, ids, exact


QUERIES = clustered(20, dim=DIM, seed=4)


def overlap(a: list[str], b: list[str]) -> float:
    return len(set(a) & set(b)) / len(b)


# -- keys and the synced index ----------------------------------------------------------
def test_keys_follow_id_and_vector_bits():
    vectors = clustered(70_000, dim=8, seed=1)  # more rows than one hashing chunk
    ids = np.array([f"s{i}" for i in range(len(vectors))], dtype=object)
    keys = segment_keys(ids, vectors)
    assert len(np.unique(keys)) == len(keys) and (keys >= 0).all()
    assert (segment_keys(ids[-5:], vectors[-5:]) == keys[-5:]).all()  # rows hash alike alone
    nudged = vectors[:1].copy()
    nudged.view(np.uint32)[0, 3] ^= 1  # one bit of one component
    assert segment_keys(ids[:1], nudged)[0] != keys[0]
    assert segment_keys(np.array(["other"], dtype=object), vectors[:1])[0] != keys[0]


def built(kind: str, vectors: np.ndarray, keys: np.ndarray, version=(1, 1)) -> SyncedIndex:
    return SyncedIndex.build(kind, DIM, keys, lambda labels: vectors[labels], version)


def test_extended_copy_adds_removes_and_never_reuses_labels():
    vectors = clustered(400, dim=DIM)
    ids = np.array([f"s{i}" for i in range(400)], dtype=object)
    keys = segment_keys(ids, vectors)
    first = built("flat", vectors[:300], keys[:300])
    assert len(first) == 300 and first.labels == 300
    # Next version: labels 0-99 removed, rows 300-399 added under new labels 300-399.
    second = first.extended(
        np.arange(100), keys[300:], vectors[300:], (2, 2), lambda offsets: vectors[300 + offsets]
    )
    assert (len(second), second.labels, len(first)) == (300, 400, 300)  # the first unchanged
    scores, labels = second.search(vectors[350], 5)
    assert labels[0] == 350 and scores[0] == pytest.approx(1.0, abs=1e-5)
    _, labels = second.search(vectors[5], 50)
    assert not (set(labels.tolist()) & set(range(100)))  # removed labels never come back
    _, labels = first.search(vectors[5], 1)
    assert labels[0] == 5  # queries still reading the first copy see it as it was
    assert (second.vectors(np.array([5, 350])) == vectors[[5, 350]]).all()


def test_saved_generations_switch_atomically_with_their_vectors(tmp_path):
    vectors = clustered(200, dim=DIM)
    keys = segment_keys(np.array([f"s{i}" for i in range(200)], dtype=object), vectors)
    directory = IndexDirectory(tmp_path / "idx")
    synced = built("hnsw", vectors, keys, (3, 4))
    first = directory.save(synced)
    second = directory.save(synced)
    assert directory.current() == second and not first.exists()
    loaded = SyncedIndex.load(second)
    assert loaded.store_version == (3, 4) and len(loaded) == 200
    # The vectors come back memory-mapped, by label: nothing of them is read into memory.
    assert (
        isinstance(loaded.mapped, np.memmap) and (loaded.vectors(np.arange(200)) == vectors).all()
    )
    (tmp_path / "idx" / "junk.partial").mkdir()  # a crash mid-save leaves the pointer alone
    assert directory.current() == second


# -- through the engine ------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "minimum"), [("flat", 1.0), ("hnsw", 0.9), ("ivfpq", 0.9)])
def test_ann_engine_agrees_with_exact(library, kind, minimum):
    path, _, _, exact = library
    extra = {"min_segments": 0} if kind == "hnsw" else {}
    ann = open_engine(path, kind="auto" if kind == "hnsw" else kind, **extra)
    found = [top_ids(ann, q) for q in QUERIES]
    truth = [top_ids(exact, q) for q in QUERIES]
    assert index_kind(ann) == kind
    assert np.mean([overlap(f, t) for f, t in zip(found, truth, strict=True)]) >= minimum


@pytest.mark.parametrize("exact_filter_below", [0, 10_000])
def test_filters_give_the_k_best_allowed(library, exact_filter_below):
    path, _, _, exact = library
    ann = open_engine(path, kind="flat", exact_filter_below=exact_filter_below)
    for spec in ({"group": "rare"}, {"group": "common"}, {"n": {"$lt": 40}}):
        for q in QUERIES[:5]:
            got = top_ids(ann, q, filter=spec)
            assert got == top_ids(exact, q, filter=spec)
            assert len(got) == min(10, 30 if spec == {"group": "rare"} else 10)


def test_deleted_and_reembedded_items_are_never_returned(library):
    path, vectors, ids, _ = library
    ann = open_engine(path, kind="hnsw")
    first = top_ids(ann, vectors[7], k=3)
    assert first[0] == ids[7]
    ann.store.delete_items([ids[7]])
    assert ids[7] not in top_ids(ann, vectors[7], k=50)
    report = ann.index_reports()[IMAGE_TEXT]
    assert report is not None and (report.removed, report.built) == (1, False)
    # Re-embed item 8 (same segment id, a far-away vector): its old vector must not find it.
    moved = -vectors[8]
    ann.store.upsert_segments(IMAGE_TEXT, [SegmentRecord(segment_id_for(ids[8], 0), ids[8], moved)])
    assert ids[8] not in top_ids(ann, vectors[8], k=50)
    assert top_ids(ann, moved, k=1) == [ids[8]]


def test_saved_index_is_loaded_then_synced_incrementally(library):
    path, _, _, exact = library
    ann = open_engine(path, kind="hnsw")
    report = ann.refresh_indexes(save=True)[IMAGE_TEXT]
    assert report.built and report.saved
    assert IndexDirectory(index_root(path, IMAGE_TEXT)).state()["count"] == 3000

    reopened = open_engine(path, kind="hnsw")
    assert index_kind(reopened) == "hnsw"
    loaded = reopened.index_reports()[IMAGE_TEXT]
    assert loaded is not None and not loaded.built and loaded.added == 0
    # Writes after the save: the next load adds only those.
    more = clustered(50, dim=DIM, seed=9)
    new_ids = write_items(exact.store, more, start=5000)
    third = open_engine(path, kind="hnsw")
    assert top_ids(third, more[0], k=1) == [new_ids[0]]
    synced = third.index_reports()[IMAGE_TEXT]
    assert synced is not None and (synced.added, synced.built) == (50, False)


def test_missing_index_searches_exactly_unless_built(library):
    path, vectors, ids, _ = library
    lazy = open_engine(path, kind="hnsw", build_if_missing=False)
    assert top_ids(lazy, vectors[5], k=1) == [ids[5]]
    assert index_kind(lazy) == "exact"
    assert lazy.refresh_indexes(save=True)[IMAGE_TEXT].built  # what `xmodal reindex` does
    assert index_kind(open_engine(path, kind="hnsw", build_if_missing=False)) == "hnsw"


def test_auto_switches_to_hnsw_past_the_threshold(tmp_path):
    engine = open_engine(tmp_path / "data", kind="auto", min_segments=500)
    write_items(engine.store, clustered(400, dim=DIM))
    assert index_kind(engine) == "exact"
    write_items(engine.store, clustered(200, dim=DIM, seed=5), start=400)
    assert index_kind(engine) == "hnsw"


def test_many_segments_per_item_still_fill_the_page(tmp_path):
    # 40 "videos" of 50 near-identical keyframes: the first 64 ANN candidates cover
    # only a couple of items, so the engine must ask for more.
    base = clustered(40, dim=DIM, seed=6)
    frames = np.repeat(base, 50, axis=0) + 0.01 * clustered(2000, dim=DIM, seed=7)
    frames /= np.linalg.norm(frames, axis=1, keepdims=True)
    engine = open_engine(tmp_path / "data", kind="flat")
    ids = write_items(engine.store, frames.astype(np.float32), segments_per_item=50)
    exact = open_engine(tmp_path / "data", kind="exact")
    hits = top_ids(engine, base[0], k=20)
    assert len(hits) == 20 and hits == top_ids(exact, base[0], k=20) and hits[0] == ids[0]
    similar = [h.item.id for h in engine.search_similar(ids[3], k=5).hits]
    assert ids[3] not in similar and len(similar) == 5


def test_queries_stay_correct_while_the_index_syncs(library):
    path, vectors, ids, exact = library
    engine = open_engine(path, kind="hnsw")
    assert index_kind(engine) == "hnsw"
    errors: list[BaseException] = []
    deleted = set(ids[:200])

    def query() -> None:
        try:
            for q in vectors[1000:1100]:
                for hit in engine.search_vector(q, k=5).hits:
                    assert hit.item.id in ids
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=query) for _ in range(4)]
    for thread in threads:
        thread.start()
    for start in range(0, 200, 20):  # deletions interleaved with the queries
        exact.store.delete_items(ids[start : start + 20])
    for thread in threads:
        thread.join()
    assert not errors
    assert not deleted & set(top_ids(engine, vectors[0], k=100))


@pytest.mark.parametrize("damage", ["index.faiss", "keys.npy", "state.json"])
def test_a_damaged_saved_index_is_rebuilt_not_fatal(library, damage):
    path, vectors, ids, _ = library
    open_engine(path, kind="hnsw").refresh_indexes(save=True)
    saved = IndexDirectory(index_root(path, IMAGE_TEXT)).current()
    assert saved is not None
    target = saved / damage
    target.write_bytes(target.read_bytes()[:20])  # a torn or half-copied file

    engine = open_engine(path, kind="hnsw")
    assert top_ids(engine, vectors[11], k=1) == [ids[11]]
    report = engine.index_reports()[IMAGE_TEXT]
    assert report is not None and report.built and report.kind == "hnsw"
    assert engine.refresh_indexes(save=True)[IMAGE_TEXT].saved  # a good generation replaces it
    assert IndexDirectory(index_root(path, IMAGE_TEXT)).state()["count"] == 3000
