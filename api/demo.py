"""`xmodal demo`: a generated library, indexed offline and served on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from xmodal.api.settings import load_settings


def run_demo(data: Path, host: str, port: int, serve: bool, console: Console) -> None:
    from xmodal.api.app import create_app
    from xmodal.indexer import DecodeOptions, index_paths
    from xmodal.indexer.metadata_file import read_metadata_file
    from xmodal.search import Engine
    from xmodal.search.encoders.builtin import REFERENCE_AUDIO_MODEL, REFERENCE_MODEL
    from xmodal.synthetic.demo_library import write_demo_library

    from .progress_bar import RichProgress

    data = data.resolve()
    library = data / "library"
    metadata_file = write_demo_library(library)
    settings = load_settings(
        data=data / "store",
        model=REFERENCE_MODEL,
        audio_model=REFERENCE_AUDIO_MODEL,
        server={"host": host, "port": port},
    )
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
    example = sorted(library.glob("*.jpg"))[0]
    print(f"  curl -s -F file=@{example} {base}/search/image")
    sound = sorted(library.glob("*.wav"))[0]
    print(f"  curl -s -F file=@{sound} {base}/search/audio", flush=True)
    if serve:
        from .server_link import serve_announced

        # While it runs, `xmodal search --data DATA/store` asks it (server.json).
        serve_announced(create_app(settings, engine), settings.data, host, port, lambda _: None)
