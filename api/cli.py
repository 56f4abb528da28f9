"""The `xmodal` command line: index, search, explain, serve, info, demo.

User errors print one line to stderr and exit with status 2 (3 when model weights
cannot be loaded, 1 when --fail-fast stopped a run, 75 when another writer held the
data directory past --wait or at once with --no-wait).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from xmodal.api.cli_keys import InsecureNoAuthOpt, keys_app
from xmodal.api.logs import configure_logging
from xmodal.api.settings import Settings, load_settings
from xmodal.search.errors import (
    IndexingAborted,
    InvalidQueryError,
    ModelLoadError,
    WriterBusyError,
    XmodalError,
)

if TYPE_CHECKING:
    from xmodal.api.rerank_schemas import ExplainResponse
    from xmodal.api.schemas import SearchResponse

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
    wait: WaitOpt = None,
    no_wait: NoWaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Index images, videos and sounds under PATHS; re-runs only process what changed.
    One writer at a time per data directory: a second one waits (--wait, --no-wait)."""
    from xmodal.indexer import DecodeOptions, index_paths
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
    metadata_map = read_metadata_file(metadata) if metadata else None
    progress = None if as_json else progress_for(errors, settings.log)
    with writer_lock(settings, wait, no_wait):
        engine = Engine.from_settings(settings)
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
        "skipped": [{"path": p, "reason": r} for p, r in report.skipped],
        "notices": report.notices,
        "warnings": [{"path": p, "skipped": w} for p, w in report.warnings],
        "segments": report.segments,
        "repaired": report.repaired,
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
    rerank: Annotated[
        bool,
        typer.Option(
            "--rerank",
            help="Text queries: rerank the first hits with a vision-language model (the "
            "rerank settings; docs/settings.md).",
        ),
    ] = False,
    rerank_top: Annotated[
        int | None,
        typer.Option("--rerank-top", min=1, help="Rerank this many first hits (implies --rerank)."),
    ] = None,
    rerank_model: RerankModelOpt = None,
    explain: Annotated[
        int,
        typer.Option(
            "--explain",
            min=0,
            help="Text queries: explain this many of the first hits (what the picture shows, "
            "which words of the query it supports).",
        ),
    ] = 0,
    data: DataOpt = None,
    model: ModelOpt = None,
    audio_model: AudioModelOpt = None,
    no_server: NoServerOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Search by TEXT, by --image FILE, by --audio FILE, or by --similar ITEM_ID.

    Asks the running `xmodal serve` of the same data directory when there is one (its
    models are loaded already); otherwise loads the models and the store for this query.
    --rerank-model (and --rerank-top) imply --rerank."""
    started = time.perf_counter()
    given = [q for q in (text, image, audio, similar) if q]
    if len(given) != 1:
        raise InvalidQueryError(
            "give exactly one of TEXT, --image FILE, --audio FILE or --similar ID"
        )
    rerank = rerank or rerank_top is not None or rerank_model is not None
    if not text and (rerank or explain):
        raise InvalidQueryError(
            "--rerank, --rerank-top, --rerank-model and --explain apply to text queries only"
        )
    for path, what in ((image, "image"), (audio, "sound")):
        if path is not None and not path.is_file():
            raise InvalidQueryError(f"no such {what} file: {path}")
    settings = build_settings(data=data, model=model, audio_model=audio_model)
    filter_spec = None
    if filter is not None:
        from xmodal.search.filters import parse_filter_json

        filter_spec = parse_filter_json(filter, settings.query)  # its caps, as a server's
    options = None
    if rerank:
        options = chosen_rerank_settings(settings)
        options.update({n: v for n, v in (("top_n", rerank_top), ("model", rerank_model)) if v})
    query = SearchQuery(
        text, image, audio, similar, k, offset, filter_spec, kind, min_score, options, explain
    )
    response, server_url, why_not = None, "", ""
    if not no_server:
        response, server_url, why_not = search_through_server(settings, query)
    if response is None:
        response = search_in_process(settings, query)
    elapsed = time.perf_counter() - started
    from .server_link import format_seconds

    if server_url:
        timing = f"answered by the server at {server_url} in {format_seconds(elapsed)}"
    else:
        timing = (
            f"answered in-process in {format_seconds(elapsed)} (models and store loaded for "
            "this query; `xmodal serve` keeps them warm)" + (f"; {why_not}" if why_not else "")
        )
    if as_json:
        print(response.model_dump_json(indent=2))
        errors.print(timing, markup=False, highlight=False, soft_wrap=True)
        return
    print_hits(response, offset)
    print_rerank(response, offset, server_url)
    console.print(timing, markup=False, highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class SearchQuery:
    """One `xmodal search`, asked in-process or of a server."""

    text: str | None
    image: Path | None
    audio: Path | None
    similar: str | None
    k: int
    offset: int
    filter: dict[str, Any] | None
    kinds: list[str] | None
    min_score: float | None
    # The request's rerank options (top_n, model, method; {}: the settings'); None: none.
    rerank: dict[str, Any] | None = None
    explain: int = 0


def chosen_rerank_settings(settings: Settings) -> dict[str, Any]:
    """The rerank settings this command was given (environment, TOML file), not their
    defaults: a server asked for this query uses them too, as in-process, and its own
    settings for the rest."""
    chosen = {"model", "method", "top_n"} & settings.rerank.model_fields_set
    return settings.rerank.model_dump(include=chosen)


def search_through_server(
    settings: Settings, query: SearchQuery
) -> tuple[SearchResponse | None, str, str]:
    """(answer, server URL, "") from the running server of settings.data; (None, "", why
    not) when there is none that fits (why: "" when none runs)."""
    from .server_link import ServerGone, find_server

    link, why_not = find_server(settings.data, settings.model, settings.audio_model)
    if link is None:
        return None, "", why_not
    try:
        if query.image is not None or query.audio is not None:
            route, file = (
                ("/search/image", query.image) if query.image else ("/search/audio", query.audio)
            )
            assert file is not None
            body = link.search_upload(route, file, query.k, query.offset, query.filter, query.kinds)
        else:
            # This command's min_score setting, not the server's, as in-process.
            min_score = query.min_score if query.min_score is not None else settings.query.min_score
            request = {
                "text": query.text,
                "item_id": query.similar,
                "k": query.k,
                "offset": query.offset,
                "filter": query.filter,
                "kinds": query.kinds,
                "min_score": min_score if query.text else None,
                "rerank": None if query.rerank is None else query.rerank or True,
                "explain": query.explain or None,
            }
            body = link.search({key: v for key, v in request.items() if v is not None})
    except ServerGone as gone:
        return None, "", f"the server stopped answering ({gone})"
    from xmodal.api.schemas import SearchResponse

    return SearchResponse.model_validate_json(body), link.url, ""


def search_in_process(settings: Settings, query: SearchQuery) -> SearchResponse:
    from xmodal.api.schemas import ExplainedBy, SearchResponse
    from xmodal.search import Engine
    from xmodal.search.rerank.service import RerankRequest

    engine = Engine.from_settings(settings)
    k, offset, filter_spec, kinds = query.k, query.offset, query.filter, query.kinds
    if query.text:
        rerank = None if query.rerank is None else RerankRequest(**query.rerank)
        result = engine.search_text(
            query.text, k, offset, filter_spec, kinds, query.min_score, rerank, query.explain
        )
        model = None if query.rerank is None else query.rerank.get("model")
        return SearchResponse.of(result, ExplainedBy(query.text, model))
    if query.image:
        result = engine.search_image(query.image, k, offset, filter_spec, kinds)
    elif query.audio:
        result = engine.search_audio(query.audio, k, offset, filter_spec, kinds)
    else:
        result = engine.search_similar(str(query.similar), k, offset, filter_spec, kinds)
    return SearchResponse.of(result)


def print_hits(response: SearchResponse, offset: int) -> None:
    if not response.hits:
        console.print("no results")
        return
    calibrated = any(hit.calibrated_score is not None for hit in response.hits)
    reranked = any(hit.rerank_score is not None for hit in response.hits)
    extra = (["calibrated"] if calibrated else []) + (["rerank"] if reranked else [])
    table = Table("rank", "score", *extra, "matched", "file", "id")
    for rank, hit in enumerate(response.hits, offset + 1):
        # The item's fields are derived from ItemRecord (schemas.item_fields): read by name.
        item = hit.model_dump(include={"id", "uri", "kind"})
        uri = item["uri"]
        scale = [f"{hit.calibrated_score:.2f}"] if hit.calibrated_score is not None else []
        if reranked:
            scale.append("" if hit.rerank_score is None else f"{hit.rerank_score:.4f}")
        table.add_row(str(rank), f"{hit.score:.4f}", *scale, hit.matched, uri, item["id"])
        for moment in hit.segments if item["kind"] != "image" else []:
            table.add_row(
                "", f"{moment.score:.4f}", *[""] * len(extra), "", format_moment(uri, moment), ""
            )
    console.print(table)
    console.print(f"{len(response.hits)} result(s) in {response.took_ms:.1f} ms")


def print_rerank(response: SearchResponse, offset: int, server_url: str) -> None:
    """Whether the hits were reranked (why not), and the explanations under the table;
    a server's answer has heatmap URLs."""

    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    report = response.rerank
    if report is not None and report.applied:
        say(
            f"reranked the first {report.candidates} hit(s) with {report.model} "
            f"({report.method}) in {report.took_ms:.1f} ms: {report.scored} picture(s) scored, "
            f"{report.cached} from the cache"
        )
    elif report is not None:
        say(
            f"not reranked ({report.reason}) after {report.took_ms:.1f} ms: hits in their first order"
        )
    explained = response.explain
    if explained is not None and explained.reason:
        say(f"explained {explained.explained} hit(s): {explained.reason}")
    for rank, hit in enumerate(response.hits, offset + 1):
        if hit.explanation is None:
            continue
        item = hit.model_dump(include={"id"})
        say(f"{rank}. {item['id']}: {hit.explanation.summary}")
        if server_url:
            say(f"   heatmap: {server_url}{hit.explanation.heatmap_url}")


@app.command("explain")
def explain_command(
    text: Annotated[str, typer.Argument(help="The query text.")],
    item_id: Annotated[str, typer.Argument(help="The indexed image or video to explain.")],
    t: Annotated[
        float | None, typer.Option("--t", min=0, help="For a video: the moment, in seconds.")
    ] = None,
    heatmap: Annotated[
        Path | None,
        typer.Option(help="Write the heatmap (PNG: where in the picture the evidence lies)."),
    ] = None,
    rerank_model: RerankModelOpt = None,
    data: DataOpt = None,
    no_server: NoServerOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Why ITEM_ID matches TEXT: what the vision-language model sees in its picture, and
    which words of TEXT the picture supports or contradicts."""
    started = time.perf_counter()
    settings = build_settings(data=data)
    spec = rerank_model or chosen_rerank_settings(settings).get("model")
    answer, png, server_url, why_not = None, None, "", ""
    if not no_server:
        answer, png, server_url, why_not = explain_through_server(
            settings, text, item_id, t, spec, heatmap is not None
        )
    if answer is None:
        answer, png = explain_in_process(settings, text, item_id, t, spec, heatmap is not None)
    if heatmap is not None and png is not None:
        heatmap.write_bytes(png)
    from .server_link import format_seconds

    elapsed = format_seconds(time.perf_counter() - started)
    timing = (
        f"answered by the server at {server_url} in {elapsed}"
        if server_url
        else f"answered in-process in {elapsed}" + (f"; {why_not}" if why_not else "")
    )
    if as_json:
        print(answer.model_dump_json(indent=2))
        errors.print(timing, markup=False, highlight=False, soft_wrap=True)
        return

    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    say(answer.summary)
    say(f"explained by {answer.model} in {answer.took_ms:.1f} ms")
    table = Table("word", "support (nats)")
    for word in answer.words:
        table.add_row(word.word, f"{word.support:+.2f}")
    console.print(table)
    if heatmap is not None:
        say(f"heatmap written to {heatmap}")
    elif server_url:
        say(f"heatmap: {server_url}{answer.heatmap_url}")
    say(timing)


def explain_through_server(
    settings: Settings,
    text: str,
    item_id: str,
    seconds: float | None,
    model: str | None,
    with_heatmap: bool,
) -> tuple[ExplainResponse | None, bytes | None, str, str]:
    """(answer, heatmap PNG when asked, server URL, "") from the running server of
    settings.data, or (None, None, "", why not)."""
    from .server_link import ServerGone, find_server

    link, why_not = find_server(settings.data)
    if link is None:
        return None, None, "", why_not
    from xmodal.api.rerank_schemas import ExplainResponse

    request = {"text": text, "item_id": item_id, "t": seconds, "model": model}
    try:
        body = link.explain({name: v for name, v in request.items() if v is not None})
        answer = ExplainResponse.model_validate_json(body)
        png = link.get(answer.heatmap_url) if with_heatmap else None
    except ServerGone as gone:
        return None, None, "", f"the server stopped answering ({gone})"
    return answer, png, link.url, ""


def explain_in_process(
    settings: Settings,
    text: str,
    item_id: str,
    seconds: float | None,
    model: str | None,
    with_heatmap: bool,
) -> tuple[ExplainResponse, bytes | None]:
    from xmodal.api.rerank_schemas import ExplainResponse
    from xmodal.search import Engine

    engine = Engine.from_settings(settings)
    started = time.perf_counter()
    explanation = engine.explain(text, item_id, seconds, model)
    took_ms = round((time.perf_counter() - started) * 1000.0, 3)
    png = engine.explain_heatmap(text, item_id, seconds, model) if with_heatmap else None
    answer = ExplainResponse.answering(explanation, item_id, text, seconds, model, took_ms)
    return answer, png


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
    rerank: Annotated[
        bool, typer.Option("--rerank", help="Also measure text->image with the top reranked.")
    ] = False,
    rerank_top: Annotated[
        int | None, typer.Option(help="Hits reranked per caption (default: rerank.top_n).")
    ] = None,
    rerank_model: Annotated[
        str | None, typer.Option(help="The reranker (default: rerank.model), e.g. xmodal-ref-vlm.")
    ] = None,
    rerank_method: Annotated[
        str | None, typer.Option(help="caption or vqa (default: the model's own).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval quality on captioned images or sounds: text->media and media->text
    Recall@1/5/10, median and mean rank; with --rerank, text->image reranked too."""
    from xmodal.search.evaluation import read_dataset
    from xmodal.search.rerank.service import RerankRequest

    from .evaluate import evaluate
    from .progress_bar import progress_for

    captioned = read_dataset(dataset, images)
    settings = build_settings(data=data, model=model)
    request = RerankRequest(rerank_top, rerank_model, rerank_method) if rerank else None
    report = evaluate(
        captioned,
        settings,
        keep_store=data is not None,
        progress=None if as_json else progress_for(errors, settings.log),
        rerank=request,
    )
    metrics, media = report.metrics, report.media
    directions = {
        f"text_to_{media}": metrics.text_to_media,
        f"{media}_to_text": metrics.media_to_text,
    }
    reranked = report.reranked
    if reranked is not None:
        directions[f"text_to_{media}_reranked"] = reranked.text_to_media
    files = "sounds" if media == "audio" else "images"
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
        if reranked is not None:
            summary[f"text_to_{media}_reranked"].update(
                model=reranked.model,
                method=reranked.method,
                top_n=reranked.top_n,
                weight=reranked.weight,
                pairs=reranked.pairs,
                seconds=round(reranked.seconds, 1),
            )
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
    if reranked is not None:
        console.print(
            f"reranked: top {reranked.top_n} of each caption by {reranked.model} "
            f"({reranked.method}, weight {reranked.weight:g}): {reranked.pairs} pairs in "
            f"{reranked.seconds:.1f} s"
        )
    if report.failed:
        console.print(f"{len(report.failed)} file(s) could not be indexed and were left out")


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
from . import store_commands  # noqa: E402,F401


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
