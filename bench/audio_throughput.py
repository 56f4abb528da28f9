"""Audio decode + embed throughput: how many seconds of sound xmodal indexes per second.

    .venv/bin/python bench/audio_throughput.py                 # 12 files x 60 s, both models
    .venv/bin/python bench/audio_throughput.py --files 4 --seconds 30 --models ref

What it does:
  1. writes a library of MP3 files (44.1 kHz stereo: every window is decoded, mixed
     down and resampled, as for a user's music or podcasts) from `xmodal.synthetic.sounds`
     clips laid end to end, with the writers of tests/media/audio.py; cached under
     bench-data/;
  2. decode only: `search.media.audio.iter_audio_windows` over every file, at the model's
     rate and window (the floor the pipeline cannot beat);
  3. the baseline: the same windows encoded one forward pass per window;
  4. xmodal: `indexer.audio_encode.AudioEncoder`, the indexer's path (windows decoded
     in a background thread a few windows ahead, batches of `--batch-size` windows
     across files);
  5. end to end: `index_paths` of the folder into a fresh store (decode, embed, write);
  for each model:
    - "ref": the project's `xmodal-ref-audio` (16 kHz, 5 s windows);
    - "clap": the architecture of laion/clap-htsat-unfused (transformers' ClapConfig
      defaults: HTSAT audio tower, RoBERTa-base text tower, 48 kHz, 10 s windows) with
      random weights, built offline: its speed is the real model's, its vectors are not.

Prints seconds of audio per wall second (× real time) and the real-time factor
(processing time / audio time), with other processes' CPU use per phase.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import CpuMeter, fresh_dir, parse_args  # noqa: E402  (bench/ is the script folder)

BENCH_DATA = REPO / "bench-data"
FILE_RATE = 44100


def write_library(folder: Path, files: int, seconds: float, seed: int) -> list[Path]:
    from tests.media.audio import write_audio
    from xmodal.synthetic import sounds

    marker = folder / f".complete-{files}-{seconds}-{seed}"
    paths = [folder / f"sound-{i:03d}.mp3" for i in range(files)]
    if marker.exists():
        return paths
    fresh_dir(folder)
    clips_per_file = int(np.ceil(seconds / 5.0))
    clips = sounds.generate(files * clips_per_file, seed, "train", FILE_RATE, 5.0)
    for path in paths:
        mono = np.concatenate([next(clips).samples for _ in range(clips_per_file)])
        mono = mono[: round(seconds * FILE_RATE)]
        write_audio(path, np.stack([mono, 0.8 * mono]), FILE_RATE)
    marker.touch()
    return paths


def clap_sized_model(folder: Path) -> str:
    """laion/clap-htsat-unfused's architecture with random weights, saved offline."""
    import torch
    from transformers import (
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
        RobertaTokenizer,
    )

    if not (folder / "config.json").exists():
        special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["\u0120"]
        tokenizer = RobertaTokenizer(
            vocab={t: i for i, t in enumerate(special + letters)}, merges=[]
        )
        torch.manual_seed(0)
        ClapModel(ClapConfig()).eval().save_pretrained(folder)
        ClapProcessor(
            feature_extractor=ClapFeatureExtractor(), tokenizer=tokenizer
        ).save_pretrained(folder)
    return f"clap:local-dir:{folder}"


def report(name: str, audio_seconds: float, meter: dict[str, float], extra: str = "") -> None:
    wall = meter["wall"]
    print(
        f"  {name:<34} {audio_seconds / wall:8.1f}x real time   RTF {wall / audio_seconds:.4f}"
        f"   wall {wall:6.1f} s   other processes {100 * meter['foreign_share']:.0f}%"
        + (f"   {extra}" if extra else ""),
        flush=True,
    )


def bench_model(spec: str, paths: list[Path], batch_size: int, end_to_end: bool) -> None:
    from xmodal.indexer import IndexOptions, index_paths
    from xmodal.indexer.audio_encode import AudioEncoder
    from xmodal.search import Engine, Store
    from xmodal.search.encoders import create_audio_encoder, create_encoder
    from xmodal.search.media import AudioOptions, iter_audio_windows

    encoder = create_audio_encoder(spec, device="cpu")
    meter = CpuMeter()
    encoder.load()
    print(
        f"{spec}: loaded in {meter.stop()['wall']:.1f} s; {encoder.sample_rate} Hz, "
        f"{encoder.window_seconds:g} s windows, {encoder.dim}-d",
        flush=True,
    )
    options = AudioOptions(
        sample_rate=encoder.sample_rate,
        window_seconds=encoder.window_seconds,
        hop_seconds=encoder.window_seconds,
    )

    meter = CpuMeter()
    windows = [w for path in paths for w in iter_audio_windows(path, options)]
    decoded = meter.stop()
    audio_seconds = sum(w.end - w.start for w in windows)
    report("decode only", audio_seconds, decoded, f"{len(windows)} windows")

    encoder.encode_audio([windows[0].samples], options.sample_rate)  # warm-up
    meter = CpuMeter()
    for window in windows:
        encoder.encode_audio([window.samples], options.sample_rate)
    report("baseline: embed one window a pass", audio_seconds, meter.stop(), "(decode excluded)")
    del windows

    streaming = AudioEncoder(encoder, options, batch_size)
    meter = CpuMeter()
    results = streaming.encode_files(paths)
    measured = meter.stop()
    assert not any(r.error for r in results), [r.error for r in results]
    stats = streaming.stats
    report(
        f"xmodal: decode + embed (batch {batch_size})",
        audio_seconds,
        measured,
        f"decode {stats.decode_seconds:.1f} s, embed {stats.encode_seconds:.1f} s",
    )

    if end_to_end:
        with tempfile.TemporaryDirectory(prefix="xmodal-bench-") as scratch:
            image_encoder = create_encoder("xmodal-ref", device="cpu")  # not loaded: no pictures
            engine = Engine(Store(scratch), image_encoder, audio_encoder=encoder)
            meter = CpuMeter()
            result = index_paths(engine, [paths[0].parent], IndexOptions(batch_size=batch_size))
            measured = meter.stop()
            assert not result.failed, result.failed
            report(
                "end to end: index_paths", audio_seconds, measured, f"{result.segments} segments"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", nargs="+", default=["ref", "clap"], choices=["ref", "clap"])
    args = parse_args(parser, argv, files=2, seconds=10.0, models=["ref"])

    import torch

    library = BENCH_DATA / "audio-library"
    meter = CpuMeter()
    paths = write_library(library, args.files, args.seconds, args.seed)
    print(
        f"library: {len(paths)} MP3 files x {args.seconds:g} s ({FILE_RATE} Hz stereo), "
        f"ready in {meter.stop()['wall']:.1f} s; torch threads {torch.get_num_threads()}",
        flush=True,
    )
    for name in args.models:
        if name == "ref":
            bench_model("xmodal-ref-audio", paths, args.batch_size, end_to_end=True)
        else:
            spec = clap_sized_model(BENCH_DATA / "clap-htsat-unfused-random")
            bench_model(spec, paths, args.batch_size, end_to_end=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
