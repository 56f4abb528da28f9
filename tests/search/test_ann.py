"""ANN indexes against exact search on seeded clustered vectors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from xmodal.search import AnnSettings
from xmodal.search.ann import create_index
from xmodal.search.ann.faiss_index import FaissIndex


def clustered(n: int, dim: int = 64, clusters: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    vectors = centres[rng.integers(clusters, size=n)] + 0.35 * rng.standard_normal((n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def index_for(kind: str, vectors: np.ndarray, labels: np.ndarray):
    """An index over `vectors`; IVF-PQ re-ranks on them, as on the store's vectors."""
    position = {int(label): row for row, label in enumerate(labels)}

    def full_vectors(found: np.ndarray) -> np.ndarray:
        return vectors[[position[int(label)] for label in found]]

    overrides: dict[str, Any] = {"pq_m": 16, "nlist": 64} if kind == "ivfpq" else {}
    index = create_index(kind, vectors.shape[1], full_vectors=full_vectors, **overrides)
    index.add(vectors, labels)
    return index


def exact_top(vectors, labels, queries, k, allowed=None):
    scores = queries @ vectors.T
    if allowed is not None:
        scores[:, ~np.isin(labels, allowed)] = -np.inf
    order = np.argsort(-scores, axis=1)[:, :k]
    return labels[order]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


@pytest.fixture(scope="module")
def data():
    vectors = clustered(6000)
    labels = np.arange(10_000, 16_000, dtype=np.int64)  # labels need not be positions
    queries = clustered(50, seed=1)
    return vectors, labels, queries


@pytest.mark.parametrize(("kind", "minimum"), [("flat", 1.0), ("hnsw", 0.9), ("ivfpq", 0.9)])
def test_recall_against_exact(data, kind, minimum):
    vectors, labels, queries = data
    index = index_for(kind, vectors, labels)
    assert len(index) == len(vectors)
    _, found = index.search(queries, 10)
    assert recall(found, exact_top(vectors, labels, queries, 10)) >= minimum


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_filter_and_removal_are_honoured(data, kind):
    vectors, labels, queries = data
    index = index_for(kind, vectors, labels)
    allowed = labels[::7]
    _, found = index.search(queries, 10, allowed=allowed)
    assert set(found.ravel()) <= set(allowed.tolist())
    assert recall(found, exact_top(vectors, labels, queries, 10, allowed)) >= 0.8
    removed = found[:, 0]
    index.remove(removed)
    _, after = index.search(queries, 10)
    assert not set(after.ravel()) & set(removed.tolist())
    assert len(index) == len(vectors) - len(set(removed.tolist()))


def test_save_and_load_give_the_same_answers(data, tmp_path):
    vectors, labels, queries = data
    index = create_index("hnsw", 64)
    index.add(vectors, labels)
    index.remove(labels[:5])
    index.save(tmp_path / "space.faiss")
    loaded = FaissIndex.load(tmp_path / "space.faiss")
    assert np.array_equal(index.search(queries, 10)[1], loaded.search(queries, 10)[1])
    assert len(loaded) == len(index)


def test_kind_follows_collection_size():
    auto = AnnSettings()
    sizes = (10, 50_000, 50_001, 1_000_000, 50_000_000)
    assert [auto.kind_for(n) for n in sizes] == ["exact", "exact", "hnsw", "hnsw", "ivfpq"]
    assert AnnSettings(kind="flat").kind_for(10) == "flat"  # a kind set is a kind kept


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_label_masks_select_and_widen_the_search(data, kind):
    # A 5% filter leaves few allowed vectors near each query: without widening
    # efSearch / nprobe, graph walks and probed cells come back short or wrong.
    vectors, labels, queries = data
    index = index_for(kind, vectors, labels)
    mask = np.zeros(labels.max() + 1, bool)
    allowed = labels[::20]
    mask[allowed] = True
    _, found = index.search(queries, 10, allowed=mask)
    assert np.isin(found[found >= 0], allowed).all()
    assert recall(found, exact_top(vectors, labels, queries, 10, allowed)) >= 0.95
    _, again = index.search(queries, 10, allowed=allowed)  # the same set as labels
    assert (again == found).all()


def test_ivfpq_refuses_too_few_vectors_to_train():
    from xmodal.search.errors import StoreError

    index = create_index("ivfpq", 64)
    with pytest.raises(StoreError, match="at least 256 vectors"):
        index.add(clustered(100), np.arange(100, dtype=np.int64))
