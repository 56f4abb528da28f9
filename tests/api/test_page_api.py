"""What the search page needs of the server: its files at / (open, their own content
policy), signed media URLs that work without a key, and GET /facets."""

from __future__ import annotations

import os
import time
from urllib.parse import parse_qsl, urlsplit

import pytest
from fastapi.testclient import TestClient

from xmodal.api import create_app
from xmodal.api.keys import KeyRing, Scope
from xmodal.api.media_links import SECRET_FILE, MediaLinks
from xmodal.api.pages import PAGE_POLICY
from xmodal.api.settings import Settings
from xmodal.search.store import item_id_for


@pytest.fixture
def search_key(settings) -> str:
    return KeyRing.of_data(settings.data).create(Scope.SEARCH)[1]


def first_hit(client: TestClient, key: str | None = None) -> dict:
    headers = {"X-API-Key": key} if key else {}
    response = client.post("/search", json={"text": "a photo", "k": 3}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["hits"][0]


def test_the_page_and_its_files_are_open_with_their_own_policy(client, indexed, search_key):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == PAGE_POLICY
    assert page.headers["cache-control"] == "no-cache" and page.headers["etag"]
    again = client.get("/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304
    for asset, mime in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        response = client.get(asset)
        assert response.status_code == 200 and mime in response.headers["content-type"], asset
        assert response.headers["content-security-policy"] == PAGE_POLICY
    assert client.get("/static/nothing.js").status_code == 404
    assert client.get("/static/%2E%2E/__init__.py").status_code == 404  # not above static/
    # The API's own answers keep the strict policy; the page is not in OpenAPI.
    health = client.get("/health")
    assert health.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert "/" not in client.get("/openapi.json").json()["paths"]


def test_the_widget_script_is_served_when_it_exists(client, indexed):
    from importlib.resources import files

    present = (files("xmodal.web") / "static" / "widget.js").is_file()
    response = client.get("/widget.js")
    assert response.status_code == (200 if present else 404)


def test_an_open_server_answers_plain_media_urls(client, indexed):
    hit = first_hit(client)
    assert hit["thumbnail_url"] == f"/items/{hit['id']}/thumbnail"
    assert hit["media_url"] == f"/items/{hit['id']}/media"
    assert client.get(hit["thumbnail_url"]).status_code == 200
    item = client.get(f"/items/{hit['id']}").json()
    assert item["media_url"] == hit["media_url"]


def test_signed_urls_open_their_own_file_without_a_key(client, indexed, search_key, settings):
    hit = first_hit(client, search_key)
    thumbnail, media = hit["thumbnail_url"], hit["media_url"]
    assert "sig=" in thumbnail and "exp=" in thumbnail and "sig=" in media
    thumb = client.get(thumbnail)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    original = client.get(media)
    assert original.status_code == 200
    source = next(p for p in indexed if item_id_for(str(p)) == hit["id"])
    assert original.content == source.read_bytes()
    # The secret is kept in the data directory, readable by its owner only.
    secret = settings.data / SECRET_FILE
    assert secret.exists() and (os.stat(secret).st_mode & 0o077) == 0
    # Without a signature, or with a tampered one, a keyed server refuses.
    path, _, query = media.partition("?")
    assert client.get(path).status_code == 401
    params = dict(parse_qsl(query))
    tampered = params["sig"][:-1] + ("0" if params["sig"][-1] != "0" else "1")
    assert client.get(f"{path}?exp={params['exp']}&sig={tampered}").status_code == 401
    later = int(params["exp"]) + 3600
    assert client.get(f"{path}?exp={later}&sig={params['sig']}").status_code == 401
    # Another item's path with this signature, or this signature on another route.
    other = next(i for i in (item_id_for(str(p)) for p in indexed) if i != hit["id"])
    assert client.get(f"/items/{other}/media?{query}").status_code == 401
    assert client.get(f"/items/{hit['id']}/thumbnail?{query}").status_code == 401
    assert client.get(f"/items/{hit['id']}?{query}").status_code == 401
    # Signed URLs open GETs only.
    assert client.post(f"{media}").status_code in (401, 405)


def test_an_expired_signed_url_is_refused(settings, engine, indexed, search_key):
    app = create_app(settings, engine)
    with TestClient(app) as client:
        links: MediaLinks = app.state.media_links
        item_id = item_id_for(str(indexed[0]))
        now = time.time()
        links.clock = lambda: now - 2 * links.seconds - links.step  # signed long ago
        old = links.media(item_id)
        links.clock = time.time
        assert client.get(old).status_code == 401
        assert client.get(links.media(item_id)).status_code == 200
        assert urlsplit(old).path == urlsplit(links.media(item_id)).path


def test_signed_urls_stay_the_same_a_while_so_they_cache(tmp_path):
    now = [1_000_000.0]
    links = MediaLinks(tmp_path, 3600, keyed=lambda: True, clock=lambda: now[0])
    first = links.thumbnail("abc")
    now[0] += 60
    assert links.thumbnail("abc") == first
    exp = int(dict(parse_qsl(urlsplit(first).query))["exp"])
    assert 1_000_000 + 3600 <= exp <= 1_000_000 + 3600 + links.step
    assert links.allows("GET", "/items/abc/thumbnail", urlsplit(first).query)
    assert not links.allows("GET", "/items/abd/thumbnail", urlsplit(first).query)
    assert links.allows("GET", "/items/abc/thumbnail", "") is None


def test_facets_describe_the_metadata(client, indexed, search_key):
    assert client.get("/facets").status_code == 401  # search scope, as /search
    body = client.get("/facets", headers={"X-API-Key": search_key}).json()
    assert body["items"] == 6 and body["kinds"] == {"image": 6} and not body["truncated"]
    by_key = {facet["key"]: facet for facet in body["keys"]}
    colour = by_key["colour"]
    assert colour["type"] == "string" and colour["count"] == 6
    assert sorted((v["value"], v["count"]) for v in colour["values"]) == [("blue", 3), ("red", 3)]
    price = by_key["price"]
    assert price["type"] == "number" and (price["min"], price["max"]) == (0, 50)


def test_facets_count_list_elements_and_drop_long_or_many_values(engine, tmp_path, make_image):
    from xmodal.indexer import index_paths

    lib = tmp_path / "lib"
    paths = [make_image(lib / f"{i}.jpg", seed=i, size=(64, 48)) for i in range(60)]
    metadata = {
        str(p): {
            "tags": ["red", "round"] if i % 2 else ["blue"],
            "sku": f"sku-{i}",  # 60 distinct: no values
            "caption": "x" * 300 if i == 0 else "short",
            "in_stock": i % 3 == 0,
            "size": {"w": i},
        }
        for i, p in enumerate(paths)
    }
    index_paths(engine, [lib], metadata=metadata)
    facets = engine.facets()
    by_key = {facet.key: facet for facet in facets.keys}
    tags = by_key["tags"]
    assert tags.type == "list" and tags.count == 60
    assert {v.value: v.count for v in tags.values or []} == {"red": 30, "round": 30, "blue": 30}
    assert by_key["sku"].values is None and by_key["caption"].values is None
    assert by_key["in_stock"].type == "boolean"
    assert {v.value: v.count for v in by_key["in_stock"].values or []} == {True: 20, False: 40}
    assert by_key["size.w"].type == "number" and by_key["size.w"].max == 59
    assert engine.facets() is facets  # cached for the store version


def test_health_says_which_reranker_a_page_may_ask_for(client, indexed):
    health = client.get("/health").json()
    assert health["reranker"] and health["max_explain"] >= 0


def test_settings_media_url_seconds_is_bounded(tmp_path):
    with pytest.raises(ValueError):
        Settings(data=tmp_path, security={"media_url_seconds": 1})
