"""Bounded requests: bodies cut off while they stream in, capped JSON, filters and ids,
422s that do not echo what they refuse, a pixel budget for uploads, and uploads decoded
in their own pool (docs/http.md#limits)."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.api.live import live_server
from tests.conftest import photo, png_with_huge_header
from xmodal.api import create_app
from xmodal.api.settings import Settings
from xmodal.search.media import images as image_decoding
from xmodal.search.store import item_id_for

BOUNDARY = "xmodal-test-boundary"


def call_asgi(app: Any, path: str, chunks: list[bytes], headers: dict[str, str]) -> dict:
    """POST `chunks` to `app` through plain ASGI; returns the status, the JSON body and
    how many body bytes the app pulled (what the server would have had to receive)."""
    pending = list(chunks)
    pulled = 0

    async def receive() -> dict:
        nonlocal pulled
        if pending:
            chunk = pending.pop(0)
            pulled += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        return {"type": "http.disconnect"}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        # The Host the tests' servers answer to (security.allowed_hosts in conftest.py).
        "headers": [
            (k.lower().encode(), v.encode()) for k, v in {"host": "testserver", **headers}.items()
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return {"status": sent[0]["status"], "json": json.loads(body), "pulled": pulled}


@pytest.fixture
def app(settings, engine, indexed):
    with TestClient(create_app(settings, engine)) as client:  # runs the lifespan
        yield client.app


def test_a_declared_oversize_body_is_refused_before_any_of_it_is_read(app, settings):
    limit = settings.server.max_json_bytes
    too_big = {"content-type": "application/json", "content-length": str(limit + 1)}
    answer = call_asgi(app, "/search", [b"x" * 1024] * 10, too_big)
    assert answer["status"] == 413 and answer["pulled"] == 0
    assert "server.max_json_bytes" in answer["json"]["detail"]
    upload = {
        "content-type": f"multipart/form-data; boundary={BOUNDARY}",
        "content-length": str(200 * 1024 * 1024),
    }
    answer = call_asgi(app, "/search/image", [b"x" * 65536] * 10, upload)
    assert answer["status"] == 413 and answer["pulled"] == 0
    assert "server.max_upload_bytes" in answer["json"]["detail"]


def test_an_undeclared_body_is_cut_off_as_soon_as_it_passes_the_limit(app, settings):
    chunk = 64 * 1024
    # JSON: the limit is server.max_json_bytes.
    text = b'{"text": "' + b"x" * (20 * 1024 * 1024) + b'"}'
    chunks = [text[i : i + chunk] for i in range(0, len(text), chunk)]
    answer = call_asgi(app, "/search", chunks, {"content-type": "application/json"})
    assert answer["status"] == 413
    assert answer["pulled"] <= settings.server.max_json_bytes + chunk
    # An upload of 200 MiB, chunked: cut off after about server.max_upload_bytes.
    head = (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=file; filename=q.jpg\r\n"
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    chunks = [head] + [b"\xff" * chunk] * (200 * 16)
    upload = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    answer = call_asgi(app, "/search/image", chunks, upload)
    assert answer["status"] == 413 and "server.max_upload_bytes" in answer["json"]["detail"]
    server = settings.server
    assert answer["pulled"] <= server.max_upload_bytes + server.max_json_bytes + 2 * chunk


def test_an_upload_takes_one_file(client, indexed):
    query = indexed[0].read_bytes()
    response = client.post(
        "/search/image", files=[("file", ("a.jpg", query)), ("file", ("b.jpg", query))]
    )
    assert response.status_code == 400 and "file" in response.json()["detail"].lower()
    assert client.post("/search/image", files=[("file", ("a.jpg", query))]).status_code == 200


def test_long_ids_and_texts_are_refused_without_being_echoed(client, settings):
    limits = settings.query
    huge = "x" * (20 * 1024 * 1024)
    for body in ({"item_id": huge}, {"text": huge}):
        response = client.post("/search", json=body)
        assert response.status_code == 413 and len(response.content) < 1000
    under_body_limit = "y" * 100_000
    for body in (
        {"item_id": under_body_limit},
        {"text": under_body_limit},
        {"item_id": "z" * (limits.max_id_chars + 1)},
        {"text": "a", "kinds": ["image", under_body_limit]},
        {"text": "a", "rerank": {under_body_limit: 1}},
    ):
        response = client.post("/search", json=body)
        assert response.status_code == 422, response.text[:200]
        assert len(response.content) < 2000, response.text[:200]
        assert "y" * 200 not in response.text  # an input is cut to 100 characters
    response = client.post("/explain", json={"text": "a", "item_id": under_body_limit})
    assert response.status_code == 422 and len(response.content) < 2000
    # An unknown id at the limit is a 404 whose message stays short.
    response = client.post("/search", json={"item_id": "w" * limits.max_id_chars})
    assert response.status_code == 404 and len(response.content) < 400
    many = client.post("/search", json={"text": "a", "kinds": ["nope"] * 5000})
    assert many.status_code == 422 and len(many.content) < 20_000


def deep_or(levels: int) -> dict:
    spec: dict = {"colour": "red"}
    for _ in range(levels):
        spec = {"$or": [spec]}
    return spec


@pytest.mark.parametrize(
    "bad_filter",
    [
        {"width": {"$gt": [1, 2]}},
        {"width": {"$gt": {"a": 1}}},
        {"width": {"$gte": None}},
        {"colour": {"$eq": {"a": [1]}}},
        {"colour": {"$in": [[1], {"a": 2}]}},
        {"colour": {"$exists": "yes"}},
        {"colour": {"$ne": [1, 2]}},
        {"$or": []},
        {"$or": [{"colour": {"$gt": True}}]},
        {"$not": {"colour": {"$not": 3}}},
        {"$nor": [{"colour": "red"}]},
        {"$or": [{"a": i} for i in range(5000)]},
        deep_or(200),
        {"": 1},
        {"k" * 1000: 1},
        {"colour": {"$bad" + "x" * 10_000: 1}},
    ],
)
def test_malformed_filters_are_400s(client, bad_filter):
    response = client.post("/search", json={"text": "a photo", "filter": bad_filter})
    assert response.status_code == 400, response.text[:300]
    assert len(response.content) < 1000


def test_filters_over_their_caps_are_refused_before_evaluation(client, settings, monkeypatch):
    from xmodal.search import filters

    evaluated: list[str] = []
    real = filters._evaluate
    monkeypatch.setattr(
        filters,
        "_evaluate",
        lambda column, cond, key: evaluated.append(key) or real(column, cond, key),
    )
    limits = settings.query
    many_keys = {f"key{i}": i for i in range(limits.max_filter_conditions + 1)}
    many_values = {"colour": {"$in": [f"v{i}" for i in range(limits.max_filter_values + 1)]}}
    for spec, setting in (
        (many_keys, "query.max_filter_conditions"),
        (many_values, "query.max_filter_values"),
    ):
        response = client.post("/search", json={"text": "a photo", "filter": spec})
        assert response.status_code == 400 and setting in response.json()["detail"]
    assert evaluated == []
    # 300,000 keys do not fit in a JSON body at all.
    huge = {f"k{i}": i for i in range(300_000)}
    assert client.post("/search", json={"text": "a", "filter": huge}).status_code == 413
    # At the caps, a filter is answered.
    at_cap = {"colour": {"$in": ["red"] + [f"v{i}" for i in range(limits.max_filter_values - 1)]}}
    response = client.post("/search", json={"text": "a photo", "filter": at_cap})
    assert response.status_code == 200 and response.json()["hits"]


def test_deeply_nested_filters_are_refused(client, indexed):
    deep = "[" * 100_000 + "]" * 100_000
    response = client.post(
        "/search/image", files={"file": ("q.jpg", indexed[0].read_bytes())}, data={"filter": deep}
    )
    # The form field is bounded by the JSON body limit; under it, a depth error.
    assert response.status_code in (400, 413), response.text[:300]
    shallower = '{"a": ' * 5_000 + "1" + "}" * 5_000
    response = client.post(
        "/search/image",
        files={"file": ("q.jpg", indexed[0].read_bytes())},
        data={"filter": shallower},
    )
    assert response.status_code == 400 and "filter" in response.json()["detail"]
    body = '{"text": "a", "filter": ' + '{"a": ' * 5_000 + "1" + "}" * 5_000 + "}"
    response = client.post("/search", content=body, headers={"content-type": "application/json"})
    assert response.status_code in (400, 422) and len(response.content) < 2000


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_min_score_must_be_a_finite_number(client, value):
    body = '{"text": "a photo", "min_score": ' + value + "}"
    response = client.post("/search", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_an_upload_over_the_pixel_budget_is_refused_before_decoding(client, monkeypatch):
    decoded: list[tuple[int, int]] = []
    real_load = Image.Image.load

    def counting_load(image: Image.Image) -> Any:
        decoded.append(image.size)
        return real_load(image)

    # 11000 x 11000 is under images.max_pixels (128 MP) but over the decoding budget.
    big = png_with_huge_header(11_000, 11_000)
    monkeypatch.setattr(Image.Image, "load", counting_load)
    response = client.post("/search/image", files={"file": ("big.png", big)})
    assert response.status_code == 413, response.text
    assert "images.max_decoded_pixels" in response.json()["detail"]
    assert (11_000, 11_000) not in decoded


def jpeg(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    photo(5, size).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def test_a_large_jpeg_is_decoded_at_a_reduced_size(engine, indexed, monkeypatch):
    # 2000 x 1600 = 3.2 MP, over a budget of 1 MP: JPEG decodes at 1/8 scale (250 x 200);
    # PNG cannot decode smaller, so the same picture as a PNG is refused.
    from xmodal.search.media import ImageLimits

    monkeypatch.setattr(engine, "limits", ImageLimits(max_decoded_pixels=1_000_000))
    settings = Settings(data=engine.store.path)
    with TestClient(create_app(settings, engine)) as client:
        response = client.post("/search/image", files={"file": ("big.jpg", jpeg((2000, 1600)))})
        assert response.status_code == 200, response.text
        png = io.BytesIO()
        photo(5, (2000, 1600)).save(png, "PNG", compress_level=1)
        response = client.post("/search/image", files={"file": ("big.png", png.getvalue())})
        assert response.status_code == 413, response.text
        assert "images.max_decoded_pixels" in response.json()["detail"]


@pytest.fixture
def blocked_decoder(monkeypatch) -> Iterator[tuple[threading.Event, list[int]]]:
    """Image decoding that waits for an event, as slow uploads would; yields the event and
    [decodes running now, most at once]."""
    release = threading.Event()
    running = [0, 0]
    lock = threading.Lock()
    real = image_decoding.decode_image

    def slow_decode(*args: Any, **kwargs: Any) -> Any:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        try:
            release.wait(120)
            return real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    from xmodal.search import engine as engine_module

    monkeypatch.setattr(engine_module, "decode_image", slow_decode)
    yield release, running
    release.set()


def wait_until(condition: Any, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def test_slow_uploads_never_starve_health_or_text_search(engine, indexed, blocked_decoder):
    release, running = blocked_decoder
    settings = Settings(data=engine.store.path, server={"threads": 4, "upload_threads": 2})
    app = create_app(settings, engine)
    query = indexed[1].read_bytes()

    def upload() -> httpx.Response:
        return httpx.post(f"{url}/search/image", files={"file": ("q.jpg", query)}, timeout=120)

    with live_server(app) as url, ThreadPoolExecutor(4) as pool:
        uploads = [pool.submit(upload) for _ in range(4)]
        # Four uploads in flight, as many as server.threads: two decoding (stuck), two
        # waiting for an upload thread. Before, they held all four threads and /health
        # waited for them.
        wait_until(lambda: running[0] == 2)
        wait_until(lambda: app.state.upload_limiter.statistics().tasks_waiting == 2)
        with httpx.Client(base_url=url, timeout=30) as other:
            assert other.get("/health").status_code == 200
            text = other.post("/search", json={"text": "a photo", "k": 2})
            assert text.status_code == 200 and len(text.json()["hits"]) == 2
        release.set()
        answers = [upload.result(timeout=120) for upload in uploads]
    assert [a.status_code for a in answers] == [200] * 4
    assert answers[0].json()["hits"][0]["id"] == item_id_for(str(indexed[1]))
    assert running[1] == 2  # never more than server.upload_threads at once
