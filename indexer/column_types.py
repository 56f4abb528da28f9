"""Types of metadata columns: inferred for CSV text, or given by the user (`--schema`).

One place for the rules that the `--metadata` file (metadata_file.py) and catalog
manifests (manifest.py) share. A CSV column is typed as a whole, with Arrow compute
kernels rather than a Python call per cell; values of JSON and Parquet, which declare
their own types, are converted one at a time only when the user's schema asks for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from xmodal.search.errors import SourceError

# The types a user may give a column (`--schema sku=text,price=float`).
COLUMN_TYPES = ("text", "int", "float", "bool", "json")

TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")

# How a number is written when the type is inferred: no leading zeros (a code such as
# "007" or a ZIP "01234" is text), no "+", no spaces, no "nan"/"inf"; decimals and
# exponents allowed.
_INFERRED_INTEGER = r"^-?(0|[1-9][0-9]*)$"
_INFERRED_DECIMAL = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
# What a user who said int or float accepts: the number as written, zeros and all.
_GIVEN_INTEGER = r"^[-+]?[0-9]+$"
_GIVEN_DECIMAL = r"^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$"
_SCHEMA_ENTRY = re.compile(r"\s*([^=,]+?)\s*=\s*([A-Za-z]+)\s*")


def parse_schema(text: str) -> dict[str, str]:
    """`"sku=text,price=float"` as {"sku": "text", "price": "float"}; the types are
    COLUMN_TYPES. SourceError on an unknown type, a column given twice or a bad shape."""
    schema: dict[str, str] = {}
    for entry in text.split(","):
        if not entry.strip():
            continue
        match = _SCHEMA_ENTRY.fullmatch(entry)
        if match is None:
            raise SourceError(
                f"bad schema entry {entry.strip()!r}: write COLUMN=TYPE, e.g. sku=text"
            )
        column, kind = match.group(1), match.group(2).lower()
        if kind not in COLUMN_TYPES:
            raise SourceError(
                f"unknown type {match.group(2)!r} for column {column!r}: "
                f"use one of {', '.join(COLUMN_TYPES)}"
            )
        if column in schema:
            raise SourceError(f"column {column!r} is given twice in the schema")
        schema[column] = kind
    if not schema:
        raise SourceError("empty schema: write COLUMN=TYPE[,COLUMN=TYPE...], e.g. sku=text")
    return schema


def check_schema(schema: dict[str, str] | None) -> dict[str, str]:
    """The schema with its types checked (a dict built in Python skips parse_schema)."""
    for column, kind in (schema or {}).items():
        if kind not in COLUMN_TYPES:
            raise SourceError(
                f"unknown type {kind!r} for column {column!r}: use one of {', '.join(COLUMN_TYPES)}"
            )
    return dict(schema or {})


def infer_text_type(values: pa.Array) -> str:
    """The type of a CSV column of strings: int when every non-empty value is written as
    an integer (and fits 64 bits), float when every one is a number and some are not
    integers, else text. A column never mixes types."""
    present = pc.filter(values, pc.not_equal(values, ""))
    if len(present) == 0:
        return "text"
    if pc.all(pc.match_substring_regex(present, _INFERRED_INTEGER)).as_py():
        try:
            pc.cast(present, pa.int64())
        except (pa.ArrowInvalid, OverflowError):
            return "text"  # a code longer than any 64-bit number: keep every digit
        return "int"
    if pc.all(pc.match_substring_regex(present, _INFERRED_DECIMAL)).as_py():
        return "float"
    return "text"


class TypedColumn:
    """A CSV column typed as a whole; `values(start, stop)` gives a slice as Python values.
    `problems` maps the index of each row whose value does not convert to the reason."""

    def __init__(self, values: pa.Array, kind: str | None, column: str):
        values = values.cast(pa.string()) if values.type != pa.string() else values
        values = pc.fill_null(values, "")
        self.kind = kind or infer_text_type(values)
        self.problems: dict[int, str] = {}
        self._parsed: list[Any] | None = None  # json: parsed once, per value
        if self.kind == "text":
            self._array = values
        elif self.kind == "json":
            self._array = values
            self._parsed, self.problems = _per_value(values.to_pylist(), "json", column)
        else:
            typed, self.problems = _converted(values, self.kind, column)
            if isinstance(typed, list):
                self._parsed = typed
            self._array = typed if isinstance(typed, pa.Array) else values

    def values(self, start: int, stop: int) -> list[Any]:
        if self._parsed is not None:
            return self._parsed[start:stop]
        return self._array.slice(start, stop - start).to_pylist()


def _converted(
    values: pa.Array, kind: str, column: str
) -> tuple[pa.Array | list[Any], dict[int, str]]:
    """int, float or bool values of a string column, null where empty or not convertible
    (a Python list when some integer is wider than 64 bits)."""
    trimmed = pc.utf8_trim_whitespace(values)
    if kind == "bool":
        lowered = pc.utf8_lower(trimmed)
        good = pc.is_in(lowered, value_set=pa.array(TRUE_WORDS + FALSE_WORDS))
        converted = pc.is_in(lowered, value_set=pa.array(TRUE_WORDS))
    else:
        pattern = _GIVEN_INTEGER if kind == "int" else _GIVEN_DECIMAL
        good = pc.match_substring_regex(trimmed, pattern)
        # Arrow parses no "+" sign, and no integer wider than 64 bits.
        unsigned = pc.replace_substring_regex(trimmed, r"^\+", "")
        target = pa.int64() if kind == "int" else pa.float64()
        try:
            converted = pc.cast(pc.if_else(good, unsigned, pa.scalar(None, pa.string())), target)
        except (pa.ArrowInvalid, OverflowError):
            return _per_value(values.to_pylist(), kind, column)  # Python ints: any width
    typed = pc.if_else(good, converted, pa.scalar(None, converted.type))
    bad = pc.and_(pc.invert(good), pc.not_equal(values, ""))
    problems = {
        i: _not_a(kind, column, values[i].as_py()) for i in pc.indices_nonzero(bad).to_pylist()
    }
    return typed, problems


def convert_value(value: Any, kind: str, column: str) -> Any:
    """One value (from JSON or Parquet) as the user's `kind`; ValueError with the reason
    when it does not convert. None stays None."""
    if value is None:
        return None
    return _CONVERTERS[kind](value, column)


def _per_value(values: list[Any], kind: str, column: str) -> tuple[list[Any], dict[int, str]]:
    out: list[Any] = []
    problems: dict[int, str] = {}
    for i, value in enumerate(values):
        if value == "" and kind != "text":
            out.append(None)
            continue
        try:
            out.append(convert_value(value, kind, column))
        except ValueError as error:
            out.append(None)
            problems[i] = str(error)
    return out, problems


def _not_a(kind: str, column: str, value: Any) -> str:
    shown = value if not isinstance(value, str) or len(value) <= 80 else f"{value[:80]}..."
    return f"column {column!r}: {shown!r} is not {'an' if kind == 'int' else 'a'} {kind}"


def _to_text(value: Any, column: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _to_int(value: Any, column: str) -> int:
    if isinstance(value, bool):
        raise ValueError(_not_a("int", column, value))
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(_GIVEN_INTEGER[1:-1], value.strip()):
        return int(value.strip())
    raise ValueError(_not_a("int", column, value))


def _to_float(value: Any, column: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and re.fullmatch(_GIVEN_DECIMAL[1:-1], value.strip()):
        return float(value.strip())
    raise ValueError(_not_a("float", column, value))


def _to_bool(value: Any, column: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise ValueError(_not_a("bool", column, value))


def _to_json(value: Any, column: str) -> Any:
    if not isinstance(value, str):
        return value  # already a JSON value
    try:
        return json.loads(value, parse_constant=lambda _: None)
    except json.JSONDecodeError as error:
        raise ValueError(f"{_not_a('json', column, value)} ({error.msg})") from error


_CONVERTERS: dict[str, Callable[[Any, str], Any]] = {
    "text": _to_text,
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "json": _to_json,
}
