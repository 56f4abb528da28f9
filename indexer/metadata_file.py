"""User metadata for items, read from a CSV or JSON Lines file with a `file` column."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from xmodal.search.errors import SourceError


def read_metadata_file(path: Path) -> dict[str, dict[str, Any]]:
    """Map absolute file paths to metadata. Relative `file` values are relative to `path`'s folder.

    JSON Lines keep the types they declare. A CSV column is typed as a whole
    (`csv_column_types`): numbers when every value in it is one, written as a number
    is (so range filters work), else text, so that a SKU "00123" keeps its zeros.
    """
    if not path.is_file():
        raise SourceError(f"no such metadata file: {path}")
    base = path.resolve().parent
    rows: list[dict[str, Any]]
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise SourceError(f"{path}:{number}: not a JSON object: {error}") from error
            if not isinstance(row, dict):
                raise SourceError(f"{path}:{number}: not a JSON object")
            rows.append(row)
    else:
        with open(path, newline="", encoding="utf-8") as f:
            text_rows = list(csv.DictReader(f))
        rows = typed_csv_rows(text_rows)
    mapping: dict[str, dict[str, Any]] = {}
    for number, row in enumerate(rows, 1):
        name = row.pop("file", None)
        if not name:
            raise SourceError(f"{path}: row {number} has no `file` value")
        mapping[str((base / str(name)).resolve())] = row
    return mapping


# How a number is written: no leading zeros (a code such as "007" or a ZIP "01234" is
# text), no "+", no spaces, no "nan"/"inf"; decimals and exponents allowed.
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")


def csv_column_types(rows: list[dict[str, str | None]]) -> dict[str, type]:
    """Per column: int when every non-empty value is an integer, float when every one
    is a number and some are not integers, else str. A column never mixes types."""
    types: dict[str, type] = {}
    for column in {key for row in rows for key in row if key is not None}:
        present = [value for row in rows if (value := row.get(column))]
        if present and all(_INTEGER.fullmatch(v) for v in present):
            types[column] = int
        elif present and all(_DECIMAL.fullmatch(v) for v in present):
            types[column] = float
        else:
            types[column] = str
    return types


def typed_csv_rows(rows: list[dict[str, str | None]]) -> list[dict[str, Any]]:
    """The rows with each column's values of its type (csv_column_types); an empty
    number cell is None, an empty text cell stays ""."""
    types = csv_column_types(rows)
    typed: list[dict[str, Any]] = []
    for row in rows:
        out: dict[str, Any] = {}
        for key, value in row.items():
            if key is None:  # more cells than header names
                raise SourceError(f"a CSV row has more cells than the header: {value}")
            kind = types[key]
            if kind is str or value is None:
                out[key] = value
            else:
                out[key] = kind(value) if value != "" else None
        typed.append(out)
    return typed
