"""A model migration under search load: `POST /admin/migrate` on a live `xmodal serve`
while client threads search it (issue 17).

    .venv/bin/python bench/migrate_load.py --smoke        # 60 generated items, seconds
    .venv/bin/python bench/migrate_load.py                # the demo library, xmodal-ref -> xmodal-tiny

The 100k-item store (generated 64x64 images indexed with xmodal-tiny, migrated to
xmodal-ref; --data-dir keeps the images and the store):

    .venv/bin/python bench/migrate_load.py --library generated --items 100000 \\
        --data-dir /tmp/mig100k

--library demo builds the demo library as `xmodal demo --no-serve --data DIR` does
(indexed with xmodal-ref); --library generated writes --items distinct 64x64 PNGs
(seeded 4x4 colour grids) and indexes them with `xmodal index --model --from-model`.
xmodal-tiny, as a model name here, is that architecture with seeded random weights
(bench-data/, written once). Then `xmodal serve` starts on a free loopback port (no key
in a fresh data directory: the admin routes are open there) and --clients threads send
`POST /search` at --qps requests/s in all (text queries from a fixed set, a check query
and by-item-id queries): an idle phase of --idle-seconds, then `POST /admin/migrate`
{"model": --to-model}, polled on `GET /admin/migrate` and `/health` every 50 ms until
the job ends (--timeout), then a tail of --tail-seconds.

Prints the items migrated, the job's wall time and items/s, latency and errors before,
during and after the migration, the delay from the first `switched` seen to /health
reporting the new model, and checks that the check query's top hit after the job equals
the new model's (exact search of the migrated store in this process) and differs from
the old one's. Exits 1 on any error response, a failed check or a timeout.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import parse_args  # noqa: E402  (bench/ is the script folder)
from api_latency import (  # noqa: E402
    TEXT_QUERIES,
    SearchClient,
    free_port,
    launch_server,
    stop_server,
    wait_ready,
)

OFFLINE = {"HF_HUB_OFFLINE": "1"}
CHECK = {"text": "a red circle", "k": 5, "kinds": ["image"]}  # its top hit tells the model
TINY = "xmodal-tiny"
POLL_SECONDS = 0.05
NEW_MODEL_WITHIN = 5.0  # after the job ends, /health must report the new model by then
SAME_SCORE = 1e-4


# -- the library ----------------------------------------------------------------
def model_spec(name: str) -> str:
    """A model name as a spec: xmodal-tiny is written once with seeded random weights."""
    if name != TINY:
        return name
    from index_throughput import random_checkpoint

    return f"open_clip:{TINY}/{random_checkpoint(0, TINY)}"


def run_cli(*args: str) -> None:
    """`xmodal ARGS`, its output shown only when it fails."""
    xmodal = Path(sys.executable).with_name("xmodal")
    done = subprocess.run(
        [str(xmodal), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **OFFLINE},
    )
    if done.returncode != 0:
        raise SystemExit(f"xmodal {' '.join(args)} failed:\n{(done.stdout + done.stderr)[-3000:]}")


def write_images(folder: Path, count: int, seed: int) -> None:
    """`count` distinct 64x64 PNGs: seeded 4x4 grids of random colours."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for n in range(count):
        grid = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        pixels = grid.repeat(16, axis=0).repeat(16, axis=1)
        Image.fromarray(pixels).save(folder / f"{n:07d}.png", compress_level=1)


def build_library(root: Path, args: argparse.Namespace) -> Path:
    """The store (its data directory) of --library, built under `root`."""
    started = time.perf_counter()
    if args.library == "demo":
        run_cli("demo", "--no-serve", "--data", str(root))
        data = root / "store"
        what = "the demo library (xmodal demo --no-serve)"
    else:
        write_images(root / "images", args.items, args.seed)
        data = root / "store"
        run_cli(
            "index",
            str(root / "images"),
            "--data",
            str(data),
            "--model",
            model_spec(args.from_model),
            "--audio-model",
            "none",
        )
        what = f"{args.items} generated images"
    print(f"library: {what}, built in {time.perf_counter() - started:.1f} s")
    return data


def item_ids(data: Path) -> list[str]:
    from xmodal.search.store import Store

    return Store(data).items_table(["id"]).column("id").to_pylist()


# -- the load -------------------------------------------------------------------
@dataclass
class Sample:
    sent: float  # time.monotonic()
    seconds: float
    status: int
    top: tuple[str, float] | None = None  # the check query's top hit


class AnswerClient(SearchClient):
    """SearchClient, also returning the answer's body."""

    def ask(self, body: dict) -> tuple[float, int, dict | None]:
        payload = json.dumps(body).encode()
        started = time.perf_counter()
        try:
            self.connection.request("POST", "/search", payload, self.headers)
            response = self.connection.getresponse()
            raw, status = response.read(), response.status
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = http.client.HTTPConnection(*self.address, timeout=30)
            return time.perf_counter() - started, 0, None
        seconds = time.perf_counter() - started
        return seconds, status, json.loads(raw) if status == 200 else None


def ask_once(base: str, body: dict) -> tuple[str, float] | None:
    """The top hit of one request on a connection of its own."""
    client = AnswerClient(base)
    try:
        return top_hit(client.ask(body)[2])
    finally:
        client.close()


def top_hit(answer: dict | None) -> tuple[str, float] | None:
    hits = (answer or {}).get("hits") or []
    return (hits[0]["id"], hits[0]["score"]) if hits else None


def request_bodies(ids: list[str], seed: int) -> list[dict]:
    """Text queries, the check query and by-item-id queries, interleaved."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(ids), size=min(len(ids), 64), replace=False)
    bodies: list[dict] = []
    for n, i in enumerate(picks):
        bodies.append({"item_id": ids[int(i)], "k": 10})
        bodies.append(CHECK if n % 2 else {"text": TEXT_QUERIES[n % len(TEXT_QUERIES)], "k": 10})
    return bodies


class Load:
    """`clients` threads sending `bodies` in turn, `qps` requests/s in all, until stopped."""

    def __init__(self, base: str, bodies: list[dict], clients: int, qps: float):
        self.base, self.bodies, self.clients = base, bodies, clients
        self.interval = clients / qps  # each client's
        self.samples: list[Sample] = []
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._client, args=(c,), daemon=True) for c in range(clients)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> list[Sample]:
        self.stopping.set()
        for thread in self.threads:
            thread.join()
        return sorted(self.samples, key=lambda s: s.sent)

    def _client(self, number: int) -> None:
        client = AnswerClient(self.base)
        due = time.monotonic() + number * self.interval / self.clients
        n = number
        while not self.stopping.wait(max(0.0, due - time.monotonic())):
            body = self.bodies[n % len(self.bodies)]
            sent = time.monotonic()
            seconds, status, answer = client.ask(body)
            top = top_hit(answer) if body is CHECK else None
            self.samples.append(Sample(sent, seconds, status, top))
            n += self.clients
            due += self.interval
        client.close()


# -- the migration ----------------------------------------------------------------
@dataclass
class Watched:
    job: dict
    ended: float  # monotonic: the first poll that saw the job over
    switched: float | None  # the first poll that saw the space switched
    new_model: float | None  # the first poll where /health reported the job's model
    poll_failures: list[str]  # non-200 answers to the polls (not searches)


def start_migration(http: Any, model: str) -> dict:
    answer = http.post("/admin/migrate", json={"model": model})
    if answer.status_code in (401, 403):
        raise SystemExit(
            "the server asks for an admin key: run on a fresh data directory (no key), or "
            "`xmodal keys create --scope admin`"
        )
    if answer.status_code != 202:
        raise SystemExit(f"POST /admin/migrate: {answer.status_code} {answer.text}")
    return answer.json()


def is_switched(state: dict) -> bool:
    job = state.get("job") or {}
    moving = [m for m in state.get("migrations", []) if m["space"] == "image-text"]
    return bool(job.get("switched")) or any(m["state"] == "switched" for m in moving)


def get_json(http: Any, path: str, failures: list[str]) -> dict | None:
    """The answer's body; None (and a line in `failures`) when not a 200."""
    answer = http.get(path)
    if answer.status_code == 200:
        return answer.json()
    failures.append(f"GET {path}: {answer.status_code} {answer.text[:300]}")
    return None


def watch_migration(http: Any, model: str, timeout: float) -> Watched:
    """Poll GET /admin/migrate and /health until the job ends and /health reports
    `model` (at most NEW_MODEL_WITHIN s after the end); SystemExit past `timeout`."""
    deadline = time.monotonic() + timeout
    watched = Watched({}, 0.0, None, None, [])
    while time.monotonic() < deadline:
        polled = time.monotonic()
        state = get_json(http, "/admin/migrate", watched.poll_failures)
        health = get_json(http, "/health", watched.poll_failures)
        if state is not None and watched.switched is None and is_switched(state):
            watched.switched = polled
        if health is not None and watched.new_model is None and health.get("model") == model:
            watched.new_model = polled
        if state is not None and not watched.job and state["job"]["state"] != "running":
            watched.ended, watched.job = polled, state["job"]
        if watched.job and (
            watched.new_model is not None or polled > watched.ended + NEW_MODEL_WITHIN
        ):
            return watched
        time.sleep(POLL_SECONDS)
    raise SystemExit(f"the migration did not end within {timeout:.0f} s")


def expected_top(data: Path, query: dict) -> tuple[str, float]:
    """The check query's top hit by the store's model now (the new one), searched
    exactly in this process."""
    from xmodal.search import Engine
    from xmodal.search.settings import AnnSettings

    engine = Engine.open(data, device="cpu", audio_model="none", ann=AnnSettings(kind="exact"))
    result = engine.search_text(query["text"], k=query["k"], kinds=query["kinds"])
    return result.hits[0].item.id, result.hits[0].score


def same(a: tuple[str, float] | None, b: tuple[str, float] | None) -> bool:
    return a is not None and b is not None and a[0] == b[0] and abs(a[1] - b[1]) < SAME_SCORE


# -- figures ----------------------------------------------------------------------
def latency_row(name: str, samples: list[Sample], seconds: float) -> str:
    if not samples:
        return f"  {name:8s} {0:8d}"
    ms = sorted(s.seconds * 1000 for s in samples)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, int(p / 100 * len(ms)))]

    errors = sum(s.status != 200 for s in samples)
    rate = len(samples) / seconds if seconds > 0 else 0.0
    return (
        f"  {name:8s} {len(samples):8d} {errors:7d} {rate:7.1f} {statistics.median(ms):8.1f} "
        f"{pct(95):8.1f} {pct(99):8.1f} {ms[-1]:8.1f}"
    )


def print_job(job: dict, model: str) -> float:
    """The job's figures; its wall time in seconds."""
    progress = job.get("progress") or {"done": 0, "total": 0, "embedded": 0, "failed": 0}
    wall = (job.get("finished_at") or job["started_at"]) - job["started_at"]
    rate = progress["embedded"] / wall if wall > 0 else 0.0
    print(
        f"migration to {model}: {job['state']}, {progress['done']}/{progress['total']} items "
        f"({progress['embedded']} embedded, {progress['failed']} failed) in {wall:.1f} s: "
        f"{rate:.1f} items/s (the server's job, under the load)"
    )
    if job.get("error"):
        print(f"  error: {job['error']}")
    return wall


def print_phases(samples: list[Sample], marks: dict[str, float]) -> list[Sample]:
    """Latency before, during and after the migration; the samples during it."""
    phases = {
        "before": (marks["load"], marks["post"]),
        "during": (marks["post"], marks["ended"]),
        "after": (marks["ended"], marks["stop"]),
    }
    print("  phase    requests  errors   req/s   p50 ms   p95 ms   p99 ms   max ms")
    during: list[Sample] = []
    for name, (start, end) in phases.items():
        mine = [s for s in samples if start <= s.sent < end]
        during = mine if name == "during" else during
        print(latency_row(name, mine, end - start))
    return during


def check_answers(
    samples: list[Sample], marks: dict[str, float], old: tuple, new: tuple, final: tuple | None
) -> list[str]:
    """What the check query's answers say; problems found (empty: all good)."""
    problems = []
    if same(old, new):
        problems.append("the old and new models give the check query the same top hit")
    if not same(final, new):
        problems.append(f"after the job, the check query's top hit is {final}, not {new}")
    during = [s.top for s in samples if marks["post"] <= s.sent < marks["ended"] and s.top]
    after = [s.top for s in samples if s.sent >= marks["ended"] and s.top]
    from_old = sum(same(t, old) for t in during)
    from_new = sum(same(t, new) for t in during)
    print(
        f"check query during the migration: {from_old} answers from the old model, "
        f"{from_new} from the new, {len(during) - from_old - from_new} from neither"
    )
    late = [t for t in after if not same(t, new)]
    print(f"check query after the job: {len(after) - len(late)}/{len(after)} from the new model")
    if late:
        problems.append(f"{len(late)} check answers after the job not from the new model")
    if len(during) != from_old + from_new:
        problems.append("check answers during the migration from neither model")
    return problems


# -- main -------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", choices=["demo", "generated"], default="demo")
    parser.add_argument("--items", type=int, default=1000, help="--library generated")
    parser.add_argument(
        "--from-model", default=TINY, help="--library generated: the model it is indexed with"
    )
    parser.add_argument(
        "--to-model",
        default=None,
        help="default: xmodal-tiny for the demo (xmodal-ref), else xmodal-ref",
    )
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--qps", type=float, default=20.0, help="requests/s, all clients")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--tail-seconds", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="for the migration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help="kept (default: temporary)")
    args = parse_args(
        parser, argv, library="generated", items=60, idle_seconds=2.0, tail_seconds=1.0
    )
    to_model = model_spec(args.to_model or (TINY if args.library == "demo" else "xmodal-ref"))

    scratch = tempfile.TemporaryDirectory(prefix="xmodal-migrate-bench-")
    root = args.data_dir or Path(scratch.name)
    try:
        return run(build_library(root, args), to_model, args)
    finally:
        scratch.cleanup()


def run(data: Path, to_model: str, args: argparse.Namespace) -> int:
    import httpx

    ids = item_ids(data)
    port = free_port()
    started = time.perf_counter()
    server = launch_server(data, port, OFFLINE)
    try:
        wait_ready(server, port)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            old_model = http.get("/health").json()["model"]
            print(
                f"server ready in {time.perf_counter() - started:.1f} s: {len(ids)} items, {old_model}"
            )
            return migrate_under_load(http, base, data, ids, to_model, args)
    finally:
        stop_server(server)


def migrate_under_load(
    http: Any, base: str, data: Path, ids: list[str], to_model: str, args: argparse.Namespace
) -> int:
    old = ask_once(base, CHECK)
    load = Load(base, request_bodies(ids, args.seed), args.clients, args.qps)
    marks = {"load": time.monotonic()}
    load.start()
    time.sleep(args.idle_seconds)
    marks["post"] = time.monotonic()
    job = start_migration(http, to_model)
    watched = watch_migration(http, job["model"], args.timeout)
    marks["ended"] = watched.ended
    final = ask_once(base, CHECK)
    time.sleep(args.tail_seconds)
    marks["stop"] = time.monotonic()
    samples = load.stop()

    print_job(watched.job, job["model"])
    print(
        f"load: {args.clients} clients, {args.qps:g} requests/s in all "
        f"(idle {args.idle_seconds:g} s first, a tail of {args.tail_seconds:g} s after)"
    )
    during = print_phases(samples, marks)
    problems = [] if watched.job["state"] == "completed" else ["the migration did not complete"]
    report_polls(watched)
    problems += report_switch(watched)
    new = expected_top(data, CHECK)
    print(f"check query {CHECK['text']!r}: top hit before {old}, new model's {new}, after {final}")
    problems += check_answers(samples, marks, old, new, final)
    errors = sum(s.status != 200 for s in during)
    for problem in problems:
        print(f"FAILED: {problem}")
    print(f"errors during the migration: {errors}")
    return 1 if errors or problems else 0


def report_polls(watched: Watched) -> None:
    """Non-200 answers to GET /admin/migrate and /health: not searches, not counted as
    errors of the load, but shown (the issue wants none)."""
    failures = watched.poll_failures
    print(f"status polls (GET /admin/migrate, /health) answered non-200: {len(failures)}")
    for line in dict.fromkeys(failures):
        print(f"  WARNING: {line}")


def report_switch(watched: Watched) -> list[str]:
    if watched.switched is None or watched.new_model is None:
        print("switch -> new model: not seen")
        return ["/health never reported the new model"]
    delay = (watched.new_model - watched.switched) * 1000
    print(
        f"switch -> answering from the new model: {delay:.0f} ms (first `switched` on GET "
        f"/admin/migrate -> /health reports the new model; polled every "
        f"{POLL_SECONDS * 1000:.0f} ms); job ended -> new model: "
        f"{(watched.new_model - watched.ended) * 1000:.0f} ms"
    )
    return []


if __name__ == "__main__":
    raise SystemExit(main())
