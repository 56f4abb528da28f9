"""The CLAP audio-text encoder, on a tiny CLAP model with seeded weights saved locally."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_CLAP_DIM as DIM
from tests.conftest import TINY_CLAP_RATE as SAMPLE_RATE
from tests.conftest import TINY_CLAP_WINDOW as WINDOW_SECONDS
from tests.conftest import make_tiny_clap
from xmodal.search.encoders.base import AUDIO_TEXT
from xmodal.search.encoders.clap_encoder import ClapEncoder, ClapSpec
from xmodal.search.errors import ModelLoadError, ModelSpecError


@pytest.fixture(scope="module")
def clap(tiny_clap_dir: Path) -> ClapEncoder:
    encoder = ClapEncoder(f"local-dir:{tiny_clap_dir}", device="cpu")
    encoder.load()
    return encoder


def tone(seed: int, seconds: float = WINDOW_SECONDS) -> np.ndarray:
    """A few sine partials plus noise; differs audibly from one seed to the next."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE), dtype=np.float32) / SAMPLE_RATE
    signal = sum(
        rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) for _ in range(3)
    )
    return (signal + rng.normal(0, 0.01, t.shape)).astype(np.float32)


def assert_unit_rows(vectors: np.ndarray, n: int) -> None:
    assert vectors.shape == (n, DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# -- specs -------------------------------------------------------------------
def test_spec_parsing(tiny_clap_dir: Path) -> None:
    assert ClapSpec.parse("laion/clap-htsat-unfused") == ClapSpec(hub_id="laion/clap-htsat-unfused")
    assert ClapSpec.parse("clap:laion/clap-htsat-fused@abc123") == ClapSpec(
        hub_id="laion/clap-htsat-fused", revision="abc123"
    )
    assert ClapSpec.parse(f"local-dir:{tiny_clap_dir}").local_dir == tiny_clap_dir
    assert ClapSpec.parse(str(tiny_clap_dir)).local_dir == tiny_clap_dir
    assert ClapSpec.parse("/no/such/folder").local_dir == Path("/no/such/folder")
    for bad in ["", "clap:", "htsat", "a/b/c", "org/na me", "org/name@", "local-dir:"]:
        with pytest.raises(ModelSpecError):
            ClapSpec.parse(bad)


def test_encoder_basics(tiny_clap_dir: Path) -> None:
    encoder = ClapEncoder(str(tiny_clap_dir))
    assert encoder.space == AUDIO_TEXT
    assert encoder.spec == f"clap:{tiny_clap_dir}"
    assert encoder.named("xmodal-audio").spec == "xmodal-audio"
    assert ClapEncoder("clap:laion/clap-htsat-unfused").spec == "clap:laion/clap-htsat-unfused"


# -- identity and dim without loading ----------------------------------------
def test_identity_and_dim_do_not_load(tiny_clap_dir: Path, tmp_path: Path) -> None:
    first = ClapEncoder(f"local-dir:{tiny_clap_dir}")
    assert first.identity.startswith("clap:sha256:")
    assert first.dim == DIM
    assert first._model is None and first._processor is None

    copy = shutil.copytree(tiny_clap_dir, tmp_path / "copy")
    assert ClapEncoder(str(copy)).identity == first.identity  # by content, not by path

    make_tiny_clap(tmp_path / "other", seed=1)
    assert ClapEncoder(str(tmp_path / "other")).identity != first.identity

    hub = ClapEncoder("laion/clap-htsat-unfused")
    assert hub.identity == "hf:laion/clap-htsat-unfused@main"
    assert ClapEncoder("laion/clap-htsat-unfused@v2").identity == "hf:laion/clap-htsat-unfused@v2"
    assert hub._model is None


def test_missing_folder_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        ClapEncoder(f"local-dir:{tmp_path / 'absent'}").identity  # noqa: B018
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        ClapEncoder(f"local-dir:{tmp_path / 'empty'}").load()


def test_offline_hub_id_without_cache_fails_fast(hf_cache: Path) -> None:
    encoder = ClapEncoder("laion/clap-htsat-unfused")
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as caught:
        encoder.load()
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "not in the local Hugging Face cache" in message
    assert "local-dir:" in message and "HF_HOME" in message


# -- encoding ----------------------------------------------------------------
def test_rate_and_window(clap: ClapEncoder) -> None:
    assert clap.sample_rate == SAMPLE_RATE
    assert clap.window_seconds == WINDOW_SECONDS


def test_audio_vectors(clap: ClapEncoder) -> None:
    clips = [tone(1), tone(2), tone(3, seconds=0.5), tone(4, seconds=5.0)]
    batched = clap.encode_audio(clips, sample_rate=SAMPLE_RATE)
    assert_unit_rows(batched, 4)
    one_by_one = np.concatenate([clap.encode_audio([clip]) for clip in clips])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    # Long clips are cut to the window, not cropped at random.
    np.testing.assert_array_equal(clap.encode_audio([clips[3]]), clap.encode_audio([clips[3]]))
    twice = clap.encode_audio([clips[0], clips[0]])
    np.testing.assert_array_equal(twice[0], twice[1])
    similarity = batched @ batched.T
    assert similarity[0, 1] < 1 - 1e-4 and similarity[0, 2] < 1 - 1e-4
    assert clap.encode_audio([]).shape == (0, DIM)
    assert_unit_rows(clap.encode_audio([np.zeros(0, dtype=np.float32)]), 1)


def test_wrong_sample_rate_is_refused(clap: ClapEncoder) -> None:
    with pytest.raises(ValueError, match=str(SAMPLE_RATE)):
        clap.encode_audio([tone(1)], sample_rate=48000)
    with pytest.raises(ValueError, match="mono"):
        clap.encode_audio([np.zeros((2, 100), dtype=np.float32)])


def test_text_vectors(clap: ClapEncoder) -> None:
    texts = ["a dog barks", "rain on a tin roof", "x"]
    batched = clap.encode_texts(texts)
    assert_unit_rows(batched, 3)
    one_by_one = np.concatenate([clap.encode_texts([text]) for text in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert float(batched[0] @ batched[1]) < 1 - 1e-4
    assert clap.encode_texts([]).shape == (0, DIM)
    assert_unit_rows(clap.encode_texts(["very long " * 100]), 1)  # truncated, not an error
