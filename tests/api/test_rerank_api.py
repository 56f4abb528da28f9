"""Reranking and explanations over HTTP, with a tiny random LLaVA: the search's rerank
and explain fields, POST /explain, the heatmap PNG, the bounds, the OpenAPI document."""

from __future__ import annotations

import io
import math
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.media import videos
from tests.media.audio import tone, write_audio
from xmodal.api import create_app
from xmodal.api.settings import Settings
from xmodal.indexer import index_paths
from xmodal.search import Engine, Store
from xmodal.search.rerank.settings import RerankSettings
from xmodal.search.store import item_id_for

QUERY = "a red square on the left"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# Models the tests' requests name besides the server's own: offered, so that what
# happens when they are used (a bad spec, a missing folder or download) is tested.
NAMED = ["nonsense", "llava:nobody/absent-vlm"]


@pytest.fixture
def rerank_settings(tiny_vlm, tmp_path):
    offered = [*NAMED, f"llava:{tmp_path / 'no-such-model'}"]
    return RerankSettings(
        model=tiny_vlm, top_n=4, max_top_n=6, max_explain=3, allowed_models=offered
    )


@pytest.fixture
def library(tmp_path, make_image, tiny_encoder, tiny_audio_encoder, rerank_settings):
    """Five photos, a video of three coloured shots and a tone, indexed; returns the
    engine and the paths by name."""
    lib = tmp_path / "lib"
    paths = {f"p{i}": make_image(lib / f"p{i}.jpg", seed=i, size=(160, 120)) for i in range(5)}
    red, green = videos.solid((220, 30, 30)), videos.solid((30, 180, 40))
    paths["clip"] = videos.write_video(
        lib / "clip.mp4", [(2.0, red), (2.0, green)], fps=10, size=(160, 120)
    )
    paths["tone"] = write_audio(lib / "tone.wav", tone(440.0, 3.0, 16000), 16000)
    engine = Engine(
        Store(tmp_path / "data"), tiny_encoder, tiny_audio_encoder, rerank=rerank_settings
    )
    index_paths(engine, [lib])
    return engine, paths


@pytest.fixture
def client(library, rerank_settings):
    engine, _ = library
    settings = Settings(data=engine.store.path, rerank=rerank_settings)
    with TestClient(create_app(settings, engine)) as test_client:
        yield test_client


def ids(body):
    return [hit["id"] for hit in body["hits"]]


def test_rerank_orders_the_first_pictures_by_rerank_score(client):
    plain = client.post("/search", json={"text": QUERY, "k": 7}).json()
    assert plain["rerank"] is None and plain["explain"] is None
    assert all(hit["rerank_score"] is None for hit in plain["hits"])

    response = client.post("/search", json={"text": QUERY, "k": 7, "rerank": {"top_n": 5}})
    assert response.status_code == 200, response.text
    assert "rerank;dur=" in response.headers["server-timing"]
    body = response.json()
    report = body["rerank"]
    pictures = [hit for hit in plain["hits"][:5] if hit["matched"] == "picture"]
    assert report["applied"] and report["reason"] is None and report["method"] == "vqa"
    assert report["candidates"] == 5 and report["scored"] == len(pictures) > 0
    # The first five are the same items; the pictures among them all have a score and
    # are in its order; a sound keeps its place, and the rest is not reranked.
    top = body["hits"][:5]
    assert {hit["id"] for hit in top} == set(ids(plain)[:5])
    for place, hit in enumerate(top):
        if hit["matched"] == "sound":
            assert hit["rerank_score"] is None and plain["hits"][place]["id"] == hit["id"]
        else:
            assert 0.0 <= hit["rerank_score"] <= 1.0
    # In the fused order: the search model's log odds + weight x log P(Yes).
    engine = client.app.state.engine
    scale = engine.encoder_for("image-text").logit_scale
    weight = engine.reranking.settings.weight
    fused = [
        scale * hit["score"] + weight * math.log(hit["rerank_score"])
        for hit in top
        if hit["matched"] == "picture"
    ]
    assert fused == sorted(fused, reverse=True)
    assert ids(body)[5:] == ids(plain)[5:]
    assert all(hit["rerank_score"] is None for hit in body["hits"][5:])

    # `true` takes the server's settings (top_n 4); the scores now come from the cache.
    again = client.post("/search", json={"text": QUERY, "k": 7, "rerank": True}).json()
    assert again["rerank"]["applied"] and again["rerank"]["candidates"] == 4
    assert again["rerank"]["cached"] == again["rerank"]["scored"] > 0


def test_a_missing_rerank_model_leaves_the_first_order(client, tmp_path):
    plain = client.post("/search", json={"text": QUERY, "k": 7}).json()
    absent = f"llava:{tmp_path / 'no-such-model'}"
    response = client.post("/search", json={"text": QUERY, "k": 7, "rerank": {"model": absent}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body["rerank"]["applied"] and body["rerank"]["model"] == absent
    assert "model unavailable" in body["rerank"]["reason"]
    assert "not found" in body["rerank"]["reason"]
    assert ids(body) == ids(plain)
    assert all(hit["rerank_score"] is None for hit in body["hits"])


def test_past_its_budget_a_search_answers_in_its_first_order(client):
    query = "a query no search has scored yet"
    plain = client.post("/search", json={"text": query, "k": 7}).json()
    body = client.post(
        "/search", json={"text": query, "k": 7, "rerank": {"timeout_ms": 0.001}}
    ).json()
    assert not body["rerank"]["applied"] and body["rerank"]["reason"].startswith("timeout")
    assert ids(body) == ids(plain)
    assert all(hit["rerank_score"] is None for hit in body["hits"])


def test_explained_hits_link_a_heatmap_png(client):
    response = client.post("/search", json={"text": QUERY, "k": 7, "rerank": True, "explain": 2})
    assert response.status_code == 200, response.text
    assert "explain;dur=" in response.headers["server-timing"]
    body = response.json()
    assert body["explain"]["explained"] == 2 and body["explain"]["reason"] is None
    pictures = [hit for hit in body["hits"] if hit["matched"] == "picture"]
    assert all(hit["explanation"] for hit in pictures[:2])
    assert not any(hit["explanation"] for hit in body["hits"] if hit not in pictures[:2])
    for hit in pictures[:2]:
        explanation = hit["explanation"]
        assert explanation["summary"].startswith("The picture shows")
        assert [w["word"] for w in explanation["words"]] == QUERY.split()
        url = urlsplit(explanation["heatmap_url"])
        assert url.path == f"/items/{hit['id']}/explain.png" and not url.netloc
        params = parse_qs(url.query)
        assert params["q"] == [QUERY] and "model" not in params
        assert ("t" in params) == (hit["kind"] == "video")
        png = client.get(explanation["heatmap_url"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.headers["cache-control"] == "private, max-age=3600"
        assert png.content.startswith(PNG_MAGIC)
        assert Image.open(io.BytesIO(png.content)).size[0] > 0


def test_a_video_hit_is_explained_at_its_moment(client, library):
    _, paths = library
    body = client.post(
        "/search", json={"text": "green", "kinds": ["video"], "rerank": True, "explain": 1}
    ).json()
    (hit,) = body["hits"]
    assert hit["rerank_score"] is not None
    url = hit["explanation"]["heatmap_url"]
    assert parse_qs(urlsplit(url).query)["t"] == [repr(float(hit["segments"][0]["start"]))]
    assert client.get(url).content.startswith(PNG_MAGIC)

    video_id = item_id_for(str(paths["clip"]))
    answer = client.post("/explain", json={"text": "green", "item_id": video_id, "t": 3.0})
    assert answer.status_code == 200, answer.text
    assert parse_qs(urlsplit(answer.json()["heatmap_url"]).query)["t"] == ["3.0"]


def test_explain_answers_for_an_item(client, library, tiny_vlm):
    _, paths = library
    item_id = item_id_for(str(paths["p1"]))
    response = client.post("/explain", json={"text": QUERY, "item_id": item_id})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "model",
        "description",
        "summary",
        "confirmed",
        "contradicted",
        "words",
        "heatmap_url",
        "took_ms",
    }
    assert body["model"] == tiny_vlm and body["took_ms"] > 0
    assert [w["word"] for w in body["words"]] == QUERY.split()
    assert set(body["confirmed"]) | set(body["contradicted"]) <= set(QUERY.split())
    assert client.get(body["heatmap_url"]).content.startswith(PNG_MAGIC)
    # The model named in the request is the one the heatmap URL asks for.
    named = client.post("/explain", json={"text": QUERY, "item_id": item_id, "model": tiny_vlm})
    assert parse_qs(urlsplit(named.json()["heatmap_url"]).query)["model"] == [tiny_vlm]


def test_explain_errors(client, library, hf_cache):
    _, paths = library
    picture, sound = item_id_for(str(paths["p0"])), item_id_for(str(paths["tone"]))
    cases = [
        ({"text": QUERY, "item_id": "0000000000000000"}, 404, "no item"),
        ({"text": QUERY, "item_id": sound}, 400, "no picture"),
        ({"text": "   ", "item_id": picture}, 400, "empty"),
        ({"text": QUERY, "item_id": picture, "model": "nonsense"}, 400, "nonsense"),
        (
            {"text": QUERY, "item_id": picture, "model": "llava:nobody/absent-vlm"},
            503,
            "not in the local Hugging Face cache",
        ),
    ]
    for body, status, message in cases:
        response = client.post("/explain", json=body)
        assert response.status_code == status, (body, response.text)
        assert message in response.json()["detail"], (body, response.text)
    for url, status in [
        (f"/items/0000000000000000/explain.png?q={QUERY}", 404),
        (f"/items/{sound}/explain.png?q=a+tone", 400),
        (f"/items/{picture}/explain.png", 422),
        (f"/items/{picture}/explain.png?q=x&model=llava:nobody/absent-vlm", 503),
    ]:
        assert client.get(url).status_code == status, url


def test_hostile_requests_are_refused(client, library):
    _, paths = library
    picture = item_id_for(str(paths["p0"]))
    huge = "x" * 100_000  # over the model spec limit, under server.max_json_bytes
    refused = [
        ("/search", {"text": QUERY, "rerank": {"top_n": 7}}),  # max_top_n is 6
        ("/search", {"text": QUERY, "rerank": {"top_n": 0}}),
        ("/search", {"text": QUERY, "explain": 4}),  # max_explain is 3
        ("/search", {"text": QUERY, "explain": -1}),
        ("/search", {"text": QUERY, "rerank": {"model": huge}}),
        ("/search", {"text": QUERY, "rerank": {"method": "nonsense"}}),
        ("/search", {"text": QUERY, "rerank": {"timeout_ms": 0}}),
        ("/search", {"text": QUERY, "rerank": {"timeout_ms": 3_600_000}}),  # over the server's
        ("/search", {"text": QUERY, "rerank": {"topn": 3}}),  # a misspelt option
        ("/search", {"text": QUERY, "rerank": "yes please"}),
        ("/explain", {"text": QUERY, "item_id": picture, "model": huge}),
        ("/explain", {"text": "x" * 2001, "item_id": picture}),
        ("/explain", {"text": QUERY, "item_id": picture, "t": -1}),
        ("/explain", {"item_id": picture}),
    ]
    for path, body in refused:
        response = client.post(path, json=body)
        assert response.status_code == 422, (path, body, response.text[:300])
    # A bad options object is told what is wrong with it, not also that it is no boolean.
    (error,) = client.post("/search", json=refused[0][1]).json()["detail"]
    assert error["loc"] == ["body", "rerank", "options", "top_n"]
    for query in ("q=" + "x" * 2001, "q=x&t=-2", "q=x&model=" + "m" * 1001):
        response = client.get(f"/items/{picture}/explain.png?{query}")
        assert response.status_code == 422, query[:40]
    # Reranking and explanations are for text queries; a bad model spec is the caller's.
    for extra in ({"rerank": True}, {"explain": 1}):
        response = client.post("/search", json={"item_id": picture, **extra})
        assert response.status_code == 400
        assert "text queries only" in response.json()["detail"]
    response = client.post("/search", json={"text": QUERY, "rerank": {"model": "nonsense"}})
    assert response.status_code == 400 and "nonsense" in response.json()["detail"]


def test_a_model_the_server_does_not_offer_is_refused_before_loading(client, library):
    _, paths = library
    picture = item_id_for(str(paths["p0"]))
    other = "llava:/etc/some-folder-of-the-callers-choosing"
    for method, url, kwargs in [
        ("post", "/search", {"json": {"text": QUERY, "rerank": {"model": other}}}),
        ("post", "/explain", {"json": {"text": QUERY, "item_id": picture, "model": other}}),
        ("get", f"/items/{picture}/explain.png?q=x&model={other}", {}),
    ]:
        response = getattr(client, method)(url, **kwargs)
        assert response.status_code == 400, (url, response.text)
        assert "does not offer" in response.json()["detail"]


def test_openapi_documents_reranking_and_explanations(client):
    document = client.get("/openapi.json").json()
    paths, schemas = document["paths"], document["components"]["schemas"]
    assert "/explain" in paths
    heatmap = paths["/items/{item_id}/explain.png"]["get"]
    assert list(heatmap["responses"]["200"]["content"]) == ["image/png"]
    # exp and sig: a signed heatmap URL of a keyed server's answer (api/media_links.py).
    assert {p["name"] for p in heatmap["parameters"]} == {
        "item_id",
        "q",
        "t",
        "model",
        "exp",
        "sig",
    }
    assert {"400", "404", "503"} <= set(paths["/explain"]["post"]["responses"])

    request = schemas["SearchRequest"]["properties"]
    shapes = [option.get("type") or option.get("$ref") for option in request["rerank"]["oneOf"]]
    assert shapes == ["boolean", "#/components/schemas/RerankOptions", "null"]
    assert request["explain"]["maximum"] == 3
    options = schemas["RerankOptions"]["properties"]
    assert options["top_n"]["anyOf"][0]["maximum"] == 6
    assert options["model"]["anyOf"][0]["maxLength"] == 1000
    assert options["method"]["anyOf"][0]["enum"] == ["auto", "caption", "vqa"]
    assert {"rerank_score", "explanation"} <= set(schemas["HitOut"]["properties"])
    assert {"rerank", "explain"} <= set(schemas["SearchResponse"]["properties"])
    for name in (
        "RerankOptions",
        "RerankOut",
        "ExplainReportOut",
        "ExplanationOut",
        "WordSupportOut",
        "ExplainRequest",
        "ExplainResponse",
    ):
        for field, schema in schemas[name]["properties"].items():
            assert schema.get("description"), (name, field)


def test_explanations_never_read_a_file_outside_the_roots(client, library, make_image, tmp_path):
    from xmodal.search.store import INDEXED, ItemRecord

    engine, paths = library
    lib = paths["p0"].parent
    link = lib / "out.jpg"
    link.symlink_to(make_image(tmp_path / "elsewhere" / "private.jpg", seed=60))
    item_id = item_id_for(str(link))  # as an older version indexed it
    engine.store.upsert_items(
        [ItemRecord(item_id, str(link), "image", str(lib), "ef" * 32, status=INDEXED)]
    )
    assert client.post("/explain", json={"text": QUERY, "item_id": item_id}).status_code == 404
    assert client.get(f"/items/{item_id}/explain.png?q=red").status_code == 404
