"""Indexing on Ray Data against a local run on the same files and cores, with the model
alone as the in-run baseline.

    .venv/bin/python bench/ray_index.py                  # 200 photos 1600x1200, ViT-B-32
    .venv/bin/python bench/ray_index.py --images 400 --actors 2 --cpus 4

What it does:
  1. the photos and the seeded random checkpoint of bench/index_throughput.py
     (cached under bench-data/);
  2. model-only: `encoder.encode_prepared` on one prepared batch, timed batches after a
     warm-up, before and after the runs (the faster is the baseline);
  3. local: `index_paths` over the folder into a fresh store, the model already loaded;
  4. Ray: a local cluster of --cpus CPUs (the GPUs it finds), then `index_on_ray` over
     the same folder into a fresh store: decode actors (1 CPU each), --actors embedding
     actors (1 CPU each, or 1 GPU each when there are GPUs), the driver writing. Its
     wall time includes starting the actors and loading the model in them (shown as
     "first batch"); starting the cluster is shown apart;
  5. Ray again over the unchanged folder: what a no-op re-run costs;
  6. prints items/s for each, when the first batch was committed, their ratio to
     model-only, the stage times (the driver's write time per item: the ceiling of
     one driver), and Ray / local.

On one machine Ray can only add overhead (process hops, pickling, actor start-up); what
it buys is more machines. Other processes' CPU use is shown per phase ("other procs");
above 5% the figures are disturbed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import CpuMeter, fresh_dir, parse_args  # noqa: E402
from index_throughput import (  # noqa: E402  (the photos and weights it caches)
    ARCH,
    TimingProgress,
    model_only,
    photo_folder,
    prepared_batch,
    random_checkpoint,
)


def report(
    label: str, items: int, cpu: dict[str, float], first: float, baseline: float, ray: bool
) -> float:
    rate = items / cpu["wall"]
    # Ray's workers are other processes: their CPU is the run's own, not a disturbance.
    others = "Ray's workers and other procs" if ray else "other procs"
    print(
        f"{label:<20} {items:5d} items in {cpu['wall']:6.1f} s = {rate:6.1f} items/s, "
        f"first batch after {first:5.1f} s  / model-only = {rate / baseline:4.2f}   "
        f"{others} {cpu['foreign_share']:4.0%}",
        flush=True,
    )
    if cpu["foreign_share"] > 0.05 and not ray:
        print("    warning: other processes used the CPU: figures disturbed", flush=True)
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1200)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--model-batches", type=int, default=4)
    parser.add_argument("--arch", default=ARCH)
    parser.add_argument("--device", default="cpu", help="the local run's and baseline's device")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="Ray's CPUs")
    parser.add_argument("--actors", type=int, default=1, help="Ray embedding actors")
    parser.add_argument("--decode-actors", type=int, default=0, help="0: the CPUs left over")
    args = parse_args(
        parser,
        argv,
        images=16,
        width=160,
        height=120,
        batch_size=4,
        model_batches=1,
        arch="xmodal-tiny",
        cpus=2,
    )
    import ray
    import torch

    from xmodal.indexer import IndexOptions, index_paths
    from xmodal.indexer.distributed import RayOptions, index_on_ray
    from xmodal.search import Engine, Store, create_encoder

    torch.set_num_threads(torch.get_num_threads())
    # Started first: Ray forks its processes, which lancedb's runtime (loaded by the local
    # run) warns about. Idle, it costs the local run nothing measurable.
    started = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    cluster_seconds = time.perf_counter() - started
    folder = photo_folder(args.images, args.width, args.height, args.quality, args.seed)
    files = sorted(folder.glob("*.jpg"))
    spec = f"open_clip:{args.arch}/{random_checkpoint(args.seed, args.arch)}"
    encoder = create_encoder(spec, device=args.device)
    encoder.load()
    options = IndexOptions(batch_size=args.batch_size)
    print(
        f"photos : {len(files)} x {args.width}x{args.height} JPEG q{args.quality}; model "
        f"{args.arch}, batch {args.batch_size}; local: {options.decode_workers} decode threads, "
        f"torch {torch.get_num_threads()} threads",
        flush=True,
    )
    prepared = prepared_batch(encoder, folder, args.batch_size)
    baselines = [model_only("before", encoder, prepared, args.model_batches).rate]
    scratch = Path(tempfile.mkdtemp(prefix="xmodal-bench-ray-"))

    def engine(name: str) -> Engine:
        return Engine(Store(fresh_dir(scratch / name)), encoder)

    progress = TimingProgress()
    meter = CpuMeter()
    local_report = index_paths(engine("local"), [folder], options, progress=progress)
    local_cpu = meter.stop()
    assert local_report.embedded == len(files), local_report.summary()
    local_first = progress.first_batch_seconds()

    gpus = int(ray.cluster_resources().get("GPU", 0))
    ray_options = RayOptions(actors=args.actors, decode_actors=args.decode_actors)
    on_ray = engine("ray")
    try:
        progress = TimingProgress()
        meter = CpuMeter()
        ray_report = index_on_ray(
            on_ray, [folder], options, progress=progress, ray_options=ray_options
        )
        ray_cpu = meter.stop()
        assert ray_report.embedded == len(files), ray_report.summary()
        ray_first = progress.first_batch_seconds()
        meter = CpuMeter()
        again = index_on_ray(on_ray, [folder], options, ray_options=ray_options)
        again_cpu = meter.stop()
        assert (again.embedded, again.unchanged) == (0, len(files)), again.summary()
    finally:
        ray.shutdown()
    baselines.append(model_only("after", encoder, prepared, args.model_batches).rate)
    baseline = max(baselines)

    print(
        f"\nRay cluster: {args.cpus} CPUs, {gpus} GPUs, started in {cluster_seconds:.1f} s "
        f"(not counted); {args.actors} embedding actor(s). A Ray run's first batch waits for "
        "its actors to start and load the model; later files reach the driver in bursts, so "
        "only end-to-end rates compare."
    )
    print(f"model-only           {baseline:6.1f} items/s (best of before/after)")
    local = report("local (index_paths)", len(files), local_cpu, local_first, baseline, False)
    on_cluster = report("Ray (index_on_ray)", len(files), ray_cpu, ray_first, baseline, True)
    for label, done in (("local", local_report), ("Ray", ray_report)):
        print(
            f"{label:<6} stage seconds: decode {done.times.decode:6.1f} (summed over workers), "
            f"encode {done.times.encode:6.1f}, write {done.times.write:5.1f} "
            f"= {1000 * done.times.write / len(files):.1f} ms per item"
        )
    print(f"Ray re-run, nothing new: {again_cpu['wall']:.1f} s")
    print(f"\nRay / local = {on_cluster / local:.2f} end to end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
