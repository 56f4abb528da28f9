from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from xmodal.api import create_app
from xmodal.api.settings import Settings
from xmodal.indexer import index_paths


@pytest.fixture
def indexed(engine, make_image, tmp_path):
    lib = tmp_path / "lib"
    paths = [make_image(lib / f"{i}.jpg", seed=i, size=(320, 240)) for i in range(6)]
    metadata = {
        str(p): {"colour": "red" if i < 3 else "blue", "price": 10 * i} for i, p in enumerate(paths)
    }
    index_paths(engine, [lib], metadata=metadata)
    return paths


@pytest.fixture
def settings(tmp_path, engine):
    return Settings(
        data=engine.store.path, server={"max_upload_bytes": 200_000, "thumbnail_size": 64}
    )


@pytest.fixture
def client(settings, engine, indexed):
    with TestClient(create_app(settings, engine)) as test_client:
        yield test_client
