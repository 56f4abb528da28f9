"""schemathesis against the running server's own OpenAPI document, all its checks: no
5xx, every answer in its documented schema, bad input refused and good input accepted.

The server is the real one (uvicorn on 127.0.0.1, a free port) over a small indexed
library (pictures, a video and a sound, tiny models, a tiny reranker); the `/items/*`
paths get the library's ids as well as generated ones. The run is bounded and
reproducible: MAX_EXAMPLES per operation, derandomized (a fixed seed).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.api.live import live_server
from tests.media import videos
from tests.media.audio import tone, write_audio
from xmodal.api import create_app
from xmodal.api.settings import Settings
from xmodal.indexer import index_paths
from xmodal.search import Engine, Store
from xmodal.search.rerank.settings import RerankSettings
from xmodal.search.store import item_id_for

# Per operation (12 operations): about a minute in all on 2 cores.
MAX_EXAMPLES = 25


@pytest.fixture
def api_schema(
    tmp_path, make_image, tiny_encoder, tiny_audio_encoder, tiny_vlm
) -> Iterator[Any]:
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
    settings_ = Settings(data=engine.store.path, rerank=rerank, server={"thumbnail_size": 32})
    with live_server(create_app(settings_, engine)) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")

        @schema.hook
        def flatmap_path_parameters(context: Any, parameters: dict[str, Any]) -> Any:
            # Half the cases name an indexed item, so that the 200 answers are checked too.
            if "item_id" not in parameters:
                return st.just(parameters)
            indexed = st.sampled_from(ids).map(lambda id_: {**parameters, "item_id": id_})
            return st.one_of(st.just(parameters), indexed)

        yield schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_its_openapi_says(case: Any) -> None:
    case.call_and_validate(timeout=60)
