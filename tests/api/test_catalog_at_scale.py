"""A shop's catalog over HTTP: 2,000 products from a manifest, pushed in batches of
100, then an hour of changes (issue 14's check)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import photo
from tests.media_server import MediaServer, serving
from xmodal.api import create_app
from xmodal.api.settings import Settings
from xmodal.indexer.manifest import ManifestRow, read_manifest

PRODUCTS = 2000
CATEGORIES = ("shoes", "hats", "bags", "coats")


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    photo(seed, (48, 36)).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


@pytest.fixture
def media() -> Iterator[MediaServer]:
    with serving(MediaServer()) as httpd:
        yield httpd  # type: ignore[misc]


@pytest.fixture
def shop(engine, media, tmp_path):
    """The API over an empty store, and a manifest of 2,000 products whose pictures the
    media server serves."""
    manifest = tmp_path / "products.csv"
    with open(manifest, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["sku", "image_url", "price", "category", "in_stock"])
        for n in range(PRODUCTS):
            url = media.put(f"/p/{n}.jpg", jpeg(n))
            stock = "true" if n % 3 else "false"
            writer.writerow([f"{n:06d}", url, f"{5 + n % 97}.5", CATEGORIES[n % 4], stock])
    settings = Settings(
        data=engine.store.path,
        security={"client_rate": None},
        fetch={"allow_private_addresses": True, "backoff": 0.01},  # the media server is on loopback
        catalog={"inline_batch_items": 100},
        query={"max_k": 5000},
    )
    engine.query = settings.query
    with TestClient(create_app(settings, engine)) as client:
        yield client, manifest


def batch(rows: list[ManifestRow]) -> dict:
    return {"items": [{"id": r.external_id, "url": r.source, "metadata": r.metadata} for r in rows]}


def every_hit(client: TestClient) -> list[dict]:
    answer = client.post("/search", json={"text": "a product photo", "k": 5000})
    assert answer.status_code == 200, answer.text
    return answer.json()["hits"]


@pytest.mark.slow
def test_a_catalog_of_2000_products_and_an_hour_of_changes(shop, media, engine):
    client, manifest = shop
    rows = [r for r in read_manifest(manifest) if isinstance(r, ManifestRow)]
    assert len(rows) == PRODUCTS
    assert rows[7].external_id == "000007" and rows[7].metadata["in_stock"] == "true"
    counters = client.app.state.catalog.counters

    for start in range(0, PRODUCTS, 100):
        answer = client.post("/items/batch", json=batch(rows[start : start + 100]))
        assert answer.status_code == 200, answer.text
        assert answer.json()["counts"]["created"] == 100, answer.json()["counts"]
    assert engine.store.count_items() == PRODUCTS
    assert counters.encoded == PRODUCTS and counters.fetched == PRODUCTS
    item = client.get("/items/000123").json()
    assert item["metadata"]["price"] == 31.5 and item["external_id"] == "000123"

    # 100 price changes: the same pictures are asked for again (a 304 each), nothing is
    # downloaded nor embedded.
    changed = []
    for row in rows[:100]:
        changed.append({**row.__dict__, "metadata": {**row.metadata, "price": 1.0}})
    sent_before = sum(media.bodies_sent.values())
    answer = client.post(
        "/items/batch",
        json={
            "items": [
                {"id": r["external_id"], "url": r["source"], "metadata": r["metadata"]}
                for r in changed
            ]
        },
    ).json()
    assert answer["counts"] == {"created": 0, "updated": 100, "unchanged": 0, "failed": 0}
    assert answer["embedded"] == 0 and counters.encoded == PRODUCTS
    assert sum(media.bodies_sent.values()) == sent_before and counters.not_modified == 100
    assert client.get("/items/000042").json()["metadata"]["price"] == 1.0

    # 50 deletions: never returned again, by any search.
    deleted = [r.external_id for r in rows[1000:1050]]
    assert client.post("/items/delete", json={"ids": deleted}).json()["deleted"] == 50
    ids = {hit["external_id"] for hit in every_hit(client)}
    assert len(ids) == PRODUCTS - 50 and not ids & set(deleted)
    similar = client.get("/items/001100/similar", params={"k": 5000}).json()["hits"]
    assert not {h["external_id"] for h in similar} & set(deleted)
    assert client.get("/items/001010").status_code == 404

    # 50 new pictures for existing SKUs: re-embedded, their old vectors gone.
    renewed = rows[1500:1550]
    old = {
        r.external_id: engine.store.item_vectors("image-text", engine.item(r.external_id).id)[0]
        for r in renewed
    }
    for n in range(len(renewed)):
        media.put(f"/p/{1500 + n}.jpg", jpeg(10_000 + n))
    answer = client.post("/items/batch", json=batch(renewed)).json()
    assert answer["counts"]["updated"] == 50 and answer["embedded"] == 50
    assert counters.encoded == PRODUCTS + 50
    for row in renewed:
        vectors = engine.store.item_vectors("image-text", engine.item(row.external_id).id)
        assert len(vectors) == 1 and not np.allclose(vectors[0], old[row.external_id])
    assert engine.store.count_segments("image-text") == PRODUCTS - 50

    # "Find similar" for a SKU, restricted by a filter: only matching items come back.
    spec = {"category": "shoes", "in_stock": "true", "price": {"$gte": 20, "$lt": 60}}
    answer = client.get("/items/000400/similar", params={"k": 5000, "filter": json.dumps(spec)})
    assert answer.status_code == 200, answer.text
    hits = answer.json()["hits"]
    assert hits and all(
        h["metadata"]["category"] == "shoes"
        and h["metadata"]["in_stock"] == "true"
        and 20 <= h["metadata"]["price"] < 60
        for h in hits
    )
    expected = {
        r.external_id
        for r in rows
        if r.metadata["category"] == "shoes"
        and r.metadata["in_stock"] == "true"
        and 20 <= (1.0 if int(r.external_id) < 100 else r.metadata["price"]) < 60
        and r.external_id not in deleted
        and r.external_id != "000400"
    }
    assert {h["external_id"] for h in hits} == expected
