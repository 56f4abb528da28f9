"""Concurrent text queries: one forward pass per query versus TextBatcher's shared passes.

    .venv/bin/python bench/text_batching.py                      # xmodal-ref, 1/8/32 clients
    .venv/bin/python bench/text_batching.py --vit-b32 --requests 256
    .venv/bin/python bench/text_batching.py --model open_clip:ViT-B-32//abs/ckpt.pt --device cuda

For each model (xmodal-ref, the bundled model, unless --model or --vit-b32 name
others; --vit-b32 is a ViT-B-32 with seeded random weights, written once under
bench-data/ as bench/index_throughput.py does) and each number of client threads,
--requests unique texts from a fixed generated list (colour x size x shape x
position) are sent from that many threads, each thread waiting for its answer
(and --think-ms, standing in for the rest of a request: search, HTTP) before
sending the next (closed loop), through:
  plain    encoder.encode_texts([text]) from every thread, as Engine does today;
           concurrent passes then share torch's intra-op threads;
  batched  TextBatcher(encoder.encode_texts).encode(text);
  wait=N   the same with max_wait_ms=N (only with --max-wait-ms).
The modes alternate within each round (--rounds), so a drift of the machine hits
both. Prints QPS and p50/p99 latency per query, the passes the batcher ran, and the
ratios batched / plain; also checks that batched vectors equal the plain ones.

Other processes' CPU use is measured for every run (/proc/stat) and shown as
"other"; above 5% a warning says the figures are disturbed.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import CpuMeter, parse_args  # noqa: E402  (bench/ is the script folder)

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black", "pink", "grey"]
SIZES = ["small", "large", "tiny", "big"]
SHAPES = ["circle", "square", "triangle", "star", "ring", "cross", "diamond", "heart"]
POSITIONS = [
    "on the left",
    "on the right",
    "at the top",
    "at the bottom",
    "in the middle",
    "in the top left corner",
    "in the bottom right corner",
]


def query_texts() -> list[str]:
    """2240 distinct queries in a fixed, well-mixed order."""
    combos = itertools.product(COLOURS, SIZES, SHAPES, POSITIONS)
    texts = [f"a {size} {colour} {shape} {position}" for colour, size, shape, position in combos]
    order = np.random.default_rng(0).permutation(len(texts))
    return [texts[i] for i in order]


@dataclass
class Run:
    mode: str
    clients: int
    latencies: list[float] = field(default_factory=list)  # seconds, one per query
    wall: float = 0.0
    foreign_share: list[float] = field(default_factory=list)
    passes: int = 0
    largest_batch: int = 0
    vectors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def qps(self) -> float:
        return len(self.latencies) / self.wall

    def ms(self, percentile: float) -> float:
        return float(np.percentile(self.latencies, percentile)) * 1000


def run_clients(
    encode: Callable[[str], np.ndarray], texts: list[str], clients: int, think: float, run: Run
) -> None:
    """Closed loop: each client thread sends its share of the texts one after the other."""
    shares = [texts[i::clients] for i in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    vectors: list[dict[str, np.ndarray]] = [{} for _ in range(clients)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        barrier.wait()
        try:
            for text in shares[i]:
                started = time.perf_counter()
                vectors[i][text] = encode(text)
                latencies[i].append(time.perf_counter() - started)
                if think:
                    time.sleep(think)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    meter = CpuMeter()
    for thread in threads:
        thread.join()
    cpu = meter.stop()
    if errors:
        raise errors[0]
    run.wall += cpu["wall"]
    run.foreign_share.append(cpu["foreign_share"])
    for mine in latencies:
        run.latencies.extend(mine)
    for found in vectors:
        run.vectors.update(found)


def bench_model(spec: str, args: argparse.Namespace) -> list[tuple[Run, ...]]:
    from xmodal.search.encoders import create_encoder
    from xmodal.search.encoders.batching import TextBatcher

    encoder = create_encoder(spec, device=args.device)
    started = time.perf_counter()
    encoder.load()
    print(
        f"\nmodel {spec}: dim {encoder.dim}, device {getattr(encoder, 'device', '?')}, "
        f"loaded in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    texts = query_texts()[: args.requests]
    # Warm-up, with texts outside the measured list: first calls allocate and tune.
    for size in (1, 2, 8, 32, args.max_batch):
        encoder.encode_texts([f"a warm-up query {i}" for i in range(size)])

    def plain(text: str) -> np.ndarray:
        return encoder.encode_texts([text])[0]

    think = args.think_ms / 1000
    modes: list[tuple[str, float | None]] = [("plain", None), ("batched", 0.0)]
    modes += [(f"wait={ms:g}ms", ms) for ms in args.max_wait_ms]
    rows = []
    for clients in args.clients:
        runs = {name: Run(name, clients) for name, _ in modes}
        for round_number in range(args.rounds):
            order = modes if round_number % 2 == 0 else modes[::-1]
            for name, wait in order:
                run = runs[name]
                if wait is None:
                    run_clients(plain, texts, clients, think, run)
                    continue
                batcher = TextBatcher(encoder.encode_texts, args.max_batch, max_wait_ms=wait)
                run_clients(batcher.encode, texts, clients, think, run)
                stats = batcher.stats()
                run.passes += stats.passes
                run.largest_batch = max(run.largest_batch, stats.largest_batch)
        rows.append(tuple(runs.values()))
        print(f"  {clients} clients done", flush=True)
    return rows


def print_table(spec: str, rows: list[tuple[Run, ...]], args: argparse.Namespace) -> float:
    """Prints the table; returns the worst other-process CPU share seen."""
    import torch

    print()
    print("=" * 96)
    print(
        f"{spec}: {args.requests} unique texts per run x {args.rounds} round(s); "
        f"torch {torch.get_num_threads()} intra-op threads, {os.cpu_count()} cpus; "
        f"max_batch {args.max_batch}; think {args.think_ms:g} ms"
    )
    print(
        f"  {'clients':>7}  {'mode':<12}{'QPS':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'passes':>8}{'mean batch':>12}{'max batch':>10}{'other':>7}{'max |diff|':>12}"
    )
    worst = 0.0
    for runs in rows:
        plain = runs[0]
        for run in runs:
            worst = max([worst, *run.foreign_share])
            if run is plain:
                batches, diff = f"{'-':>8}{'-':>12}{'-':>10}", f"{'-':>12}"
            else:
                mean = len(run.latencies) / run.passes
                batches = f"{run.passes:8d}{mean:12.1f}{run.largest_batch:10d}"
                gap = max(
                    float(np.abs(run.vectors[t] - plain.vectors[t]).max()) for t in plain.vectors
                )
                diff = f"{gap:12.1e}"
            print(
                f"  {run.clients:7d}  {run.mode:<12}{run.qps:9.1f}{run.ms(50):9.2f}"
                f"{run.ms(99):9.2f}{batches}{max(run.foreign_share):6.0%} {diff}"
            )
        for run in runs[1:]:
            print(
                f"  {'':7}  {run.mode + '/plain':<12}{run.qps / plain.qps:8.2f}x"
                f"{run.ms(50) / plain.ms(50):8.2f}x{run.ms(99) / plain.ms(99):8.2f}x"
            )
    print("  x rows: QPS ratio (higher is better), latency ratios (lower is better)")
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        action="append",
        help="encoder spec; repeat for several (default: xmodal-ref)",
    )
    parser.add_argument(
        "--vit-b32", action="store_true", help="also a ViT-B-32 with seeded random weights"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default auto)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--requests", type=int, default=512, help="unique texts per run (default 512)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="runs of each mode (default 2)")
    parser.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="a client's pause between its answer and its next query (default 0)",
    )
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        nargs="*",
        default=[],
        help="also measure TextBatcher(max_wait_ms=...) for these values",
    )
    parser.add_argument(
        "--torch-threads", type=int, help="torch.set_num_threads (default: torch's own)"
    )
    args = parse_args(parser, argv, clients=[1, 4], requests=32, rounds=1)
    if args.requests > len(query_texts()):
        parser.error(f"--requests at most {len(query_texts())} (the generated texts)")

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    specs = list(args.model or ([] if args.vit_b32 else ["xmodal-ref"]))
    if args.vit_b32:
        from index_throughput import ARCH, random_checkpoint

        specs.append(f"open_clip:{ARCH}/{random_checkpoint(0)}")

    tables = [(spec, bench_model(spec, args)) for spec in specs]
    worst = max(print_table(spec, rows, args) for spec, rows in tables)
    if worst > 0.05:
        print(
            f"WARNING: other processes used up to {worst:.0%} of the machine's CPU during a "
            "run; the figures are disturbed (see 'other'). Re-run on an idle machine."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
