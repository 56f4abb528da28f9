from __future__ import annotations

import logging
import sys

import pytest
from fastapi.testclient import TestClient

from xmodal.api import create_app
from xmodal.api.cli import main
from xmodal.api.logs import OWN_LOGGERS
from xmodal.api.settings import Settings
from xmodal.indexer import index_paths


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> str:
    """The spec of a tiny random LLaVA (training/vlm_parts.py) saved to a folder."""
    from training.vlm_parts import tiny_llava

    return f"llava:{tiny_llava(tmp_path_factory.mktemp('vlm') / 'tiny-llava')}"


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


@pytest.fixture
def restore_logging():
    """The root logger's handlers and the levels configure_logging sets, as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in OWN_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


@pytest.fixture
def xmodal(monkeypatch, capsys, tmp_path, restore_logging):
    """Run the CLI in-process; returns (exit code, stdout, stderr). Logs at warning: a
    server running in a thread beside it would log each request to the same stderr
    (tests/api/test_observability.py tests the logs)."""
    monkeypatch.setenv("XMODAL_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("XMODAL_LOG__LEVEL", "warning")

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["xmodal", *args])
        code = 0
        try:
            main()
        except SystemExit as done:
            code = int(done.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run
