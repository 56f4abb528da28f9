"""Who may call the HTTP API: scopes, publishable keys and their origins, revocation,
rate limits, the Host check, CORS, response headers, and the paths keys are shown."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from xmodal.api import create_app
from xmodal.api.keys import KeyRing, Scope
from xmodal.api.settings import Settings
from xmodal.search.store import item_id_for

SHOP = "https://shop.example"


@pytest.fixture
def ring(settings) -> KeyRing:
    return KeyRing.of_data(settings.data)


@pytest.fixture
def keys(ring) -> dict[str, str]:
    """A secret of each scope (the publishable one for SHOP), made before any request."""
    secrets = {scope.value: ring.create(scope)[1] for scope in Scope if scope != Scope.PUBLISHABLE}
    secrets["publishable"] = ring.create(Scope.PUBLISHABLE, origins=[SHOP], rate="100/s")[1]
    return secrets


def bearer(secret: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", **more}


def routes(item_id: str) -> list[tuple[str, str, dict]]:
    """One request of each search-scope route: (method, path, json body)."""
    return [
        ("POST", "/search", {"text": "a photo", "k": 2}),
        ("POST", "/search", {"item_id": item_id, "k": 2}),
        ("GET", f"/items/{item_id}", {}),
        ("GET", f"/items/{item_id}/thumbnail", {}),
        ("GET", f"/items/{item_id}/media", {}),
    ]


def test_without_keys_the_server_is_open_and_shows_full_paths(client, indexed):
    item_id = item_id_for(str(indexed[0]))
    for method, path, body in routes(item_id):
        assert client.request(method, path, json=body or None).status_code == 200, path
    assert client.get(f"/items/{item_id}").json()["uri"] == str(indexed[0])
    health = client.get("/health").json()
    assert health["items"] == 6 and health["pid"] and health["data"]
    assert client.get("/keys").json() == []  # the server's own user is admin


def test_each_scope_is_let_through_where_it_should_be(client, indexed, keys):
    item_id = item_id_for(str(indexed[0]))
    for method, path, body in routes(item_id):
        response = client.request(method, path, json=body or None)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert "needs an API key" in response.json()["detail"]
        for scope in ("search", "write", "admin"):
            response = client.request(method, path, json=body or None, headers=bearer(keys[scope]))
            assert response.status_code == 200, (scope, path)
        response = client.request(
            method, path, json=body or None, headers={"X-API-Key": keys["search"]}
        )
        assert response.status_code == 200, path
    wrong = keys["search"][:-2] + "zz"
    assert client.post("/search", json={"text": "a"}, headers=bearer(wrong)).status_code == 401

    # Key management: admin only.
    for scope in ("search", "write", "publishable"):
        headers = bearer(keys[scope], Origin=SHOP)
        response = client.get("/keys", headers=headers)
        assert response.status_code == 403, scope
        assert "this needs admin" in response.json()["detail"]
    listed = client.get("/keys", headers=bearer(keys["admin"])).json()
    assert {key["scope"] for key in listed} == {"admin", "write", "search", "publishable"}
    assert not any("secret" in name for key in listed for name in key)


def test_admin_keys_make_and_revoke_keys_over_http(client, indexed, keys):
    admin = bearer(keys["admin"])
    made = client.post("/keys", json={"scope": "search", "name": "ci"}, headers=admin)
    assert made.status_code == 201
    secret, key_id = made.json()["secret"], made.json()["key"]["id"]
    assert client.post("/search", json={"text": "a"}, headers=bearer(secret)).status_code == 200
    bad = client.post("/keys", json={"scope": "publishable"}, headers=admin)
    assert bad.status_code == 400 and "--origin" in bad.json()["detail"]
    assert client.delete(f"/keys/{key_id}", headers=admin).json()["revoked_at"]
    assert client.post("/search", json={"text": "a"}, headers=bearer(secret)).status_code == 401
    assert client.delete("/keys/0123456789ab", headers=admin).status_code == 404


def test_a_revoked_key_is_refused_at_once(client, indexed, keys, ring, xmodal, settings):
    headers = bearer(keys["search"])
    assert client.post("/search", json={"text": "a"}, headers=headers).status_code == 200
    key_id = keys["search"].split("_")[1]
    code, _, err = xmodal("keys", "revoke", key_id, "--data", str(settings.data))
    assert code == 0, err
    response = client.post("/search", json={"text": "a"}, headers=headers)
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_health_says_more_to_those_with_a_key(client, indexed, keys):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/health", headers=bearer("xk_nonsense")).json() == {"status": "ok"}
    searching = client.get("/health", headers=bearer(keys["search"])).json()
    assert searching["items"] == 6 and searching["model"]
    assert "data" not in searching and "pid" not in searching
    admin = client.get("/health", headers=bearer(keys["admin"])).json()
    assert admin["data"] and admin["pid"]


def test_search_keys_see_paths_relative_to_their_indexed_folder(client, indexed, keys):
    item_id = item_id_for(str(indexed[2]))
    headers = bearer(keys["search"])
    hits = client.post("/search", json={"text": "a photo"}, headers=headers).json()["hits"]
    assert sorted(hit["uri"] for hit in hits) == [f"{i}.jpg" for i in range(6)]
    assert client.get(f"/items/{item_id}", headers=headers).json()["uri"] == "2.jpg"
    with open(indexed[2], "rb") as query:
        upload = client.post("/search/image", files={"file": query}, headers=headers).json()
    assert upload["hits"][0]["uri"] == "2.jpg"
    publishable = bearer(keys["publishable"], Origin=SHOP)
    hits = client.post("/search", json={"text": "a photo"}, headers=publishable).json()["hits"]
    assert not any(hit["uri"].startswith("/") for hit in hits)
    # Nor guessed through a filter, nor read in an error message.
    refused = client.post(
        "/search", json={"text": "a", "filter": {"uri": {"$gt": "/"}}}, headers=headers
    )
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    indexed[3].unlink()
    # Nor smuggled inside $or, $and and $not.
    for smuggled in (
        {"$or": [{"kind": "video"}, {"uri": {"$gt": "/"}}]},
        {"$and": [{"$not": {"uri": {"$lt": "/"}}}]},
        {"kind": "image", "$not": {"$or": [{"uri": "/etc/passwd"}]}},
        {"$and": [{"$or": [{"$not": {"$or": [{"uri": {"$exists": True}}]}}]}]},
    ):
        refused = client.post("/search", json={"text": "a", "filter": smuggled}, headers=headers)
        assert refused.status_code == 403, smuggled
        with open(indexed[2], "rb") as query:
            form = {"filter": json.dumps(smuggled)}
            upload = client.post("/search/image", files={"file": query}, data=form, headers=headers)
        assert upload.status_code == 403, smuggled
    either = {"$or": [{"kind": "video"}, {"width": {"$gt": 0}}]}
    allowed = client.post("/search", json={"text": "a", "filter": either}, headers=headers)
    assert allowed.status_code == 200 and len(allowed.json()["hits"]) == 6  # 3 still indexed
    missing = client.get(f"/items/{item_id_for(str(indexed[3]))}/media", headers=headers)
    assert missing.status_code == 404
    assert str(indexed[3].parent) not in missing.text and "is missing" in missing.text
    # Admin keys see it all.
    admin = bearer(keys["admin"])
    assert client.get(f"/items/{item_id}", headers=admin).json()["uri"] == str(indexed[2])
    by_uri = {"text": "a", "filter": {"uri": str(indexed[2])}}
    assert client.post("/search", json=by_uri, headers=admin).status_code == 200


def test_a_publishable_key_answers_only_its_origins(client, indexed, keys):
    body = {"text": "a photo"}
    key = keys["publishable"]
    allowed = client.post("/search", json=body, headers=bearer(key, Origin=SHOP))
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == SHOP
    for origin in ("https://evil.example", "https://shop.example:8443", "null"):
        refused = client.post("/search", json=body, headers=bearer(key, Origin=origin))
        assert refused.status_code == 403, origin
        assert "only from the web origins it lists" in refused.json()["detail"]
        assert "access-control-allow-origin" not in refused.headers
    no_origin = client.post("/search", json=body, headers=bearer(key))
    assert no_origin.status_code == 403 and "Origin is missing" in no_origin.json()["detail"]
    # Search only: the item routes, not the keys.
    item_id = item_id_for(str(indexed[0]))
    headers = bearer(key, Origin=SHOP)
    assert client.get(f"/items/{item_id}/thumbnail", headers=headers).status_code == 200
    assert client.get("/keys", headers=headers).status_code == 403


def test_cors_preflight_answers_the_origins_of_publishable_keys(client, indexed, keys, ring):
    def preflight(origin: str) -> object:
        return client.options(
            "/search",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )

    allowed = preflight(SHOP)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == SHOP
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = preflight("https://evil.example")
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    # A key made while the server runs is seen at once; a revoked one no longer opens.
    other, _ = ring.create(Scope.PUBLISHABLE, origins=["http://localhost:3000"])
    assert preflight("http://localhost:3000").status_code == 200
    ring.revoke(other.id)
    assert preflight("http://localhost:3000").status_code == 400


def test_a_key_over_its_rate_gets_429_with_retry_after(client, indexed, ring):
    _, secret = ring.create(Scope.SEARCH, rate="2/h")
    headers = bearer(secret)
    for _ in range(2):
        assert client.post("/search", json={"text": "a"}, headers=headers).status_code == 200
    limited = client.post("/search", json={"text": "a"}, headers=headers)
    assert limited.status_code == 429 and "over its rate of 2/h" in limited.json()["detail"]
    assert int(limited.headers["retry-after"]) > 0
    # Another key is not limited by it.
    _, other = ring.create(Scope.SEARCH)
    assert client.post("/search", json={"text": "a"}, headers=bearer(other)).status_code == 200


def test_a_client_address_over_the_rate_gets_429(engine, indexed, tmp_path):
    settings = Settings(data=engine.store.path, security={"client_rate": "3/h"})
    with TestClient(create_app(settings, engine)) as client:  # from address "testclient"
        assert [client.get("/health").status_code for _ in range(3)] == [200] * 3
        limited = client.post("/search", json={"text": "a"})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        assert limited.headers["x-content-type-options"] == "nosniff"
    # Clients on this machine's loopback are not limited by address.
    with TestClient(create_app(settings, engine), client=("127.0.0.1", 5000)) as local:
        assert {local.get("/health").status_code for _ in range(5)} == {200}


def test_the_host_check_refuses_names_it_was_not_told(engine, indexed, monkeypatch):
    monkeypatch.delenv("XMODAL_SECURITY__ALLOWED_HOSTS")
    settings = Settings(
        data=engine.store.path,
        server={"host": "10.1.2.3"},
        security={"allowed_hosts": ["search.example.org", "*.corp.example"]},
    )
    with TestClient(create_app(settings, engine), base_url="http://127.0.0.1:8000") as client:
        for host in (
            "127.0.0.1:8000", "localhost", "[::1]:8000", "10.1.2.3:8000",
            "search.example.org", "a.corp.example:8000",
        ):  # fmt: skip
            assert client.get("/health", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example", "attacker.example:8000", "corp.example.evil", "testserver"):
            refused = client.get("/health", headers={"Host": host})
            assert refused.status_code == 400, host
            assert "security.allowed_hosts" in refused.json()["detail"]
            assert refused.headers["x-content-type-options"] == "nosniff"


def test_every_response_says_nosniff_and_served_files_a_strict_policy(client, indexed, keys):
    item_id = item_id_for(str(indexed[0]))
    headers = bearer(keys["search"])
    responses = [
        client.get(f"/items/{item_id}/media", headers=headers),
        client.get(f"/items/{item_id}/thumbnail", headers=headers),
        client.post("/search", json={"text": "a"}, headers=headers),
        client.get("/items/nope", headers=headers),
        client.post("/search", json={"text": "a"}),
        client.get("/openapi.json"),
    ]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff", response.url
        assert response.headers["content-security-policy"] == "default-src 'none'; sandbox"
    docs = client.get("/docs")
    assert docs.status_code == 200 and docs.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in docs.headers  # the docs page runs its scripts


def test_openapi_declares_the_key_schemes_and_is_public(client, indexed, keys):
    document = client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearer"]["description"],
    }
    assert schemes["apiKey"]["in"] == "header" and schemes["apiKey"]["name"] == "X-API-Key"
    search = document["paths"]["/search"]["post"]
    assert {"bearer": []} in search["security"] and {"apiKey": []} in search["security"]
    assert "401" in search["responses"] and "429" in search["responses"]
    item = document["paths"]["/items/{item_id}/media"]["get"]
    assert {"401", "403", "404", "429"} <= set(item["responses"])


def test_xmodal_search_goes_through_a_keyed_server_with_full_paths(
    xmodal, make_image, tiny_spec, tmp_path
):
    """`xmodal search` on the server's machine needs no key: it reads the server's local
    token from server.json (owner-only), and is shown what the store holds."""
    import json
    import os
    import stat
    import threading
    import time
    import urllib.error
    import urllib.request

    from xmodal.api.server_link import SERVER_FILE, announced_server

    lib = tmp_path / "lib"
    for i in range(3):
        make_image(lib / f"{i}.jpg", seed=i)
    data = tmp_path / "data"
    assert xmodal("index", str(lib), "--model", tiny_spec)[0] == 0
    assert xmodal("keys", "create", "--scope", "search")[0] == 0
    app = create_app(Settings(data=data))
    urls: list[str] = []
    running = announced_server(app, data, "127.0.0.1", 0, urls.append)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not urls and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert urls
        record = json.loads((data / SERVER_FILE).read_text())
        assert record["token"]
        if os.name == "posix":
            assert stat.S_IMODE((data / SERVER_FILE).stat().st_mode) == 0o600
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with pytest.raises(urllib.error.HTTPError) as refused:
            direct.open(urllib.request.Request(urls[0] + "/search", data=b"{}"), timeout=30)
        assert refused.value.code == 401
        code, out, err = xmodal("search", "a photo", "--json")
        assert code == 0 and err.startswith(f"answered by the server at {urls[0]}"), err
        assert sorted(hit["uri"] for hit in json.loads(out)["hits"]) == sorted(
            str(lib / f"{i}.jpg") for i in range(3)
        )
    finally:
        running.should_exit = True
        thread.join(30)
    assert not thread.is_alive()


def test_an_upload_without_a_key_is_refused_before_its_body_is_read(client, indexed, keys):
    received = []

    def body():
        for _ in range(64):
            received.append(1)
            yield b"x" * 65536

    response = client.post(
        "/search/image",
        content=body(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 401
    assert len(received) <= 1  # the server answered without reading the 4 MiB


def test_paths_shown_to_search_keys_never_carry_the_server_folder() -> None:
    """Relative to the indexed folder, also for a name stored as a `file://` URI (bytes
    that are not UTF-8); a URL stays as it is."""
    import os

    from xmodal.api.schemas import shown_uri
    from xmodal.search.store.locations import location_of

    stored = location_of(os.fsdecode(b"/srv/lib/2024/caf\xe9.jpg"))
    assert stored.startswith("file://")
    assert shown_uri(stored, "/srv/lib") == "2024/caf\ufffd.jpg"
    assert shown_uri("/srv/lib/a/b.jpg", "/srv/lib") == "a/b.jpg"
    assert shown_uri("/elsewhere/c.jpg", "/srv/lib") == "c.jpg"
    assert shown_uri("https://cdn.example/y.jpg", "") == "https://cdn.example/y.jpg"
