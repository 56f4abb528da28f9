"""`xmodal export`: a store's items and vectors as Parquet and .npy files
(xmodal.search.export writes them; this prints what it wrote)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .cli import DataOpt, JsonOpt, app, build_settings, console

if TYPE_CHECKING:
    from xmodal.search.export import ExportReport


class SpaceChoice(StrEnum):
    IMAGE_TEXT = "image-text"
    AUDIO_TEXT = "audio-text"
    ALL = "all"


class FormatChoice(StrEnum):
    PARQUET = "parquet"
    NPY = "npy"
    BOTH = "both"


@app.command()
def export(
    out: Annotated[Path, typer.Argument(help="Folder to write (created; must be empty).")],
    data: DataOpt = None,
    space: Annotated[
        SpaceChoice, typer.Option(help="The space whose vectors to export.")
    ] = SpaceChoice.ALL,
    format: Annotated[
        FormatChoice,
        typer.Option(
            "--format",
            help="parquet: <space>/embeddings.parquet; npy: the clip-retrieval layout "
            "(<space>/img_emb/*.npy and metadata/*.parquet); both.",
        ),
    ] = FormatChoice.PARQUET,
    filter: Annotated[
        str | None,
        typer.Option("--filter", help="Only items matching this filter (JSON, as in search)."),
    ] = None,
    include_failed: Annotated[
        bool,
        typer.Option(help="List items that could not be indexed in items.parquet too."),
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace an earlier export in OUT.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Export items (items.parquet) and their vectors per space, with a manifest.json of
    the models and counts, for use outside xmodal. Written beside OUT and renamed at the
    end: OUT holds a complete export or none."""
    from xmodal.search import Store
    from xmodal.search.export import NPY, PARQUET, ExportOptions, export_store
    from xmodal.search.filters import parse_filter_json

    settings = build_settings(data=data)
    options = ExportOptions(
        spaces=None if space is SpaceChoice.ALL else (space.value,),
        formats=(PARQUET, NPY) if format is FormatChoice.BOTH else (format.value,),
        filter=parse_filter_json(filter, settings.query),
        include_failed=include_failed,
        force=force,
    )
    report = export_store(Store(settings.data), out, options, settings.query)
    if as_json:
        print(json.dumps(report_json(report), indent=2))
        return
    failed = f" ({report.failed} failed)" if report.failed else ""
    console.print(f"[bold]exported {report.items} item(s){failed}[/bold] to {report.out}")
    for exported in report.spaces:
        console.print(
            f"{exported.name}: {exported.segments} vector(s) of {exported.items} item(s), "
            f"{exported.dim}-d, {exported.model_spec}",
            highlight=False,
        )
    console.print(f"{shown_size(report.bytes)} in {report.seconds:.1f} s", highlight=False)


def shown_size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def report_json(report: ExportReport) -> dict[str, object]:
    return {
        "out": str(report.out),
        "items": report.items,
        "failed": report.failed,
        "spaces": {
            s.name: {"segments": s.segments, "items": s.items, "dim": s.dim, "files": s.files}
            for s in report.spaces
        },
        "bytes": report.bytes,
        "seconds": round(report.seconds, 3),
    }
