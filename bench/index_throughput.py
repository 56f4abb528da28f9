"""Indexing throughput: the encoder's forward pass alone versus the whole pipeline.

    .venv/bin/python bench/index_throughput.py                # 300 photos, batch 32
    .venv/bin/python bench/index_throughput.py --images 600 --workers 1 --keep

What it does:
  1. generates N natural-looking JPEG photos (1600x1200 by default, deterministic
     from --seed) and a ViT-B-32 checkpoint with seeded random weights; both are
     cached under bench-data/ (git-ignored), keyed by their parameters;
  2. model-only baseline: `encoder.encode_prepared` on one batch of already
     prepared inputs, a warm-up batch, then --model-batches timed batches; run
     once before and once after the end-to-end runs; the faster of the two is
     the baseline (the conservative choice for the ratios);
  3. end to end: `index_paths` into a fresh store with a fresh engine (the model
     load is part of this run), and again into another fresh store with the
     engine already loaded ("warm");
  4. prints images/s for each, the steady-state rate (batches after the first one,
     timed from the first batch's completion to the last one's, through a
     Progress object), the ratios to the model-only rate, and the stage times.

Other processes' CPU use is measured for every phase (/proc/stat) and shown as
"other procs"; above 5% a warning says the figures are disturbed.

The target is end-to-end steady state >= 0.85 x model-only.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import CpuMeter, fresh_dir, parse_args  # noqa: E402  (bench/ is the script folder)

BENCH_DATA = REPO / "bench-data"
ARCH = "ViT-B-32"  # the default architecture; --arch picks another (xmodal-tiny in --smoke)
GENERATOR_VERSION = 2  # bump when synth_photo changes, so cached folders are rebuilt
TARGET_RATIO = 0.85


# -- synthetic photos ----------------------------------------------------------
def synth_photo(seed: int, width: int, height: int) -> Image.Image:
    """A deterministic, photo-like RGB image: sky/ground gradients, blotchy low
    frequencies, soft-edged shapes with shading, mid-frequency texture and grain."""
    rng = np.random.default_rng(seed)
    lw, lh = max(16, width // 8), max(16, height // 8)
    y = np.linspace(0.0, 1.0, lh, dtype=np.float32)[:, None, None]
    x = np.linspace(0.0, 1.0, lw, dtype=np.float32)[None, :, None]

    def colour(lo: float = 20, hi: float = 235) -> np.ndarray:
        # muted, natural-ish colours: a grey level plus a modest chroma
        grey = rng.uniform(lo, hi)
        return np.clip(grey + rng.normal(0, 35, 3), 0, 255).astype(np.float32)

    horizon = rng.uniform(0.3, 0.7)
    sky_top, sky_low, ground = colour(90, 235), colour(120, 245), colour(30, 160)
    sky = sky_top + (sky_low - sky_top) * (y / horizon)
    land = ground * (0.65 + 0.35 * np.clip((y - horizon) / (1 - horizon), 0, 1))
    base = np.where(y < horizon, sky, land) * np.ones_like(x)
    base += (rng.uniform(-30, 30)) * (x - 0.5)  # a light falling off sideways
    for cells, amplitude in ((3, 28.0), (9, 14.0), (27, 7.0)):  # blotches, 3 octaves
        # mostly light and shade (one channel for all three), a little colour
        noise = rng.standard_normal((cells + 1, cells + 1, 4)).astype(np.float32)
        up = np.stack(
            [
                np.asarray(Image.fromarray(noise[..., c]).resize((lw, lh), Image.BICUBIC))
                for c in range(4)
            ],
            axis=-1,
        )
        base += (up[..., :1] + 0.25 * up[..., 1:]) * amplitude
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).resize(
        (width, height), Image.BICUBIC
    )

    # shapes, drawn on a half-resolution layer (cheaper), each with a shaded twin
    short = min(width, height)
    layer = Image.new("RGBA", (width // 2, height // 2), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(5, 12))):
        cx, cy = rng.uniform(0, width / 2), rng.uniform(0, height / 2)
        r = rng.uniform(0.03, 0.2) * short / 2
        fill = (*tuple(int(v) for v in colour()), int(rng.integers(190, 256)))
        shade = (*tuple(max(0, int(v * 0.7)) for v in fill[:3]), fill[3])
        kind = int(rng.integers(3))
        aspect = rng.uniform(0.5, 1.8)
        if kind == 0:
            box = (cx - r, cy - r * aspect, cx + r, cy + r * aspect)
            draw.ellipse(box, fill=shade)
            draw.ellipse((box[0], box[1], box[2] - r * 0.25, box[3] - r * 0.25), fill=fill)
        elif kind == 1:
            box = (cx - r, cy - r * aspect, cx + r, cy + r * aspect)
            draw.rectangle(box, fill=fill)
            draw.rectangle((cx + r * 0.6, box[1], box[2], box[3]), fill=shade)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
            points = [(cx + r * np.cos(a), cy + r * aspect * np.sin(a)) for a in angles]
            draw.polygon(points, fill=fill)
            draw.line(points + points[:1], fill=shade, width=max(1, int(r / 12)))
    layer = layer.resize((width, height), Image.BICUBIC).filter(
        ImageFilter.GaussianBlur(short / 900)
    )
    image.paste(layer, (0, 0), layer)

    # texture: bilinear-upsampled noise (foliage/fabric-like) plus sensor grain
    pixels = np.asarray(image, dtype=np.float32)
    texture = rng.standard_normal((height // 4, width // 4), dtype=np.float32)
    texture = np.asarray(Image.fromarray(texture).resize((width, height), Image.BILINEAR))
    pixels += texture[..., None] * rng.uniform(4, 12)
    pixels += rng.standard_normal((height, width, 1), dtype=np.float32) * 3.0
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _write_photo(job: tuple[Path, int, int, int, int]) -> None:
    path, seed, width, height, quality = job
    synth_photo(seed, width, height).save(path, "JPEG", quality=quality)


def photo_folder(n: int, width: int, height: int, quality: int, seed: int) -> Path:
    """bench-data/photos-... with n JPEGs, generated once (in parallel) and cached."""
    name = f"photos-v{GENERATOR_VERSION}-n{n}-{width}x{height}-q{quality}-s{seed}"
    folder = BENCH_DATA / name
    if folder.is_dir():
        return folder
    BENCH_DATA.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=BENCH_DATA))
    jobs = [
        (partial / f"photo_{i:05d}.jpg", seed * 1_000_003 + i, width, height, quality)
        for i in range(n)
    ]
    started = time.perf_counter()
    print(f"generating {n} photos {width}x{height} q{quality} into {folder} ...", flush=True)
    with multiprocessing.get_context("spawn").Pool(os.cpu_count() or 1) as pool:
        pool.map(_write_photo, jobs, chunksize=4)
    try:
        partial.rename(folder)
    except OSError:  # another run finished first
        shutil.rmtree(partial, ignore_errors=True)
    print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    return folder


def random_checkpoint(seed: int, arch: str = ARCH) -> Path:
    """A state dict of `arch` with seeded random weights, written once."""
    path = BENCH_DATA / f"{arch}-random-seed{seed}.pt"
    if path.is_file():
        return path
    import open_clip
    import torch

    from xmodal.search.encoders.open_clip_encoder import register_builtin_configs

    register_builtin_configs()  # xmodal-tiny and xmodal-ref are xmodal's own configs
    BENCH_DATA.mkdir(parents=True, exist_ok=True)
    print(f"writing a random {arch} checkpoint to {path} ...", flush=True)
    torch.manual_seed(seed)
    model = open_clip.create_model(arch)
    partial = path.with_suffix(f".partial-{os.getpid()}")
    torch.save(model.state_dict(), partial)
    partial.replace(path)
    return path


# -- measurements --------------------------------------------------------------
@dataclass
class TimingProgress:
    """A Progress that timestamps every advance (batch completions)."""

    total: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    marks: list[tuple[float, int]] = field(default_factory=list)  # (time, images done)

    def start(self, total: int) -> None:
        self.total = total
        self.started_at = time.perf_counter()

    def advance(self, count: int = 1, failed: int = 0) -> None:
        done = (self.marks[-1][1] if self.marks else 0) + count
        self.marks.append((time.perf_counter(), done))

    def finish(self) -> None:
        self.finished_at = time.perf_counter()

    def steady_rate(self) -> float:
        """Images/s from the first batch's completion to the last batch's completion."""
        if len(self.marks) < 2:
            return float("nan")
        (t0, n0), (t1, n1) = self.marks[0], self.marks[-1]
        return (n1 - n0) / (t1 - t0)

    def intervals(self) -> list[float]:
        """Seconds between consecutive full-batch completions (the first batch excluded)."""
        full = [b - a for (a, _), (b, _) in zip(self.marks, self.marks[1:], strict=False)]
        sizes = [n1 - n0 for (_, n0), (_, n1) in zip(self.marks, self.marks[1:], strict=False)]
        return [s for s, size in zip(full, sizes, strict=True) if size == max(sizes)]

    def first_batch_seconds(self) -> float:
        return self.marks[0][0] - self.started_at if self.marks else float("nan")


@dataclass
class ModelOnly:
    label: str
    batch_size: int
    seconds: list[float]  # per timed batch
    cpu: dict[str, float]

    @property
    def rate(self) -> float:
        return self.batch_size * len(self.seconds) / sum(self.seconds)

    @property
    def median_rate(self) -> float:
        return self.batch_size / statistics.median(self.seconds)


def model_only(label: str, encoder, prepared: list[np.ndarray], batches: int) -> ModelOnly:
    """The forward pass alone, batch after batch, after a warm-up batch."""
    encoder.encode_prepared(prepared)  # warm-up
    meter = CpuMeter()
    seconds = []
    for _ in range(batches):
        started = time.perf_counter()
        encoder.encode_prepared(prepared)
        seconds.append(time.perf_counter() - started)
    return ModelOnly(label, len(prepared), seconds, meter.stop())


def prepared_batch(encoder, folder: Path, batch_size: int) -> list[np.ndarray]:
    """The first batch_size photos, decoded and prepared exactly as the indexer does."""
    from xmodal.search.media import decode_image

    files = sorted(folder.glob("*.jpg"))
    files = (files * (batch_size // max(1, len(files)) + 1))[:batch_size]
    return [
        encoder.prepare_image(decode_image(f.read_bytes(), draft_to=encoder.input_size).image)
        for f in files
    ]


@dataclass
class RunResult:
    label: str
    report: object
    progress: TimingProgress
    seconds: float  # around index_paths
    cpu: dict[str, float]
    started_at: float  # perf_counter before index_paths

    @property
    def head(self) -> float:
        """From calling index_paths to the first batch's completion."""
        return self.progress.marks[0][0] - self.started_at

    @property
    def tail(self) -> float:
        """From the last batch's completion to index_paths' return (flush, compact)."""
        return self.started_at + self.seconds - self.progress.marks[-1][0]

    @property
    def images(self) -> int:
        return self.report.embedded


def index_run(label: str, engine, folder: Path, options) -> RunResult:
    from xmodal.indexer import index_paths

    progress = TimingProgress()
    meter = CpuMeter()
    report = index_paths(engine, [folder], options, progress=progress)
    cpu = meter.stop()
    if report.failed:
        raise SystemExit(f"{label}: {len(report.failed)} files failed, e.g. {report.failed[0]}")
    return RunResult(label, report, progress, cpu["wall"], cpu, meter.wall)


# -- main ------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    from xmodal.indexer import IndexOptions

    defaults = IndexOptions()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=300, help="number of photos (default 300)")
    parser.add_argument(
        "--batch-size", type=int, default=32, help="images per forward pass (default 32)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=defaults.decode_workers,
        help=f"decode worker threads (default {defaults.decode_workers}, as IndexOptions)",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="where the stores go (default: a temporary dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the stores after the run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the photos and the weights")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1200)
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    parser.add_argument(
        "--model-batches",
        type=int,
        default=6,
        help="timed model-only batches, before and after the indexing runs (default 6)",
    )
    parser.add_argument(
        "--no-warm-run", action="store_true", help="skip the run with the model already loaded"
    )
    parser.add_argument("--arch", default=ARCH, help=f"open_clip architecture (default {ARCH})")
    args = parse_args(
        parser,
        argv,
        images=24,
        batch_size=8,
        width=160,
        height=120,
        model_batches=1,
        arch="xmodal-tiny",
    )
    if args.images < 3 * args.batch_size:
        parser.error("--images must be at least 3 batches, for a steady-state rate")

    import torch

    from xmodal.search import IMAGE_TEXT, Engine, Store

    folder = photo_folder(args.images, args.width, args.height, args.quality, args.seed)
    checkpoint = random_checkpoint(args.seed, args.arch)
    spec = f"open_clip:{args.arch}/{checkpoint}"  # ARCH//abs/path: the checkpoint path is absolute
    created_tmp = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="xmodal-bench-")) if created_tmp else args.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    options = IndexOptions(batch_size=args.batch_size, decode_workers=args.workers)
    total_bytes = sum(p.stat().st_size for p in folder.iterdir())

    print(
        f"photos : {args.images} x {args.width}x{args.height} JPEG q{args.quality} "
        f"({total_bytes / args.images / 1e3:.0f} kB avg) in {folder}"
    )
    print(f"model  : {spec}")
    print(
        f"machine: {os.cpu_count()} cpus; torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op / {torch.get_num_interop_threads()} inter-op threads; "
        f"batch {args.batch_size}, decode workers {args.workers}"
    )

    try:
        # 1. model-only baseline, on inputs prepared exactly as the decode workers do
        base_engine = Engine.open(fresh_dir(data_dir / "baseline"), model=spec)
        started = time.perf_counter()
        base_engine.encoder.load()
        load_seconds = time.perf_counter() - started
        prepared = prepared_batch(base_engine.encoder, folder, args.batch_size)
        print(f"model load {load_seconds:.1f} s; model-only ...", flush=True)
        baselines = [model_only("before", base_engine.encoder, prepared, args.model_batches)]
        del base_engine
        gc.collect()

        # 2. end to end with a fresh engine and store: the model load is part of the run
        print("index_paths, cold (fresh engine, fresh store) ...", flush=True)
        engine = Engine.open(fresh_dir(data_dir / "cold"), model=spec)
        runs = [index_run("cold", engine, folder, options)]
        stored = engine.store.segments_table(IMAGE_TEXT).num_rows
        assert stored == args.images, f"{stored} vectors stored, expected {args.images}"

        # 3. again into another fresh store, with the model loaded and warm
        if not args.no_warm_run:
            print("index_paths, warm (model loaded, fresh store) ...", flush=True)
            warm = Engine(Store(fresh_dir(data_dir / "warm")), engine.encoder)
            runs.append(index_run("warm", warm, folder, options))

        # 4. model-only again: how much did the machine drift?
        print("model-only again ...", flush=True)
        baselines.append(model_only("after", engine.encoder, prepared, args.model_batches))
    finally:
        if not args.keep:
            if created_tmp:
                shutil.rmtree(data_dir, ignore_errors=True)
            else:
                for sub in ("baseline", "cold", "warm"):
                    shutil.rmtree(data_dir / sub, ignore_errors=True)

    print_results(args, baselines, runs)
    if args.keep:
        print(f"stores kept in {data_dir}")
    return 0


def print_results(args, baselines: list[ModelOnly], runs: list[RunResult]) -> None:
    n, bs = args.images, args.batch_size
    # The faster of the two measurements: the conservative choice for the ratios.
    model_rate = max(b.rate for b in baselines)
    model_median = max(b.median_rate for b in baselines)
    line = "=" * 86
    print()
    print(line)
    print(f"model-only: encoder.encode_prepared, batch {bs}, after a warm-up batch")
    print(f"  {'':<24}{'img/s':>8}{'median':>9}{'min':>8}{'max':>8}{'other procs':>14}")
    for b in baselines:
        rates = [bs / s for s in b.seconds]
        print(
            f"  {b.label + f' ({len(b.seconds)} batches)':<24}{b.rate:8.2f}{b.median_rate:9.2f}"
            f"{min(rates):8.2f}{max(rates):8.2f}{b.cpu['foreign_share']:13.0%}"
        )
    print(
        f"  {'model-only (the faster)':<24}{model_rate:8.2f}{model_median:9.2f}"
        f"   = {1000 / model_rate:.1f} ms/img"
    )
    print()
    print(f"end to end: index_paths over {n} photos into a fresh store")
    print(f"  {'':<34}{'img/s':>8}{'x model-only':>14}{'other procs':>14}")
    for r in runs:
        whole = n / r.report.times.wall
        steady = r.progress.steady_rate()
        intervals = r.progress.intervals()
        median = bs / statistics.median(intervals) if intervals else float("nan")
        other = f"{r.cpu['foreign_share']:13.0%}"
        print(
            f"  {r.label + ': whole run, N / wall':<34}{whole:8.2f}{whole / model_rate:14.3f}{other}"
        )
        print(f"  {r.label + ': steady state':<34}{steady:8.2f}{steady / model_rate:14.3f}")
        print(
            f"  {r.label + ': steady, median batch':<34}{median:8.2f}{median / model_median:14.3f}"
            "  (vs the median model-only batch)"
        )
    print("  steady state: from the first batch's completion to the last one's (Progress marks)")
    print()
    print(
        "stage times (s)  discover  decode*  encode   write    wall"
        "   head  steady   tail   (head: start to 1st batch done)"
    )
    for r in runs:
        t = r.report.times
        steady_s = r.progress.marks[-1][0] - r.progress.marks[0][0]
        print(
            f"  {r.label:<14}{t.discover:8.2f}{t.decode:9.2f}{t.encode:8.2f}{t.write:8.2f}"
            f"{t.wall:8.2f}{r.head:7.2f}{steady_s:8.2f}{r.tail:7.2f}"
        )
    print("  * decode: summed over the worker threads (their wall time, not CPU time)")
    print("  cold discover includes the model load and the checkpoint's sha256 identity")
    for r in runs:
        t = r.report.times
        print(
            f"  {r.label}: decode {1000 * t.decode / n:.1f} ms/img per worker; encode "
            f"{1000 * t.encode / n:.1f} ms/img in the pipeline vs {1000 / model_rate:.1f} alone; "
            f"CPU {r.cpu['own'] / r.cpu['wall']:.2f} of {os.cpu_count()} cores"
        )
    print()
    worst_other = max(
        [b.cpu["foreign_share"] for b in baselines] + [r.cpu["foreign_share"] for r in runs]
    )
    if worst_other > 0.05:
        print(
            f"WARNING: other processes used up to {worst_other:.0%} of the machine's CPU during "
            "a phase; the figures are disturbed (see 'other procs'). Re-run on an idle machine."
        )
    for r in runs:
        ratio = r.progress.steady_rate() / model_rate
        verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
        print(
            f"{r.label}: steady state / model-only = {ratio:.3f}: {verdict} the {TARGET_RATIO} target"
        )
    print(line)


if __name__ == "__main__":
    sys.exit(main())
