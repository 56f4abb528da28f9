"""The image model loads while files are found and decoded, and a model that cannot load
still fails the run before the store is touched."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from xmodal.indexer import index_paths
from xmodal.search import Engine, ModelLoadError, Store
from xmodal.search.encoders import IMAGE_TEXT, ImageTextEncoder
from xmodal.search.store import item_id_for

LOAD_SECONDS = 0.8


class SlowEncoder(ImageTextEncoder):
    """Embeds an image as its mean colour; loading takes LOAD_SECONDS (or fails). Its
    input size is known without loading, as open_clip's is from its config."""

    def __init__(self, fail: bool = False):
        super().__init__()  # the base's load(): one load at a time, retried after a failure
        self._spec = "test:slow"
        self.fail = fail
        self.load_done = threading.Event()
        self.loads = 0
        self.load_ended = 0.0
        self.first_decode: float | None = None  # when a decode worker first asked

    identity = property(lambda self: self._spec)
    dim = property(lambda self: 3)

    @property
    def input_size(self) -> tuple[int, int]:
        if self.first_decode is None:
            self.first_decode = time.perf_counter()
        return (16, 16)

    def _load(self) -> None:
        self.loads += 1
        time.sleep(LOAD_SECONDS)
        self.load_ended = time.perf_counter()
        if self.fail:
            raise ModelLoadError("checkpoint file not found: test")
        self.load_done.set()

    def prepare_image(self, image: Image.Image) -> np.ndarray:
        self.load()  # as open_clip's: loads on first use
        return np.asarray(image.resize((16, 16)), dtype=np.float32).mean(axis=(0, 1))

    def encode_prepared(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        assert self.load_done.is_set()
        vectors = np.stack(batch) + 1e-3
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.full((len(texts), 3), 3**-0.5, np.float32)


def test_the_model_loads_while_files_are_found_and_decoded(tmp_path, make_image):
    lib = tmp_path / "lib"
    for i in range(8):
        make_image(lib / f"{i}.jpg", seed=i)
    encoder = SlowEncoder()
    report = index_paths(Engine(Store(tmp_path / "data"), encoder), [lib])
    assert report.indexed == 8 and report.failed == []
    assert encoder.loads == 1
    assert encoder.first_decode is not None and encoder.first_decode < encoder.load_ended
    assert report.times.load >= LOAD_SECONDS and report.times.discover < LOAD_SECONDS

    # A re-run with nothing new never loads the model; one new picture loads it.
    idle = SlowEncoder()
    report = index_paths(Engine(Store(tmp_path / "data"), idle), [lib])
    assert report.unchanged == 8 and idle.loads == 0 and report.times.load < LOAD_SECONDS
    make_image(lib / "new.jpg", seed=20)
    again = SlowEncoder()
    report = index_paths(Engine(Store(tmp_path / "data"), again), [lib])
    assert report.indexed == 1 and report.unchanged == 8 and again.loads == 1
    assert report.times.load >= LOAD_SECONDS


def test_a_model_that_cannot_load_fails_the_run_before_the_store_is_touched(tmp_path, make_image):
    lib = tmp_path / "lib"
    for i in range(4):
        make_image(lib / f"{i}.jpg", seed=i)
    # A new store: no space, no root, no item afterwards.
    fresh = Store(tmp_path / "fresh")
    bad = SlowEncoder(fail=True)
    with pytest.raises(ModelLoadError, match="not found"):
        index_paths(Engine(fresh, bad), [lib])
    assert bad.loads == 1  # the decode workers did not load it again
    assert fresh.space(IMAGE_TEXT) is None and fresh.roots() == [] and fresh.count_items() == 0

    # An indexed store: nothing removed, added or rewritten.
    store = Store(tmp_path / "data")
    index_paths(Engine(store, SlowEncoder()), [lib])
    (lib / "0.jpg").unlink()
    make_image(lib / "new.jpg", seed=9)
    before = store.table_versions()
    with pytest.raises(ModelLoadError):
        index_paths(Engine(store, SlowEncoder(fail=True)), [lib])
    assert store.table_versions() == before
    assert store.item(item_id_for(str(lib / "0.jpg"))).status == "indexed"


def test_the_cli_reports_the_model_load(tmp_path, make_image, tiny_spec, monkeypatch, capsys):
    from xmodal.api.cli import main

    make_image(tmp_path / "lib" / "a.jpg", seed=1)
    make_image(tmp_path / "lib" / "b.jpg", seed=2)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("XMODAL_DATA", str(tmp_path / "data"))
    index = ["xmodal", "index", str(tmp_path / "lib"), "--model", tiny_spec]
    monkeypatch.setattr(sys, "argv", [*index, "--json"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    seconds = json.loads(capsys.readouterr().out)["seconds"]
    assert seconds["load"] > 0 and set(seconds) >= {"load", "discover", "decode", "encode"}
    (tmp_path / "lib" / "b.jpg").unlink()
    monkeypatch.setattr(sys, "argv", index)
    with pytest.raises(SystemExit):
        main()
    assert "stages: model load " in capsys.readouterr().out
