"""POST /search with a raw query vector of a space."""

from __future__ import annotations

import json

import pytest

from xmodal.search.store import item_id_for


def item_vector(engine, path) -> list[float]:
    return engine.store.item_vectors("image-text", item_id_for(str(path)))[0].tolist()


def test_an_items_own_vector_finds_it_first(client, engine, indexed):
    vector = item_vector(engine, indexed[2])
    response = client.post("/search", json={"vector": vector, "k": 3})
    assert response.status_code == 200
    hits = response.json()["hits"]
    assert hits[0]["uri"] == str(indexed[2])
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert hits[0]["calibrated_score"] is None


def test_the_vector_is_scaled_to_unit_length_and_filters_apply(client, engine, indexed):
    vector = [10.0 * v for v in item_vector(engine, indexed[4])]
    body = {"vector": vector, "space": "image-text", "filter": {"colour": "blue"}, "k": 10}
    hits = client.post("/search", json=body).json()["hits"]
    assert hits[0]["uri"] == str(indexed[4])
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert {hit["metadata"]["colour"] for hit in hits} == {"blue"} and len(hits) == 3


def test_a_vector_of_another_dimension_is_a_400_naming_both(client, indexed):
    response = client.post("/search", json={"vector": [0.1, 0.2, 0.3]})
    assert response.status_code == 400
    assert response.json()["detail"] == "vector has 3 values; the image-text space takes 32"


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_values_are_refused(client, indexed, bad):
    values = ["0.5"] * 31 + [bad]
    body = '{"vector": [' + ", ".join(values) + "]}"
    response = client.post("/search", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "vector" in json.dumps(response.json()["detail"])


def test_a_zero_vector_is_refused(client, indexed):
    response = client.post("/search", json={"vector": [0.0] * 32})
    assert response.status_code == 400 and "all zeros" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"text": "a photo", "vector": [1.0] * 32},
        {"item_id": "0000000000000000", "vector": [1.0] * 32},
        {"vector": []},
        {"vector": [1.0] * 4097},
        {"space": "image-text"},
    ],
)
def test_exactly_one_query_and_a_bounded_vector(client, indexed, body):
    response = client.post("/search", json=body)
    assert response.status_code == 422


def test_the_422_names_the_query_fields_given(client, indexed):
    response = client.post("/search", json={"text": "a photo", "vector": [1.0] * 32})
    detail = json.dumps(response.json()["detail"])
    assert "`text`, `item_id` or `vector`" in detail and "given: `text`, `vector`" in detail


def test_rerank_and_explain_stay_text_only(client, indexed):
    for extra in ({"rerank": True}, {"explain": 1}):
        response = client.post("/search", json={"vector": [1.0] * 32, **extra})
        assert response.status_code == 400
        assert "not to `vector`" in response.json()["detail"]


def test_audio_text_space_without_an_audio_model_is_a_400(client, indexed):
    response = client.post("/search", json={"vector": [1.0] * 16, "space": "audio-text"})
    assert response.status_code == 400
    assert "no audio-text model" in response.json()["detail"]
    assert client.post("/search", json={"vector": [1.0] * 16, "space": "pictures"}).status_code == (
        422
    )
