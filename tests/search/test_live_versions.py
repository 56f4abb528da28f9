"""New store versions applied from what changed, while queries go on (issue 17).

Each check compares an engine that followed the store commit by commit (applying each
version's change to the previous snapshot) with one that reads the same version
whole: they must return the same hits, whatever the commits did.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.search.test_ann import clustered
from tests.search.test_space_index import DIM, open_engine, top_ids, write_items
from xmodal.search.ann.synced import IndexDirectory
from xmodal.search.encoders import IMAGE_TEXT
from xmodal.search.space import Snapshot
from xmodal.search.store import item_id_for
from xmodal.search.store.records import ItemRecord, SegmentRecord, segment_id_for
from xmodal.search.store.schema import index_root

QUERIES = clustered(12, dim=DIM, seed=21)
FILTERS = [None, {"group": "rare"}, {"group": {"$ne": "rare"}}]


def same_answers(followed, path, kind: str, k: int = 15) -> None:
    """`followed` answers like an engine reading the store afresh, filters included."""
    fresh = open_engine(path, kind=kind)
    for query in QUERIES:
        for spec in FILTERS:
            assert top_ids(followed, query, k=k, filter=spec) == top_ids(
                fresh, query, k=k, filter=spec
            ), spec
    assert followed.facets().items == fresh.facets().items


def space_index(engine):
    return engine._space(IMAGE_TEXT).index


@pytest.mark.parametrize("kind", ["exact", "hnsw", "flat"])
def test_applied_versions_answer_like_versions_read_whole(tmp_path, kind):
    path = tmp_path / "data"
    writer = open_engine(path, kind="exact")
    vectors = clustered(1200, dim=DIM, seed=5)
    ids = write_items(writer.store, vectors[:800], group=lambda n: "rare" if n % 9 == 0 else "all")
    followed = open_engine(path, kind=kind)
    if kind != "exact":
        followed.refresh_indexes(save=True)  # as an indexing run leaves it
    same_answers(followed, path, kind)
    first = space_index(followed)._view.snapshot

    # New items; deleted items; re-embedded ones; metadata-only updates (same segments).
    more = write_items(writer.store, vectors[800:1000], start=800, group=lambda n: "rare")
    same_answers(followed, path, kind)
    writer.store.delete_items(ids[:50] + more[:5])
    same_answers(followed, path, kind)
    moved = [
        SegmentRecord(segment_id_for(i, 0), i, -vectors[n]) for n, i in enumerate(ids[100:120], 100)
    ]
    writer.store.upsert_segments(IMAGE_TEXT, moved)
    same_answers(followed, path, kind)
    assert top_ids(followed, -vectors[105], k=1) == [ids[105]]
    records = writer.store.items(ids[200:260])
    writer.store.upsert_items(
        [
            ItemRecord(**{**r.__dict__, "metadata": {"group": "rare", "n": -1}})
            for r in records.values()
        ]
    )
    same_answers(followed, path, kind)
    # Segments committed before their items (an indexer's order): not served until then.
    orphan_vectors = vectors[1000:1010]
    write_items(writer.store, orphan_vectors, start=1000)
    same_answers(followed, path, kind)
    # A compaction rewrites fragments: the change is read as rows gone and rows added.
    writer.store.compact()
    same_answers(followed, path, kind)

    last = space_index(followed)._view.snapshot
    assert last.version == followed.store.version(IMAGE_TEXT)
    # Rows read by the first snapshot are still the same arrays' rows: never re-read,
    # unless the compaction rewrote them (then the version is read again, whole).
    assert first.table == last.table


def test_a_commit_reads_only_its_rows(tmp_path):
    path = tmp_path / "data"
    writer = open_engine(path, kind="exact")
    write_items(writer.store, clustered(2000, dim=DIM, seed=1))
    followed = open_engine(path, kind="exact")
    top_ids(followed, QUERIES[0])
    before = space_index(followed)._view.snapshot
    write_items(writer.store, clustered(30, dim=DIM, seed=2), start=5000)
    top_ids(followed, QUERIES[0])
    after = space_index(followed)._view.snapshot
    report = followed.index_reports()[IMAGE_TEXT]
    assert report is not None and report.added == 30
    assert after.sealed_items is before.sealed_items  # the first read's rows, shared
    assert after.grown_items.num_rows == 30 and len(after) == 2030


def test_a_live_server_never_waits_and_never_serves_a_deleted_item_once_live(tmp_path):
    path = tmp_path / "data"
    writer = open_engine(path, kind="exact")
    vectors = clustered(600, dim=DIM, seed=8)
    ids = write_items(writer.store, vectors)
    served = open_engine(path, kind="hnsw", min_segments=0)
    served.refresh_indexes(save=True)
    served.serve_live()
    index = space_index(served)
    assert top_ids(served, vectors[3], k=1) == [ids[3]]
    old = index._view

    # Hold the builder: a query after a commit is answered from the version it has.
    with index._lock:
        writer.store.delete_items([ids[3]])
        assert top_ids(served, vectors[3], k=1) == [ids[3]]
        assert index._view is old
    deadline = time.monotonic() + 30
    while index._view is old and time.monotonic() < deadline:
        time.sleep(0.02)
    assert index._view.version == served.store.version(IMAGE_TEXT)
    assert ids[3] not in top_ids(served, vectors[3], k=50)
    assert index.state().up_to_date

    # Writes made through the engine's own callers: catch_up makes them searchable.
    new = write_items(writer.store, clustered(5, dim=DIM, seed=9), start=900)
    served.catch_up()
    assert new[0] in top_ids(served, clustered(5, dim=DIM, seed=9)[0], k=1)


def test_queries_during_commits_see_one_version_each_and_no_errors(tmp_path):
    path = tmp_path / "data"
    writer = open_engine(path, kind="exact")
    vectors = clustered(1500, dim=DIM, seed=12)
    ids = write_items(writer.store, vectors[:1000])
    served = open_engine(path, kind="hnsw", min_segments=0)
    served.refresh_indexes(save=True)
    served.serve_live()
    errors: list[BaseException] = []
    stop = threading.Event()
    deleted: set[str] = set()
    live_versions: list[tuple[int, int]] = []

    def query() -> None:
        try:
            while not stop.is_set():
                for q in QUERIES:
                    hits = served.search_vector(q, k=10).hits
                    assert len({h.item.id for h in hits}) == len(hits)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=query) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for n in range(5):
            start = 1000 + 100 * n
            write_items(writer.store, vectors[start : start + 100], start=start)
            gone = ids[n * 20 : n * 20 + 20]
            writer.store.delete_items(gone)
            deleted.update(gone)
            served.catch_up()
            live_versions.append(space_index(served)._view.version)
            assert not deleted & set(top_ids(served, vectors[n * 20], k=50))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors
    assert len(set(live_versions)) == 5


def test_saved_vectors_are_mapped_and_rows_added_since_are_the_only_ones_in_memory(tmp_path):
    path = tmp_path / "data"
    writer = open_engine(path, kind="exact")
    vectors = clustered(800, dim=DIM, seed=14)
    ids = write_items(writer.store, vectors[:700])
    open_engine(path, kind="hnsw").refresh_indexes(save=True)
    generation = IndexDirectory(index_root(path, IMAGE_TEXT)).current()
    assert generation is not None and (generation / "vectors.npy").exists()

    served = open_engine(path, kind="hnsw")
    assert top_ids(served, vectors[10], k=1) == [ids[10]]
    snapshot = space_index(served)._view.snapshot
    assert snapshot.mapped is not None and len(snapshot.ram) == 0  # one copy: the mapped file
    added = write_items(writer.store, vectors[700:], start=700)
    assert top_ids(served, vectors[750], k=1) == [added[50]]  # ranked beside the index
    view = space_index(served)._view
    assert len(view.snapshot.ram) == 100 and len(view.label_map.growing) == 100
    # Moments and similar-by-id read vectors from either place.
    assert served.search_similar(ids[5], k=3).hits
    assert served.search_similar(added[5], k=3).hits


def test_past_max_growing_rows_are_merged_into_a_new_copy(tmp_path):
    path = tmp_path / "data"
    writer = open_engine(path, kind="exact")
    vectors = clustered(900, dim=DIM, seed=15)
    ids = write_items(writer.store, vectors[:600])
    open_engine(path, kind="ivfpq", nlist=16).refresh_indexes(save=True)
    served = open_engine(path, kind="ivfpq", nlist=16, max_growing=50)
    top_ids(served, vectors[0])
    before = space_index(served)._view.ann
    added = write_items(writer.store, vectors[600:], start=600)
    writer.store.delete_items(ids[:10])
    assert top_ids(served, vectors[700], k=1) == [added[100]]
    view = space_index(served)._view
    assert view.ann is not before and len(view.label_map.growing) == 0
    assert len(before) == 600  # the copy queries were reading is unchanged
    assert not set(ids[:10]) & set(top_ids(served, vectors[3], k=50))


def test_calibration_follows_added_rows_like_a_full_refit(tmp_path):
    path = tmp_path / "data"
    writer = open_engine(path, kind="exact")
    vectors = clustered(900, dim=DIM, seed=16)
    ids = write_items(writer.store, vectors[:600])
    followed = open_engine(path, kind="exact")
    followed._space(IMAGE_TEXT)._null_vectors = clustered(40, dim=DIM, seed=17)
    followed.calibration()
    write_items(writer.store, vectors[600:], start=600)  # only new rows to compare
    refitted = followed.calibration()
    fresh = open_engine(path, kind="exact")
    fresh._space(IMAGE_TEXT)._null_vectors = clustered(40, dim=DIM, seed=17)
    assert same_calibration(refitted, fresh.calibration())
    # Deleting a row some calibration query found best forces a full refit: still equal.
    best = followed._space(IMAGE_TEXT)._null_best
    assert best is not None
    row = int(best.best_rows[0])
    snapshot = space_index(followed)._view.snapshot
    writer.store.delete_items([snapshot.item_id(int(snapshot.item_codes[row]))])
    again = open_engine(path, kind="exact")
    again._space(IMAGE_TEXT)._null_vectors = clustered(40, dim=DIM, seed=17)
    assert same_calibration(followed.calibration(), again.calibration())
    assert ids[0]


def same_calibration(a, b) -> bool:
    """Equal but for float rounding (products in blocks of other sizes)."""
    return a.center == pytest.approx(b.center, abs=1e-6) and a.spread == pytest.approx(
        b.spread, abs=1e-6
    )


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_a_served_view_reports_its_memory_by_part(tmp_path, kind):
    path = tmp_path / "data"
    writer = open_engine(path, kind="exact")
    vectors = clustered(700, dim=DIM, seed=18)
    write_items(writer.store, vectors[:600])
    open_engine(path, kind=kind, nlist=16).refresh_indexes(save=True)
    served = open_engine(path, kind=kind, nlist=16)
    top_ids(served, vectors[0])
    memory = served.index_states()[IMAGE_TEXT].memory
    assert memory is not None
    # Every vector is in the mapped file; none is kept in memory beside it.
    assert (memory.vectors_in_memory, memory.vectors_mapped) == (0, 600 * DIM * 4)
    if kind == "ivfpq":  # the lists stay mapped; only the coarse quantizer is heap
        assert memory.index_mapped > 0 and memory.index_in_memory == 16 * DIM * 4
    else:
        assert memory.index_in_memory > 600 * DIM * 4 and memory.index_mapped == 0
    assert memory.rows > 0 and memory.items > 0
    write_items(writer.store, vectors[600:], start=600)
    top_ids(served, vectors[0])
    served.catch_up()
    assert served.index_states()[IMAGE_TEXT].memory.vectors_in_memory == 100 * DIM * 4


def described(snapshot: Snapshot) -> tuple:
    """What a snapshot serves: its items, its servable segments' ids, its counts."""
    ids = snapshot.lookup.ids
    items = sorted(ids[np.flatnonzero(snapshot.code_row >= 0)])
    segments = sorted(snapshot.segment_ids[snapshot.servable])
    return items, segments, snapshot.item_count, snapshot.count


def test_older_snapshots_keep_serving_what_they_served(tmp_path):
    # Versions share their columns and append to them; each one applied, and each one
    # before it, serves what a whole read of its version serves.
    path = tmp_path / "data"
    writer = open_engine(path, kind="exact")
    vectors = clustered(400, dim=DIM, seed=8)
    ids = write_items(writer.store, vectors[:300])
    followed = open_engine(path, kind="exact")

    def served() -> Snapshot:
        top_ids(followed, QUERIES[0])
        return space_index(followed)._view.snapshot

    chain = [served()]
    more = write_items(writer.store, vectors[300:350], start=300)  # segments, items: one view
    chain.append(served())
    late = [item_id_for(f"/lib/{n:06d}.jpg") for n in range(350, 360)]
    segments = [
        SegmentRecord(segment_id_for(i, 0), i, vectors[350 + n]) for n, i in enumerate(late)
    ]
    writer.store.upsert_segments(IMAGE_TEXT, segments)  # items not committed yet
    chain.append(served())
    write_items(writer.store, vectors[350:360], start=350)  # now their items
    chain.append(served())
    writer.store.delete_items(ids[:20] + more[:3])
    chain.append(served())
    write_items(writer.store, -vectors[20:30], start=20)  # re-indexed, and back after removal
    chain.append(served())
    assert len({snapshot.version for snapshot in chain}) == len(chain)
    for snapshot in chain:
        whole = Snapshot.read(writer.store, snapshot.table, snapshot.version)
        assert described(snapshot) == described(whole), snapshot.version
