"""User metadata for items, read from a CSV or JSON Lines file with a `file` column."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from xmodal.search.errors import SourceError


def read_metadata_file(path: Path) -> dict[str, dict[str, Any]]:
    """Map absolute file paths to metadata. Relative `file` values are relative to `path`'s folder.

    CSV values stay strings except integers and decimals, which become numbers so
    that range filters work.
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
            rows = [{k: _number_or_text(v) for k, v in row.items()} for row in csv.DictReader(f)]
    mapping: dict[str, dict[str, Any]] = {}
    for number, row in enumerate(rows, 1):
        name = row.pop("file", None)
        if not name:
            raise SourceError(f"{path}: row {number} has no `file` value")
        mapping[str((base / str(name)).resolve())] = row
    return mapping


def _number_or_text(value: str | None) -> Any:
    if value is None:
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value
