"""LanceDbIndex against exact numpy search on the seeded clustered vectors of test_ann."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.search.test_ann import clustered, exact_top, recall
from xmodal.search.ann.lancedb_index import LanceDbIndex, LanceDbParams
from xmodal.search.errors import StoreError

DIM = 64
# 16 partitions and 16 sub-vectors keep the build under a second; recall measured ~0.98
INDEXED = LanceDbParams(num_partitions=16, num_sub_vectors=16, index_min_rows=5000)


@pytest.fixture(scope="module")
def data():
    vectors = clustered(6000, dim=DIM)
    labels = np.arange(10_000, 16_000, dtype=np.int64)  # labels need not be positions
    queries = clustered(30, dim=DIM, seed=1)
    return vectors, labels, queries


def make(tmp_path, vectors, labels, params=INDEXED, build=False) -> LanceDbIndex:
    index = LanceDbIndex(tmp_path / "lance", DIM, params)
    index.add(vectors, labels)
    if build:
        assert index.build()
    return index


@pytest.fixture(scope="module")
def built(data, tmp_path_factory):
    """One trained index shared by the read-only tests: building is the slow part."""
    vectors, labels, _ = data
    return make(tmp_path_factory.mktemp("built"), vectors, labels, build=True)


def test_flat_search_is_exact_below_index_min_rows(data, tmp_path):
    vectors, labels, queries = data
    index = make(tmp_path, vectors[:3000], labels[:3000])
    assert not index.build() and not index.has_index
    scores, found = index.search(queries, 10)
    assert np.array_equal(found, exact_top(vectors[:3000], labels[:3000], queries, 10))
    # _distance for "dot" is 1 - inner product: the scores must be the inner products
    expected = np.einsum("qd,qkd->qk", queries, vectors[found - 10_000])
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    one_scores, one_found = index.search(queries[0], 10)  # a single 1-d query
    assert np.array_equal(one_found, found[:1])
    np.testing.assert_allclose(one_scores, scores[:1], atol=1e-6)


def test_recall_with_the_ivfpq_index(data, built):
    vectors, labels, queries = data
    assert built.has_index and len(built) == len(vectors)
    scores, found = built.search(queries, 10)
    assert recall(found, exact_top(vectors, labels, queries, 10)) >= 0.9
    # the refine step re-ranks on the full vectors, so the scores are exact
    np.testing.assert_allclose(
        scores, np.einsum("qd,qkd->qk", queries, vectors[found - 10_000]), atol=1e-5
    )


@pytest.mark.parametrize("step", [50, 2])  # 120 labels: prefilter; 3000: over-fetch
def test_allowed_gives_the_best_allowed(data, built, tmp_path, step):
    vectors, labels, queries = data
    allowed = labels[::step]
    truth = exact_top(vectors, labels, queries, 10, allowed)
    flat = make(tmp_path, vectors, labels, replace(INDEXED, index_min_rows=10**9))
    assert np.array_equal(flat.search(queries, 10, allowed=allowed)[1], truth)
    _, found = built.search(queries, 10, allowed=allowed)
    assert set(found.ravel().tolist()) <= set(allowed.tolist())
    assert recall(found, truth) >= 0.9


def test_overfetch_refills_until_the_allowed_are_found(data, tmp_path, monkeypatch):
    """Only the 3000 rows least like the query are allowed: the first fetches find none
    of them, and the refill must go on to the end of the ranking."""
    vectors, labels, queries = data
    params = replace(INDEXED, index_min_rows=10**9, overfetch_max_limit=10**9)
    index = make(tmp_path, vectors, labels, params)
    limits: list[int] = []
    query_rows = index._query
    monkeypatch.setattr(
        index,
        "_query",
        lambda q, limit, where=None: limits.append(limit) or query_rows(q, limit, where),
    )
    query = queries[:1]
    allowed = labels[np.argsort(vectors @ query[0])[:3000]]
    _, found = index.search(query, 10, allowed=allowed)
    assert np.array_equal(found, exact_top(vectors, labels, query, 10, allowed))
    assert len(limits) > 2 and limits[-1] == len(vectors)  # refilled to every row, no prefilter
    # a large set that mostly names no row: everything is seen, the rest is padding
    allowed = np.concatenate([labels[:5], np.arange(10**6, 10**6 + 2995)])
    scores, found = index.search(query, 8, allowed=allowed)
    assert set(found[0, :5].tolist()) == set(labels[:5].tolist())
    assert found[0, 5:].tolist() == [-1] * 3 and np.all(np.isneginf(scores[0, 5:]))


def test_removed_labels_are_never_returned(data, tmp_path):
    vectors, labels, queries = data
    index = make(tmp_path, vectors, labels, build=True)
    _, before = index.search(queries, 10)
    removed = np.unique(before[:, :3])
    index.remove(removed)
    assert len(index) == len(vectors) - len(removed)
    _, after = index.search(queries, 10)
    _, filtered = index.search(queries, 10, allowed=np.concatenate([removed, labels[::2]]))
    assert not set(after.ravel().tolist()) & set(removed.tolist())
    assert not set(filtered.ravel().tolist()) & set(removed.tolist())
    assert np.all(after >= 0)


def test_rows_added_after_the_build_are_found(data, tmp_path):
    vectors, labels, _ = data
    index = make(tmp_path, vectors, labels, build=True)
    extra = clustered(40, dim=DIM, seed=7)
    extra_labels = np.arange(90_000, 90_040, dtype=np.int64)
    index.add(extra, extra_labels)
    _, found = index.search(extra, 1)
    assert found[:, 0].tolist() == extra_labels.tolist()  # unindexed rows are flat-searched
    index.optimize()  # folds them into the index
    _, found = index.search(extra, 1)
    assert found[:, 0].tolist() == extra_labels.tolist()


def test_save_and_load_give_the_same_answers(data, built, tmp_path):
    _, _, queries = data
    built.save(tmp_path / "space.lancedb")
    loaded = LanceDbIndex.load(tmp_path / "space.lancedb")
    assert loaded.params == built.params and loaded.dim == DIM and len(loaded) == len(built)
    for allowed in (None, np.arange(10_000, 16_000, 40)):
        expected, got = built.search(queries, 10, allowed), loaded.search(queries, 10, allowed)
        assert np.array_equal(expected[1], got[1])
        np.testing.assert_allclose(expected[0], got[0], atol=1e-6)


def test_empty_index_pads_and_wrong_dims_are_refused(tmp_path):
    index = LanceDbIndex(tmp_path / "lance", DIM)
    scores, found = index.search(np.ones((2, DIM), np.float32), 4)
    assert found.shape == (2, 4) and np.all(found == -1) and np.all(np.isneginf(scores))
    with pytest.raises(StoreError):
        index.add(np.ones((3, DIM + 1), np.float32), np.arange(3))
    with pytest.raises(StoreError):
        index.search(np.ones((1, DIM - 1), np.float32), 4)
    with pytest.raises(StoreError):
        LanceDbIndex(tmp_path / "lance", DIM * 2)  # the table holds DIM-dim vectors
    with pytest.raises(StoreError):
        LanceDbIndex.load(tmp_path / "nothing.lancedb")


def test_created_by_kind_and_takes_label_masks(tmp_path):
    from xmodal.search.ann import create_index

    vectors = clustered(300, dim=16, seed=2)
    index = create_index("lancedb", 16, path=tmp_path / "lance")
    index.add(vectors, np.arange(300, dtype=np.int64))
    mask = np.zeros(300, bool)
    mask[::7] = True
    _, found = index.search(vectors[:3], 5, allowed=mask)
    assert (found % 7 == 0).all()
    labels = np.arange(300)
    assert (found == exact_top(vectors, labels, vectors[:3], 5, allowed=labels[mask])).all()
