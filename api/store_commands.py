"""Commands that write to the data directory as a whole: `xmodal repair`, and the
writer lock every writing command holds (index, reindex, repair)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .cli import DataOpt, JsonOpt, NoWaitOpt, WaitOpt, app, build_settings, console, errors

if TYPE_CHECKING:
    from xmodal.api.settings import Settings
    from xmodal.search.store.repair import RepairReport
    from xmodal.search.store.writer_lock import WriterHolder


def writer_wait(settings: Settings, wait: float | None, no_wait: bool) -> float:
    """Seconds to wait for another writer: 0 with --no-wait, else --wait, else the setting."""
    if no_wait:
        return 0.0
    return settings.store.writer_wait if wait is None else wait


def waiting_notice(settings: Settings, seconds: float) -> Any:
    """What a writer prints, once, when it has to wait for another."""

    def notice(holder: WriterHolder | None) -> None:
        who = holder.describe() if holder is not None else "another process"
        errors.print(
            f"waiting for another writer of {settings.data}: {who} (up to {seconds:g} s; "
            "--no-wait gives up at once)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    return notice


@contextmanager
def writer_lock(settings: Settings, wait: float | None, no_wait: bool) -> Iterator[None]:
    """Hold the data directory's writer lock for a command, from before it opens the
    store (which creates the tables of a new one) to its end (WriterBusyError: exit 75)."""
    from xmodal.search.store.writer_lock import WriterLock

    seconds = writer_wait(settings, wait, no_wait)
    with WriterLock.shared(settings.data).holding(seconds, waiting_notice(settings, seconds)):
        yield


@app.command()
def repair(
    data: DataOpt = None,
    wait: WaitOpt = None,
    no_wait: NoWaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Repair a damaged data directory: restore each unreadable table's last good
    version, keep what can be kept, report what was lost; the next `xmodal index`
    embeds again what is missing. Also merges duplicated rows and drops saved vector
    indexes that do not load."""
    from xmodal.search.store.repair import repair_store

    settings = build_settings(data=data)
    seconds = writer_wait(settings, wait, no_wait)
    report = repair_store(settings.data, seconds, waiting_notice(settings, seconds))
    if as_json:
        print(json.dumps(repair_json(report), indent=2))
        return
    for line in repair_lines(report):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def repair_json(report: RepairReport) -> dict[str, Any]:
    return {
        "tables": [{**table.__dict__, "rows_lost": table.rows_lost} for table in report.tables],
        "items_to_embed_again": report.items_to_embed_again,
        "duplicate_item_rows": report.duplicate_item_rows,
        "duplicate_segment_rows": report.duplicate_segment_rows,
        "indexes_removed": report.indexes_removed,
    }


def repair_lines(report: RepairReport) -> list[str]:
    if not report.changed:
        return [f"nothing to repair: {len(report.tables)} table(s) read in full"]
    lines = []
    for table in report.damaged:
        lost = (
            f"{table.rows_before} row(s) -> {table.rows_after}, {table.rows_lost} lost"
            if table.rows_before is not None
            else f"{table.rows_after} row(s) kept (the damaged version's count is unknown)"
        )
        if table.state == "restored":
            what = f"restored version {table.restored_version} (damaged: {table.damaged_version})"
        elif table.state == "salvaged":
            what = "no version read in full: kept the rows read before the damage"
        else:
            what = "nothing could be read: emptied"
        lines.append(f"{table.table}: {what}; {lost}; cause: {table.cause}")
        if table.set_aside:
            lines.append(f"  set aside: {', '.join(table.set_aside)}")
    if report.duplicate_item_rows or report.duplicate_segment_rows:
        lines.append(
            f"duplicates merged: {report.duplicate_item_rows} item row(s), "
            f"{report.duplicate_segment_rows} segment row(s)"
        )
    if report.indexes_removed:
        lines.append(
            f"saved vector indexes dropped (rebuilt by the next run): {report.indexes_removed}"
        )
    if report.items_to_embed_again:
        lines.append(
            f"{report.items_to_embed_again} item(s) will be embedded again by the next "
            "`xmodal index`; items lost with the table are indexed again as new files"
        )
    else:
        lines.append("run `xmodal index` on your folders to index again what was lost")
    return lines
