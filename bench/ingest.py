"""Catalog ingestion: local files versus URLs versus POST /items/batch, each against
the model alone, in one run.

    .venv/bin/python bench/ingest.py                 # 300 photos 1600x1200, ViT-B-32
    .venv/bin/python bench/ingest.py --images 600 --batch-items 100

What it does:
  1. the photos and the seeded random checkpoint of bench/index_throughput.py
     (cached under bench-data/);
  2. model-only: `encoder.encode_prepared` on one prepared batch, timed batches
     after a warm-up, before and after the runs (the faster is the baseline);
  3. local files: `index_paths` over the folder, into a fresh store;
  4. URLs: a threaded http.server on 127.0.0.1 serves the folder, and a trusted
     Catalog (indexer/catalog.py) fetches, embeds and writes every photo by URL;
  5. HTTP batches: the API (uvicorn on 127.0.0.1, in a thread) takes the same URLs
     in POST /items/batch calls of --batch-items, sent one after the other;
  6. prints items/s for each, its ratio to model-only, and URL / local.

Each ingestion run gets a fresh store and an engine whose model is already loaded,
so that the runs compare ingestion, not model loading. Other processes' CPU use is
shown per phase ("other procs"); above 5% the figures are disturbed.

Target: URL ingestion >= 0.8 x local-file ingestion.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import CpuMeter, fresh_dir, parse_args  # noqa: E402
from index_throughput import (  # noqa: E402  (the photos and weights it caches)
    ARCH,
    model_only,
    photo_folder,
    prepared_batch,
    random_checkpoint,
)

TARGET = 0.8


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def file_server(folder: Path) -> Iterator[str]:
    """The folder over http://127.0.0.1:PORT/ while the block runs."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@contextmanager
def api_server(app) -> Iterator[str]:
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def report(label: str, items: int, cpu: dict[str, float], baseline: float) -> float:
    rate = items / cpu["wall"]
    print(
        f"{label:<28} {items:5d} items in {cpu['wall']:6.1f} s = {rate:7.1f} items/s   "
        f"/ model-only = {rate / baseline:4.2f}   other procs {cpu['foreign_share']:4.0%}",
        flush=True,
    )
    if cpu["foreign_share"] > 0.05:
        print("    warning: other processes used the CPU: figures disturbed", flush=True)
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1200)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--batch-items", type=int, default=100, help="items per POST /items/batch")
    parser.add_argument("--model-batches", type=int, default=4)
    parser.add_argument("--arch", default=ARCH)
    args = parse_args(
        parser,
        argv,
        images=24,
        width=160,
        height=120,
        batch_size=8,
        batch_items=10,
        model_batches=1,
        arch="xmodal-tiny",
    )
    import httpx
    import torch

    from xmodal.api import create_app
    from xmodal.api.settings import Settings
    from xmodal.indexer import IndexOptions, index_paths
    from xmodal.indexer.catalog import Catalog, CatalogEntry
    from xmodal.indexer.options import CatalogSettings, FetchSettings
    from xmodal.search import Engine, Store, create_encoder

    torch.set_num_threads(torch.get_num_threads())
    folder = photo_folder(args.images, args.width, args.height, args.quality, args.seed)
    files = sorted(p.name for p in folder.glob("*.jpg"))
    spec = f"open_clip:{args.arch}/{random_checkpoint(args.seed, args.arch)}"
    encoder = create_encoder(spec, device="cpu")
    encoder.load()
    options = IndexOptions(batch_size=args.batch_size)
    print(
        f"photos : {len(files)} x {args.width}x{args.height} JPEG q{args.quality}; model {args.arch}, "
        f"batch {args.batch_size}, decode workers {options.decode_workers}",
        flush=True,
    )
    prepared = prepared_batch(encoder, folder, args.batch_size)
    baselines = [model_only("before", encoder, prepared, args.model_batches).rate]
    scratch = Path(tempfile.mkdtemp(prefix="xmodal-bench-ingest-"))

    def engine(name: str) -> Engine:
        return Engine(Store(fresh_dir(scratch / name)), encoder)

    meter = CpuMeter()
    local_report = index_paths(engine("local"), [folder], options)
    local_cpu = meter.stop()
    assert local_report.embedded == len(files), local_report.summary()

    fetch = FetchSettings()
    with file_server(folder) as base:
        urls = [f"{base}/{name}" for name in files]
        with Catalog(engine("urls"), fetch, options, trusted=True) as catalog:
            meter = CpuMeter()
            results = list(catalog.put(CatalogEntry(url, url) for url in urls))
            url_cpu = meter.stop()
        failed = [r for r in results if r.status != "created"]
        assert not failed, failed[:3]

        settings = Settings(
            data=scratch / "http",
            security={"client_rate": None},
            fetch={"allow_private_addresses": True},  # the file server is on loopback
            catalog=CatalogSettings(inline_batch_items=args.batch_items),
            indexing=options,
        )
        api_engine = engine("http")
        with api_server(create_app(settings, api_engine)) as api, httpx.Client(timeout=600) as http:
            meter = CpuMeter()
            for start in range(0, len(urls), args.batch_items):
                part = urls[start : start + args.batch_items]
                answer = http.post(
                    f"{api}/items/batch", json={"items": [{"id": u, "url": u} for u in part]}
                )
                answer.raise_for_status()
                assert answer.json()["counts"]["created"] == len(part), answer.json()["counts"]
            http_cpu = meter.stop()
    baselines.append(model_only("after", encoder, prepared, args.model_batches).rate)
    baseline = max(baselines)

    print(f"\nmodel-only                   {baseline:7.1f} items/s (best of before/after)")
    local = report("local files (index_paths)", len(files), local_cpu, baseline)
    by_url = report("URLs (Catalog, loopback)", len(files), url_cpu, baseline)
    by_http = report(f"POST /items/batch x{args.batch_items}", len(files), http_cpu, baseline)
    ratio = by_url / local
    print(
        f"\nURL ingestion / local-file ingestion = {ratio:.2f} (target >= {TARGET}); "
        f"POST /items/batch / local = {by_http / local:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
