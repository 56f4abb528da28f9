"""The `xmodal` command line: index, search, serve, info, demo.

User errors print one line to stderr and exit with status 2 (3 when model weights
cannot be loaded, 1 when --fail-fast stopped a run).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from xmodal.api.settings import Settings, load_settings
from xmodal.search import Engine, MediaKind, XmodalError
from xmodal.search.errors import IndexingAborted, InvalidQueryError, ModelLoadError
from xmodal.search.filters import parse_filter_json

app = typer.Typer(
    name="xmodal",
    help="Cross-modal semantic search: index media folders, search them by text or by example.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)

DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="Data directory (env XMODAL_DATA).", show_default=False),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Model spec; default: the store's model, else ViT-B-32 LAION-2B."),
]
AudioModelOpt = Annotated[
    str | None,
    typer.Option(
        "--audio-model",
        help="Audio model spec (CLAP); default: the store's, else laion/clap-htsat-unfused; "
        "'none' indexes no sound.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def build_settings(groups: dict[str, dict[str, Any]] | None = None, **top: Any) -> Settings:
    """Settings with the options given on the command line on top (None: not given);
    `groups` holds options of a group, e.g. {"server": {"port": 8080}}."""
    values = {name: value for name, value in top.items() if value is not None}
    for group, fields in (groups or {}).items():
        given = {name: value for name, value in fields.items() if value is not None}
        if given:
            values[group] = given
    return load_settings(**values)


def exit_code_for(error: XmodalError) -> int:
    if isinstance(error, IndexingAborted):
        return 1
    if isinstance(error, ModelLoadError):
        return 3
    return 2


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders to index (recursively).")],
    data: DataOpt = None,
    model: ModelOpt = None,
    audio_model: AudioModelOpt = None,
    metadata: Annotated[
        Path | None, typer.Option(help="CSV or JSONL with a `file` column and metadata fields.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per forward pass.")] = None,
    workers: Annotated[int | None, typer.Option(help="Decode threads.")] = None,
    fail_fast: Annotated[bool, typer.Option(help="Stop at the first unreadable file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Index images, videos and sounds under PATHS; re-runs only process what changed."""
    from xmodal.indexer import DecodeOptions, index_paths
    from xmodal.indexer.metadata_file import read_metadata_file

    from .progress_bar import RichProgress

    settings = build_settings(
        {
            "indexing": {
                "batch_size": batch_size,
                "decode_workers": workers,
                "fail_fast": fail_fast or None,
            }
        },
        data=data,
        model=model,
        audio_model=audio_model,
    )
    metadata_map = read_metadata_file(metadata) if metadata else None
    engine = Engine.from_settings(settings)
    progress = None if as_json else RichProgress(errors)
    report = index_paths(
        engine,
        paths,
        settings.indexing,
        metadata_map,
        progress,
        DecodeOptions.from_settings(settings),
    )
    if as_json:
        print(json.dumps(_report_json(report), indent=2))
        return
    console.print(f"[bold]{report.summary()}[/bold] in {report.times.wall:.1f} s")
    t = report.times
    console.print(
        f"stages: discover {t.discover:.1f} s, decode {t.decode:.1f} s (summed over workers), "
        f"encode {t.encode:.1f} s, write {t.write:.1f} s"
        + (f", {report.index_kind} index {t.index:.1f} s" if report.index_kind != "exact" else "")
    )
    if report.failed:
        table = Table("file", "reason", title=f"{len(report.failed)} file(s) not indexed")
        for path, reason in report.failed:
            table.add_row(path, reason)
        console.print(table)
    if report.warnings:
        table = Table("file", "skipped", title=f"{len(report.warnings)} file(s) indexed in part")
        for path, note in report.warnings:
            table.add_row(path, note)
        console.print(table)


def format_timestamp(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def format_moment(uri: str, moment: Any) -> str:
    """`file @ 00:01:07–00:01:12`."""
    return f"{uri} @ {format_timestamp(moment.start or 0.0)}–{format_timestamp(moment.end or 0.0)}"


def _report_json(report: Any) -> dict[str, Any]:
    return {
        "indexed": report.indexed,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "removed": report.removed,
        "duplicates": report.duplicates,
        "ignored": report.ignored,
        "failed": [{"path": p, "reason": r} for p, r in report.failed],
        "warnings": [{"path": p, "skipped": w} for p, w in report.warnings],
        "segments": report.segments,
        "seconds": report.times.__dict__,
        "index_kind": report.index_kind,
    }


@app.command()
def search(
    text: Annotated[str | None, typer.Argument(help="What to look for.")] = None,
    image: Annotated[Path | None, typer.Option(help="Query by this image file.")] = None,
    audio: Annotated[Path | None, typer.Option(help="Query by this sound file.")] = None,
    similar: Annotated[str | None, typer.Option(help="Query by an indexed item id.")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of results.")] = 10,
    offset: Annotated[int, typer.Option(help="Skip this many results.")] = 0,
    filter: Annotated[
        str | None, typer.Option(help='Metadata filter as JSON, e.g. {"colour": "red"}.')
    ] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", help="Only this kind of media (repeatable): image, video, audio."),
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option(help="Text queries: drop hits calibrated below this (3: clear matches)."),
    ] = None,
    data: DataOpt = None,
    model: ModelOpt = None,
    audio_model: AudioModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search by TEXT, by --image FILE, by --audio FILE, or by --similar ITEM_ID."""
    given = [q for q in (text, image, audio, similar) if q]
    if len(given) != 1:
        raise InvalidQueryError(
            "give exactly one of TEXT, --image FILE, --audio FILE or --similar ID"
        )
    filter_spec = parse_filter_json(filter)
    engine = Engine.from_settings(build_settings(data=data, model=model, audio_model=audio_model))
    if text:
        result = engine.search_text(text, k, offset, filter_spec, kind, min_score)
    elif image:
        if not image.is_file():
            raise InvalidQueryError(f"no such image file: {image}")
        result = engine.search_image(image, k, offset, filter_spec, kind)
    elif audio:
        if not audio.is_file():
            raise InvalidQueryError(f"no such sound file: {audio}")
        result = engine.search_audio(audio, k, offset, filter_spec, kind)
    else:
        result = engine.search_similar(str(similar), k, offset, filter_spec, kind)
    if as_json:
        from xmodal.api.schemas import SearchResponse

        print(SearchResponse.of(result).model_dump_json(indent=2))
        return
    if not result.hits:
        console.print("no results")
        return
    calibrated = any(hit.calibrated is not None for hit in result.hits)
    table = Table("rank", "score", *(["calibrated"] if calibrated else []), "matched", "file", "id")
    for rank, hit in enumerate(result.hits, offset + 1):
        scale = [f"{hit.calibrated:.2f}"] if hit.calibrated is not None else []
        table.add_row(str(rank), f"{hit.score:.4f}", *scale, hit.matched, hit.item.uri, hit.item.id)
        for moment in hit.segments if hit.item.kind != MediaKind.IMAGE else []:
            table.add_row(
                "",
                f"{moment.score:.4f}",
                *([""] if calibrated else []),
                "",
                format_moment(hit.item.uri, moment),
                "",
            )
    console.print(table)
    console.print(f"{len(result.hits)} result(s) in {result.took_ms:.1f} ms")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    data: DataOpt = None,
    model: ModelOpt = None,
    audio_model: AudioModelOpt = None,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from xmodal.api.app import create_app

    settings = build_settings(
        {"server": {"host": host, "port": port}}, data=data, model=model, audio_model=audio_model
    )
    application = create_app(settings)
    # The model, the vectors and a large index load before the port opens, so the first
    # requests are not the slow ones.
    application.state.engine.warm()
    server = settings.server
    console.print(f"serving {settings.data} on http://{server.host}:{server.port} (docs: /docs)")
    uvicorn.run(application, host=server.host, port=server.port, log_level="warning")


@app.command()
def reindex(
    data: DataOpt = None,
    kind: Annotated[
        str | None,
        typer.Option(help="auto, exact, flat, hnsw or ivfpq (default: the index_kind setting)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Rebuild the vector index of every space of the store from scratch and save it."""
    settings = build_settings({"ann": {"kind": kind}}, data=data)
    engine = Engine.from_settings(settings)
    reports = engine.refresh_indexes(save=True, rebuild=True)
    if as_json:
        print(json.dumps({name: r.__dict__ for name, r in reports.items()}, indent=2))
        return
    for name, report in reports.items():
        if report.kind == "exact":
            console.print(f"{name}: {report.segments} segments, searched exactly, no index needed")
        else:
            console.print(
                f"{name}: built a {report.kind} index over {report.segments} segments "
                f"in {report.seconds:.1f} s"
            )


@app.command()
def info(data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """What the store holds: items per kind and status, spaces and models, versions."""
    from xmodal.search import Store, saved_index_state

    settings = build_settings(data=data)
    store = Store(settings.data)
    items = store.items_table(["kind", "status"]).to_pandas()
    counts = items.groupby(["kind", "status"]).size().to_dict() if len(items) else {}
    indexes = {space.name: saved_index_state(store, space.name) for space in store.spaces()}
    summary = {
        "data": str(settings.data),
        "store_format": store.format_version,
        "table_versions": store.table_versions(),
        "items": {f"{kind}/{status}": int(n) for (kind, status), n in counts.items()},
        "roots": store.roots(),
        "spaces": [s.__dict__ for s in store.spaces()],
        "indexes": indexes,
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    console.print(f"data directory: {summary['data']} (store format {store.format_version})")
    table = Table("kind", "status", "items")
    for (kind, status), n in sorted(counts.items()):
        table.add_row(kind, status, str(n))
    console.print(table)
    for space in store.spaces():
        console.print(
            f"space {space.name}: {space.model_spec} ({space.model_identity}, {space.dim}-d)"
        )
    for name, state in indexes.items():
        if state is None:
            console.print(f"index {name}: none saved (searched exactly, or built on first query)")
        else:
            fresh = "up to date" if state["up_to_date"] else "behind the store (synced on load)"
            console.print(f"index {name}: {state['kind']}, {state['count']} vectors, {fresh}")
    for root in store.roots():
        console.print(f"root: {root}")


@app.command("eval")
def eval_command(
    dataset: Annotated[
        Path, typer.Argument(help="Folder with captions.csv, or a COCO captions JSON.")
    ],
    model: Annotated[
        str | None,
        typer.Option(help="Model to evaluate: image-text for images, audio-text for sounds."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Index into (and keep) this store instead of a temporary one."),
    ] = None,
    images: Annotated[
        Path | None, typer.Option(help="Image folder for a COCO JSON (default: its folder).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval quality on captioned images or sounds: text->media and media->text
    Recall@1/5/10, median and mean rank."""
    from xmodal.search.evaluation import read_dataset

    from .evaluate import evaluate
    from .progress_bar import RichProgress

    captioned = read_dataset(dataset, images)
    settings = build_settings(data=data, model=model)
    report = evaluate(
        captioned,
        settings,
        keep_store=data is not None,
        progress=None if as_json else RichProgress(errors),
    )
    metrics, media = report.metrics, report.media
    directions = {
        f"text_to_{media}": metrics.text_to_media,
        f"{media}_to_text": metrics.media_to_text,
    }
    files = "sounds" if media == MediaKind.AUDIO else "images"
    if as_json:
        summary: dict[str, Any] = {
            "model": report.model,
            "media": media,
            files: report.images,
            "captions": report.captions,
            "failed": [{"path": p, "reason": r} for p, r in report.failed],
        }
        for name, d in directions.items():
            summary[name] = {
                **{f"R@{k}": round(v, 4) for k, v in d.recall.items()},
                "median_rank": d.median_rank,
                "mean_rank": round(d.mean_rank, 2),
                "queries": d.queries,
            }
        print(json.dumps(summary, indent=2))
        return
    table = Table(
        "direction", *(f"R@{k}" for k in metrics.ks), "median rank", "mean rank", "queries"
    )
    for name, d in directions.items():
        table.add_row(
            name.replace("_", " "),
            *(f"{d.recall[k]:.3f}" for k in metrics.ks),
            f"{d.median_rank:g}",
            f"{d.mean_rank:.2f}",
            str(d.queries),
        )
    console.print(f"{report.model}: {report.images} {files}, {report.captions} captions")
    console.print(table)
    if report.failed:
        console.print(f"{len(report.failed)} file(s) could not be indexed and were left out")


@app.command()
def models() -> None:
    """List encoder families and built-in model names."""
    from xmodal.search import list_encoders

    for name in list_encoders():
        console.print(name)


@app.command()
def demo(
    data: Annotated[Path, typer.Option(help="Where the demo library and store go.")] = Path(
        "demo-data"
    ),
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8765,
    serve_it: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve after indexing.")
    ] = True,
) -> None:
    """Generate a demo library, index it with an offline model, and serve it."""
    from .demo import run_demo

    run_demo(data, host, port, serve_it, console)


def main() -> None:
    # Click's standalone mode handles usage errors (exit 2 with usage text) and --help;
    # xmodal's own errors come out as one line each.
    try:
        app()
    except XmodalError as error:
        errors.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exit_code_for(error))


if __name__ == "__main__":
    main()
