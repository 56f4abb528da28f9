"""The encoders' common base: load-once semantics and what it shares, on a stand-in model."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest

from xmodal.search.encoders import (
    AudioTextEncoder,
    ImageTextEncoder,
    TwoTowerEncoder,
    create_audio_encoder,
    create_encoder,
)
from xmodal.search.encoders._torch_utils import autocast, looks_like_download_failure, offline_hint

WAIT_S = 10  # generous: the machine may be busy; a pass never waits this long


class SlowLoading(TwoTowerEncoder):
    """Counts its loads; each waits for `release` (set by the test) before returning."""

    space = "test"

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.loads = 0
        self.failures = failures
        self.entered = threading.Event()
        self.release = threading.Event()

    identity = property(lambda self: "test:slow")
    dim = property(lambda self: 2)

    def _load(self) -> None:
        self.loads += 1
        self.entered.set()
        assert self.release.wait(WAIT_S)
        if self.loads <= self.failures:
            raise RuntimeError("no weights today")
        with self._load_lock:  # reentrant: a helper of _load may take it again
            pass

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.load()
        return np.tile(np.float32([1.0, 0.0]), (len(texts), 1))


def test_concurrent_loads_run_load_once() -> None:
    encoder = SlowLoading()
    first = threading.Thread(target=encoder.load)
    first.start()
    assert encoder.entered.wait(WAIT_S)
    second = threading.Thread(target=encoder.load)
    second.start()
    second.join(0.2)
    assert second.is_alive()  # waiting for the first load, not starting its own
    encoder.release.set()
    first.join(WAIT_S)
    second.join(WAIT_S)
    assert not first.is_alive() and not second.is_alive()
    assert encoder.loads == 1
    encoder.load()
    encoder.encode_texts(["x"])
    assert encoder.loads == 1


def test_a_failed_load_is_tried_again() -> None:
    encoder = SlowLoading(failures=1)
    encoder.release.set()
    with pytest.raises(RuntimeError, match="no weights"):
        encoder.load()
    encoder.load()
    encoder.load()
    assert encoder.loads == 2


def test_spec_and_named_are_shared(tiny_spec) -> None:
    encoder = SlowLoading()
    assert encoder.named("builtin") is encoder and encoder.spec == "builtin"
    image = create_encoder(tiny_spec)
    assert isinstance(image, TwoTowerEncoder) and isinstance(image, ImageTextEncoder)
    assert image.spec == tiny_spec and image.named("tiny").spec == "tiny"


def test_both_towers_derive_from_the_base(tiny_clap_dir) -> None:
    audio = create_audio_encoder(f"clap:local-dir:{tiny_clap_dir}")
    assert isinstance(audio, TwoTowerEncoder) and isinstance(audio, AudioTextEncoder)
    assert audio.space == "audio-text" and ImageTextEncoder.space == "image-text"


def test_shared_helpers() -> None:
    with autocast("cpu", prefer_bf16=True):  # full precision off CUDA: a no-op context
        pass
    assert looks_like_download_failure("LocalEntryNotFoundError: offline mode is enabled")
    assert not looks_like_download_failure("size mismatch for visual.conv1.weight")
    assert offline_hint("X is missing", ["a", "b"], reachable="is it up") == (
        "X is missing and could not be downloaded (is it up?). Alternatives: a, or b."
    )
    assert offline_hint("X", ["a"], reachable="r", note="N.").endswith("N. Alternatives: a.")
