"""schemathesis against the running server's own OpenAPI document, all its checks: no
5xx, every answer in its documented schema, bad input refused and good input accepted.

The server is the real one (uvicorn on 127.0.0.1, a free port) over a small indexed
library (pictures, a video and a sound, tiny models, a tiny reranker), with keys: every
case is sent with an admin key, and schemathesis's `ignored_auth` check sends it again
without one. The `/items/*` paths get the library's ids as well as generated ones,
`/keys/{key_id}` the ids of spare keys. The run is bounded and reproducible:
MAX_EXAMPLES per operation, derandomized (a fixed seed).
"""

from __future__ import annotations

import base64
import time
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from tests.api.live import live_server
from tests.media import videos
from tests.media.audio import tone, write_audio
from xmodal.api import create_app
from xmodal.api.keys import KeyRing, Scope
from xmodal.api.settings import Settings
from xmodal.indexer import index_paths
from xmodal.indexer.catalog import CatalogEntry
from xmodal.search import Engine, Store
from xmodal.search.rerank.settings import RerankSettings
from xmodal.search.store import item_id_for

# Per operation and mode (positive and negative cases).
MAX_EXAMPLES = 25
OPERATIONS = {
    "POST /search",
    "POST /search/image",
    "POST /search/audio",
    "POST /explain",
    "GET /items/{item_id}/explain.png",
    "GET /items/{item_id}",
    "GET /items/{item_id}/thumbnail",
    "GET /items/{item_id}/media",
    "GET /facets",
    "GET /keys",
    "POST /keys",
    "DELETE /keys/{key_id}",
    "GET /health",
    "GET /metrics",
    "GET /items/{item_id}/similar",
    "PUT /items/{external_id}",
    "DELETE /items/{external_id}",
    "POST /items/batch",
    "POST /items/delete",
    "POST /jobs",
    "GET /jobs",
    "GET /jobs/{job_id}",
    "GET /jobs/{job_id}/results",
    "DELETE /jobs/{job_id}",
    "POST /admin/migrate",
    "GET /admin/migrate",
    "POST /admin/migrate/rollback",
}
SKUS = [f"sku-{n}" for n in range(4)]


# Every check, as configured here: a request the schema allows may still be refused for
# what a schema cannot state, with the statuses docs/http.md gives those reasons: 400 (a
# blank text, a filter comparing what cannot compare, rerank with item_id), 404 (an id
# that is not indexed), 413 (a picture over the pixel budget), 415 (an upload that is no
# picture or sound).
# The migration routes also answer 409 to a valid request the store's state refuses: one
# runs already, the space has that model already, nothing to roll back to.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2XX", "400", "404", "413", "415"]}
        },
        "operations": [
            {
                # A catalog write racing the migration's switch gets 409 (write again).
                "include-path-regex": "^/items",
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2XX", "400", "404", "409", "413", "415"]
                    }
                },
            },
            {
                "include-path-regex": "^/admin/migrate",
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2XX", "400", "404", "409", "413", "415"]
                    }
                },
            },
        ],
    }
)


@pytest.fixture
def api_schema(tmp_path, make_image, tiny_encoder, tiny_audio_encoder, tiny_vlm) -> Iterator[Any]:
    lib = tmp_path / "lib"
    paths = [make_image(lib / f"p{i}.jpg", seed=i, size=(160, 120)) for i in range(4)]
    paths.append(make_image(lib / "p4.png", seed=4, size=(96, 64), format="PNG"))
    red, green = videos.solid((220, 30, 30)), videos.solid((30, 180, 40))
    paths.append(
        videos.write_video(lib / "clip.mp4", [(1.0, red), (1.0, green)], fps=10, size=(96, 64))
    )
    paths.append(write_audio(lib / "tone.wav", tone(440.0, 2.0, 16000), 16000))
    rerank = RerankSettings(model=tiny_vlm, top_n=3, max_top_n=4, max_explain=2)
    engine = Engine(Store(tmp_path / "data"), tiny_encoder, tiny_audio_encoder, rerank=rerank)
    metadata = {str(p): {"colour": "red" if i % 2 else "blue", "n": i} for i, p in enumerate(paths)}
    report = index_paths(engine, [lib], metadata=metadata)
    assert not report.failed
    ids = [item_id_for(str(p)) for p in paths]
    ring = KeyRing.of_data(engine.store.path)
    admin = ring.create(Scope.ADMIN, name="schemathesis")[1]
    spare = [ring.create(Scope.SEARCH, name=f"spare {i}")[0].id for i in range(3)]
    settings_ = Settings(data=engine.store.path, rerank=rerank, server={"thumbnail_size": 32})
    app = create_app(settings_, engine)
    picture = paths[0].read_bytes()
    for sku in SKUS:  # catalog items, for the routes that name one by the caller's id
        app.state.catalog.put_chunk([CatalogEntry(sku, data=picture, metadata={"n": 1})])
    job = app.state.jobs.store.create("batch", [{"id": SKUS[0], "metadata": {"n": 2}}])
    with live_server(app) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=CONFIG)

        @schema.hook
        def flatmap_path_parameters(context: Any, parameters: dict[str, Any]) -> Any:
            # Half the positive cases name an indexed item (or key), so that the 200
            # answers are checked too; negative ones keep their invalid values.
            if schema.mode is not GenerationMode.POSITIVE:
                return st.just(parameters)
            if parameters and "key_id" in parameters:
                known = st.sampled_from(spare).map(lambda id_: {**parameters, "key_id": id_})
                return st.one_of(st.just(parameters), known)
            if parameters and "external_id" in parameters:
                known = st.sampled_from(SKUS).map(lambda id_: {**parameters, "external_id": id_})
                return st.one_of(st.just(parameters), known)
            if parameters and "job_id" in parameters:
                return st.one_of(st.just(parameters), st.just({**parameters, "job_id": job.id}))
            if not parameters or "item_id" not in parameters:
                return st.just(parameters)
            indexed = st.sampled_from(ids).map(lambda id_: {**parameters, "item_id": id_})
            return st.one_of(st.just(parameters), indexed)

        uploads = {"/search/image": paths[0].read_bytes(), "/search/audio": paths[-1].read_bytes()}

        @schema.hook
        def flatmap_body(context: Any, body: Any) -> Any:
            # Positive cases: half the uploads are real media (with no filter, which would
            # rarely be valid JSON), half of /explain's ids indexed pictures.
            path = context.operation.path
            if schema.mode is not GenerationMode.POSITIVE or not isinstance(body, dict):
                return st.just(body)
            if path in uploads:
                real = {key: v for key, v in body.items() if key != "filter"}
                return st.one_of(st.just(body), st.just({**real, "file": uploads[path]}))
            if path == "/items/{external_id}" and context.operation.method.upper() == "PUT":
                data = base64.b64encode(picture).decode("ascii")
                return st.one_of(st.just(body), st.just({"data": data, "metadata": {"n": 3}}))
            if path == "/jobs":  # a public URL (the job then fails: no network here)
                public = {**body, "manifest": "https://example.com/catalog.csv"}
                return st.one_of(st.just(body), st.just(public))
            if path == "/admin/migrate" and context.operation.method.upper() == "POST":
                # A model that exists: the server moves to it (and the next ones are 409).
                return st.one_of(st.just(body), st.just({"model": "xmodal-ref"}))
            if path == "/explain":
                pictures = st.sampled_from(ids[:5]).map(lambda id_: {**body, "item_id": id_})
                return st.one_of(st.just(body), pictures)
            return st.just(body)

        answers: list[tuple[str, int]] = []

        @schema.hook
        def after_call(context: Any, case: Any, response: Any) -> None:
            answers.append((case.operation.label, response.status_code))
            if case.operation.path.startswith("/admin/migrate") and response.status_code == 202:
                # Let the migration (or rollback) finish before the next request: what is
                # checked here is each answer, not writes racing a switch (tested in
                # tests/api/test_migrate_api.py); and the rollback needs a switched space.
                deadline = time.monotonic() + 300
                while app.state.migrations.running and time.monotonic() < deadline:
                    time.sleep(0.05)

        schema.answers = answers  # what was asked and answered, for the test to check
        schema.headers = {"Authorization": f"Bearer {admin}"}
        yield schema


def test_every_operation_answers_as_its_openapi_says(api_schema: Any) -> None:
    # schemathesis's pytest plugin does not run under pytest 9 (it reads a node's private
    # `_nodeid`), so each operation's cases are drawn with Hypothesis directly.
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.label for op in operations} == OPERATIONS
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            api_schema.mode = mode  # read by the hooks
            try:
                check_operation(operation, mode, api_schema.headers)
            except Unsatisfiable:
                # No request breaks the schema of GET /items/{item_id}: any id is a string.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as failure:  # schemathesis's are groups
                failures.append(f"{operation.label} ({mode.value}): {describe(failure)}")
    assert not failures, "\n\n".join(failures)
    answered = {label for label, status in api_schema.answers if 200 <= status < 300}
    assert {op.label for op in operations} - answered == set()  # each answered 2xx too
    print(f"{len(api_schema.answers)} requests, {len(answered)} operations answered 2xx")


def check_operation(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> None:
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,  # the same cases every run
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report, do not search
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def answers_as_documented(case: Any) -> None:
        case.call_and_validate(timeout=60, headers=headers)

    answers_as_documented()


def describe(failure: BaseException) -> str:
    """A failure with the checks it broke and how to reproduce them."""
    if isinstance(failure, BaseExceptionGroup):
        return str(failure)  # each check broken, the answer, and a curl line
    return "".join(traceback.format_exception(failure)[-8:])
