"""Mutated media for the decoding fuzz pass (test_decode_fuzz.py), and the child process
that indexes them: run apart so that its peak memory is its own.

Deterministic: every mutant comes from one seeded generator, so a failure names a file
that the same seed writes again (`python -m tests.indexer.decode_fuzz write DIR`).
"""

from __future__ import annotations

import io
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from tests.media import videos
from tests.media.audio import noise_burst, place, tone, video_with_audio, write_audio

SEED = 20261202
MUTANTS_PER_SEED = 8  # per seed file; each format has two seeds


# -- seeds: small valid files of each format ------------------------------------------
def _picture(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize(size, Image.Resampling.BILINEAR)


def _image_seed(format: str, options: dict[str, object]) -> Callable[[Path, int], Path]:
    def write(path: Path, seed: int) -> Path:
        buffer = io.BytesIO()
        _picture(seed, (96, 64)).save(buffer, format, **options)  # type: ignore[arg-type]
        path.write_bytes(buffer.getvalue())
        return path

    return write


def _audio_seed(path: Path, seed: int) -> Path:
    rate = 16000
    signal = place(
        noise_burst(1.5, rate, 0.05, seed), tone(300.0 + 100 * seed, 0.5, rate), 0.5, rate
    )
    return write_audio(path, signal, rate)


def _video_seed(codec: str, container: str | None) -> Callable[[Path, int], Path]:
    def write(path: Path, seed: int) -> Path:
        red, blue = videos.solid((200, 30 + seed * 40, 30)), videos.solid((20, 40, 210))
        return videos.write_video(
            path, [(0.6, red), (0.6, blue)], fps=10, size=(64, 48), codec=codec, container=container
        )

    return write


def _video_with_sound_seed(path: Path, seed: int) -> Path:
    return video_with_audio(path, seconds=1.2, event_at=0.4, rate=16000, fps=10)


# format name -> (file suffix, seed writer)
SEEDS: dict[str, tuple[str, Callable[[Path, int], Path]]] = {
    "jpeg": (".jpg", _image_seed("JPEG", {"quality": 80})),
    "png": (".png", _image_seed("PNG", {})),
    "gif": (".gif", _image_seed("GIF", {})),
    "webp": (".webp", _image_seed("WEBP", {"quality": 70})),
    "wav": (".wav", _audio_seed),
    "flac": (".flac", _audio_seed),
    "mp3": (".mp3", _audio_seed),
    "mp4": (".mp4", _video_seed("libx264", None)),
    "mkv": (".mkv", _video_seed("mpeg4", "matroska")),
    "mp4+aac": (".m4v", _video_with_sound_seed),
}
KIND_OF = {
    **dict.fromkeys(("jpeg", "png", "gif", "webp"), "image"),
    **dict.fromkeys(("wav", "flac", "mp3"), "audio"),
    **dict.fromkeys(("mp4", "mkv", "mp4+aac"), "video"),
}


# -- mutations -------------------------------------------------------------------------
def bit_flips(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 32))):
        position = int(rng.integers(0, len(out)))
        out[position] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def truncation(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(1, len(data)))]


def header_corruption(data: bytes, rng: np.random.Generator) -> bytes:
    """Random bytes over part of the first 64 (magic numbers, sizes, dimensions)."""
    out = bytearray(data)
    start = int(rng.integers(0, min(48, len(out))))
    length = int(rng.integers(1, 17))
    out[start : start + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    return bytes(out[: len(data)])


def huge_numbers(data: bytes, rng: np.random.Generator) -> bytes:
    """0xFF runs where sizes and counts live: claimed lengths, widths, sample counts."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        start = int(rng.integers(0, max(1, min(512, len(out) - 4))))
        out[start : start + 4] = b"\xff\xff\xff\x7f"
    return bytes(out[: len(data)])


def block_shuffle(data: bytes, rng: np.random.Generator) -> bytes:
    """A block copied over another place: repeated headers, chunks out of order."""
    size = max(1, len(data) // 8)
    source = int(rng.integers(0, len(data) - size + 1))
    target = int(rng.integers(0, len(data) - size + 1))
    out = bytearray(data)
    out[target : target + size] = data[source : source + size]
    return bytes(out)


def zeroed_middle(data: bytes, rng: np.random.Generator) -> bytes:
    start = int(rng.integers(len(data) // 4, len(data) // 2 + 1))
    length = int(rng.integers(1, len(data) // 4 + 2))
    return data[:start] + bytes(min(length, len(data) - start)) + data[start + length :]


MUTATIONS = [bit_flips, truncation, header_corruption, huge_numbers, block_shuffle, zeroed_middle]


def write_corpus(folder: Path, seed: int = SEED) -> dict[str, str]:
    """Two seeds of each format, and MUTANTS_PER_SEED mutants of each; file name ->
    format name."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    formats: dict[str, str] = {}
    seeds = folder / "seeds"
    seeds.mkdir(exist_ok=True)
    for name, (suffix, write) in SEEDS.items():
        for index in range(2):
            original = write(seeds / f"{name}-{index}{suffix}", index)
            formats[original.name] = name
            data = original.read_bytes()
            for mutant in range(MUTANTS_PER_SEED):
                mutation = MUTATIONS[int(rng.integers(0, len(MUTATIONS)))]
                target = folder / f"{name}-{index}-{mutant}-{mutation.__name__}{suffix}"
                target.write_bytes(mutation(data, rng))
                formats[target.name] = name
    return formats


# -- the child: index the corpus, report outcomes, decode times and peak memory ---------
def index_corpus(folder: Path, image_model: str, audio_model: str, timeout: float) -> dict:
    import xmodal.indexer.background as background
    from xmodal.indexer import IndexOptions, index_paths
    from xmodal.indexer.decode import decode_candidate
    from xmodal.search import Engine

    decode_seconds: dict[str, float] = {}

    def timed(candidate, encoder, options):  # type: ignore[no-untyped-def]
        decoded = decode_candidate(candidate, encoder, options)
        decode_seconds[candidate.path.name] = decoded.seconds
        return decoded

    background.decode_candidate = timed  # type: ignore[assignment]
    engine = Engine.open(
        folder.parent / "data", model=image_model, device="cpu", audio_model=audio_model
    )
    # Loaded first, so that the decode times below do not include waiting for the model
    # (decoding prepares pictures for it).
    engine.encoder.load()
    assert engine.audio_encoder is not None
    engine.audio_encoder.load()
    loaded_rss = _peak_rss_mib()
    options = IndexOptions(decode_workers=2, decode_timeout=timeout)
    started = time.perf_counter()
    report = index_paths(engine, [folder], options)
    wall = time.perf_counter() - started
    rows = engine.store.items_table(["uri", "status", "error"]).to_pylist()
    return {
        "items": {Path(r["uri"]).name: [r["status"], r["error"]] for r in rows},
        "failed": {Path(p).name: reason for p, reason in report.failed},
        "skipped": {Path(p).name: reason for p, reason in report.skipped},
        "decode_seconds": decode_seconds,
        "wall_seconds": wall,
        "loaded_rss_mib": loaded_rss,  # peak once the models were loaded
        "peak_rss_mib": _peak_rss_mib(),
    }


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str]) -> None:
    if argv[0] == "write":
        write_corpus(Path(argv[1]))
        return
    folder, image_model, audio_model, timeout = argv[1:5]
    result = index_corpus(Path(folder), image_model, audio_model, float(timeout))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
