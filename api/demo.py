"""`xmodal demo`: a generated library, indexed offline and served on 127.0.0.1."""

from __future__ import annotations

import logging
from pathlib import Path

from rich.console import Console

from search import Settings

DEMO_ARCH = "xmodal-tiny"
DEMO_SEED = 0


def demo_model_spec(data: Path) -> str:
    """A small open_clip model from a fixed seed, written once into the data directory.

    Its weights are untrained: image-to-image similarity follows colour and layout,
    text queries rank arbitrarily. It exists so the demo runs with no download.
    """
    import open_clip
    import torch

    from search.encoders.open_clip_encoder import register_builtin_configs

    checkpoint = data / "models" / f"{DEMO_ARCH}-seed{DEMO_SEED}.pt"
    if not checkpoint.exists():
        register_builtin_configs()
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(DEMO_SEED)
        # open_clip logs a warning about random initialisation: here that is the point.
        logging.getLogger().setLevel(logging.ERROR)
        model = open_clip.create_model(DEMO_ARCH)
        logging.getLogger().setLevel(logging.WARNING)
        torch.save(model.state_dict(), checkpoint)
    return f"open_clip:{DEMO_ARCH}/{checkpoint.resolve()}"


def run_demo(data: Path, host: str, port: int, serve: bool, console: Console) -> None:
    from api.app import create_app, open_engine
    from indexer import IndexOptions, index_paths
    from indexer.demo_library import generate_demo_library
    from indexer.metadata_file import read_metadata_file

    from .progress_bar import RichProgress

    data = data.resolve()
    library = data / "library"
    metadata_file = generate_demo_library(library)
    settings = Settings(data=data / "store", model=demo_model_spec(data), host=host, port=port)
    engine = open_engine(settings)
    report = index_paths(
        engine,
        [library],
        IndexOptions.from_settings(settings),
        read_metadata_file(metadata_file),
        RichProgress(console),
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
        f"""-d '{{"item_id": "{first}", "k": 3, "filter": {{"colour": "red"}}}}'"""
    )
    print(f"  curl -s -F file=@{library / '000-red-circle.jpg'} {base}/search/image")
    if serve:
        import uvicorn

        uvicorn.run(create_app(settings, engine), host=host, port=port, log_level="warning")
