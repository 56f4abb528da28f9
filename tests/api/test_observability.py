"""Operations: Prometheus metrics at /metrics, the access log, JSON logs, and progress
lines of indexing runs that are not on a terminal."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from xmodal.api import create_app
from xmodal.api.logs import JsonFormatter, LogSettings, configure_logging
from xmodal.api.metrics import UNMATCHED
from xmodal.api.progress_bar import LineProgress
from xmodal.api.settings import Settings
from xmodal.indexer import index_paths


def scrape(client: TestClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    """/metrics as {sample name: [(labels, value), ...]}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples, name: str, **labels: str) -> float:
    found = [v for found, v in samples.get(name, []) if labels.items() <= found.items()]
    return sum(found)


def test_metrics_count_requests_by_route_template_and_status(client, indexed):
    ids = [hit["id"] for hit in client.post("/search", json={"text": "a photo"}).json()["hits"]]
    client.post("/search", json={"item_id": ids[0], "k": 2})
    assert client.get("/items/no-such-item").status_code == 404
    assert client.get("/no/such/route").status_code == 404
    assert client.post("/search", json={"text": "x", "k": 0}).status_code == 422
    assert client.get(f"/items/{ids[1]}").status_code == 200

    samples = scrape(client)
    requests = "xmodal_http_requests_total"
    assert value(samples, requests, method="POST", route="/search", status="200") == 2
    assert value(samples, requests, method="POST", route="/search", status="422") == 1
    assert value(samples, requests, method="GET", route="/items/{item_id}", status="404") == 1
    assert value(samples, requests, method="GET", route="/items/{item_id}", status="200") == 1
    assert value(samples, requests, method="GET", route=UNMATCHED, status="404") == 1
    # No raw path ever becomes a label.
    routes = {labels["route"] for labels, _ in samples[requests]}
    assert routes == {"/search", "/items/{item_id}", UNMATCHED}
    durations = "xmodal_http_request_duration_seconds_count"
    assert value(samples, durations, method="POST", route="/search") == 3
    # Both searches that ran were split into their stages; the 422 never reached one.
    for stage in ("encode", "search", "fetch"):
        count = value(
            samples, "xmodal_search_stage_duration_seconds_count", route="/search", stage=stage
        )
        assert count == 2, stage
    assert value(samples, "xmodal_build_info") == 1


def test_histograms_move_with_each_search(client, indexed):
    before = scrape(client)
    for text in ("red", "blue", "a photo"):
        assert client.post("/search", json={"text": text}).status_code == 200
    after = scrape(client)
    name = "xmodal_search_stage_duration_seconds_count"
    moved = value(after, name, stage="encode") - value(before, name, stage="encode")
    assert moved == 3
    bucket = "xmodal_http_request_duration_seconds_bucket"
    assert value(after, bucket, route="/search", le="+Inf") == 3
    assert value(after, "xmodal_http_request_duration_seconds_sum", route="/search") > 0


def test_label_cardinality_stays_bounded_for_many_ids(settings, engine, indexed):
    # 900 requests from one address: past the per-client rate (tested in test_access.py).
    unlimited = settings.model_copy(
        update={"security": settings.security.model_copy(update={"client_rate": None})}
    )
    with TestClient(create_app(unlimited, engine)) as client:
        label_cardinality_stays_bounded(client)


def label_cardinality_stays_bounded(client: TestClient) -> None:
    for i in range(300):
        client.get(f"/items/id-{i}")
        client.get(f"/items/id-{i}/thumbnail")
        client.get(f"/unknown/{i}")
    client.request("BREW", "/search")  # a method outside HTTP's own
    samples = scrape(client)
    series = samples["xmodal_http_requests_total"]
    assert len(series) <= 6, series
    assert {labels["method"] for labels, _ in series} <= {"GET", "POST", "other"}
    assert value(samples, "xmodal_http_requests_total", route="/items/{item_id}") == 300


def test_requests_refused_before_routing_are_counted_under_their_route():
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from xmodal.api.metrics import Metrics
    from xmodal.api.observe import ObserveRequests

    app = FastAPI()

    @app.get("/things/{thing_id}")
    def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    class Gate:  # refuses everything but /things/open, as a key check would
        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http" and scope["path"] != "/things/open":
                await JSONResponse({"detail": "no key"}, status_code=401)(scope, receive, send)
                return
            await self.inner(scope, receive, send)

    metrics = Metrics()
    app.add_middleware(Gate)
    app.add_middleware(
        ObserveRequests, metrics=metrics.http, access=False, routes=app.router.routes
    )
    with TestClient(app) as client:
        assert client.get("/things/open").status_code == 200
        assert client.get("/things/secret").status_code == 401
        assert client.get("/elsewhere").status_code == 401
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    requests = "xmodal_http_requests_total"
    assert value(samples, requests, route="/things/{thing_id}", status="200") == 1
    assert value(samples, requests, route="/things/{thing_id}", status="401") == 1
    assert value(samples, requests, route=UNMATCHED, status="401") == 1


def test_index_size_and_staleness(client, engine, indexed, make_image, tmp_path):
    samples = scrape(client)
    assert value(samples, "xmodal_store_items") == 6
    # Nothing is served before the first query (`xmodal serve` warms the engine first).
    assert value(samples, "xmodal_index_kind", space="image-text", kind="none") == 1
    assert value(samples, "xmodal_index_up_to_date", space="image-text") == 0

    client.post("/search", json={"text": "a photo"})
    samples = scrape(client)
    assert value(samples, "xmodal_index_kind", space="image-text", kind="exact") == 1
    assert value(samples, "xmodal_index_vectors", space="image-text") == 6
    assert value(samples, "xmodal_index_items", space="image-text") == 6
    assert value(samples, "xmodal_index_up_to_date", space="image-text") == 1
    assert value(samples, "xmodal_index_versions_behind", space="image-text") == 0

    # The store moves on (another indexer): the served vectors are behind until a query.
    more = tmp_path / "more"
    make_image(more / "new.jpg", seed=99)
    index_paths(engine, [more])
    samples = scrape(client)
    assert value(samples, "xmodal_store_items") == 7
    assert value(samples, "xmodal_index_up_to_date", space="image-text") == 0
    assert value(samples, "xmodal_index_versions_behind", space="image-text") > 0
    assert value(samples, "xmodal_index_vectors", space="image-text") == 6

    # A query is answered from the served version and starts applying the new one in
    # the background (server.live_refresh): it serves within moments, without a query.
    client.post("/search", json={"text": "a photo"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        samples = scrape(client)
        if value(samples, "xmodal_index_up_to_date", space="image-text") == 1:
            break
        time.sleep(0.05)
    assert value(samples, "xmodal_index_up_to_date", space="image-text") == 1
    assert value(samples, "xmodal_index_vectors", space="image-text") == 7
    assert value(samples, "xmodal_index_last_refresh_timestamp_seconds", space="image-text") > 0


def test_indexer_metrics_count_files_as_they_finish_and_runs_as_they_end(
    client, engine, make_image, corrupt_files, tmp_path
):
    lib = tmp_path / "run"
    for i in range(3):
        make_image(lib / f"{i}.jpg", seed=40 + i)
    bad = corrupt_files(lib / "bad")
    indexer = client.app.state.metrics.indexer
    with indexer.run() as progress:
        report = index_paths(engine, [lib], progress=progress)
    indexer.record(report)
    samples = scrape(client)
    assert value(samples, "xmodal_indexer_files_total", result="done") == 3
    assert value(samples, "xmodal_indexer_files_total", result="failed") == len(bad)
    assert value(samples, "xmodal_indexer_items_total", outcome="indexed") == 3
    assert value(samples, "xmodal_indexer_items_total", outcome="failed") == len(bad)
    assert value(samples, "xmodal_indexer_runs_total", result="completed") == 1
    assert value(samples, "xmodal_indexer_running") == 0
    assert value(samples, "xmodal_indexer_run_duration_seconds_count") == 1

    with pytest.raises(RuntimeError), indexer.run():
        raise RuntimeError("the run broke")
    assert value(scrape(client), "xmodal_indexer_runs_total", result="error") == 1


def test_each_app_counts_its_own_requests(settings, engine, indexed):
    with (
        TestClient(create_app(settings, engine)) as first,
        TestClient(create_app(settings, engine)) as second,
    ):
        first.post("/search", json={"text": "a photo"})
        assert value(scrape(first), "xmodal_http_requests_total", route="/search") == 1
        assert value(scrape(second), "xmodal_http_requests_total", route="/search") == 0


def test_metrics_can_be_switched_off(engine, indexed):
    settings = Settings(data=engine.store.path, server={"metrics": False})
    with TestClient(create_app(settings, engine)) as client:
        assert client.get("/metrics").status_code == 404
        assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_access_log_has_one_line_per_request(client, indexed, caplog):
    with caplog.at_level(logging.INFO, logger="xmodal.access"):
        client.get("/items/some-id")
        client.post("/search", json={"text": "a photo"})
    lines = [r for r in caplog.records if r.name == "xmodal.access"]
    assert len(lines) == 2
    missing = lines[0]
    assert missing.method == "GET" and missing.path == "/items/some-id"  # type: ignore[attr-defined]
    assert missing.route == "/items/{item_id}" and missing.status == 404  # type: ignore[attr-defined]
    assert missing.client == "testclient" and missing.duration_ms >= 0  # type: ignore[attr-defined]
    assert missing.getMessage().startswith('testclient "GET /items/some-id" 404 ')
    assert lines[1].status == 200 and lines[1].getMessage().endswith(" ms")  # type: ignore[attr-defined]


def test_access_log_can_be_switched_off(engine, indexed, caplog):
    settings = Settings(data=engine.store.path, log={"access": False})
    with TestClient(create_app(settings, engine)) as client, caplog.at_level(logging.INFO):
        client.get("/health")
        assert value(scrape(client), "xmodal_http_requests_total", route="/health") == 1
    assert not [r for r in caplog.records if r.name == "xmodal.access"]


def test_json_formatter_writes_one_object_per_record():
    record = logging.LogRecord("xmodal.test", logging.WARNING, __file__, 1, "%d left", (3,), None)
    record.space = "image-text"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "warning" and entry["logger"] == "xmodal.test"
    assert entry["message"] == "3 left" and entry["space"] == "image-text"
    assert entry["time"].endswith("Z")
    try:
        raise ValueError("broken")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert "ValueError: broken" in json.loads(JsonFormatter().format(record))["exception"]


@pytest.fixture
def json_logging(restore_logging):
    """configure_logging with JSON lines; afterwards the root logger as it was."""
    return configure_logging(LogSettings(format="json"))


def test_served_over_http_every_log_line_is_json_uvicorns_too(
    settings, engine, indexed, json_logging, capsys
):
    from xmodal.api.server_link import announced_server

    urls: list[str] = []
    server = announced_server(
        create_app(settings, engine), settings.data, "127.0.0.1", 0, urls.append
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not urls and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert urls
    with urllib.request.urlopen(urls[0] + "/health", timeout=10) as response:
        assert response.status == 200
    server.should_exit = True
    thread.join(30)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(e["logger"].startswith("uvicorn") for e in entries)
    access = [e for e in entries if e["logger"] == "xmodal.access"]
    assert len(access) == 1
    assert access[0]["route"] == "/health" and access[0]["status"] == 200
    assert access[0]["client"] == "127.0.0.1" and access[0]["method"] == "GET"
    assert not [e for e in entries if e["logger"] == "uvicorn.access"]  # not twice


def test_line_progress_logs_at_each_step_and_at_the_end(caplog):
    now = [0.0]
    progress = LineProgress(every_seconds=60, every_percent=25, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="xmodal.progress"):
        progress.start(8)
        for i in range(8):
            now[0] += 1.0
            progress.advance(1, failed=1 if i == 2 else 0)
        progress.finish()
    lines = [r for r in caplog.records if r.name == "xmodal.progress"]
    assert [r.getMessage() for r in lines] == [
        "indexing 8 file(s)",
        "indexing: 2/8 files (25%), 1.0 items/s, 0 failed, ETA 6 s",
        "indexing: 4/8 files (50%), 1.0 items/s, 1 failed, ETA 4 s",
        "indexing: 6/8 files (75%), 1.0 items/s, 1 failed, ETA 2 s",
        "indexing: 8/8 files (100%), 1.0 items/s, 1 failed, ETA 0 s",
    ]
    assert lines[2].failed == 1 and lines[2].eta_seconds == 4.0  # type: ignore[attr-defined]


def test_line_progress_logs_every_n_seconds_between_steps(caplog):
    now = [0.0]
    progress = LineProgress(every_seconds=30, every_percent=50, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="xmodal.progress"):
        progress.start(100)
        for _ in range(10):
            now[0] += 10.0  # a slow run: 1 file per 10 s, far from 50%
            progress.advance()
    lines = [r.getMessage() for r in caplog.records if r.name == "xmodal.progress"]
    # Start, then after 30, 60 and 90 seconds.
    assert len(lines) == 4 and lines[1].startswith("indexing: 3/100 files (3%)")


def test_index_not_on_a_terminal_logs_progress_lines(
    make_image, corrupt_files, tiny_spec, tmp_path
):
    lib = tmp_path / "lib"
    for i in range(6):
        make_image(lib / f"{i}.jpg", seed=i)
    corrupt_files(lib / "bad")  # 6 unreadable files
    env = {
        **os.environ,
        "XMODAL_DATA": str(tmp_path / "data"),
        "XMODAL_LOG__PROGRESS_PERCENT": "25",
        "COLUMNS": "200",
    }
    done = subprocess.run(
        [sys.executable, "-m", "xmodal.api.cli", "index", str(lib), "--model", tiny_spec],
        capture_output=True,  # stderr is a pipe, as under cron or in a container
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stderr.splitlines() if "xmodal.progress" in line]
    assert progress[0].endswith("INFO xmodal.progress: indexing 12 file(s)")
    assert len(progress) == 5  # the start, then at 25, 50, 75 and 100%
    assert "indexing: 12/12 files (100%)" in progress[-1] and "6 failed" in progress[-1]
    assert all("items/s" in line and "ETA" in line for line in progress[1:])
    assert "\r" not in done.stderr and "\x1b[" not in done.stderr  # no bar, no control codes
    assert "indexed 6, updated 0, unchanged 0, removed 0, failed 6" in done.stdout  # the summary
