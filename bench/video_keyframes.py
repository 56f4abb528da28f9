"""Video keyframe throughput: plain PyAV decoding versus keyframe extraction and indexing.

    .venv/bin/python bench/video_keyframes.py                     # 180 s, 30 fps, 1280x720
    .venv/bin/python bench/video_keyframes.py --seconds 60 --keep

What it does:
  1. generates an H.264 clip (x264 preset veryfast, yuv420p, deterministic from --seed):
     shots of `xmodal.synthetic.shapes` scenes a few seconds long, most with camera motion and
     grain (so that frames differ and do not compress to nothing: about 3 Mbit/s in
     the moving shots at 720p, like web video), static stretches of 6-12 s (identical
     frames) and bursts of quick cuts; cached under bench-data/ (git-ignored), keyed by
     its parameters;
  2. plain decode, the baseline: every frame through `container.decode(video=0)` with
     thread_type "AUTO" and nothing else (no conversion), the faster of --decode-runs;
  3. `search.media.video.extract_keyframes` alone on the clip (decoding, sampling, shot
     detection, the keyframes' images; no encoder);
  4. the full pipeline: `index_paths` of a folder holding only the clip into a fresh
     store, `Engine.open(..., model="xmodal-ref")`, with the model loaded beforehand (its
     load time is printed apart);
  5. prints keyframes/s, video seconds per wall second, decoded frames/s where known, the
     ratio of each to plain decoding (plain decode's video-s/s = its fps / the clip's fps)
     and the pipeline's stage times.

Steps 3 and 4 need `search.media.video`; without it the script says so and stops after step 2.
Other processes' CPU use (/proc/stat, Linux) is shown per phase; above 5% the figures
are disturbed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import CpuMeter, fresh_dir, parse_args  # noqa: E402  (bench/ is the script folder)

BENCH_DATA = REPO / "bench-data"
GENERATOR_VERSION = 2  # bump when the clip's content changes, so cached clips are rebuilt


# -- the clip ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ShotPlan:
    start: float
    duration: float
    kind: str  # "moving", "static" or "cut"
    seed: int


def plan_shots(seconds: float, seed: int) -> list[ShotPlan]:
    """Moving shots of 2-6 s, a static stretch of 6-12 s every fourth shot, and now and
    then a burst of four quick cuts (0.4-1 s); the last shot ends at `seconds`."""
    rng = np.random.default_rng([seed, 7])
    plan: list[ShotPlan] = []
    t, n = 0.0, 0
    while t < seconds - 1e-9:
        if n % 9 == 7:
            kinds = [("cut", rng.uniform(0.4, 1.0)) for _ in range(4)]
        elif n % 4 == 2:
            kinds = [("static", rng.uniform(6.0, 12.0))]
        else:
            kinds = [("moving", rng.uniform(2.0, 6.0))]
        for kind, duration in kinds:
            duration = min(float(duration), seconds - t)
            if duration <= 0:
                break
            plan.append(ShotPlan(t, duration, kind, seed * 100_003 + len(plan)))
            t += duration
        n += 1
    return plan


def clip_path(seconds: float, fps: int, width: int, height: int, seed: int) -> Path:
    name = f"video-v{GENERATOR_VERSION}-{seconds:g}s-{fps}fps-{width}x{height}-s{seed}.mp4"
    return BENCH_DATA / name


def make_clip(seconds: float, fps: int, width: int, height: int, seed: int) -> Path:
    """The cached clip, generated once."""
    path = clip_path(seconds, fps, width, height, seed)
    if path.is_file():
        return path
    from tests.media.videos import moving_scene, scene_image, write_video

    BENCH_DATA.mkdir(parents=True, exist_ok=True)
    plan = plan_shots(seconds, seed)
    total_frames = round(seconds * fps)
    print(
        f"generating a {seconds:g} s {width}x{height} {fps} fps H.264 clip "
        f"({len(plan)} shots) into {path} ...",
        flush=True,
    )
    started = time.perf_counter()
    done = 0
    next_report = 0.1

    def counted(draw):
        def frame(t: float, index: int) -> np.ndarray:
            nonlocal done, next_report
            done += 1
            if done >= next_report * total_frames:
                elapsed = time.perf_counter() - started
                print(f"  {done}/{total_frames} frames, {elapsed:.0f} s", flush=True)
                next_report += 0.1
            return draw(t, index)

        return frame

    shots = []
    for shot in plan:
        if shot.kind == "static":
            fn = scene_image(seed=shot.seed)
        else:
            fn = moving_scene(seed=shot.seed, noise=7.0, travel=0.15, period=3.0 + shot.seed % 4)
        shots.append((shot.duration, counted(fn.for_size((width, height)))))
    partial = path.with_name(f".{path.stem}-{os.getpid()}.mp4")
    write_video(
        partial,
        shots,
        fps=fps,
        size=(width, height),
        codec="libx264",
        options={"preset": "veryfast", "crf": "23"},
    )
    partial.replace(path)
    print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    return path


# -- measurements ------------------------------------------------------------------------
@dataclass
class ClipInfo:
    frames: int
    duration: float
    fps: float
    width: int
    height: int
    bytes: int
    keyframes: int  # I-frames in the bitstream


def clip_info(path: Path) -> ClipInfo:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, keys = 0, 0
        for packet in container.demux(stream):
            if packet.size:
                frames += 1
                keys += bool(packet.is_keyframe)
        duration = container.duration / av.time_base if container.duration else float("nan")
        return ClipInfo(
            frames,
            duration,
            float(stream.average_rate or 0),
            stream.codec_context.width,
            stream.codec_context.height,
            path.stat().st_size,
            keys,
        )


@dataclass
class DecodeRun:
    frames: int
    cpu: dict[str, float]

    @property
    def fps(self) -> float:
        return self.frames / self.cpu["wall"]


def plain_decode(path: Path, thread_type: str = "AUTO") -> DecodeRun:
    """Every frame decoded, nothing else done with it."""
    import av

    meter = CpuMeter()
    frames = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = thread_type
        for _ in container.decode(stream):
            frames += 1
    return DecodeRun(frames, meter.stop())


def place_clip(clip: Path, folder: Path) -> Path:
    """The clip alone in a folder: a hard link where possible, else a copy."""
    target = fresh_dir(folder) / clip.name
    try:
        os.link(clip, target)
    except OSError:
        shutil.copy2(clip, target)
    return folder


# -- main --------------------------------------------------------------------------------
def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, not {text!r}") from None
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError("width and height must be positive and even")
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=180, help="clip length (default 180)")
    parser.add_argument("--fps", type=int, default=30, help="clip frame rate (default 30)")
    parser.add_argument(
        "--size", type=parse_size, default=(1280, 720), help="WIDTHxHEIGHT (default 1280x720)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the clip's content")
    parser.add_argument(
        "--data-dir", type=Path, help="where the store goes (default: a temporary dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the store after the run")
    parser.add_argument(
        "--decode-runs", type=int, default=2, help="plain-decode runs; the faster counts"
    )
    parser.add_argument("--model", default="xmodal-ref", help="model spec (default xmodal-ref)")
    args = parse_args(parser, argv, seconds=10.0, size=(320, 180), decode_runs=1)
    width, height = args.size

    import av

    clip = make_clip(args.seconds, args.fps, width, height, args.seed)
    info = clip_info(clip)
    print(
        f"clip   : {clip.name}: {info.duration:.1f} s, {info.frames} frames at {info.fps:g} fps, "
        f"{info.width}x{info.height}, {info.bytes / 1e6:.1f} MB "
        f"({8 * info.bytes / info.duration / 1e6:.2f} Mbit/s), {info.keyframes} I-frames, "
        f"{len(plan_shots(args.seconds, args.seed))} shots"
    )
    print(f"machine: {os.cpu_count()} cpus; PyAV {av.__version__}")

    # 1. plain decoding
    print("plain decode ...", flush=True)
    decodes = [plain_decode(clip) for _ in range(max(1, args.decode_runs))]
    best = max(decodes, key=lambda r: r.fps)
    if best.frames != info.frames:
        print(f"WARNING: decoded {best.frames} frames, the clip has {info.frames} packets")
    decode_video_rate = best.fps / info.fps  # video seconds per wall second

    # 2. keyframe extraction alone, and 3. the pipeline: only with search.media.video
    try:
        from xmodal.search.media.video import KeyframeSettings, VideoSettings, extract_keyframes
    except ImportError as error:
        print_decode(decodes, info)
        print()
        print(
            f"search.media.video is not available ({error}); skipping keyframe extraction and "
            "the pipeline. The plain-decode baseline above stands alone."
        )
        return 0

    print("extract_keyframes ...", flush=True)
    meter = CpuMeter()
    extracted = extract_keyframes(clip, KeyframeSettings(), VideoSettings())
    extract_cpu = meter.stop()

    created_tmp = args.data_dir is None
    data_dir = (
        Path(tempfile.mkdtemp(prefix="xmodal-video-bench-")) if created_tmp else args.data_dir
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        from xmodal.indexer import index_paths
        from xmodal.search import IMAGE_TEXT, Engine

        folder = place_clip(clip, data_dir / "library")
        # Pictures only: the clip's sound would need an audio model (CLAP, downloaded).
        engine = Engine.open(fresh_dir(data_dir / "store"), model=args.model, audio_model="none")
        started = time.perf_counter()
        engine.encoder.load()
        load_seconds = time.perf_counter() - started
        print(f"model {args.model} loaded in {load_seconds:.1f} s; index_paths ...", flush=True)
        meter = CpuMeter()
        report = index_paths(engine, [folder])
        index_cpu = meter.stop()
        segments = engine.store.segments_table(IMAGE_TEXT)
    finally:
        if not args.keep:
            if created_tmp:
                shutil.rmtree(data_dir, ignore_errors=True)
            else:
                for sub in ("library", "store"):
                    shutil.rmtree(data_dir / sub, ignore_errors=True)

    print_decode(decodes, info)
    print_extract(extracted, extract_cpu, info, decode_video_rate)
    print_pipeline(report, index_cpu, segments, info, decode_video_rate)
    worst = max(
        [r.cpu["foreign_share"] for r in decodes]
        + [extract_cpu["foreign_share"], index_cpu["foreign_share"]]
    )
    if worst > 0.05:
        print(
            f"WARNING: other processes used up to {worst:.0%} of the machine's CPU during a "
            "phase; the figures are disturbed. Re-run on an idle machine."
        )
    if args.keep:
        print(f"store kept in {data_dir}")
    return 1 if report.failed else 0


LINE = "=" * 86


def print_decode(decodes: list[DecodeRun], info: ClipInfo) -> None:
    print()
    print(LINE)
    print('plain decode: container.decode(video=0), thread_type "AUTO", no conversion')
    print(
        f"  {'':<10}{'frames':>8}{'wall s':>9}{'frames/s':>10}{'video s/s':>11}{'other procs':>13}"
    )
    for i, r in enumerate(decodes):
        print(
            f"  {f'run {i + 1}':<10}{r.frames:8d}{r.cpu['wall']:9.2f}{r.fps:10.1f}"
            f"{r.fps / info.fps:11.2f}{r.cpu['foreign_share']:13.0%}"
        )
    best = max(decodes, key=lambda r: r.fps)
    print(
        f"  baseline (the faster): {best.fps:.1f} frames/s = {best.fps / info.fps:.2f} video s "
        f"per wall s; CPU {best.cpu['own'] / best.cpu['wall']:.2f} of {os.cpu_count()} cores"
    )


def print_extract(extracted, cpu: dict[str, float], info: ClipInfo, decode_rate: float) -> None:
    wall = cpu["wall"]
    keyframes = extracted.keyframes
    video_rate = extracted.duration / wall
    print()
    print("extract_keyframes alone (default KeyframeSettings, draft side 224)")
    print(
        f"  {len(keyframes)} keyframes from {extracted.frames_decoded} decoded frames "
        f"(of {info.frames}) in {wall:.2f} s: {len(keyframes) / wall:.1f} keyframes/s, "
        f"{extracted.frames_decoded / wall:.1f} decoded frames/s, "
        f"{info.frames / wall:.1f} clip frames/s"
    )
    print(
        f"  {video_rate:.2f} video s per wall s = {video_rate / decode_rate:.3f} x plain decode; "
        f"CPU {cpu['own'] / wall:.2f} of {os.cpu_count()} cores; "
        f"other procs {cpu['foreign_share']:.0%}"
    )
    if keyframes:
        times = [k.time for k in keyframes]
        gaps = np.diff(times) if len(times) > 1 else np.array([0.0])
        print(
            f"  keyframe gaps: min {gaps.min():.2f} s, median {np.median(gaps):.2f} s, "
            f"max {gaps.max():.2f} s; one per {extracted.duration / len(keyframes):.2f} s"
        )
    for warning in extracted.warnings:
        print(f"  warning: {warning}")


def print_pipeline(report, cpu, segments, info: ClipInfo, decode_rate: float) -> None:
    t = report.times
    wall = t.wall or cpu["wall"]
    count = segments.num_rows
    video_rate = info.duration / wall
    print()
    print("full pipeline: index_paths of a folder holding the clip, fresh store, model loaded")
    print(
        f"  indexed {report.indexed}, failed {len(report.failed)}; {count} segments stored "
        f"in {wall:.2f} s: {count / wall:.1f} keyframes/s, "
        f"{info.frames / wall:.1f} clip frames/s"
    )
    print(
        f"  {video_rate:.2f} video s per wall s = {video_rate / decode_rate:.3f} x plain decode; "
        f"CPU {cpu['own'] / cpu['wall']:.2f} of {os.cpu_count()} cores; "
        f"other procs {cpu['foreign_share']:.0%}"
    )
    print("  stage times (s)  discover  decode*  encode   write    wall")
    print(f"  {'':<15}{t.discover:9.2f}{t.decode:9.2f}{t.encode:8.2f}{t.write:8.2f}{t.wall:8.2f}")
    print("  * decode: summed over the worker threads (their wall time)")
    for path, reason in report.failed:
        print(f"  FAILED {path}: {reason}")
    if count:
        starts = np.sort(np.asarray(segments.column("start").to_pylist(), dtype=float))
        ends = np.sort(np.asarray(segments.column("end").to_pylist(), dtype=float))
        print(
            f"  segments span {starts[0]:.2f}-{ends[-1]:.2f} s of {info.duration:.2f} s "
            f"(first starts, last ends)"
        )
    print(LINE)


if __name__ == "__main__":
    sys.exit(main())
