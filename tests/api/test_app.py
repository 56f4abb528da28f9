from __future__ import annotations

import io

from PIL import Image

from xmodal.search.store import item_id_for

HIT_KEYS = {"id", "uri", "kind", "score", "segments", "metadata", "width", "height"}


def test_text_search_returns_hits_in_the_documented_shape(client, indexed):
    response = client.post("/search", json={"text": "a photo", "k": 4})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"hits", "took_ms", "rerank", "explain"} and len(body["hits"]) == 4
    assert body["rerank"] is None and body["explain"] is None  # not asked for
    hit = body["hits"][0]
    assert set(hit) >= HIT_KEYS and hit["kind"] == "image"
    assert hit["segments"][0]["id"] == f"{hit['id']}:0" and hit["segments"][0]["start"] is None
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_item_search_excludes_the_item_and_honours_filter_and_offset(client, indexed):
    item_id = item_id_for(str(indexed[0]))
    hits = client.post("/search", json={"item_id": item_id, "k": 10}).json()["hits"]
    assert item_id not in {h["id"] for h in hits} and len(hits) == 5
    red = client.post("/search", json={"item_id": item_id, "filter": {"colour": "red"}}).json()
    assert {h["metadata"]["colour"] for h in red["hits"]} == {"red"} and len(red["hits"]) == 2
    page = client.post("/search", json={"item_id": item_id, "k": 2, "offset": 2}).json()["hits"]
    assert [h["id"] for h in page] == [h["id"] for h in hits[2:4]]


def test_image_upload_finds_the_same_image_first(client, indexed):
    with open(indexed[2], "rb") as f:
        response = client.post(
            "/search/image", files={"file": ("q.jpg", f, "image/jpeg")}, data={"k": "3"}
        )
    assert response.status_code == 200
    hits = response.json()["hits"]
    assert hits[0]["uri"] == str(indexed[2]) and abs(hits[0]["score"] - 1.0) < 1e-4


def test_upload_with_filter(client, indexed):
    with open(indexed[0], "rb") as f:
        response = client.post(
            "/search/image", files={"file": ("q.jpg", f)}, data={"filter": '{"colour": "blue"}'}
        )
    assert {h["metadata"]["colour"] for h in response.json()["hits"]} == {"blue"}


def test_bad_requests_get_4xx_with_a_message(client, indexed):
    cases = [
        (client.post("/search", json={}), 422),
        (client.post("/search", json={"text": "a", "item_id": "b"}), 422),
        (client.post("/search", json={"text": "a", "k": 0}), 422),
        (client.post("/search", json={"item_id": "does-not-exist"}), 404),
        (client.post("/search", json={"text": "a", "filter": {"x": {"$bad": 1}}}), 400),
        (
            client.post(
                "/search", content=b"not json", headers={"content-type": "application/json"}
            ),
            422,
        ),
        (client.post("/search/image", files={"file": ("x.jpg", b"plain text", "image/jpeg")}), 415),
        (client.post("/search/image", files={"file": ("x.jpg", b"", "image/jpeg")}), 415),
        (client.post("/search/image", data={"k": "3"}), 422),
        (client.post("/search/image", files={"file": ("x.jpg", b"\xff" * 300_000)}), 413),
        (client.post("/search/image", files={"file": ("x.jpg", b"x")}, data={"filter": "{"}), 400),
        (client.get("/items/nope"), 404),
        (client.get("/items/nope/thumbnail"), 404),
        (client.get("/items/nope/media"), 404),
    ]
    for response, status in cases:
        assert response.status_code == status, (response.request.url, response.text)
        assert "detail" in response.json()


def test_item_details(client, indexed):
    item_id = item_id_for(str(indexed[1]))
    body = client.get(f"/items/{item_id}").json()
    assert body["uri"] == str(indexed[1]) and body["width"] == 320 and body["status"] == "indexed"
    assert body["metadata"] == {"colour": "red", "price": 10}


def test_thumbnail_is_a_small_cached_jpeg(client, indexed, settings):
    item_id = item_id_for(str(indexed[0]))
    response = client.get(f"/items/{item_id}/thumbnail")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumbnail = Image.open(io.BytesIO(response.content))
    assert thumbnail.format == "JPEG" and max(thumbnail.size) == 64
    assert len(list((settings.data / "thumbnails").rglob("*.jpg"))) == 1
    assert client.get(f"/items/{item_id}/thumbnail").content == response.content


def test_media_serves_the_original_with_ranges(client, indexed):
    item_id = item_id_for(str(indexed[0]))
    original = indexed[0].read_bytes()
    full = client.get(f"/items/{item_id}/media")
    assert full.status_code == 200 and full.content == original
    part = client.get(f"/items/{item_id}/media", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == original[10:20]


def test_media_outside_indexed_roots_is_not_served(client, engine, indexed, tmp_path):
    from xmodal.search.store import ItemRecord

    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    engine.store.upsert_items(
        [ItemRecord("feedfacefeedface", str(secret), "image", str(tmp_path / "lib"))]
    )
    assert client.get("/items/feedfacefeedface/media").status_code == 404


def test_missing_original_gives_404(client, indexed):
    item_id = item_id_for(str(indexed[4]))
    indexed[4].unlink()
    assert client.get(f"/items/{item_id}/media").status_code == 404
    assert client.get(f"/items/{item_id}/thumbnail").status_code == 404


def test_health_and_openapi(client, engine):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["items"] == 6
    assert health["spaces"][0]["dim"] == 32 and health["spaces"][0]["model"] == engine.encoder.spec
    assert health["spaces"][0]["index"] in (None, "exact")
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    operations = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {
        "search",
        "search_image",
        "get_item",
        "get_thumbnail",
        "get_media",
        "health",
    } <= operations


def test_search_reports_its_time_split_in_server_timing(client, indexed):
    response = client.post("/search", json={"text": "a photo", "k": 2})
    parts = dict(part.split(";dur=") for part in response.headers["server-timing"].split(", "))
    assert set(parts) == {"encode", "search", "fetch"}
    assert all(float(value) >= 0 for value in parts.values())
    assert sum(float(v) for v in parts.values()) <= response.json()["took_ms"] + 0.5


def test_http_limits_follow_the_engines_query_settings(engine, indexed, settings, client):
    """query.max_k and query.max_text_chars are declared once: a server configured with
    max_k 5000 takes k = 2000 (it used to answer 422 from a hard-coded 1000)."""
    from fastapi.testclient import TestClient

    from xmodal.api import create_app
    from xmodal.search import Engine, QuerySettings

    assert client.post("/search", json={"text": "a photo", "k": 1000}).status_code == 200
    assert client.post("/search", json={"text": "a photo", "k": 1001}).status_code == 422

    limits = QuerySettings(max_k=5000, max_text_chars=50)
    wide = Engine(engine.store, engine.encoder, query=limits)
    app = create_app(settings.model_copy(update={"query": limits}), wide)
    with TestClient(app) as wide_client:
        found = wide_client.post("/search", json={"text": "a photo", "k": 2000})
        assert found.status_code == 200 and len(found.json()["hits"]) == len(indexed)
        assert wide_client.post("/search", json={"text": "a photo", "k": 5001}).status_code == 422
        assert wide_client.post("/search", json={"text": "x" * 50}).status_code == 200
        too_long = wide_client.post("/search", json={"text": "x" * 51})
        assert too_long.status_code == 422 and "50" in too_long.text
        with open(indexed[0], "rb") as f:
            upload = wide_client.post(
                "/search/image", files={"file": ("q.jpg", f, "image/jpeg")}, data={"k": "2000"}
            )
        assert upload.status_code == 200
        schema = wide_client.get("/openapi.json").json()["components"]["schemas"]
        assert schema["SearchRequest"]["properties"]["k"]["maximum"] == 5000
