"""The catalog API: items under the caller's ids, written, updated and deleted over HTTP."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import photo
from xmodal.api import create_app
from xmodal.api.settings import Settings


def jpeg(seed: int, size: tuple[int, int] = (96, 72)) -> bytes:
    buffer = io.BytesIO()
    photo(seed, size).save(buffer, "JPEG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture
def catalog_client(engine):
    settings = Settings(
        data=engine.store.path,
        security={"client_rate": None},
        catalog={"inline_batch_items": 20},
    )
    app = create_app(settings, engine)
    with TestClient(app) as client:
        yield client


def counters(client: TestClient):
    return client.app.state.catalog.counters


def test_put_creates_then_same_media_is_unchanged_and_metadata_never_re_embeds(catalog_client):
    client = catalog_client
    answer = client.put(
        "/items/SKU-00123", json={"data": b64(jpeg(1)), "metadata": {"sku": "00123", "price": 10}}
    )
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert created["status"] == "created" and created["embedded"] is True
    encoded = counters(client).encoded

    again = client.put(
        "/items/SKU-00123", json={"data": b64(jpeg(1)), "metadata": {"sku": "00123", "price": 10}}
    )
    assert again.status_code == 200 and again.json()["status"] == "unchanged"
    price = client.put("/items/SKU-00123", json={"metadata": {"sku": "00123", "price": 12}})
    assert price.json()["status"] == "updated" and price.json()["embedded"] is False
    assert counters(client).encoded == encoded  # neither touched the model

    item = client.get("/items/SKU-00123").json()
    assert item["external_id"] == "SKU-00123" and item["metadata"] == {"sku": "00123", "price": 12}
    assert item["id"] == created["item_id"]
    assert client.get(f"/items/{created['item_id']}").json()["external_id"] == "SKU-00123"


def test_a_new_picture_is_embedded_and_the_old_vectors_and_media_go(catalog_client, engine):
    client = catalog_client
    first = client.put("/items/A", json={"data": b64(jpeg(1))}).json()
    old_hash = engine.store.item(first["item_id"]).content_hash
    old_vector = engine.store.item_vectors("image-text", first["item_id"]).copy()
    answer = client.put("/items/A", json={"data": b64(jpeg(2))}).json()
    assert answer["status"] == "updated" and answer["embedded"] is True
    vectors = engine.store.item_vectors("image-text", first["item_id"])
    assert len(vectors) == 1 and not np.allclose(vectors[0], old_vector[0])
    assert not engine.store.media.has(old_hash)  # no other item held it
    media = client.get("/items/A/media")
    assert media.status_code == 200 and media.headers["content-type"] == "image/jpeg"
    assert media.content == jpeg(2)
    assert client.get("/items/A/thumbnail").status_code == 200


def test_multipart_upload_with_metadata(catalog_client):
    answer = catalog_client.put(
        "/items/B-1",
        files={"file": ("b.jpg", jpeg(3), "image/jpeg")},
        data={"metadata": json.dumps({"category": "shoes"})},
    )
    assert answer.status_code == 201, answer.text
    assert catalog_client.get("/items/B-1").json()["metadata"] == {"category": "shoes"}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"data": "not base64!"}, 400, "base64"),
        ({"data": b64(b"<html><body>hello</body></html>")}, 400, "not a media file"),
        ({"data": b64(jpeg(1)), "colour": "red"}, 422, "extra"),
        ({"metadata": {"price": 1}}, 404, "no such item"),
        ({"url": "file:///etc/passwd"}, 400, ""),
        ({"url": "http://169.254.169.254/latest/meta-data"}, 400, "private"),
        ([1, 2], 422, ""),
    ],
)
def test_bad_writes_are_refused_with_a_reason_and_change_nothing(
    catalog_client, engine, body, status, words
):
    answer = catalog_client.put("/items/X", json=body)
    assert answer.status_code == status, answer.text
    assert words in answer.text
    assert engine.store.count_items() == 0


def test_hostile_ids(catalog_client):
    assert catalog_client.put("/items/" + "x" * 600, json={"data": b64(jpeg(1))}).status_code == 422
    answer = catalog_client.put("/items/a%00b", json={"data": b64(jpeg(1))})
    assert answer.status_code == 400 and "control" in answer.text
    nested = '{"metadata": ' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "}"
    answer = catalog_client.put(
        "/items/deep", content=nested, headers={"content-type": "application/json"}
    )
    assert answer.status_code in (400, 422)


def test_batch_statuses_in_order(catalog_client, engine):
    client = catalog_client
    client.put("/items/KEEP", json={"data": b64(jpeg(5)), "metadata": {"p": 1}})
    body = {
        "items": [
            {"id": "N1", "data": b64(jpeg(6)), "metadata": {"p": 2}},
            {"id": "KEEP", "data": b64(jpeg(5)), "metadata": {"p": 1}},
            {"id": "KEEP2", "data": b64(jpeg(5)), "metadata": {"p": 3}},
            {"id": "BAD", "data": b64(b"GIF89a but not really")},
            {"id": "B64", "data": "%%%"},
        ]
    }
    answer = client.post("/items/batch", json=body)
    assert answer.status_code == 200, answer.text
    got = [(r["id"], r["status"]) for r in answer.json()["results"]]
    assert got == [
        ("N1", "created"),
        ("KEEP", "unchanged"),
        ("KEEP2", "created"),
        ("BAD", "failed"),
        ("B64", "failed"),
    ]
    assert answer.json()["counts"] == {"created": 2, "updated": 0, "unchanged": 1, "failed": 2}
    # The same picture under a second SKU reuses its vector: nothing is embedded twice.
    assert (
        engine.store.find_item("KEEP2").content_hash == engine.store.find_item("KEEP").content_hash
    )


def test_similar_by_sku_with_a_filter_and_deletes(catalog_client):
    client = catalog_client
    items = [
        {
            "id": f"S{i}",
            "data": b64(jpeg(i)),
            "metadata": {"category": "shoes" if i % 2 else "hats", "price": i},
        }
        for i in range(12)
    ]
    assert client.post("/items/batch", json={"items": items}).status_code == 200
    found = client.get(
        "/items/S1/similar",
        params={"k": 20, "filter": json.dumps({"category": "shoes", "price": {"$lt": 9}})},
    )
    assert found.status_code == 200, found.text
    ids = [hit["external_id"] for hit in found.json()["hits"]]
    assert sorted(ids) == ["S3", "S5", "S7"]

    assert client.delete("/items/S3").json() == {"deleted": 1, "ids": ["S3"]}
    assert client.delete("/items/S3").status_code == 404
    assert client.get("/items/S3").status_code == 404
    gone = client.post("/items/delete", json={"filter": {"category": "hats"}})
    assert gone.json()["deleted"] == 6
    assert client.post("/items/delete", json={"filter": {}}).status_code == 400
    left = client.post("/search", json={"text": "a photo", "k": 50}).json()["hits"]
    assert sorted(h["external_id"] for h in left) == ["S1", "S11", "S5", "S7", "S9"]


def test_a_large_batch_runs_as_a_job(catalog_client, engine):
    import time

    client = catalog_client
    items = [{"id": f"J{i}", "data": b64(jpeg(100 + i)), "metadata": {"n": i}} for i in range(30)]
    items.append({"id": "J-bad", "data": b64(b"nope")})
    answer = client.post("/items/batch", json={"items": items})
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    assert answer.headers["location"] == f"/jobs/{job_id}"
    for _ in range(600):
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            break
        time.sleep(0.1)
    assert job["state"] == "done", job
    assert job["counts"] == {"created": 30, "failed": 1} and job["done"] == 31
    assert job["failures"][0]["id"] == "J-bad"
    results = client.get(f"/jobs/{job_id}/results").json()
    assert len(results) == 31 and results[0]["id"] == "J0"
    assert engine.store.count_items() == 30
    assert client.get("/jobs/0123456789abcdef0123").status_code == 404
    assert client.get("/jobs/../../etc").status_code in (404, 422)


def test_metrics_count_what_the_catalog_did(catalog_client):
    client = catalog_client
    client.put("/items/M1", json={"data": b64(jpeg(1))})
    client.put("/items/M1", json={"metadata": {"price": 3}})
    client.put("/items/M2", json={"data": b64(b"plain text")})
    text = client.get("/metrics").text
    assert 'xmodal_catalog_entries_total{status="created"} 1.0' in text
    assert 'xmodal_catalog_entries_total{status="updated"} 1.0' in text
    assert 'xmodal_catalog_entries_total{status="failed"} 1.0' in text
    assert "xmodal_catalog_embedded_total 1.0" in text


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"url": "https://example.com/a.jpg", "data": "AAAA"}, "not both"),
        ({"data": "AAAA", "metadata": {"blob": "x" * 70_000}}, "64 KiB"),
        ({"data": "AAAA", "metadata": json.loads('{"a":' * 40 + "1" + "}" * 40)}, "deeper"),
    ],
)
def test_entries_over_the_caps_fail_with_the_reason(catalog_client, engine, body, words):
    answer = catalog_client.post("/items/batch", json={"items": [{"id": "Z", **body}]})
    result = answer.json()["results"][0]
    assert result["status"] == "failed" and words in result["error"]
    assert engine.store.count_items() == 0
