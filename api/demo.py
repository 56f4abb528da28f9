"""`xmodal demo`: a generated library, indexed offline and served on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from xmodal.api.settings import load_settings

# Two objects whose colours a contrastive model confuses: what the reranker is for.
DEMO_QUERY = "a red square to the left of a yellow star"


def show_reranked_query(engine: Any, console: Console) -> None:
    """One query before and after reranking, with the top hit's explanation."""
    from rich.table import Table

    first = engine.search_text(DEMO_QUERY, k=3, kinds=["image"])
    result = engine.search_text(DEMO_QUERY, k=3, kinds=["image"], rerank=True, explain=1)
    table = Table("rank", "first order", "reranked", "rerank score", title=f'"{DEMO_QUERY}"')
    for rank, (before, after) in enumerate(zip(first.hits, result.hits, strict=False), 1):
        score = "" if after.rerank_score is None else f"{after.rerank_score:.3f}"
        table.add_row(str(rank), Path(before.item.uri).name, Path(after.item.uri).name, score)
    console.print(table)
    report = result.rerank
    if report is not None and not report.applied:
        console.print(f"(not reranked: {report.reason})", markup=False)
    elif report is not None:
        console.print(f"reranked by {report.model} ({report.method}) in {report.took_ms:.0f} ms")
    top = result.hits[0] if result.hits else None
    if top is not None and top.explanation is not None:
        console.print(f"why {Path(top.item.uri).name}: {top.explanation.summary}", markup=False)


def run_demo(data: Path, host: str, port: int, serve: bool, console: Console) -> None:
    from xmodal.api.app import create_app
    from xmodal.indexer import DecodeOptions, index_paths
    from xmodal.indexer.metadata_file import read_metadata_file
    from xmodal.search import Engine
    from xmodal.search.encoders.builtin import (
        REFERENCE_AUDIO_MODEL,
        REFERENCE_MODEL,
        REFERENCE_RERANKER,
    )
    from xmodal.synthetic.demo_library import write_demo_library

    from .access import check_exposure
    from .keys import KeyRing
    from .progress_bar import RichProgress

    data = data.resolve()
    library = data / "library"
    metadata_file = write_demo_library(library)
    settings = load_settings(
        data=data / "store",
        model=REFERENCE_MODEL,
        audio_model=REFERENCE_AUDIO_MODEL,
        server={"host": host, "port": port},
        rerank={"model": REFERENCE_RERANKER, "preload": True},
    )
    if serve:
        # The demo makes no key: beyond loopback, it refuses before indexing (`xmodal
        # keys create --data DATA/store`, then serve it, or --insecure-no-auth).
        check_exposure(host, KeyRing.of_data(settings.data), insecure_no_auth=False)
    engine = Engine.from_settings(settings)
    report = index_paths(
        engine,
        [library],
        settings.indexing,
        read_metadata_file(metadata_file),
        RichProgress(console),
        DecodeOptions.from_settings(settings),
    )
    console.print(f"{report.summary()} ({library})")
    show_reranked_query(engine, console)
    first = engine.store.items_table(["id"]).column("id")[0].as_py()
    base = f"http://{host}:{port}"
    console.print(f"\nxmodal demo: {base}  (API docs: {base}/docs)\n")
    # Plain print: the commands must survive copy and paste unwrapped.
    print("Try:")
    print(
        f"  curl -s -X POST {base}/search -H 'content-type: application/json' "
        """-d '{"text": "a red circle", "k": 3}'"""
    )
    print(
        f"  curl -s -X POST {base}/search -H 'content-type: application/json' "
        f"""-d '{{"item_id": "{first}", "k": 3, "filter": {{"colours": "red"}}}}'"""
    )
    print(
        f"  curl -s -X POST {base}/search -H 'content-type: application/json' "
        """-d '{"text": "a high beep repeated three times", "k": 3, "min_score": 3}'"""
    )
    print(
        f"  curl -s -X POST {base}/search -H 'content-type: application/json' "
        f"""-d '{{"text": "{DEMO_QUERY}", "k": 3, "kinds": ["image"], "rerank": true, "explain": 1}}'"""
    )
    example = sorted(library.glob("*.jpg"))[0]
    print(f"  curl -s -F file=@{example} {base}/search/image")
    sound = sorted(library.glob("*.wav"))[0]
    print(f"  curl -s -F file=@{sound} {base}/search/audio", flush=True)
    if serve:
        from .server_link import serve_announced

        # While it runs, `xmodal search --data DATA/store` asks it (server.json).
        serve_announced(create_app(settings, engine), settings.data, host, port, lambda _: None)
