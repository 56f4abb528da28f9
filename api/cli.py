"""The `xmodal` command line: the app, its shared options and errors, and index, serve,
reindex, info, models, demo. search and explain (cli_search.py), eval (cli_eval.py),
keys (cli_keys.py), export (cli_export.py), migrate (cli_migrate.py) and repair
(store_commands.py) are modules of their own.

User errors print one line to stderr and exit with status 2 (3 when model weights
cannot be loaded, 1 when --fail-fast stopped a run, 75 when another writer held the
data directory past --wait or at once with --no-wait).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from xmodal.api.cli_keys import InsecureNoAuthOpt, keys_app
from xmodal.api.logs import configure_logging
from xmodal.api.settings import Settings, load_settings
from xmodal.search.errors import (
    IndexingAborted,
    ModelLoadError,
    SourceError,
    WriterBusyError,
    XmodalError,
)

log = logging.getLogger("xmodal.api")

app = typer.Typer(
    name="xmodal",
    help="Cross-modal semantic search: index media folders, search them by text or by example.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(keys_app)
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
NoServerOpt = Annotated[
    bool,
    typer.Option(
        "--no-server",
        help="Load the models and the store here even when `xmodal serve` runs on the "
        "same data directory (by default the query goes to that server).",
    ),
]
WaitOpt = Annotated[
    float | None,
    typer.Option(
        "--wait",
        min=0,
        help="Seconds to wait for another writer of the data directory to finish "
        "(default: the store.writer_wait setting).",
        show_default=False,
    ),
]
NoWaitOpt = Annotated[
    bool,
    typer.Option(
        "--no-wait",
        help="Exit at once with status 75 when another writer holds the data directory.",
    ),
]
# Exit status of a writer that could not have the data directory (EX_TEMPFAIL: try later).
WRITER_BUSY_EXIT = 75
RerankModelOpt = Annotated[
    str | None,
    typer.Option(
        "--rerank-model",
        help="Reranker (vision-language model) spec, e.g. llava:local-dir:/path; default: "
        "the rerank.model setting (env XMODAL_RERANK__MODEL).",
    ),
]


# The options given before the command (`xmodal --log-format json index ...`).
_log_options: dict[str, Any] = {}


@app.callback()
def options(
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            help="debug, info, warning or error (env XMODAL_LOG__LEVEL; default info).",
            show_default=False,
        ),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            help="text, or json: one JSON object per line (env XMODAL_LOG__FORMAT).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Cross-modal semantic search: index media folders, search them by text or by example."""
    _log_options.clear()
    _log_options.update(level=log_level, format=log_format)


def build_settings(groups: dict[str, dict[str, Any]] | None = None, **top: Any) -> Settings:
    """Settings with the options given on the command line on top (None: not given);
    `groups` holds options of a group, e.g. {"server": {"port": 8080}}. Logging is
    configured from them (the `log` group) before they are returned."""
    values = {name: value for name, value in top.items() if value is not None}
    for group, fields in {"log": dict(_log_options), **(groups or {})}.items():
        given = {name: value for name, value in fields.items() if value is not None}
        if given:
            values[group] = given
    settings = load_settings(**values)
    configure_logging(settings.log)
    return settings


def exit_code_for(error: XmodalError) -> int:
    if isinstance(error, WriterBusyError):
        return WRITER_BUSY_EXIT
    if isinstance(error, IndexingAborted):
        return 1
    if isinstance(error, ModelLoadError):
        return 3
    return 2


@app.command()
def index(
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            help="Files and folders to index (recursively), and URLs of media (https://, "
            "s3://, any fsspec URL) to index as catalog items, the URL as their id.",
            show_default=False,
        ),
    ] = None,
    manifest: Annotated[
        str | None,
        typer.Option(
            help="A catalog manifest (CSV, TSV, JSONL or Parquet; a path or URL): one item "
            "per row, a url column, an optional id column, metadata columns.",
            show_default=False,
        ),
    ] = None,
    url_column: Annotated[
        str | None, typer.Option(help="The manifest's url column (default: found by name).")
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option(help="The manifest's id column (default: id, sku, ... if present)."),
    ] = None,
    data: DataOpt = None,
    model: ModelOpt = None,
    audio_model: AudioModelOpt = None,
    metadata: Annotated[
        Path | None,
        typer.Option(help="CSV, TSV, JSONL or Parquet with a `file` column and metadata fields."),
    ] = None,
    schema: Annotated[
        str | None,
        typer.Option(
            help="Types of --metadata or --manifest columns over those inferred, e.g. "
            "sku=text,price=float (text, int, float, bool, json).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per forward pass.")] = None,
    workers: Annotated[int | None, typer.Option(help="Decode threads.")] = None,
    fail_fast: Annotated[bool, typer.Option(help="Stop at the first unreadable file.")] = False,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Decode and embed on a Ray cluster: `local` starts one on this machine, "
            "`auto` joins the one this machine belongs to, ray://HEAD:10001 a remote one. "
            "Files must be at the same paths on every node. Needs pip install 'xmodal[ray]'.",
            show_default=False,
        ),
    ] = None,
    ray_actors: Annotated[
        int,
        typer.Option(
            min=1, help="Embedding actors on Ray: one model each, one GPU each on GPU nodes."
        ),
    ] = 1,
    ray_batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Files per embedding call on Ray (default: --batch-size)."),
    ] = None,
    wait: WaitOpt = None,
    no_wait: NoWaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Index images, videos and sounds under PATHS, at URLs, or listed in a --manifest;
    re-runs only process what changed. One writer at a time per data directory: a
    second one waits (--wait, --no-wait)."""
    from contextlib import nullcontext

    from xmodal.indexer import DecodeOptions, ManifestOptions, index_paths
    from xmodal.indexer.column_types import parse_schema
    from xmodal.indexer.distributed import RayOptions, connected, index_on_ray
    from xmodal.indexer.metadata_file import read_metadata_file
    from xmodal.search import Engine

    from .progress_bar import progress_for
    from .store_commands import writer_lock

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
    from .cli_catalog import index_catalog, is_remote

    if schema is not None and metadata is None and manifest is None:
        raise SourceError("--schema types the columns of --metadata or --manifest: give one")
    urls = [p for p in paths or [] if is_remote(p)]
    local = [Path(p) for p in paths or [] if not is_remote(p)]
    if not (local or urls or manifest):
        raise SourceError("nothing to index: give files, folders, URLs or --manifest")
    column_types = parse_schema(schema) if schema is not None else None
    metadata_map = read_metadata_file(metadata, column_types) if metadata else None
    ray_options = None
    if ray is not None:
        ray_options = RayOptions(ray, actors=ray_actors, batch_size=ray_batch_size or 0)
    with connected(ray) if ray is not None else nullcontext():
        if urls or manifest:
            options = ManifestOptions(
                url_column=url_column, id_column=id_column, schema=column_types
            )
            with writer_lock(settings, wait, no_wait):
                index_catalog(settings, urls, manifest, options, console, as_json, ray_options)
            if not local:
                return
        progress = None if as_json else progress_for(errors, settings.log)
        with writer_lock(settings, wait, no_wait):
            engine = Engine.from_settings(settings)
            decode = DecodeOptions.from_settings(settings)
            if ray_options is None:
                report = index_paths(
                    engine, local, settings.indexing, metadata_map, progress, decode
                )
            else:
                report = index_on_ray(
                    engine, local, settings.indexing, metadata_map, progress, decode, ray_options
                )
    if as_json:
        print(json.dumps(_report_json(report), indent=2))
        return
    console.print(f"[bold]{report.summary()}[/bold] in {report.times.wall:.1f} s")
    t = report.times
    console.print(
        f"stages: model load {t.load:.1f} s (beside discovery and decoding), "
        f"discover {t.discover:.1f} s, decode {t.decode:.1f} s (summed over workers), "
        f"encode {t.encode:.1f} s, write {t.write:.1f} s"
        + (f", {report.index_kind} index {t.index:.1f} s" if report.index_kind != "exact" else "")
    )
    for notice in report.notices:
        errors.print(f"[yellow]{notice}[/yellow]", markup=True, highlight=False)
    if report.skipped:
        table = Table("file", "reason", title=f"{len(report.skipped)} file(s) skipped, unread")
        for path, reason in report.skipped:
            table.add_row(path, reason)
        console.print(table)
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


def _report_json(report: Any) -> dict[str, Any]:
    return {
        "indexed": report.indexed,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "removed": report.removed,
        "duplicates": report.duplicates,
        "ignored": report.ignored,
        "failed": [{"path": p, "reason": r} for p, r in report.failed],
        "skipped": [{"path": p, "reason": r} for p, r in report.skipped],
        "notices": report.notices,
        "warnings": [{"path": p, "skipped": w} for p, w in report.warnings],
        "segments": report.segments,
        "repaired": report.repaired,
        "seconds": report.times.__dict__,
        "index_kind": report.index_kind,
    }


# search and explain come next in `xmodal --help`: registered here, after what they use.
from . import cli_search  # noqa: E402,F401


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (0: any free one).")] = None,
    data: DataOpt = None,
    model: ModelOpt = None,
    audio_model: AudioModelOpt = None,
    insecure_no_auth: InsecureNoAuthOpt = False,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs). While it runs, `xmodal search` on the
    same data directory asks it instead of loading the models itself. Without API keys
    (`xmodal keys`) it listens on loopback only (docs/security.md)."""
    from xmodal.api.app import create_app

    from .access import check_exposure, exposure_note
    from .keys import KeyRing
    from .server_link import serve_announced

    settings = build_settings(
        {"server": {"host": host, "port": port}}, data=data, model=model, audio_model=audio_model
    )
    check_exposure(settings.server.host, KeyRing.of_data(settings.data), insecure_no_auth)
    application = create_app(settings)
    # The model, the vectors and a large index load before the port opens, so the first
    # requests are not the slow ones.
    application.state.engine.warm()

    def started(url: str) -> None:
        if settings.log.format == "json":  # a log record, so that a collector can parse it
            log.info("serving %s on %s", settings.data, url, extra={"url": url})
        else:
            console.print(f"serving {settings.data} on {url} (docs: /docs)")
        note = exposure_note(settings, application.state.access)
        if note:
            if settings.log.format == "json":
                log.warning(note)
            else:
                console.print(note, markup=False, highlight=False)

    server = settings.server
    serve_announced(application, settings.data, server.host, server.port, started)


@app.command()
def reindex(
    data: DataOpt = None,
    kind: Annotated[
        str | None,
        typer.Option(help="auto, exact, flat, hnsw or ivfpq (default: the ann.kind setting)."),
    ] = None,
    wait: WaitOpt = None,
    no_wait: NoWaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Rebuild the vector index of every space of the store from scratch and save it."""
    from xmodal.search import Engine

    from .store_commands import writer_lock

    settings = build_settings({"ann": {"kind": kind}}, data=data)
    with writer_lock(settings, wait, no_wait):
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
    """What the store holds: items per kind and status, spaces and models, versions, and
    migrations to another model under way."""
    from xmodal.search import Store, saved_index_state
    from xmodal.search.store.migration import migration_statuses

    from .cli_migrate import status_lines

    settings = build_settings(data=data)
    store = Store(settings.data)
    items = store.items_table(["kind", "status"]).to_pandas()
    counts = items.groupby(["kind", "status"]).size().to_dict() if len(items) else {}
    indexes = {space.name: saved_index_state(store, space.name) for space in store.spaces()}
    migrations = migration_statuses(store)
    summary = {
        "data": str(settings.data),
        "store_format": store.format_version,
        "table_versions": store.table_versions(),
        "items": {f"{kind}/{status}": int(n) for (kind, status), n in counts.items()},
        "roots": store.roots(),
        "spaces": [s.__dict__ for s in store.spaces()],
        "indexes": indexes,
        "migrations": [m.to_dict() for m in migrations],
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
    for line in status_lines(migrations):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for root in store.roots():
        console.print(f"root: {root}")


@app.command()
def models() -> None:
    """List model families and built-in model names, with what each is for."""
    from xmodal.search.encoders.registry import model_roles

    for name, role in model_roles().items():
        console.print(f"{name:<18} {role}")


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

    build_settings()  # logging, as every command: the server's access log

    run_demo(data, host, port, serve_it, console)


# Commands kept in modules of their own, registered on `app` when imported.
from . import cli_eval, cli_export, cli_migrate, store_commands  # noqa: E402,F401


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
