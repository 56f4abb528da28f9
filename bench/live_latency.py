"""Search latency while an indexer writes, and the server's memory (issue 17).

    .venv/bin/python bench/live_latency.py --smoke            # seconds, figures meaningless

At a million items (building the store takes ~12 min; --reuse skips it next time):

    .venv/bin/python bench/live_latency.py --items 1000000 --kind hnsw \\
        --data-dir /tmp/b1m/data --reuse --live --memory
    .venv/bin/python bench/live_latency.py --items 1000000 --kind ivfpq \\
        --data-dir /tmp/b1m/data --reuse --memory

Builds the store as bench/api_latency.py does (--items seeded vectors, ids
f"{i:016x}", seed --seed), or with --reuse takes the one in --data-dir when it holds
exactly --items items; saves the index of --kind (unless --reuse-index) and starts
`xmodal serve` with XMODAL_ANN__KIND=--kind.

--live: an idle phase of --requests by-item-id `POST /search` requests from --clients
threads; then a live phase: a writer subprocess adds --live-items items ("live-..." ids)
in commits of --live-commit through the store's write path (upsert_segments, then
upsert_items: each takes the writer lock), pausing --live-pause seconds between commits,
and prints each commit's end time and ids. The same load runs until the writer is done
and its last commit is searchable. For each commit a poller asks `{"item_id": <an id of
the commit>, "k": 1}` every 50 ms (404 until the server's view holds it) and records the
delay from the commit's end to its first 200. Prints idle and live p50/p95/p99/max and
errors (the pollers' 404s are not errors), live p99 / idle p99 (issue target <= 2.0),
the commit -> searchable delays, and the server's memory before and after the live
phase. With --data-dir the live items are deleted at the end, so that --reuse finds the
store as it was.

--memory: the server's memory (the process and its children, /proc/PID/smaps_rollup)
once ready and after a warm-up load: resident, anonymous (its own heap: vectors, index,
item table) and file-backed (resident - anonymous: mostly the page cache of mapped
files). A second server of the same kind over a store of --tiny-items items is measured
the same way; the difference in anonymous memory is what the --items vectors, their
index and item rows cost. Without --live or --memory, both run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import parse_args  # noqa: E402  (bench/ is the script folder)
from api_latency import (  # noqa: E402
    TEXT_QUERIES,
    SearchClient,
    build_store,
    free_port,
    launch_server,
    run_level,
    save_index,
    stop_server,
    wait_ready,
)

LIVE_PREFIX = "live-"
SPACE = "image-text"
POLL_SECONDS = 0.05  # each poll is a request the server answers beside the load
SEARCHABLE_WITHIN = 600.0  # a commit not searchable by then counts as never


# -- the store and its index -------------------------------------------------
def prepare_store(data: Path, items: int, seed: int, reuse: bool, model: str) -> list[str]:
    """The ids of a store of `items` items at `data`: built, or with `reuse` the one
    there (an earlier run's leftover live items removed first)."""
    if reuse and (data / "lance").exists():
        removed = remove_live_items(data)
        if removed:
            print(f"store: removed {removed} live items an earlier run left")
        found = count_items(data)
        if found == items:
            print(f"store: reusing {found} items in {data}")
            return [f"{i:016x}" for i in range(items)]
        if found:
            raise SystemExit(f"{data} holds {found} items, not {items}: not reusing it")
    started = time.perf_counter()
    ids = build_store(data, items, seed, model)
    print(f"store: {items} items written in {time.perf_counter() - started:.1f} s")
    return ids


def count_items(data: Path) -> int:
    from xmodal.search.store import Store

    return Store(data).count_items(status=None)


def remove_live_items(data: Path, ids: list[str] | None = None) -> int:
    """Delete live items (these, or every one with the live prefix) through the store."""
    import pyarrow.compute as pc

    from xmodal.search.store import Store

    store = Store(data)
    if ids is None:
        column = store.items_table(["id"]).column("id")
        ids = column.filter(pc.starts_with(column, LIVE_PREFIX)).to_pylist()
    if ids:
        store.delete_items(ids)
    return len(ids)


def prepare_index(data: Path, kind: str, reuse_index: bool, model: str) -> None:
    if reuse_index:
        print("index: reusing the saved one")
        return
    started = time.perf_counter()
    report = save_index(data, kind, model)
    print(
        f"index: {report.kind} over {report.segments} segments, built {report.built}, "
        f"saved {report.saved}, {time.perf_counter() - started:.1f} s"
    )


def model_spec(name: str) -> str:
    """--model as a model spec: random-vit-b-32 is written once (no download)."""
    if name != "random-vit-b-32":
        return name
    from index_throughput import random_checkpoint

    return f"open_clip:ViT-B-32/{random_checkpoint(0)}"


def server_env(kind: str) -> dict[str, str]:
    return {"XMODAL_ANN__KIND": kind}


# -- memory ------------------------------------------------------------------
def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def memory_of(pid: int) -> dict[str, int]:
    """Resident, anonymous and file-backed bytes of a process and its children."""
    total = {"rss": 0, "anon": 0}
    for member in process_tree(pid):
        try:
            lines = Path(f"/proc/{member}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in lines[1:]}
        total["rss"] += fields.get("Rss", 0)
        total["anon"] += fields.get("Anonymous", 0)
    return {**total, "file": total["rss"] - total["anon"]}


def describe_memory(memory: dict[str, int]) -> str:
    mb = {name: value / 2**20 for name, value in memory.items()}
    return f"RSS {mb['rss']:8.1f} MB = anon {mb['anon']:8.1f} MB + file-backed {mb['file']:8.1f} MB"


def warm_up(base: str, ids: list[str], requests: int, clients: int, seed: int) -> None:
    """By-item-id requests, then each cached text query a few times."""
    rng = np.random.default_rng(seed)
    by_item = [{"item_id": ids[int(i)], "k": 10} for i in rng.integers(len(ids), size=requests)]
    run_level(base, by_item, clients)
    run_level(base, [{"text": t, "k": 10} for t in TEXT_QUERIES * 3], clients)


def tiny_baseline(scratch: Path, args: argparse.Namespace) -> tuple[int, dict[str, int]]:
    """A server of the same kind over a store of --tiny-items items, warmed up the same
    way: (its segments, its memory). Built and served while nothing else runs."""
    data = scratch / "tiny"
    ids = build_store(data, args.tiny_items, args.seed, model_spec(args.model))
    save_index(data, args.kind, model_spec(args.model))
    port = free_port()
    server = launch_server(data, port, server_env(args.kind))
    try:
        wait_ready(server, port)
        warm_up(f"http://127.0.0.1:{port}", ids, args.requests, args.clients, args.seed)
        return len(ids), memory_of(server.pid)
    finally:
        stop_server(server)


def print_parts(base: str, vectors: int) -> None:
    """The server's own split of what its view holds (`xmodal_index_memory_bytes`), when
    it reports one (servers before issue 17 do not)."""
    import httpx

    parts = {}
    for line in httpx.get(f"{base}/metrics", timeout=30).text.splitlines():
        if line.startswith("xmodal_index_memory_bytes{") and 'space="image-text"' in line:
            part = line.split('part="')[1].split('"')[0]
            parts[part] = float(line.rsplit(" ", 1)[1])
    if not parts:
        return
    print("  the server's own account (xmodal_index_memory_bytes), MB and bytes per vector:")
    for part, size in parts.items():
        print(f"    {part:18s} {size / 2**20:9.1f} MB  {size / max(1, vectors):8.1f} B/vector")
    heap = parts.get("vectors_in_memory", 0) + parts.get("index_in_memory", 0)
    print(f"    index + vectors in the heap: {heap / 2**20:.1f} MB (issue target < 512 MB)")


def print_attribution(
    big: tuple[int, dict[str, int]], tiny: tuple[int, dict[str, int]], kind: str
) -> None:
    vectors = big[0] - tiny[0]
    anon = big[1]["anon"] - tiny[1]["anon"]
    print(
        f"  tiny store ({tiny[0]} items) after warm-up: {describe_memory(tiny[1])}\n"
        f"  index + vectors ({kind}, {vectors} more vectors, with their item rows) "
        f"≈ {anon / 2**20:.1f} MB (anon), {anon / max(1, vectors):.0f} bytes per vector"
    )


# -- the writer subprocess ---------------------------------------------------
def run_writer(data: Path, count: int, per_commit: int, pause: float, tag: str, seed: int) -> None:
    """Add `count` items in commits of `per_commit` as an indexer does (segments, then
    items, each write under the writer lock); print a JSON line per commit."""
    from xmodal.search.store import ItemRecord, SegmentRecord, Store, segment_id_for

    store = Store(data)
    space = store.space(SPACE)
    assert space is not None, f"no {SPACE} space in {data}"
    rng = np.random.default_rng(seed + 1)
    print(json.dumps({"ready": time.time()}), flush=True)
    for start in range(0, count, per_commit):
        ids = [f"{LIVE_PREFIX}{tag}-{n:08d}" for n in range(start, min(count, start + per_commit))]
        vectors = rng.standard_normal((len(ids), space.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.upsert_segments(
            SPACE,
            [SegmentRecord(segment_id_for(i, 0), i, v) for i, v in zip(ids, vectors, strict=True)],
        )
        store.upsert_items(
            [ItemRecord(i, f"/bench/live/{i}.jpg", "image", "/bench/live") for i in ids]
        )
        print(json.dumps({"end": time.time(), "ids": ids}), flush=True)
        if start + per_commit < count:
            time.sleep(pause)


def start_writer(data: Path, args: argparse.Namespace, tag: str) -> subprocess.Popen:
    command = [sys.executable, __file__, "--writer", str(data), "--tag", tag]
    command += ["--live-items", str(args.live_items), "--live-commit", str(args.live_commit)]
    command += ["--live-pause", str(args.live_pause), "--seed", str(args.seed)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


# -- the load and the pollers ------------------------------------------------
class Load:
    """`clients` threads sending by-item-id searches until stopped."""

    def __init__(self, base: str, ids: list[str], clients: int, k: int, seed: int):
        self.results: list[tuple[float, int]] = []  # (seconds, status)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(base, ids, k, seed + n), daemon=True)
            for n in range(clients)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        for thread in self._threads:
            if thread.ident is not None:  # started
                thread.join()
        return self.results

    def _loop(self, base: str, ids: list[str], k: int, seed: int) -> None:
        client, rng, mine = SearchClient(base), np.random.default_rng(seed), []
        while not self._stop.is_set():
            seconds, status, _ = client.post({"item_id": ids[int(rng.integers(len(ids)))], "k": k})
            mine.append((seconds, status))
        client.close()
        self.results.extend(mine)  # list.extend is atomic


class Poller(threading.Thread):
    """Asks for one item of a commit until the server finds it: `delay` is the time
    from the commit's end to the first 200 (None: not within SEARCHABLE_WITHIN)."""

    def __init__(self, base: str, item_id: str, committed_at: float):
        super().__init__(daemon=True)
        self.base, self.item_id, self.committed_at = base, item_id, committed_at
        self.delay: float | None = None
        self.errors = 0  # answers other than 200 and 404

    def run(self) -> None:
        client = SearchClient(self.base)
        while time.time() - self.committed_at < SEARCHABLE_WITHIN:
            _, status, _ = client.post({"item_id": self.item_id, "k": 1})
            if status == 200:
                self.delay = time.time() - self.committed_at
                break
            self.errors += status != 404
            time.sleep(POLL_SECONDS)
        client.close()


def live_phase(base: str, data: Path, ids: list[str], args: argparse.Namespace) -> dict:
    """The load while the writer adds items, until its last commit is searchable."""
    tag = f"{time.time_ns():x}"
    writer = start_writer(data, args, tag)
    assert writer.stdout is not None
    load = Load(base, ids, args.clients, args.k, args.seed)
    pollers: list[Poller] = []
    written: list[str] = []
    started = time.perf_counter()
    try:
        for line in writer.stdout:
            event = json.loads(line)
            if "ready" in event:
                load.start()
                started = time.perf_counter()
                continue
            written.extend(event["ids"])
            poller = Poller(base, event["ids"][0], event["end"])
            poller.start()
            pollers.append(poller)
        if writer.wait() != 0:
            raise SystemExit(f"the writer failed (exit status {writer.returncode})")
        for poller in pollers:
            poller.join()
    finally:
        results = load.stop()
        writer.wait()
    return {
        "results": results,
        "seconds": time.perf_counter() - started,
        "delays": [p.delay for p in pollers],
        "poll_errors": sum(p.errors for p in pollers),
        "written": written,
    }


# -- figures -----------------------------------------------------------------
def summary(results: list[tuple[float, int]], seconds: float) -> dict:
    latencies = sorted(r[0] * 1000 for r in results)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]

    return {
        "requests": len(results),
        "errors": sum(1 for r in results if r[1] != 200),
        "qps": len(results) / seconds,
        "p50": pct(50),
        "p95": pct(95),
        "p99": pct(99),
        "max": latencies[-1],
    }


def print_live_table(idle: dict, live: dict, phase: dict, args: argparse.Namespace) -> None:
    print(
        f"\nPOST /search by item id, {args.items} items, k={args.k}, {args.clients} clients; "
        f"live: {args.live_items} items in commits of {args.live_commit}, "
        f"{args.live_pause:g} s apart"
    )
    print("  phase   requests    p50 ms    p95 ms    p99 ms    max ms      QPS  errors")
    for name, row in (("idle", idle), ("live", live)):
        print(
            f"  {name:6s} {row['requests']:9d} {row['p50']:9.2f} {row['p95']:9.2f} "
            f"{row['p99']:9.2f} {row['max']:9.2f} {row['qps']:8.1f}  {row['errors']:6d}"
        )
    print(f"  live p99 / idle p99 = {live['p99'] / idle['p99']:.2f} (issue target <= 2.0)")
    delays = [d for d in phase["delays"] if d is not None]
    never = len(phase["delays"]) - len(delays)
    if delays:
        print(
            f"  commit -> searchable over {len(delays)} commits: min {min(delays):.2f} s, "
            f"median {statistics.median(delays):.2f} s, max {max(delays):.2f} s"
        )
    print(
        f"  commits never searchable within {SEARCHABLE_WITHIN:.0f} s: {never}; "
        f"poller answers other than 200/404: {phase['poll_errors']}"
    )


def run_live(base: str, server_pid: int, data: Path, ids: list[str], args) -> list[str]:
    """The idle phase, the live phase, their table; returns the ids the writer added."""
    rng = np.random.default_rng(args.seed + 2)
    bodies = [
        {"item_id": ids[int(i)], "k": args.k} for i in rng.integers(len(ids), size=args.requests)
    ]
    idle = run_level(base, bodies, args.clients)
    idle["max"] = idle["latencies"][-1]
    before = memory_of(server_pid)
    phase = live_phase(base, data, ids, args)
    after = memory_of(server_pid)
    print_live_table(idle, summary(phase["results"], phase["seconds"]), phase, args)
    print(f"  server before the live phase: {describe_memory(before)}")
    print(f"  server after the live phase:  {describe_memory(after)}")
    return phase["written"]


# -- what applying one version costs -----------------------------------------
def apply_cost(data: Path, args) -> None:
    """In this process: an engine over the store (read whole, the baseline), then
    --live-items items in commits of --live-commit. Each commit's two writes are
    applied one at a time (segments, then items: a refresher woken between them) and
    then, for as many commits again, together (both writes in one applied version).
    Prints milliseconds of wall and of the applying thread's CPU per applied version."""
    from xmodal.search import Engine
    from xmodal.search.settings import AnnSettings
    from xmodal.search.store import ItemRecord, SegmentRecord, segment_id_for

    engine = Engine.open(data, model=model_spec(args.model), ann=AnnSettings(kind=args.kind))
    index = engine._space(SPACE).index  # the bench looks inside: what a server's refresher runs
    store = engine.store
    dim = store.space(SPACE).dim
    rng = np.random.default_rng(args.seed + 3)

    def applied() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.thread_time()
        index.view(wait=True)
        return 1000 * (time.perf_counter() - wall), 1000 * (time.thread_time() - cpu)

    read_whole = applied()
    written: list[str] = []
    costs: dict[str, list[tuple[float, float]]] = {"segments": [], "items": [], "together": []}
    commits = max(1, args.live_items // args.live_commit)
    for n in range(2 * commits):
        ids = [f"{LIVE_PREFIX}apply-{n:04d}-{i:06d}" for i in range(args.live_commit)]
        vectors = rng.standard_normal((len(ids), dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.upsert_segments(
            SPACE,
            [SegmentRecord(segment_id_for(i, 0), i, v) for i, v in zip(ids, vectors, strict=True)],
        )
        if n < commits:
            costs["segments"].append(applied())
        store.upsert_items(
            [ItemRecord(i, f"/bench/live/{i}.jpg", "image", "/bench/live") for i in ids]
        )
        costs["items" if n < commits else "together"].append(applied())
        written += ids
    print(f"\napplying a version, {len(index.view().snapshot):,} segments ({args.kind}), ms:")
    print(f"  read whole (the first view): wall {read_whole[0]:9.1f}  cpu {read_whole[1]:9.1f}")
    for name, runs in costs.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        print(f"  {name:<28} wall {wall:9.1f}  cpu {cpu:9.1f}  (median of {len(runs)})")
    alone = sum(statistics.median(r[1] for r in costs[k]) for k in ("segments", "items"))
    together = statistics.median(r[1] for r in costs["together"])
    print(f"  a commit's two writes: cpu {alone:.1f} applied apart, {together:.1f} together")
    print(f"store: the {remove_live_items(data, written)} items added deleted again")


# -- the run -----------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--kind", choices=["auto", "exact", "flat", "hnsw", "ivfpq"], default="hnsw")
    p.add_argument("--live", action="store_true", help="latency while a writer adds items")
    p.add_argument("--memory", action="store_true", help="the server's memory, and the index's")
    p.add_argument(
        "--apply-cost", action="store_true", help="what applying one version costs, in process"
    )
    p.add_argument("--requests", type=int, default=2000, help="idle phase and warm-up")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--live-items", type=int, default=10_000)
    p.add_argument("--live-commit", type=int, default=1000, help="items per commit")
    p.add_argument("--live-pause", type=float, default=1.0, help="seconds between commits")
    p.add_argument("--tiny-items", type=int, default=1000, help="--memory's baseline store")
    p.add_argument(
        "--model",
        default="xmodal-ref",
        help='the space\'s model (its dimension): xmodal-ref (128-d) or "random-vit-b-32" '
        "(512-d: a seeded random ViT-B-32 checkpoint, as bench/index_throughput.py writes)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--reuse", action="store_true", help="use --data-dir's store if it fits")
    p.add_argument("--reuse-index", action="store_true", help="keep the saved index as it is")
    p.add_argument("--writer", type=Path, help=argparse.SUPPRESS)  # the writer subprocess
    p.add_argument("--tag", default="", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args(
        parser(),
        argv,
        items=2000,
        requests=200,
        live_items=300,
        live_commit=100,
        live_pause=0.2,
        tiny_items=500,
    )
    if args.writer:
        run_writer(
            args.writer, args.live_items, args.live_commit, args.live_pause, args.tag, args.seed
        )
        return 0
    if not (args.live or args.memory or args.apply_cost):
        args.live = args.memory = True
    with tempfile.TemporaryDirectory(prefix="xmodal-live-bench-") as scratch:
        data = args.data_dir or Path(scratch) / "data"
        ids = prepare_store(data, args.items, args.seed, args.reuse, model_spec(args.model))
        prepare_index(data, args.kind, args.reuse_index, model_spec(args.model))
        if args.apply_cost:
            apply_cost(data, args)
            if not (args.live or args.memory):
                return 0
        tiny = tiny_baseline(Path(scratch), args) if args.memory else None
        written = serve_and_measure(data, ids, args, tiny)
        if args.data_dir and written:
            removed = remove_live_items(data, written)
            print(f"store: the {removed} live items deleted again")
    return 0


def serve_and_measure(data: Path, ids: list[str], args, tiny) -> list[str]:
    port = free_port()
    started = time.perf_counter()
    server = launch_server(data, port, server_env(args.kind))
    written: list[str] = []
    try:
        wait_ready(server, port)
        print(f"server ({args.kind}) ready in {time.perf_counter() - started:.1f} s")
        base = f"http://127.0.0.1:{port}"
        print(f"\nserver memory, {args.items} items ({args.kind}):")
        print(f"  ready:          {describe_memory(memory_of(server.pid))}")
        warm_up(base, ids, args.requests, args.clients, args.seed)
        warm = memory_of(server.pid)
        print(f"  after warm-up:  {describe_memory(warm)}")
        if tiny is not None:
            print_attribution((len(ids), warm), tiny, args.kind)
        print_parts(base, len(ids))
        if args.live:
            written = run_live(base, server.pid, data, ids, args)
    finally:
        stop_server(server)
    return written


if __name__ == "__main__":
    raise SystemExit(main())
