"""POST /admin/migrate and friends: a migration in the server's background while it
answers searches, its refusals, and who may start one."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.api.live import live_server
from xmodal.api import create_app
from xmodal.api.keys import KeyRing, Scope
from xmodal.search import create_encoder

SEARCH = {"text": "a photo", "k": 3}
MOST_SEARCHES = 2000  # however long the migration takes, the searching thread stops here


def wait_for_job(get: Any, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get("/admin/migrate").json()["job"]
        if job["state"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError("the migration did not end")


def scores(answer: dict[str, Any]) -> list[tuple[str, float]]:
    return [(hit["id"], hit["score"]) for hit in answer["hits"]]


def test_searches_answer_throughout_a_migration_then_from_the_new_model(
    settings, engine, indexed, tiny_spec
):
    # To the reference model: 128-d where the tiny one is 32-d, so that a query of one
    # model against the other's vectors would fail, not just rank differently.
    app = create_app(settings, engine)
    new_model = "xmodal-ref"
    new_identity = create_encoder(new_model, device="cpu").identity
    failures: list[str] = []
    answers: list[tuple[float, list[tuple[str, float]]]] = []  # (when asked, hits)
    migrated = threading.Event()
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        before = scores(http.post("/search", json=SEARCH).json())

        def search() -> None:
            # At least 200 searches, and on until 20 after the migration ended.
            after_end = 0
            for n in range(MOST_SEARCHES):
                asked = time.monotonic()
                answer = http.post("/search", json=SEARCH)
                if answer.status_code != 200 or len(answer.json()["hits"]) != 3:
                    failures.append(f"{answer.status_code} {answer.text[:200]}")
                else:
                    answers.append((asked, scores(answer.json())))
                after_end += migrated.is_set()
                if n >= 200 and after_end >= 20:
                    return

        searching = threading.Thread(target=search)
        searching.start()
        started = http.post("/admin/migrate", json={"model": new_model})
        assert started.status_code == 202, started.text
        assert started.json()["state"] == "running" and started.json()["space"] == "image-text"
        job = wait_for_job(http.get)
        ended = time.monotonic()
        migrated.set()
        searching.join()
        assert failures == []
        assert job["state"] == "completed" and job["switched"] and job["error"] is None
        assert job["progress"]["done"] == job["progress"]["total"] == 6
        # Searches went on during the migration and after it; once it ended, the server
        # answers with the new model (it took it up before the job said it was done).
        assert answers[0][0] < ended < answers[-1][0] and len(answers) >= 200
        assert engine.encoder.identity == new_identity
        later = [hits for when, hits in answers if when > ended]
        assert later and all(hits != before for hits in later)
        health = http.get("/health").json()
        assert health["model"] == new_model
        [migration] = health["migrations"]
        assert migration["state"] == "switched" and migration["old_model"] == tiny_spec
        state = http.get("/admin/migrate").json()
        assert state["migrations"] == health["migrations"]

        # And back.
        rolled = http.post("/admin/migrate/rollback")
        assert rolled.status_code == 202 and rolled.json()["kind"] == "rollback"
        job = wait_for_job(http.get)
        assert job["state"] == "completed" and job["model"] == tiny_spec
        assert http.get("/health").json()["model"] == tiny_spec
        assert scores(http.post("/search", json=SEARCH).json()) == before


def test_refusals(settings, engine, indexed, tiny_spec, other_tiny_spec):
    app = create_app(settings, engine)
    with TestClient(app) as client:
        unknown = client.post("/admin/migrate", json={"model": "no-such-model"})
        assert unknown.status_code == 400 and "unknown model spec" in unknown.json()["detail"]
        same = client.post("/admin/migrate", json={"model": tiny_spec})
        assert same.status_code == 409 and "already uses" in same.json()["detail"]
        nothing = client.post("/admin/migrate/rollback", json={"space": "image-text"})
        assert nothing.status_code == 409 and "nothing to roll back" in nothing.json()["detail"]
        assert client.post("/admin/migrate", json={"model": ""}).status_code == 422
        bad_space = client.post("/admin/migrate", json={"model": other_tiny_spec, "space": "x"})
        assert bad_space.status_code == 422
        assert client.get("/admin/migrate").json() == {"job": None, "migrations": []}
        # A catalog write in flight holds the migration's first commit back: meanwhile
        # a second migration is refused.
        with app.state.catalog.holding():
            first = client.post("/admin/migrate", json={"model": other_tiny_spec})
            assert first.status_code == 202
            second = client.post("/admin/migrate", json={"model": "xmodal-ref"})
            assert second.status_code == 409 and "running" in second.json()["detail"]
            assert client.get("/admin/migrate").json()["job"]["state"] == "running"
            also = client.post("/admin/migrate/rollback")
            assert also.status_code == 409
        assert wait_for_job(client.get)["state"] == "completed"


def test_the_state_answers_while_the_migration_switches(settings, engine, indexed, other_tiny_spec):
    # Asked without pause, GET /admin/migrate reads the staged space while the job's
    # switch removes it; the read follows the switch instead of answering 503.
    app = create_app(settings, engine)
    refused: list[str] = []
    with TestClient(app) as client:
        assert client.post("/admin/migrate", json={"model": other_tiny_spec}).status_code == 202
        for _ in range(5000):
            state = client.get("/admin/migrate")
            if state.status_code != 200:
                refused.append(state.text)
            elif state.json()["job"]["state"] != "running":
                break
        assert refused == []
        assert state.json()["job"]["state"] == "completed"
        assert [m["state"] for m in state.json()["migrations"]] == ["switched"]


@pytest.fixture
def secrets(settings) -> dict[str, str]:
    ring = KeyRing.of_data(settings.data)
    return {
        scope.value: ring.create(scope)[1] for scope in (Scope.ADMIN, Scope.WRITE, Scope.SEARCH)
    }


def test_only_admin_keys_may_migrate(settings, engine, indexed, other_tiny_spec, secrets):
    with TestClient(create_app(settings, engine)) as client:
        for scope in ("search", "write"):
            headers = {"Authorization": f"Bearer {secrets[scope]}"}
            for method, path in (
                ("POST", "/admin/migrate"),
                ("GET", "/admin/migrate"),
                ("POST", "/admin/migrate/rollback"),
            ):
                answer = client.request(
                    method, path, json={"model": other_tiny_spec}, headers=headers
                )
                assert answer.status_code == 403, (scope, path, answer.text)
        assert client.get("/admin/migrate").status_code == 401
        admin = {"Authorization": f"Bearer {secrets['admin']}"}
        assert client.get("/admin/migrate", headers=admin).status_code == 200
        assert client.get("/admin/migrate", headers=admin).json()["job"] is None
