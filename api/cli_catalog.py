"""`xmodal index` for catalogs: URLs, bucket objects and manifests (indexer/catalog.py).

Sources named on the command line come from the operator, so they are fetched as
trusted: local paths, private addresses and any fsspec protocol are allowed (a
server's callers get none of these).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from xmodal.api.settings import Settings
from xmodal.indexer.catalog import Catalog, CatalogEntry, EntryResult, entry_of_row
from xmodal.indexer.distributed import RayIndexer, RayOptions
from xmodal.indexer.manifest import ManifestOptions, ManifestProblem, read_manifest
from xmodal.indexer.options import DecodeOptions
from xmodal.search import Engine

SHOWN_FAILURES = 50


def is_remote(source: str) -> bool:
    """A URL or fsspec location rather than a local path (`s3://b/k`, `https://...`)."""
    return "://" in source and not source.startswith("file://")


def catalog_entries(
    urls: list[str], manifest: str | None, options: ManifestOptions
) -> Iterator[tuple[int, CatalogEntry | str]]:
    """(line, entry or problem) for URLs given one by one, then a manifest's rows."""
    for number, url in enumerate(urls, 1):
        yield number, CatalogEntry(url, url)
    if manifest is not None:
        for row in read_manifest(manifest, options):
            if isinstance(row, ManifestProblem):
                yield row.line, row.reason
            else:
                yield row.line, entry_of_row(row)


def index_catalog(
    settings: Settings,
    urls: list[str],
    manifest: str | None,
    options: ManifestOptions,
    console: Console,
    as_json: bool,
    ray_options: RayOptions | None = None,
) -> dict[str, Any]:
    """Fetch, embed and write the entries; returns the run's summary (printed too).
    With `ray_options`, each chunk is decoded and embedded on that Ray cluster (the
    caller has joined it)."""
    started = time.perf_counter()
    engine = Engine.from_settings(settings)
    decode = DecodeOptions.from_settings(settings)
    on_ray = None
    if ray_options is not None:
        on_ray = RayIndexer(engine, settings.indexing, None, decode, ray_options)
    counts: dict[str, int] = dict.fromkeys(("created", "updated", "unchanged", "failed"), 0)
    failures: list[tuple[str, str]] = []
    with (
        Catalog(
            engine,
            settings.fetch,
            settings.indexing,
            decode,
            trusted=True,
            chunk_size=settings.catalog.chunk_items,
            indexer=on_ray,
        ) as catalog,
        Progress(
            SpinnerColumn(),
            TextColumn("catalog: {task.completed} entries, {task.fields[failed]} failed"),
            TimeElapsedColumn(),
            console=console,
            disable=as_json or not console.is_terminal,
        ) as progress,
    ):
        task = progress.add_task("catalog", failed=0)
        chunk: list[tuple[int, CatalogEntry | str]] = []

        def write() -> None:
            entries = [e for _, e in chunk if isinstance(e, CatalogEntry)]
            written = iter(catalog.put_chunk(entries))
            for line, entry in chunk:
                result = next(written) if isinstance(entry, CatalogEntry) else None
                if result is None:
                    result = EntryResult("", "", "failed", f"manifest line {line}: {entry}")
                counts[result.status] += 1
                if result.status == "failed":
                    failures.append((result.id or f"line {line}", result.error))
            progress.update(task, advance=len(chunk), failed=counts["failed"])
            chunk.clear()

        for row in catalog_entries(urls, manifest, options):
            chunk.append(row)
            if len(chunk) >= catalog.chunk_size:
                write()
        if chunk:
            write()
        stats = catalog.counters
        summary = {
            **counts,
            "embedded": stats.embedded,
            "fetched": stats.fetched,
            "not_modified": stats.not_modified,
            "fetched_bytes": stats.fetched_bytes,
            "failures": [{"id": i, "reason": r} for i, r in failures],
            "seconds": round(time.perf_counter() - started, 3),
        }
    engine.refresh_indexes(save=True, needed_only=True)
    if as_json:
        print(json.dumps(summary, indent=2))
        return summary
    console.print(
        f"[bold]catalog: created {counts['created']}, updated {counts['updated']}, "
        f"unchanged {counts['unchanged']}, failed {counts['failed']}[/bold] in "
        f"{summary['seconds']:.1f} s ({stats.fetched} downloaded, {stats.not_modified} not "
        f"modified since the last run, {stats.embedded} embedded)"
    )
    if failures:
        table = Table("id", "reason", title=f"{len(failures)} entr(ies) not indexed")
        for name, reason in failures[:SHOWN_FAILURES]:
            table.add_row(name, reason)
        console.print(table)
        if len(failures) > SHOWN_FAILURES:
            console.print(f"... and {len(failures) - SHOWN_FAILURES} more (--json lists all)")
    return summary
