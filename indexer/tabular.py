"""Rows of a CSV, TSV, JSON Lines or Parquet file, local or at any fsspec URL, typed.

Shared by catalog manifests (manifest.py) and the `--metadata` file (metadata_file.py).
Parquet is read one record batch at a time and JSON Lines one line at a time, so a file
of any length streams; a CSV is read whole, since a column's type depends on all of its
values (column_types.py), then typed column by column and handed out in slices.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit

import pyarrow as pa

from xmodal.search.errors import SourceError

from .column_types import TypedColumn, check_schema, convert_value

FORMATS = ("csv", "tsv", "jsonl", "parquet")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}
# One JSON Lines line at most: a longer one is a problem for that line, skipped unread.
MAX_JSON_LINE_BYTES = 1 << 20
# pyarrow's CSV block: one row (a long caption included) must fit in it.
_CSV_BLOCK_BYTES = 16 << 20


@dataclass(frozen=True)
class Record:
    """One row: its values by column, or why it cannot be read (`problem`)."""

    line: int  # CSV: counting the header as line 1; JSON Lines: the line; Parquet: the row
    values: dict[str, Any]
    problem: str | None = None


def is_local(location: str | Path) -> bool:
    return isinstance(location, Path) or _protocol(str(location)) in ("file", "local")


def local_path(location: str | Path) -> Path:
    """The path of a local location, `file://` URLs included."""
    if isinstance(location, Path):
        return location
    from fsspec.implementations.local import LocalFileSystem

    return Path(LocalFileSystem._strip_protocol(location))


def detect_format(location: str | Path, given: str | None) -> str:
    """The format named by `given`, else by the file's extension (also `.csv.gz`,
    `.tsv.gz`, `.jsonl.gz`, `.ndjson.gz`, `.json.gz`); SourceError naming the accepted ones."""
    accepted = f"{', '.join(FORMATS)} ({', '.join(_EXTENSIONS)}, csv and jsonl also .gz)"
    if given is not None:
        if given.lower() not in FORMATS:
            raise SourceError(f"unknown manifest format {given!r}: use one of {accepted}")
        return given.lower()
    name = str(local_path(location)) if is_local(location) else urlsplit(str(location)).path
    suffixes = [s.lower() for s in Path(name).suffixes]
    if suffixes[-1:] == [".gz"]:
        suffixes = suffixes[:-1]
        if suffixes[-1:] == [".parquet"]:
            suffixes = []  # Parquet compresses its own pages
    fmt = _EXTENSIONS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise SourceError(
            f"cannot tell the format of {location} from its name: use one of {accepted}"
        )
    return fmt


class TabularReader:
    """Opens `location` (a path or an fsspec URL) as `fmt`; `columns()` then `records()`.

    `schema` maps columns to the user's types (column_types.COLUMN_TYPES), which win over
    those inferred (CSV) or declared (JSON, Parquet). `keep_empty_text`: whether an empty
    CSV text cell is "" (else it is left out, as a null is).
    """

    def __init__(
        self,
        location: str | Path,
        fmt: str,
        schema: dict[str, str] | None = None,
        batch_rows: int = 10_000,
        keep_empty_text: bool = False,
    ):
        self.location = location
        self.fmt = fmt
        self.schema = check_schema(schema)
        self.batch_rows = max(1, batch_rows)
        self.keep_empty_text = keep_empty_text
        self._file: IO[bytes] | None = None
        self._columns: list[str] | None = None
        self._csv: tuple[pa.Table, list[tuple[int, str]]] | None = None
        self._json_peeked: list[Record] = []  # read to find the columns: up to the first good row
        self._json_line = 0
        self._json_iter = self._json_records()

    def __enter__(self) -> TabularReader:
        self._file = _open(self.location, self.fmt)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()

    def columns(self) -> list[str]:
        """The header (CSV, Parquet) or the first good row's keys (JSON Lines); [] when none."""
        if self._columns is None:
            if self.fmt == "parquet":
                self._columns = self._parquet_columns()
            elif self.fmt == "jsonl":
                self._columns = []
                for record in self._json_iter:
                    self._json_peeked.append(record)
                    if record.problem is None:
                        self._columns = list(record.values)
                        break
            else:
                self._columns = self._read_csv()
            unknown = [c for c in self.schema if c not in self._columns]
            if unknown and self.fmt != "jsonl":
                raise SourceError(
                    f"{self.location}: the schema names {', '.join(map(repr, unknown))}, "
                    f"not a column (columns: {', '.join(self._columns) or 'none'})"
                )
        return self._columns

    def records(self, text_columns: frozenset[str] = frozenset()) -> Iterator[Record]:
        """The rows in order; `text_columns` are kept as written (never typed)."""
        self.columns()
        if self.fmt == "parquet":
            yield from self._parquet_records(text_columns)
        elif self.fmt == "jsonl":
            for record in self._json_peeked:
                yield self._typed_json(record, text_columns)
            for record in self._json_iter:  # the same iterator: its read-ahead is kept
                yield self._typed_json(record, text_columns)
        else:
            yield from self._csv_records(text_columns)

    # CSV and TSV: read whole, all cells as strings, then typed a column at a time.

    def _read_csv(self) -> list[str]:
        import pyarrow.csv as pa_csv

        assert self._file is not None
        data = self._file.read()
        delimiter = "\t" if self.fmt == "tsv" else ","
        header_reader = csv.reader(io.StringIO(_first_lines(data)), delimiter=delimiter)
        header = next(header_reader, None)
        if not header:
            self._csv = (pa.table({}), [])
            return []
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise SourceError(f"{self.location}: column {repeated[0]!r} appears more than once")
        bad_rows: list[tuple[int, str]] = []

        def skip_row(row: Any) -> str:
            bad_rows.append(
                (row.number or 0, f"{row.actual_columns} cells for {row.expected_columns} columns")
            )
            return "skip"

        try:
            table = pa_csv.read_csv(
                pa.py_buffer(data),
                # One thread: the rows skipped keep their numbers.
                read_options=pa_csv.ReadOptions(use_threads=False, block_size=_CSV_BLOCK_BYTES),
                parse_options=pa_csv.ParseOptions(
                    delimiter=delimiter, newlines_in_values=True, invalid_row_handler=skip_row
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(header, pa.string()),
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid as error:
            if "Empty CSV file" in str(error):
                self._csv = (pa.table({}), [])
                return []
            raise SourceError(
                f"{self.location}: not a readable {self.fmt.upper()}: {error}"
            ) from error
        self._csv = (table, sorted(bad_rows))
        return list(table.column_names)

    def _csv_records(self, text_columns: frozenset[str]) -> Iterator[Record]:
        assert self._csv is not None
        table, bad_rows = self._csv
        typed = {
            name: TypedColumn(
                table.column(name).combine_chunks(),
                "text" if name in text_columns else self.schema.get(name),
                name,
            )
            for name in table.column_names
        }
        problems: dict[int, str] = {}
        for column in typed.values():
            for index, reason in column.problems.items():
                problems.setdefault(index, reason)
        skipped = 0
        for start in range(0, table.num_rows, self.batch_rows):
            stop = min(start + self.batch_rows, table.num_rows)
            names = list(typed)
            columns = [typed[name].values(start, stop) for name in names]
            for offset, cells in enumerate(zip(*columns, strict=True)):
                index = start + offset
                # Rows pyarrow skipped (a wrong count of cells) come back in their place.
                while skipped < len(bad_rows) and bad_rows[skipped][0] <= index + 2 + skipped:
                    yield Record(bad_rows[skipped][0], {}, bad_rows[skipped][1])
                    skipped += 1
                line = index + 2 + skipped
                if index in problems:
                    yield Record(line, {}, problems[index])
                    continue
                values = dict(zip(names, cells, strict=True))
                if not self.keep_empty_text:
                    values = {k: v for k, v in values.items() if v is not None and v != ""}
                yield Record(line, values)
        for number, reason in bad_rows[skipped:]:
            yield Record(number, {}, reason)

    # JSON Lines: one line at a time, each at most MAX_JSON_LINE_BYTES.

    def _json_records(self) -> Iterator[Record]:
        assert self._file is not None
        for raw in _capped_lines(self._file, MAX_JSON_LINE_BYTES):
            self._json_line += 1
            number = self._json_line
            if raw is None:
                yield Record(number, {}, f"line longer than {MAX_JSON_LINE_BYTES} bytes")
                continue
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
                if raw.lstrip().startswith(b"["):
                    raise SourceError(
                        f"{self.location}: a JSON array; write one JSON object per line (JSON Lines)"
                    )
            if not raw.strip():
                continue
            try:
                value = json.loads(raw, parse_constant=lambda _: None)  # NaN, Infinity: null
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                yield Record(number, {}, f"not JSON: {error}")
                continue
            if not isinstance(value, dict):
                yield Record(number, {}, f"not a JSON object but a {type(value).__name__}")
                continue
            yield Record(number, value)

    def _typed_json(self, record: Record, text_columns: frozenset[str]) -> Record:
        if record.problem is not None or not self.schema:
            return record
        values = dict(record.values)
        for name, kind in self.schema.items():
            if name in values and name not in text_columns:
                try:
                    values[name] = convert_value(values[name], kind, name)
                except ValueError as error:
                    return Record(record.line, {}, str(error))
        return Record(record.line, values)

    # Parquet: one record batch at a time, Arrow types as Python values.

    def _parquet_file(self) -> Any:
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self._file)
        except (pa.ArrowInvalid, OSError) as error:
            raise SourceError(f"{self.location}: not a readable Parquet file: {error}") from error

    def _parquet_columns(self) -> list[str]:
        schema = self._parquet_file().schema_arrow
        for field in schema:
            if _holds_binary(field.type):
                raise SourceError(
                    f"{self.location}: column {field.name!r} holds binary data ({field.type}); "
                    "a manifest's columns hold text, numbers, booleans, dates, lists and structs"
                )
        return list(schema.names)

    def _parquet_records(self, text_columns: frozenset[str]) -> Iterator[Record]:
        parquet = self._parquet_file()
        schema = parquet.schema_arrow
        plain = {field.name: _plain_values(field.type) for field in schema}
        given = {
            name: kind
            for name, kind in self.schema.items()
            if name in plain and name not in text_columns
        }
        line = 0
        for batch in parquet.iter_batches(batch_size=self.batch_rows):
            names = batch.schema.names
            columns = [plain[name](batch.column(name).to_pylist()) for name in names]
            for cells in zip(*columns, strict=True):
                line += 1
                values = dict(zip(names, cells, strict=True))
                problem = None
                for name, kind in given.items():
                    try:
                        values[name] = convert_value(values[name], kind, name)
                    except ValueError as error:
                        problem = str(error)
                        break
                yield Record(line, {} if problem else values, problem)


def _protocol(location: str) -> str:
    from fsspec.utils import get_protocol

    return get_protocol(location)


def _open(location: str | Path, fmt: str) -> IO[bytes]:
    import fsspec

    compression = "infer" if fmt != "parquet" else None
    try:
        opened = fsspec.open(str(location), mode="rb", compression=compression)
        return opened.open()
    except FileNotFoundError as error:
        raise SourceError(f"no such manifest: {location}") from error
    except (OSError, ValueError, ImportError) as error:
        raise SourceError(f"cannot read {location}: {error}") from error


def _capped_lines(file: IO[bytes], cap: int, chunk: int = 1 << 16) -> Iterator[bytes | None]:
    """The lines of `file` without their end; None for a line over `cap` bytes, whose
    rest is read and dropped chunk by chunk, never held whole."""
    pending = bytearray()
    too_long = False
    while True:
        data = file.read(chunk)
        if not data:
            if too_long:
                yield None
            elif pending:
                yield bytes(pending)
            return
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            if not too_long:
                pending += data[start:end]
            yield None if too_long or len(pending) > cap else bytes(pending)
            pending.clear()
            too_long = False
            start = end + 1
        if not too_long:
            pending += data[start:]
            if len(pending) > cap:
                too_long = True
                pending.clear()


def _first_lines(data: bytes) -> str:
    # Enough for any header, multi-line quoted names included.
    return data[: 1 << 20].decode("utf-8-sig", errors="replace")


def _holds_binary(kind: pa.DataType) -> bool:
    if (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
        or str(kind) == "binary_view"
    ):
        return True
    if pa.types.is_struct(kind):
        return any(_holds_binary(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_map(kind):
        return _holds_binary(kind.key_type) or _holds_binary(kind.item_type)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _holds_binary(kind.value_type)
    if pa.types.is_dictionary(kind):
        return _holds_binary(kind.value_type)
    return False


def _plain_values(kind: pa.DataType) -> Callable[[list[Any]], list[Any]]:
    """How a column's Python values (to_pylist) become JSON-like ones: ints, strings and
    booleans as they are; the rest through _plain, one value at a time."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if (
        pa.types.is_integer(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_null(kind)
    ):
        return lambda values: values
    return lambda values: [_plain(value) for value in values]


def _plain(value: Any) -> Any:
    """A value from Arrow as JSON-like: NaN as None, dates and times in ISO 8601, decimals
    as floats, durations in seconds, structs as dicts, maps (lists of pairs) as dicts."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(item, tuple) and len(item) == 2 for item in value):
            return {str(key): _plain(item) for key, item in value}
        return [_plain(item) for item in value]
    return value
