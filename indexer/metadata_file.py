"""User metadata for items, read from a CSV, TSV, JSON Lines or Parquet file with a `file` column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xmodal.search.errors import SourceError

from .tabular import TabularReader, detect_format


def read_metadata_file(
    path: Path, schema: dict[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Map absolute file paths to metadata. Relative `file` values are relative to `path`'s folder.

    Read as a manifest's rows are (tabular.py, column_types.py): JSON Lines and Parquet
    keep the types they declare; a CSV column is typed as a whole, numbers when every
    value in it is one, written as a number is (so range filters work), else text, so
    that a SKU "00123" keeps its zeros. `schema` (column -> text, int, float, bool or
    json, as `--schema` gives it) wins over both. An empty CSV cell is "" in a text
    column and None in the others. A file of another extension is read as CSV.

    Raises SourceError on the first row that cannot be read, or has no `file` value.
    """
    if not path.is_file():
        raise SourceError(f"no such metadata file: {path}")
    fmt = _format(path)
    base = path.resolve().parent
    mapping: dict[str, dict[str, Any]] = {}
    with TabularReader(path, fmt, schema, keep_empty_text=True) as reader:
        if "file" not in reader.columns() and reader.columns() and fmt != "jsonl":
            raise SourceError(f"{path}: no `file` column")
        for number, record in enumerate(reader.records(frozenset({"file"})), 1):
            if record.problem is not None:
                raise SourceError(f"{path}:{record.line}: {record.problem}")
            row = dict(record.values)
            name = row.pop("file", None)
            if not name:
                raise SourceError(f"{path}: row {number} has no `file` value")
            mapping[str((base / str(name)).resolve())] = row
    return mapping


def _format(path: Path) -> str:
    try:
        return detect_format(path, None)
    except SourceError:
        return "csv"  # as before manifests: any other name is a CSV
