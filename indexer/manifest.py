"""Catalog manifests: one row per item, with the media's url, the caller's id and metadata.

The img2dataset / LAION layout and the usual e-commerce export: CSV, TSV, JSON Lines or
Parquet, local or at any fsspec URL (https://, s3://, memory://), with a url column
(`url`, `URL`, `image_url`, ...), an optional id column (`id`, `sku`, ...) and any other
columns, which become the item's metadata and keep their types (column_types.py).

`read_manifest` yields a ManifestRow per good row and a ManifestProblem per bad one, in
order; a problem never stops the reading. What is wrong with the manifest as a whole (no
url column, an unknown format, a binary Parquet column) is a SourceError, at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmodal.search.errors import SourceError

from .column_types import parse_schema
from .tabular import Record, TabularReader, detect_format, is_local, local_path

__all__ = [
    "ID_COLUMNS",
    "MAX_ID_CHARS",
    "URL_COLUMNS",
    "ManifestOptions",
    "ManifestProblem",
    "ManifestRow",
    "parse_schema",
    "read_manifest",
]

# The url column when none is named: the first of these present, case as written.
URL_COLUMNS = ("url", "URL", "image_url", "image", "src", "path", "file")
# The id column when none is named; without one, rows have no ids.
ID_COLUMNS = ("id", "_id", "sku", "key")
MAX_ID_CHARS = 512
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class ManifestRow:
    line: int  # 1-based row number in the manifest, for messages (CSV: the header is line 1)
    source: (
        str  # the media's url or path as written; a relative path of a local manifest made absolute
    )
    external_id: str | None  # the caller's id (SKU), when the manifest has an id column
    metadata: dict[str, Any]  # the other columns, typed; null values left out


@dataclass(frozen=True)
class ManifestProblem:
    line: int  # as ManifestRow.line
    reason: str  # e.g. "no url", "duplicate id 'A1' (first on line 3)"


@dataclass(frozen=True)
class ManifestOptions:
    url_column: str | None = None  # default: the first of URL_COLUMNS present
    id_column: str | None = None  # default: the first of ID_COLUMNS present, else no ids
    schema: dict[str, str] | None = None  # column -> text|int|float|bool|json, over inferred types
    format: str | None = None  # csv | tsv | jsonl | parquet; default from the extension
    batch_rows: int = 10_000  # rows read (Parquet) or typed (CSV) at a time


def read_manifest(
    location: str | Path, options: ManifestOptions = ManifestOptions()
) -> Iterator[ManifestRow | ManifestProblem]:
    """The rows of the manifest at `location` (a path or an fsspec URL), in order.

    Parquet is read one record batch (`batch_rows`) at a time and JSON Lines one line at
    a time (a line over 1 MiB is a problem, skipped unread), so a manifest of millions of
    rows never sits in memory. A CSV or TSV is read whole, since a column is typed from
    all of its values: int only when every value is written as an integer ("00123" makes
    the column text), float when every one is a number; an empty cell is left out.
    Parquet and JSON keep the types they declare (timestamps and dates as ISO 8601 text,
    decimals as floats, structs as dicts; NaN left out). `options.schema` wins over
    both; a value it cannot convert makes its row a problem.

    Ids are stripped text (an integer id as its decimal digits), non-empty, at most
    MAX_ID_CHARS characters, without control characters, and unique: a repeated id is a
    problem for the later row. The ids seen are kept to find repeats, about 100 bytes
    each. Raises SourceError for the manifest as a whole (format, columns, unreadable).
    """
    fmt = detect_format(location, options.format)
    base = local_path(location).resolve().parent if is_local(location) else None
    with TabularReader(location, fmt, options.schema, options.batch_rows) as reader:
        columns = reader.columns()
        if not columns:  # an empty file, or JSON Lines without one good row
            for record in reader.records():
                yield ManifestProblem(record.line, record.problem or "no url")
            return
        url_column = _url_column(columns, options.url_column, location)
        id_column = _id_column(columns, options.id_column, location)
        first_line: dict[str, int] = {}
        records = reader.records(frozenset(c for c in (url_column, id_column) if c))
        for record in records:
            yield _row(record, url_column, id_column, base, first_line)


def _url_column(columns: list[str], given: str | None, location: str | Path) -> str:
    if given is not None:
        if given not in columns:
            raise SourceError(f"{location}: no url column {given!r} (columns: {_listed(columns)})")
        return given
    for name in URL_COLUMNS:
        if name in columns:
            return name
    raise SourceError(
        f"{location}: no url column; name one (url_column) or use one of "
        f"{', '.join(URL_COLUMNS)} (columns: {_listed(columns)})"
    )


def _id_column(columns: list[str], given: str | None, location: str | Path) -> str | None:
    if given is not None:
        if given not in columns:
            raise SourceError(f"{location}: no id column {given!r} (columns: {_listed(columns)})")
        return given
    return next((name for name in ID_COLUMNS if name in columns), None)


def _listed(columns: list[str]) -> str:
    shown = ", ".join(repr(c) for c in columns[:50])
    return shown + (f" and {len(columns) - 50} more" if len(columns) > 50 else "")


def _row(
    record: Record,
    url_column: str,
    id_column: str | None,
    base: Path | None,
    first_line: dict[str, int],
) -> ManifestRow | ManifestProblem:
    if record.problem is not None:
        return ManifestProblem(record.line, record.problem)
    values = record.values
    url = values.get(url_column)
    if url is None or (isinstance(url, str) and not url.strip()):
        return ManifestProblem(record.line, "no url")
    if not isinstance(url, str):
        return ManifestProblem(record.line, f"url is not text: {url!r}"[:200])
    source = _source(url.strip(), base)
    external_id = None
    if id_column is not None:
        external_id, problem = _checked_id(values.get(id_column))
        if problem is not None:
            return ManifestProblem(record.line, problem)
        assert external_id is not None
        if external_id in first_line:
            return ManifestProblem(
                record.line,
                f"duplicate id {external_id!r} (first on line {first_line[external_id]})",
            )
        first_line[external_id] = record.line
    metadata = {
        key: value
        for key, value in values.items()
        if key != url_column and key != id_column and value is not None
    }
    return ManifestRow(record.line, source, external_id, metadata)


def _checked_id(value: Any) -> tuple[str | None, str | None]:
    """(the id, None) or (None, why it is refused)."""
    if value is None:
        return None, "no id"
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None, f"id is not text or an integer: {value!r}"[:200]
    text = str(value).strip()
    if not text:
        return None, "no id"
    if len(text) > MAX_ID_CHARS:
        return None, f"id longer than {MAX_ID_CHARS} characters"
    if _CONTROL.search(text):
        return None, f"id with a control character: {text[:80]!r}"
    return text, None


def _source(url: str, base: Path | None) -> str:
    """A relative local path of a local manifest, made absolute against its folder."""
    if base is None or "://" in url:
        return url
    path = Path(url).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())
