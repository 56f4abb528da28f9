"""Search latency over HTTP: a bounded load generator against `xmodal serve` on 127.0.0.1.

    .venv/bin/python bench/api_latency.py                       # 20k items, 1/8/50 clients
    .venv/bin/python bench/api_latency.py --items 1000000       # HNSW, about 12 min

Builds a store of --items seeded clustered vectors through the store's write path in
the image-text space of `xmodal-ref` (so text queries embed for real), brings the
vector index up to date and saves it as `xmodal index` does at the end of a run (HNSW
past 50k segments), starts `xmodal serve` on a free loopback port, and for each
concurrency level sends a fixed number of `POST /search` requests from that many
client threads (keep-alive connections): by item id; by text from a fixed set of 8
(cached embeddings after the first); by text never seen before (the text tower runs,
batched across concurrent requests). Prints p50/p95/p99 latency, QPS and errors per
level, the saturation QPS, and the server's own split of the time (the Server-Timing
header: encode, search, fetch). The load generator runs on the same 2 cores.

    .venv/bin/python bench/api_latency.py --keys               # also: the same load with a key

--keys then starts a second server over a copy of the store holding a search key, and
sends the by-item-id and cached-text loads at each level to the open server and right
after with `Authorization: Bearer KEY` to the keyed one, printing p50/p99 and errors of
both side by side.

    .venv/bin/python bench/api_latency.py --compare-observability

instead compares apps with neither the metrics nor the access log
(`server.metrics = false`, `log.access = false`), with the metrics only, and with both
(the default): first in this process, requests handed to each app through ASGI (CPU
and wall time per request), then as three servers of the same store started side by
side, sent the same requests over loopback. Rounds alternate between them (one busy
at a time, each round starting with another), so that their figures share the
machine's state; prints each one's figures and the difference to the first.

Latency while an indexer writes, and the server's memory: bench/live_latency.py.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import parse_args  # noqa: E402  (bench/ is the script folder)

TEXT_QUERIES = [
    "a red circle",
    "a small blue square on the left",
    "two objects: a green star above a yellow ring",
    "there is a large white cross",
    "something purple",
    "a black triangle at the bottom",
    "an orange ring in the middle",
    "a large yellow star on the right",
]


COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["circle", "square", "triangle", "star", "ring", "cross"]
PLACES = ["on the left", "on the right", "at the top", "at the bottom", "in the middle"]
SIZES = ["small", "large", "tiny", "big"]


def unique_texts(count: int) -> list[str]:
    """Distinct captions, none of them in TEXT_QUERIES: every one runs the text tower."""
    texts = [
        f"a {size} {colour} {shape} {place}"
        for size in SIZES
        for colour in COLOURS
        for shape in SHAPES
        for place in PLACES
    ]
    for n in range(count - len(texts)):
        texts.append(f"{COLOURS[n % 8]} {SHAPES[n % 6]} number {n}")
    return texts[:count]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_store(data: Path, items: int, seed: int, model: str = "xmodal-ref") -> list[str]:
    """Item ids of a store holding `items` clustered unit vectors (one segment each), in
    the image-text space of `model` (its dimension)."""
    from xmodal.search import Engine
    from xmodal.search.store import ItemRecord, SegmentRecord, segment_id_for

    engine = Engine.open(data, model=model)
    engine.bind_space()
    dim = engine.encoder.dim
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(8, items // 200), dim))
    ids = [f"{i:016x}" for i in range(items)]
    for start in range(0, items, 50_000):
        chunk = ids[start : start + 50_000]
        vectors = centres[rng.integers(len(centres), size=len(chunk))] + 0.4 * rng.standard_normal(
            (len(chunk), dim)
        )
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        engine.store.upsert_segments(
            "image-text",
            [
                SegmentRecord(segment_id_for(i, 0), i, v.astype(np.float32))
                for i, v in zip(chunk, vectors, strict=True)
            ],
        )
        engine.store.upsert_items(
            [
                ItemRecord(i, f"/bench/{i}.jpg", "image", "/bench", metadata={"n": n})
                for n, i in enumerate(chunk, start)
            ]
        )
    engine.store.compact()  # as `xmodal index` ends a run: fragments merged, lookups indexed
    return ids


def save_index(data: Path, kind: str | None = None, model: str = "xmodal-ref"):
    """What `xmodal index` does after its writes: sync the ANN index and save it.
    `kind`: the index kind (as `XMODAL_ANN__KIND`); None: the default policy ("auto")."""
    from xmodal.search import Engine
    from xmodal.search.settings import AnnSettings

    ann = None if kind is None else AnnSettings(kind=kind)
    engine = Engine.open(data, model=model, ann=ann)
    return engine.refresh_indexes(save=True)["image-text"]


def launch_server(data: Path, port: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`xmodal serve` started in its own session (see wait_ready, stop_server)."""
    xmodal = Path(sys.executable).with_name("xmodal")
    return subprocess.Popen(
        [str(xmodal), "serve", "--data", str(data), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def wait_ready(process: subprocess.Popen, port: int, seconds: float = 600) -> None:
    """Until the server answers /health; stopped and SystemExit past `seconds`."""
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    stop_server(process)
    raise SystemExit(f"the server did not start within {seconds:.0f} s")


def start_server(data: Path, port: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    process = launch_server(data, port, env)
    wait_ready(process, port)
    return process


def stop_server(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def parse_server_timing(header: str) -> dict[str, float]:
    parts = (item.split(";dur=") for item in header.split(", ") if ";dur=" in item)
    return {name: float(value) for name, value in parts}


class SearchClient:
    """One keep-alive connection sending `POST /search`, reopened after a failure.
    http.client rather than httpx: the generator shares the 2 cores with the server,
    and httpx spends several times more CPU per request."""

    def __init__(self, base: str, headers: dict[str, str] | None = None):
        host, port = base.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.connection = http.client.HTTPConnection(*self.address, timeout=30)

    def post(self, body: dict) -> tuple[float, int, dict[str, float]]:
        """(seconds, status, the Server-Timing split); status 0: no answer."""
        payload = json.dumps(body).encode()
        started = time.perf_counter()
        try:
            self.connection.request("POST", "/search", payload, self.headers)
            response = self.connection.getresponse()
            response.read()
            status = response.status
            split = parse_server_timing(response.getheader("server-timing") or "")
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = http.client.HTTPConnection(*self.address, timeout=30)
            status, split = 0, {}
        return time.perf_counter() - started, status, split

    def close(self) -> None:
        self.connection.close()


def run_level(
    base: str, bodies: list[dict], clients: int, headers: dict[str, str] | None = None
) -> dict:
    per_client = [bodies[i::clients] for i in range(clients)]

    def client_loop(mine: list[dict]) -> list[tuple[float, int, dict[str, float]]]:
        client = SearchClient(base, headers)
        results = [client.post(body) for body in mine]
        client.close()
        return results

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for part in pool.map(client_loop, per_client) for r in part]
    wall = time.perf_counter() - started
    latencies = sorted(r[0] * 1000 for r in results)
    ok = [r for r in results if r[1] == 200]

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]

    split = {
        name: statistics.fmean(r[2].get(name, 0.0) for r in ok) if ok else 0.0
        for name in ("encode", "search", "fetch")
    }
    return {
        "clients": clients,
        "requests": len(results),
        "errors": len(results) - len(ok),
        "qps": len(results) / wall,
        "p50": pct(50),
        "p95": pct(95),
        "p99": pct(99),
        "split": split,
        "latencies": latencies,
    }


# Servers compared by --compare-observability: settings as environment variables.
OBSERVABILITY = {
    "bare (no metrics, no access log)": {
        "XMODAL_SERVER__METRICS": "false",
        "XMODAL_LOG__ACCESS": "false",
    },
    "metrics": {"XMODAL_LOG__ACCESS": "false"},
    "metrics + access log (default)": {},
}


def observability_in_process(args: argparse.Namespace) -> None:
    """What the middleware itself costs per request, without sockets, a load generator
    or a search to hide it: a one-route app that answers at once (with a Server-Timing
    header like /search's), bare and wrapped in ObserveRequests with the metrics, and
    with the metrics and the access log (written to /dev/null in the text format).
    Requests are handed over through ASGI one at a time, apps alternating by round."""
    import asyncio
    import contextlib
    import logging

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from xmodal.api.logs import LogSettings, configure_logging
    from xmodal.api.metrics import Metrics
    from xmodal.api.observe import ObserveRequests

    def app_with(metrics: bool, access: bool) -> FastAPI:
        app = FastAPI()

        @app.post("/search")
        async def search():  # no annotations: this module's are strings FastAPI can't see
            timing = "encode;dur=0.1, search;dur=0.5, fetch;dur=0.2"
            return JSONResponse({"hits": []}, headers={"Server-Timing": timing})

        if metrics or access:
            app.add_middleware(
                ObserveRequests, metrics=Metrics().http if metrics else None, access=access
            )
        return app

    apps = {
        name: app_with(
            env.get("XMODAL_SERVER__METRICS") != "false", env.get("XMODAL_LOG__ACCESS") != "false"
        )
        for name, env in OBSERVABILITY.items()
    }
    bodies = [b"{}"] * (args.requests * 10)

    async def ask(app, body: bytes) -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/search",
            "raw_path": b"/search",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        received = False
        status = 0

        async def receive():
            nonlocal received
            if received:
                return {"type": "http.disconnect"}
            received = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        return status

    async def run(app) -> tuple[float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        for body in bodies:
            assert await ask(app, body) == 200
        return time.process_time() - cpu, time.perf_counter() - wall

    totals = {name: [0.0, 0.0] for name in apps}
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
        # Only configure_logging's handler (it writes to sys.stderr: /dev/null): open_clip's
        # root `logging.info` put logging.basicConfig's on the root when the store was built.
        logging.getLogger().handlers.clear()
        configure_logging(LogSettings())
        for app in apps.values():
            asyncio.run(run(app))  # warm-up
        names = list(apps)
        for round in range(args.rounds):
            # Each round starts with another app: none is always first after a pause.
            for name in names[round % len(names) :] + names[: round % len(names)]:
                cpu, wall = asyncio.run(run(apps[name]))
                totals[name][0] += cpu
                totals[name][1] += wall
    count = args.rounds * len(bodies)
    print(
        "\nthe middleware alone, in-process (ASGI, no sockets; a route that answers at "
        f"once): {args.rounds} rounds x {len(bodies)} requests per app"
    )
    print("  app                                  CPU us/req  +us   wall us/req  +us")
    base_cpu = base_wall = None
    for name, (cpu, wall) in totals.items():
        cpu_us, wall_us = cpu / count * 1e6, wall / count * 1e6
        base_cpu = cpu_us if base_cpu is None else base_cpu
        base_wall = wall_us if base_wall is None else base_wall
        print(
            f"  {name:34s} {cpu_us:10.1f} {cpu_us - base_cpu:+6.1f} "
            f"{wall_us:11.1f} {wall_us - base_wall:+6.1f}"
        )


def compare_observability(data: Path, ids: list[str], args: argparse.Namespace) -> None:
    """Each server of OBSERVABILITY gets the same requests, round after round, one
    server at a time; latencies are pooled over the rounds."""
    servers = {}
    try:
        for name, env in OBSERVABILITY.items():
            port = free_port()
            servers[name] = (start_server(data, port, env), f"http://127.0.0.1:{port}")
        rng = np.random.default_rng(args.seed)
        workloads = {
            "by item id": [
                {"item_id": ids[int(i)], "k": args.k}
                for i in rng.integers(len(ids), size=args.requests)
            ],
            "by text (cached)": [
                {"text": TEXT_QUERIES[i % len(TEXT_QUERIES)], "k": args.k}
                for i in range(args.requests)
            ],
        }
        for _, base in servers.values():
            for bodies in workloads.values():
                run_level(base, bodies[:20], 1)  # warm-up
        for workload, bodies in workloads.items():
            for clients in args.levels:
                pooled: dict[str, list[float]] = {name: [] for name in servers}
                walls: dict[str, float] = dict.fromkeys(servers, 0.0)
                names = list(servers)
                for round in range(args.rounds):
                    for name in names[round % len(names) :] + names[: round % len(names)]:
                        base = servers[name][1]
                        started = time.perf_counter()
                        result = run_level(base, bodies, clients)
                        walls[name] += time.perf_counter() - started
                        pooled[name].extend(result["latencies"])
                        assert result["errors"] == 0, (name, result["errors"])
                print(
                    f"\nPOST /search {workload}, {clients} client(s), {args.items} items, "
                    f"{args.rounds} rounds x {len(bodies)} requests per server"
                )
                print("  server                               p50 ms   p99 ms      QPS   p50 +ms")
                first = None
                for name, latencies in pooled.items():
                    latencies.sort()
                    p50 = statistics.median(latencies)
                    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
                    qps = len(latencies) / walls[name]
                    first = p50 if first is None else first
                    print(f"  {name:34s} {p50:8.3f} {p99:8.3f} {qps:8.1f}  {p50 - first:+8.3f}")
        print("\nobservability overhead: see p50 +ms above")
    finally:
        for process, _ in servers.values():
            stop_server(process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=400, help="per concurrency level")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 50])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument(
        "--keys", action="store_true", help="then the same load again with an API key"
    )
    parser.add_argument(
        "--compare-observability",
        action="store_true",
        help="compare servers without metrics and access log, with metrics, with both",
    )
    parser.add_argument("--rounds", type=int, default=5, help="with --compare-observability")
    args = parse_args(parser, argv, items=2000, requests=50, levels=[1, 8], keys=True, rounds=1)

    scratch = tempfile.TemporaryDirectory(prefix="xmodal-api-bench-")
    data = args.data_dir or Path(scratch.name) / "data"
    started = time.perf_counter()
    ids = build_store(data, args.items, args.seed)
    print(f"store: {args.items} items written in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    report = save_index(data)
    print(
        f"index: {report.kind} over {report.segments} segments, built {report.built}, "
        f"saved {report.saved}, {time.perf_counter() - started:.1f} s"
    )
    if args.compare_observability:
        try:
            observability_in_process(args)
            compare_observability(data, ids, args)
        finally:
            scratch.cleanup()
        return 0
    port = free_port()
    started = time.perf_counter()
    server = start_server(data, port)
    print(f"server ready in {time.perf_counter() - started:.1f} s (model, snapshot, index loaded)")
    base = f"http://127.0.0.1:{port}"
    try:
        rng = np.random.default_rng(args.seed)
        by_item = [
            {"item_id": ids[int(i)], "k": args.k}
            for i in rng.integers(len(ids), size=args.requests)
        ]
        by_text = [
            {"text": TEXT_QUERIES[i % len(TEXT_QUERIES)], "k": args.k} for i in range(args.requests)
        ]
        fresh = unique_texts(args.requests * len(args.levels))
        by_new_text = [{"text": t, "k": args.k} for t in fresh]
        run_level(base, by_item[:20], 1)  # warm-up
        run_level(base, by_text[:20], 1)
        for name, bodies in (
            ("by item id", by_item),
            ("by text (8 repeated: cached)", by_text),
            ("by text never seen (encoder runs)", by_new_text),
        ):
            print(
                f"\nPOST /search {name}, {args.items} items, k={args.k}, {args.requests} requests per level"
            )
            print(
                "  clients    p50 ms   p95 ms   p99 ms      QPS  errors   server: encode / search / fetch ms"
            )
            per_level = len(bodies) // len(args.levels) if bodies is by_new_text else 0
            rows = [
                run_level(
                    base,
                    bodies[n * per_level : (n + 1) * per_level] if per_level else bodies,
                    clients,
                )
                for n, clients in enumerate(args.levels)
            ]
            for r in rows:
                s = r["split"]
                print(
                    f"  {r['clients']:7d}  {r['p50']:8.2f} {r['p95']:8.2f} {r['p99']:8.2f} {r['qps']:8.1f}  {r['errors']:6d}"
                    f"   {s['encode']:6.2f} / {s['search']:6.2f} / {s['fetch']:6.2f}"
                )
            print(f"  saturation: {max(r['qps'] for r in rows):.1f} QPS")
        if args.keys:
            compare_with_a_key(base, data, args, by_item, by_text)
    finally:
        stop_server(server)
        scratch.cleanup()
    return 0


def compare_with_a_key(
    base: str,
    data: Path,
    args: argparse.Namespace,
    by_item: list[dict],
    by_text: list[dict],
) -> None:
    """A second server over a copy of the store with a search key made in it: check
    that it refuses a request without the key, then send each load at each level to the
    open server and, right after, with the key to the keyed one (back to back, so that
    both see the same machine)."""
    import shutil

    from xmodal.api.keys import KeyRing, Scope

    keyed_data = data.with_name(data.name + "-keyed")
    shutil.copytree(data, keyed_data, ignore=shutil.ignore_patterns("server.json"))
    _, secret = KeyRing.of_data(keyed_data).create(Scope.SEARCH, "bench")
    port = free_port()
    server = start_server(keyed_data, port)
    keyed_base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {secret}"}
    try:
        refused = run_level(keyed_base, by_item[:1], 1)
        assert refused["errors"] == 1, "the keyed server answers without a key"
        # Warm-up as the open server's: its earlier rounds ran every query once at least.
        run_level(keyed_base, by_item, max(args.levels), headers)
        run_level(keyed_base, by_text, max(args.levels), headers)
        print(
            f"\nopen server, then a keyed one (Authorization: Bearer, search scope), "
            f"{args.requests} requests per level"
        )
        print("  load            clients   open p50 / p99 ms  errors   keyed p50 / p99 ms  errors")
        for name, bodies in (("by item id", by_item), ("by text (cached)", by_text)):
            for clients in args.levels:
                plain = run_level(base, bodies, clients)
                keyed = run_level(keyed_base, bodies, clients, headers)
                print(
                    f"  {name:16s}{clients:7d}   {plain['p50']:7.2f} / {plain['p99']:7.2f}  "
                    f"{plain['errors']:6d}   {keyed['p50']:7.2f} / {keyed['p99']:7.2f}  "
                    f"{keyed['errors']:6d}"
                )
    finally:
        stop_server(server)
    print_key_check_cost(data, keyed_data, secret)


def print_key_check_cost(open_data: Path, keyed_data: Path, secret: str) -> None:
    """The server's own work per request for access, timed in this process: what the
    loads above cannot resolve on a busy machine."""
    import functools
    import timeit

    from xmodal.api.access import Access
    from xmodal.api.keys import KeyRing, Scope
    from xmodal.api.settings import SecuritySettings

    calls = 20_000
    for label, data, sent in (
        ("no key file", open_data, None),
        ("a search key", keyed_data, secret),
    ):
        access = Access(KeyRing.of_data(data), SecuritySettings())
        check = functools.partial(access.caller, sent, None, Scope.SEARCH)
        seconds = timeit.timeit(check, number=calls)
        print(f"  access check per request, {label}: {seconds / calls * 1e6:.1f} us")


if __name__ == "__main__":
    raise SystemExit(main())
