"""Metadata filters: a JSON object evaluated over the items table.

    {"category": "shoes"}                     equality
    {"price": {"$lt": 50}, "kind": "image"}   operators: $eq $ne $gt $gte $lt $lte $in $nin $exists
    {"metadata.kind": "poster"}               a metadata key that shadows an item field

A metadata field holding a list matches when any element does ({"tags": "red"}).
Keys `kind`, `uri`, `width`, `height`, `bytes` and `mtime` (unix seconds) address
the item itself; every other key addresses its user metadata (dots reach into
nested objects). Conditions on several keys must all hold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from xmodal.search.errors import InvalidQueryError
from xmodal.search.settings import QuerySettings
from xmodal.search.store.records import ITEM_COLUMNS, ITEM_FILTER_COLUMNS

# The keys that address the item itself (declared on ItemRecord); others, its metadata.
ITEM_FIELDS = frozenset(ITEM_FILTER_COLUMNS)
_OPERATORS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"}


# A value a condition compares with; lists and objects only where an operator takes them.
_SCALARS = (str, int, float, bool, type(None))
_ORDERED = {"$gt", "$gte", "$lt", "$lte"}
# Metadata keys are names, not documents; longer ones are refused, not looked up.
MAX_KEY_CHARS = 256


def validate_filter(spec: Any, limits: QuerySettings | None = None) -> dict[str, Any]:
    """Check a filter's shape and size; raise InvalidQueryError with what is wrong.

    The shape fixes its depth: {key: value} or {key: {operator: operand}}, an operand
    being a scalar, or a list of scalars for `$in` and `$nin`. Its size is capped by
    `limits` (query.max_filter_conditions, query.max_filter_values), checked before
    looking at more than that many entries, so a filter of 300,000 keys costs no more
    than one at the cap."""
    limits = limits or QuerySettings()
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise InvalidQueryError("filter must be a JSON object of field: condition")
    conditions = values = 0
    too_many = (
        f"filter has more than {limits.max_filter_conditions} conditions "
        "(setting query.max_filter_conditions)"
    )
    if len(spec) > limits.max_filter_conditions:
        raise InvalidQueryError(too_many)
    for key, condition in spec.items():
        if not isinstance(key, str) or not key:
            raise InvalidQueryError("filter keys must be non-empty strings")
        if len(key) > MAX_KEY_CHARS:
            raise InvalidQueryError(
                f"filter key {_shown(key)} is longer than {MAX_KEY_CHARS} characters"
            )
        if isinstance(condition, list):
            raise InvalidQueryError(
                f"filter on {_shown(key)}: write {{'$in': [...]}} to match a list"
            )
        operators = condition if isinstance(condition, dict) else {"$eq": condition}
        conditions += len(operators)
        if conditions > limits.max_filter_conditions:
            raise InvalidQueryError(too_many)
        unknown = [op for op in operators if op not in _OPERATORS]
        if unknown or not operators:
            shown = ", ".join(_shown(op) for op in unknown[:3])
            raise InvalidQueryError(
                f"filter on {_shown(key)}: unknown operator(s) [{shown}]; use {sorted(_OPERATORS)}"
            )
        for op, operand in operators.items():
            values += _check_operand(key, op, operand, limits.max_filter_values - values)
    return spec


def _check_operand(key: str, op: str, operand: Any, values_left: int) -> int:
    """Raise InvalidQueryError unless `operand` suits `op`; returns the values it lists."""
    where = f"filter on {_shown(key)}: {op}"
    if op == "$exists":
        if not isinstance(operand, bool):
            raise InvalidQueryError(f"{where} takes true or false")
        return 0
    if op in ("$in", "$nin"):
        if not isinstance(operand, list):
            raise InvalidQueryError(f"{where} takes a list")
        if len(operand) > values_left:
            raise InvalidQueryError(
                f"{where}: too many values in the filter's lists (setting query.max_filter_values)"
            )
        for value in operand:
            _check_scalar(where, value)
        return len(operand)
    _check_scalar(where, operand)
    if op in _ORDERED and (operand is None or isinstance(operand, bool)):
        raise InvalidQueryError(f"{where} takes a number or a string")
    return 0


def _check_scalar(where: str, value: Any) -> None:
    if not isinstance(value, _SCALARS):
        raise InvalidQueryError(f"{where} takes a string, a number, true, false or null")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidQueryError(f"{where} takes a finite number")


def _shown(text: str) -> str:
    """A key or operator as a message quotes it: long ones cut, never echoed whole."""
    return repr(text if len(text) <= 40 else f"{text[:40]}...")


class ItemTable:
    """Items flattened for filtering: one row per item, metadata keys as columns."""

    def __init__(
        self,
        ids: Sequence[str] | np.ndarray,
        fields: Callable[[], pd.DataFrame],
        metadata_json: Callable[[], list[str]],
    ):
        """`fields` (item columns, one row per id) and `metadata_json` (one JSON document
        per id) are called on the first filter that needs them: most queries have none,
        and a store version can hold a million items."""
        self.ids = np.asarray(ids, dtype=object)
        self._fields = fields
        self._metadata_json = metadata_json

    @classmethod
    def of(cls, table: pa.Table, ids: np.ndarray | None = None) -> ItemTable:
        """The items of an Arrow table of item rows (the store's columns, one row per id);
        `ids`: its id column as numpy, when the caller has it already."""
        return cls(
            table.column("id").to_numpy(zero_copy_only=False) if ids is None else ids,
            lambda: filter_fields(table),
            lambda: table.column("metadata").to_pylist(),
        )

    @cached_property
    def fields(self) -> pd.DataFrame:
        return self._fields().reset_index(drop=True)

    @cached_property
    def metadata(self) -> pd.DataFrame:
        """Metadata keys as columns."""
        records = [json.loads(m or "{}") for m in self._metadata_json()]
        table = pd.json_normalize(records) if records else pd.DataFrame()
        table.index = self.fields.index[: len(table)]
        return table

    def matching(self, spec: dict[str, Any]) -> np.ndarray:
        """Boolean mask over items for a validated filter."""
        mask = np.ones(len(self.ids), dtype=bool)
        for key, condition in spec.items():
            column = self._column(key)
            if column is None:
                mask &= _holds_when_absent(condition)
            else:
                mask &= _evaluate(column, condition, key)
        return mask

    def _column(self, key: str) -> pd.Series | None:
        if key in ITEM_FIELDS:
            return self.fields[key]
        name = key.removeprefix("metadata.")
        return self.metadata[name] if name in self.metadata.columns else None


def filter_fields(table: pa.Table) -> pd.DataFrame:
    """The item fields filters address, under their filter keys (ItemRecord declares
    them), in filter units (mtime in seconds), from an Arrow table of item rows."""
    fields = pd.DataFrame({"id": table.column("id").to_numpy(zero_copy_only=False)})
    for key, name in ITEM_FILTER_COLUMNS.items():
        values = table.column(name).to_pandas()
        divisor = ITEM_COLUMNS[name].filter_divisor
        fields[key] = values if divisor == 1.0 else values / divisor
    return fields


def _holds_when_absent(condition: Any) -> bool:
    """No item has the key: only `$exists: false`, `$ne` and `$nin` can hold."""
    ops = condition if isinstance(condition, dict) else {"$eq": condition}
    return all(
        (op == "$exists" and not value) or op in ("$ne", "$nin") for op, value in ops.items()
    )


def _evaluate(column: pd.Series, condition: Any, key: str) -> np.ndarray:
    ops = condition if isinstance(condition, dict) else {"$eq": condition}
    present = column.notna().to_numpy()
    mask = np.ones(len(column), dtype=bool)
    for op, value in ops.items():
        try:
            if op == "$exists":
                mask &= present if value else ~present
            elif op in ("$eq", "$ne"):
                equal = _matches(column, [value]) & present
                mask &= equal if op == "$eq" else ~equal
            elif op in ("$in", "$nin"):
                member = _matches(column, value) & present
                mask &= member if op == "$in" else ~member
            else:
                numeric = pd.to_numeric(column, errors="coerce") if _is_number(value) else column
                compare = {"$gt": "gt", "$gte": "ge", "$lt": "lt", "$lte": "le"}[op]
                mask &= getattr(numeric, compare)(value).fillna(False).to_numpy(dtype=bool)
        except (TypeError, ValueError) as error:
            raise InvalidQueryError(
                f"filter on {_shown(key)}: {op} {_shown(repr(value))} cannot compare"
            ) from error
    return mask


def _matches(column: pd.Series, values: list[Any]) -> np.ndarray:
    """Equality with any of `values`; a list-valued field matches when any element does."""
    if column.map(lambda v: isinstance(v, list)).any():
        wanted = [v for v in values if not isinstance(v, list | dict)]
        return column.map(
            lambda v: any(x in wanted for x in v) if isinstance(v, list) else v in wanted
        ).to_numpy(dtype=bool)
    return column.isin(values).to_numpy(dtype=bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_filter_json(
    raw: str | None, limits: QuerySettings | None = None
) -> dict[str, Any] | None:
    """A filter given as JSON text (CLI option, form field); None when absent."""
    if raw is None or not raw.strip():
        return None
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as error:
        raise InvalidQueryError(f"filter is not valid JSON: {error}") from error
    except RecursionError as error:
        # json gives up at the interpreter's recursion limit (about 1,000 levels): a
        # 100,000-deep form field was a 500.
        raise InvalidQueryError("filter is nested too deeply to be a filter") from error
    return validate_filter(parsed, limits)
