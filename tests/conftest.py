"""Shared fixtures: a tiny open_clip model with seeded weights, and generated images.

Nothing here touches the network: the model's weights are written by the tests.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY_ARCH = "xmodal-tiny"
TINY_CLAP_RATE = 16000  # lower than CLAP's 48 kHz to keep the mel features cheap
TINY_CLAP_WINDOW = 2
TINY_CLAP_DIM = 16


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Any hub lookup must fail at once instead of waiting on the network.
    # huggingface_hub reads its environment at import, so patch its constants too.
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(autouse=True)
def _testclient_host(monkeypatch: pytest.MonkeyPatch) -> None:
    # Starlette's TestClient sends `Host: testserver`, which the server's Host check
    # (api/access.py) refuses like any name it was not told about.
    monkeypatch.setenv("XMODAL_SECURITY__ALLOWED_HOSTS", '["testserver"]')


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache that the hub client (and open_clip) will look in."""
    import huggingface_hub.constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import open_clip
    import torch

    from xmodal.search.encoders.open_clip_encoder import register_builtin_configs

    register_builtin_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_ARCH)
    path = tmp_path_factory.mktemp("models") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_spec(tiny_checkpoint: Path) -> str:
    return f"open_clip:{TINY_ARCH}/{tiny_checkpoint}"


@pytest.fixture(scope="session")
def other_tiny_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A second tiny model: the same architecture (32-d) with other weights (seed 1), so
    another model identity; what a store migrates to in tests."""
    import open_clip
    import torch

    from xmodal.search.encoders.open_clip_encoder import register_builtin_configs

    register_builtin_configs()
    torch.manual_seed(1)
    model = open_clip.create_model(TINY_ARCH)
    path = tmp_path_factory.mktemp("models") / "tiny-other.pt"
    torch.save(model.state_dict(), path)
    return f"open_clip:{TINY_ARCH}/{path}"


@pytest.fixture(scope="session")
def tiny_encoder(tiny_spec: str):
    from xmodal.search import create_encoder

    encoder = create_encoder(tiny_spec, device="cpu")
    encoder.load()
    return encoder


@pytest.fixture
def engine(tmp_path: Path, tiny_encoder):
    from xmodal.search import Engine, Store

    return Engine(Store(tmp_path / "data"), tiny_encoder)


def make_tiny_clap(folder: Path, seed: int) -> Path:
    """A tiny CLAP model (16 kHz, 2 s windows, 16-d) with seeded weights, saved to `folder`."""
    import torch
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
        ClapTextConfig,
        RobertaTokenizer,
    )

    # Byte-level BPE with single characters only: enough to tokenize test prompts offline.
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["\u0120"]  # Ġ: space
    tokenizer = RobertaTokenizer(
        vocab={token: i for i, token in enumerate(special + letters)}, merges=[]
    )
    text = ClapTextConfig(
        vocab_size=len(special) + len(letters),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=66,
        projection_dim=TINY_CLAP_DIM,
    )
    # spec_size / num_mel_bins = freq_ratio 4: the mel (<= 256 frames x 16 bins) is
    # folded into a 64x64 image; 16x16 patches of 4, windows of 4, two Swin stages.
    audio = ClapAudioConfig(
        num_mel_bins=16,
        spec_size=64,
        window_size=4,
        depths=[1, 1],
        num_attention_heads=[2, 2],
        patch_embeds_hidden_size=16,
        hidden_size=32,  # patch_embeds_hidden_size * 2 ** (len(depths) - 1)
        projection_dim=TINY_CLAP_DIM,
    )
    config = ClapConfig(
        text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=TINY_CLAP_DIM
    )
    extractor = ClapFeatureExtractor(
        feature_size=16,
        sampling_rate=TINY_CLAP_RATE,
        hop_length=160,
        fft_window_size=400,
        max_length_s=TINY_CLAP_WINDOW,
        frequency_max=TINY_CLAP_RATE // 2,
        truncation="rand_trunc",
        padding="repeatpad",
    )
    torch.manual_seed(seed)
    model = ClapModel(config).eval()
    model.save_pretrained(folder)
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clap_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clap(tmp_path_factory.mktemp("clap") / "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_audio_encoder(tiny_clap_dir: Path):
    from xmodal.search.encoders import create_audio_encoder

    encoder = create_audio_encoder(f"clap:local-dir:{tiny_clap_dir}", device="cpu")
    encoder.load()
    return encoder


@pytest.fixture
def audio_engine(tmp_path: Path, tiny_encoder, tiny_audio_encoder):
    """An engine with tiny image-text and audio-text models."""
    from xmodal.search import Engine, Store

    return Engine(Store(tmp_path / "data"), tiny_encoder, audio_encoder=tiny_audio_encoder)


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray cluster on this machine for one test module: 2 CPUs, no dashboard."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        # The workers start from this environment, not from the tests' patched one.
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}},
    )
    yield ray
    ray.shutdown()


def photo(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A smooth, photo-like picture that differs visibly from one seed to the next."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.5, 4.0), rng.uniform(0.5, 4.0), rng.uniform(0, 6.28)
        wave = np.sin(x / width * fx * 6.28 + phase) * np.cos(y / height * fy * 6.28)
        channels.append(127 + 100 * wave + rng.normal(0, 8, (height, width)))
    pixels = np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(10_000))

    def make(
        path: Path | str | None = None,
        seed: int | None = None,
        size: tuple[int, int] = (160, 120),
        format: str = "JPEG",
    ) -> Path:
        seed = next(counter) if seed is None else seed
        target = Path(path) if path is not None else tmp_path / "lib" / f"img{seed}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        photo(seed, size).save(target, format)
        return target

    return make


def png_with_bad_crc() -> bytes:
    buffer = io.BytesIO()
    photo(99).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    at = data.find(b"IDAT")
    (length,) = struct.unpack(">I", data[at - 4 : at])
    data[at + 4 + length] ^= 0xFF  # first byte of the IDAT CRC
    return bytes(data)


def png_with_huge_header(width: int = 100_000, height: int = 100_000) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    photo(98, (320, 240)).save(buffer, "JPEG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


@pytest.fixture
def corrupt_files(tmp_path: Path) -> Callable[[Path], dict[str, Path]]:
    """Write one file of each kind of bad input into a folder; returns name -> path."""

    def write(folder: Path) -> dict[str, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        files = {
            "zero_bytes": folder / "zero.jpg",
            "truncated_jpeg": folder / "truncated.jpg",
            "text_as_jpeg": folder / "text.jpg",
            "bad_crc_png": folder / "badcrc.png",
            "one_pixel": folder / "pixel.png",
            "huge_header": folder / "huge.png",
        }
        files["zero_bytes"].write_bytes(b"")
        files["truncated_jpeg"].write_bytes(truncated_jpeg())
        files["text_as_jpeg"].write_text("this is not a picture\n" * 20)
        files["bad_crc_png"].write_bytes(png_with_bad_crc())
        Image.new("RGB", (1, 1), (255, 0, 0)).save(files["one_pixel"])
        files["huge_header"].write_bytes(png_with_huge_header())
        return files

    return write
