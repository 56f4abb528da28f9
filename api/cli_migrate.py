"""`xmodal migrate`: move a space to another model while it is searched
(xmodal.indexer.migrate does it; this checks the options and prints what it did)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from .cli import DataOpt, JsonOpt, NoWaitOpt, WaitOpt, app, build_settings, console, errors

if TYPE_CHECKING:
    from xmodal.indexer.migrate import MigrationReport
    from xmodal.search.store.migration import MigrationStatus


class MigratedSpace(StrEnum):
    IMAGE_TEXT = "image-text"
    AUDIO_TEXT = "audio-text"


@app.command()
def migrate(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="The new model (a spec, as for `index --model`): build the space with it "
            "beside the old one, then switch. Run again after an interruption: it goes on.",
            show_default=False,
        ),
    ] = None,
    data: DataOpt = None,
    space: Annotated[
        MigratedSpace, typer.Option(help="The space to move (audio-text: --model is a CLAP).")
    ] = MigratedSpace.IMAGE_TEXT,
    rollback: Annotated[
        bool,
        typer.Option(
            "--rollback", help="Go back to the model the space had before the last switch."
        ),
    ] = False,
    drop_old: Annotated[
        bool,
        typer.Option(
            "--drop-old",
            help="Delete the old model's vectors kept for a rollback (no rollback after).",
        ),
    ] = False,
    abandon: Annotated[
        bool,
        typer.Option("--abandon", help="Stop a migration that has not switched; delete its work."),
    ] = False,
    status: Annotated[
        bool, typer.Option("--status", help="Print where migrations stand; change nothing.")
    ] = False,
    batch_size: Annotated[int | None, typer.Option(help="Images per forward pass.")] = None,
    workers: Annotated[int | None, typer.Option(help="Decode threads.")] = None,
    wait: WaitOpt = None,
    no_wait: NoWaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Move a space to another model without stopping searches: the new model's vectors
    are built beside the old ones from the stored media (folder files, catalog media),
    committed in batches, while queries use the old model; when every item is done the
    space switches to the new model in one commit. A server on the same data directory
    takes up the new model by itself. The old vectors stay for --rollback until
    --drop-old. Writes hold the data directory's writer lock per batch only, so
    `xmodal index` and catalog writes go on meanwhile."""
    from xmodal.indexer import DecodeOptions
    from xmodal.indexer.migrate import Migrator
    from xmodal.search import Engine
    from xmodal.search.errors import MigrationError
    from xmodal.search.store.migration import migration_statuses

    from .progress_bar import progress_for
    from .store_commands import writer_wait

    asked = [
        flag
        for flag, given in (
            ("--model", model is not None),
            ("--rollback", rollback),
            ("--drop-old", drop_old),
            ("--abandon", abandon),
            ("--status", status),
        )
        if given
    ]
    if len(asked) != 1:
        raise MigrationError(
            "say what to do: one of --model NEW, --rollback, --drop-old, --abandon or --status"
            + (f" (not {' and '.join(asked)} together)" if asked else "")
        )
    settings = build_settings(
        {"indexing": {"batch_size": batch_size, "decode_workers": workers}}, data=data
    )
    if status:
        from xmodal.search import Store

        statuses = migration_statuses(Store(settings.data))
        if as_json:
            print(json.dumps([s.to_dict() for s in statuses], indent=2))
            return
        for line in status_lines(statuses) or ["no migration: every space has one model"]:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    # No audio model: a migration embeds with the new model only (the audio-text one
    # when that space moves).
    engine = Engine.open(
        settings.data, device=settings.device, audio_model="none", limits=settings.images
    )
    engine.store.writer_wait = writer_wait(settings, wait, no_wait)
    progress = None if as_json else progress_for(errors, settings.log, "migrating")
    migrator = Migrator(
        engine, settings.indexing, DecodeOptions.from_settings(settings), progress=progress
    )
    if drop_old or abandon:
        dropped = migrator.drop_previous(space) if drop_old else migrator.abandon(space)
        if as_json:
            print(json.dumps({"dropped": dropped.__dict__}, indent=2))
        else:
            console.print(
                f"{space}: deleted the vectors of {dropped.model_spec} ({dropped.segments_table})",
                markup=False,
                highlight=False,
            )
        return
    report = migrator.rollback(space) if rollback else migrator.migrate(str(model), space)
    if as_json:
        print(json.dumps(report_json(report), indent=2))
        return
    console.print(f"[bold]{report.summary()}[/bold] in {report.seconds:.1f} s")
    if report.failed:
        table = Table(
            "file", "reason", title=f"{len(report.failed)} item(s) not embedded by the new model"
        )
        for path, reason in report.failed:
            table.add_row(path, reason)
        console.print(table)
    console.print(
        f"queries use {report.new_model} now; `xmodal migrate --rollback` goes back to "
        f"{report.old_model}, `xmodal migrate --drop-old` deletes its vectors",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def report_json(report: MigrationReport) -> dict[str, Any]:
    return {
        **report.__dict__,
        "failed": [{"path": path, "reason": reason} for path, reason in report.failed],
    }


def status_lines(statuses: list[MigrationStatus]) -> list[str]:
    """One line per migration, for `migrate --status` and `info`."""
    lines = []
    for s in statuses:
        failed = f", {s.failed} failed" if s.failed else ""
        if s.state == "switched":
            lines.append(
                f"migration of {s.space}: switched to {s.new_model}; {s.old_model} kept for "
                "--rollback until --drop-old"
            )
        else:
            lines.append(
                f"migration of {s.space}: {s.state}, {s.done}/{s.total} items{failed}; "
                f"queries use {s.old_model} until the switch to {s.new_model}"
            )
    return lines
