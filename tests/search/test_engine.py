from __future__ import annotations

import numpy as np
import pytest

from xmodal.indexer import index_paths
from xmodal.search import InvalidQueryError, UnknownItemError
from xmodal.search.space.calibration import null_queries
from xmodal.search.store import item_id_for


@pytest.fixture
def library(engine, make_image, tmp_path):
    paths = [make_image(tmp_path / "lib" / f"p{i:02d}.jpg", seed=i) for i in range(12)]
    metadata = {
        str(p): {"group": "even" if i % 2 == 0 else "odd", "n": i} for i, p in enumerate(paths)
    }
    index_paths(engine, [tmp_path / "lib"], metadata=metadata)
    return paths


def test_exact_copy_of_an_indexed_image_is_rank_one(engine, library, tmp_path):
    for path in library:
        copy = tmp_path / "query.jpg"
        copy.write_bytes(path.read_bytes())
        result = engine.search_image(copy, k=3)
        assert result.hits[0].item.uri == str(path)
        assert result.hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_query_by_bytes_matches_query_by_file(engine, library):
    by_file = engine.search_image(library[3], k=5)
    by_bytes = engine.search_image(library[3].read_bytes(), k=5)
    assert [h.item.id for h in by_file.hits] == [h.item.id for h in by_bytes.hits]


def test_similar_excludes_the_item_itself(engine, library):
    item_id = item_id_for(str(library[0]))
    hits = engine.search_similar(item_id, k=20).hits
    assert len(hits) == len(library) - 1
    assert item_id not in {h.item.id for h in hits}
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_scores_equal_cosine_similarity(engine, library):
    query = engine.encoder.encode_texts(["a photo"])[0]
    hits = engine.search_text("a photo", k=len(library)).hits
    vectors = {h.item.id: engine.store.item_vectors("image-text", h.item.id)[0] for h in hits}
    for hit in hits:
        assert hit.score == pytest.approx(float(vectors[hit.item.id] @ query), abs=1e-5)
        assert hit.segments[0].score == pytest.approx(hit.score)


def test_pages_are_consecutive_slices(engine, library):
    everything = [h.item.id for h in engine.search_text("a photo", k=12).hits]
    pages = [
        h.item.id
        for offset in (0, 5, 10)
        for h in engine.search_text("a photo", k=5, offset=offset).hits
    ]
    assert pages == everything


def test_filter_returns_the_k_best_matching_items(engine, library):
    query = "a photo"
    everything = engine.search_text(query, k=12).hits
    expected = [h.item.id for h in everything if h.item.metadata["group"] == "odd"][:4]
    filtered = engine.search_text(query, k=4, filter={"group": "odd"}).hits
    assert [h.item.id for h in filtered] == expected
    ranged = engine.search_text(query, k=12, filter={"n": {"$gte": 3, "$lt": 6}}).hits
    assert sorted(h.item.metadata["n"] for h in ranged) == [3, 4, 5]
    none = engine.search_text(query, k=5, filter={"group": "neither"}).hits
    assert none == []
    assert len(engine.search_text(query, k=12, filter={"kind": "image", "width": 160}).hits) == 12


@pytest.mark.parametrize(
    "bad_filter",
    [
        ["group"],
        {"group": {"$near": 1}},
        {"n": {"$in": 3}},
        "group=odd",
        {"width": {"$gt": [1, 2]}},  # was a 500 (pandas compared lengths)
        {"n": {"$gte": float("nan")}},
        {"group": {"$eq": {"a": 1}}},
        {f"k{i}": i for i in range(33)},  # over query.max_filter_conditions
        {"n": {"$in": list(range(1025))}},  # over query.max_filter_values
    ],
)
def test_malformed_filters_are_rejected(engine, library, bad_filter):
    with pytest.raises(InvalidQueryError):
        engine.search_text("x", filter=bad_filter)


def test_deleted_items_are_never_returned(engine, library, tmp_path):
    engine.search_text("warm the snapshot", k=3)
    library[0].unlink()
    index_paths(engine, [tmp_path / "lib"])
    ids = {h.item.id for h in engine.search_text("a photo", k=20).hits}
    assert item_id_for(str(library[0])) not in ids and len(ids) == 11


def test_bad_queries_raise(engine, library):
    with pytest.raises(InvalidQueryError):
        engine.search_text("   ")
    with pytest.raises(InvalidQueryError):
        engine.search_text("x", k=0)
    with pytest.raises(InvalidQueryError):
        engine.search_text("x", offset=-1)
    with pytest.raises(UnknownItemError):
        engine.search_similar("0123456789abcdef")


def test_empty_store_returns_no_hits(engine):
    assert engine.search_text("anything").hits == []


def test_vector_query(engine, library):
    vector = engine.store.item_vectors("image-text", item_id_for(str(library[5])))[0]
    hit = engine.search_vector(vector, k=1).hits[0]
    assert hit.item.uri == str(library[5])
    assert np.isclose(hit.score, 1.0, atol=1e-5)


def test_list_valued_metadata_matches_any_element(engine, make_image, tmp_path):
    paths = [make_image(tmp_path / "tags" / f"{i}.jpg", seed=40 + i) for i in range(3)]
    tags = [["red", "sale"], ["blue"], ["red"]]
    index_paths(
        engine,
        [tmp_path / "tags"],
        metadata={str(p): {"tags": t} for p, t in zip(paths, tags, strict=True)},
    )

    def uris(spec):
        return {h.item.uri for h in engine.search_text("x", k=10, filter=spec).hits}

    assert uris({"tags": "red"}) == {str(paths[0]), str(paths[2])}
    assert uris({"tags": {"$in": ["sale", "blue"]}}) == {str(paths[0]), str(paths[1])}
    assert uris({"tags": {"$ne": "red"}}) == {str(paths[1])}


def test_repeated_text_queries_reuse_the_text_embedding(engine, library, monkeypatch):
    calls = []
    real = engine.encoder.encode_texts
    monkeypatch.setattr(
        engine.encoder, "encode_texts", lambda texts: calls.append(texts) or real(texts)
    )
    first = engine.search_text("a photo", k=3)
    second = engine.search_text("a photo", k=3, offset=1)
    engine.search_text("another photo", k=3)
    queries = [c for c in calls if list(c) != null_queries()]  # calibration's, once
    assert queries == [["a photo"], ["another photo"]]
    assert len(calls) == 3
    assert [h.item.id for h in second.hits][:2] == [h.item.id for h in first.hits][1:3]


def test_an_image_query_takes_a_path_as_a_string(engine, make_image, tmp_path):
    from xmodal.indexer import index_paths

    lib = tmp_path / "lib"
    paths = [make_image(lib / f"{i}.jpg", seed=i) for i in range(3)]
    index_paths(engine, [lib])
    by_str = engine.search_image(str(paths[1]), k=1).hits
    assert [h.item.uri for h in by_str] == [
        h.item.uri for h in engine.search_image(paths[1], k=1).hits
    ]
