"""`xmodal search` and `xmodal explain`: through a running server when there is one
(api/server_link.py), else in this process; their tables and JSON."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from xmodal.api.settings import Settings
from xmodal.search.errors import InvalidQueryError

from .cli import (
    AudioModelOpt,
    DataOpt,
    JsonOpt,
    ModelOpt,
    NoServerOpt,
    RerankModelOpt,
    app,
    build_settings,
    console,
    errors,
)

if TYPE_CHECKING:
    from xmodal.api.rerank_schemas import ExplainResponse
    from xmodal.api.schemas import SearchResponse


def format_timestamp(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def format_moment(uri: str, moment: Any) -> str:
    """`file @ 00:01:07–00:01:12`."""
    return f"{uri} @ {format_timestamp(moment.start or 0.0)}–{format_timestamp(moment.end or 0.0)}"


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
