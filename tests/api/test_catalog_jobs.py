"""Catalog jobs: large batches and manifests in the background, resumed after a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.api.test_catalog_api import b64, jpeg
from tests.media_server import MediaServer, serving
from xmodal.api import create_app
from xmodal.api.settings import Settings


@pytest.fixture
def media() -> Iterator[MediaServer]:
    with serving(MediaServer()) as httpd:
        yield httpd  # type: ignore[misc]


def settings_for(engine, **catalog) -> Settings:
    return Settings(
        data=engine.store.path,
        security={"client_rate": None},
        fetch={"allow_private_addresses": True},
        catalog={"inline_batch_items": 5, "chunk_items": 10, **catalog},
    )


def wait_for(client: TestClient, job_id: str) -> dict:
    for _ in range(1200):
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_a_job_stopped_mid_way_resumes_on_the_next_start(engine):
    settings = settings_for(engine)
    items = [{"id": f"R{i}", "data": b64(jpeg(200 + i)), "metadata": {"n": i}} for i in range(30)]
    first = create_app(settings, engine)
    runner, catalog = first.state.jobs, first.state.catalog
    put_chunk = catalog.put_chunk

    def then_stop(entries, indexer=None):  # the server goes down right after its first chunk
        results = put_chunk(entries, indexer)
        runner._stop.set()
        return results

    catalog.put_chunk = then_stop
    with TestClient(first) as client:
        job_id = client.post("/items/batch", json={"items": items}).json()["id"]
        runner._thread.join(30)
        job = client.get(f"/jobs/{job_id}").json()
    assert (job["state"], job["done"]) == ("running", 10)
    assert engine.store.count_items() == 10

    with TestClient(create_app(settings, engine)) as client:  # the restart
        job = wait_for(client, job_id)
        results = client.get(f"/jobs/{job_id}/results").json()
    assert job["state"] == "done" and job["resumed"] == 1
    assert job["done"] == 30 and job["counts"] == {"created": 30}
    assert [r["line"] for r in results] == list(range(1, 31))  # each once, in order
    assert engine.store.count_items() == 30


def test_a_result_line_cut_by_a_crash_is_written_again(engine):
    settings = settings_for(engine)
    app = create_app(settings, engine)
    store = app.state.jobs.store
    job = store.create("batch", [{"id": f"C{i}", "data": b64(jpeg(300 + i))} for i in range(12)])
    job.state = "running"
    store.save(job)
    folder = store.root / job.id
    (folder / "results.jsonl").write_text('{"line": 1, "id": "C0", "item_id": "x", "sta')
    with TestClient(app) as client:
        done = wait_for(client, job.id)
        results = client.get(f"/jobs/{job.id}/results").json()
    assert done["counts"] == {"created": 12} and done["done"] == 12
    assert [r["id"] for r in results] == [f"C{i}" for i in range(12)]


def test_a_manifest_job_over_http(engine, media):
    rows = ["sku,url,price"]
    for n in range(25):
        rows.append(f"{n:04d},{media.put(f'/j/{n}.jpg', jpeg(400 + n))},{n}.5")
    rows.append(f"0100,{media.url('/j/missing.jpg')},1")
    manifest = media.put("/shop.csv", ("\n".join(rows) + "\n").encode(), "text/csv")
    with TestClient(create_app(settings_for(engine), engine)) as client:
        answer = client.post("/jobs", json={"manifest": manifest, "schema": {"price": "float"}})
        assert answer.status_code == 202, answer.text
        job = wait_for(client, answer.json()["id"])
        assert job["state"] == "done", job
        assert job["counts"] == {"created": 25, "failed": 1}
        assert job["failures"] == [{"line": 27, "id": "0100", "error": "HTTP 404 Not Found"}]
        item = client.get("/items/0007").json()
        assert item["metadata"] == {"price": 7.5} and item["uri"].endswith("/j/7.jpg")
        assert [j["id"] for j in client.get("/jobs").json()] == [job["id"]]


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        ("file:///etc/passwd", "file"),
        ("/etc/passwd", ""),
        ("http://169.254.169.254/latest/user-data", "link-local"),
    ],
)
def test_manifests_a_caller_may_not_name(engine, manifest, words):
    settings = Settings(data=engine.store.path, security={"client_rate": None})
    with TestClient(create_app(settings, engine)) as client:
        answer = client.post("/jobs", json={"manifest": manifest})
    assert answer.status_code == 400, answer.text
    assert words in answer.text


def test_cancel_a_queued_job_and_a_running_one(engine):
    app = create_app(settings_for(engine), engine)
    client = TestClient(app)  # no lifespan: the runner is not started
    store, runner = app.state.jobs.store, app.state.jobs
    queued = store.create("batch", [{"id": "Q", "data": b64(jpeg(1))}])
    assert client.delete(f"/jobs/{queued.id}").json()["state"] == "cancelled"

    put_chunk = app.state.catalog.put_chunk
    running: list[str] = []

    def then_cancel(entries, indexer=None):
        results = put_chunk(entries, indexer)
        runner.cancel(running[0])
        return results

    app.state.catalog.put_chunk = then_cancel
    items = [{"id": f"K{i}", "data": b64(jpeg(500 + i))} for i in range(25)]
    running.append(client.post("/items/batch", json={"items": items}).json()["id"])
    job = wait_for(client, running[0])
    assert (job["state"], job["done"]) == ("cancelled", 10)
    assert engine.store.count_items() == 10  # what was written stays
    runner.stop()


def test_a_job_that_breaks_fails_with_why_and_the_next_one_runs(engine):
    app = create_app(settings_for(engine), engine)
    put_chunk = app.state.catalog.put_chunk
    broken = {"yes": True}

    def breaking(entries, indexer=None):
        if broken.pop("yes", False):
            raise RuntimeError("the disk went away")
        return put_chunk(entries, indexer)

    app.state.catalog.put_chunk = breaking
    with TestClient(app) as client:
        first = [{"id": f"B{i}", "data": b64(jpeg(600 + i))} for i in range(6)]
        failed = wait_for(client, client.post("/items/batch", json={"items": first}).json()["id"])
        assert failed["state"] == "failed"
        assert failed["error"] == "RuntimeError: the disk went away"
        second = [{"id": f"N{i}", "data": b64(jpeg(700 + i))} for i in range(6)]
        done = wait_for(client, client.post("/items/batch", json={"items": second}).json()["id"])
        assert done["state"] == "done" and done["counts"] == {"created": 6}
