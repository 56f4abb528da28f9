"""Metadata filters: a JSON object evaluated over the items table.

    {"category": "shoes"}                     equality
    {"price": {"$lt": 50}, "kind": "image"}   operators: $eq $ne $gt $gte $lt $lte $in $nin $exists
    {"price": {"$not": {"$gt": 100}}}         negation of a key's conditions
    {"$or": [{"category": "shoes"}, {"price": {"$lt": 10}}]}   also $and [...] and $not {...}
    {"metadata.kind": "poster"}               a metadata key that shadows an item field

A metadata field holding a list matches when any element does ({"tags": "red"}).
Keys `kind`, `uri`, `width`, `height`, `bytes` and `mtime` (unix seconds) address
the item itself; every other key addresses its user metadata (dots reach into
nested objects). Conditions on several keys, and `$or`/`$and`/`$not` beside them, must
all hold. An item without the key matches only `$exists: false`, `$ne`, `$nin` and a
`$not` whose conditions fail on it (as in MongoDB).

Conditions on the item's own fields translate to LanceDB SQL (`filter_to_sql`); those on
metadata do not: the metadata column is JSON text, and Lance's JSON functions read only
its binary JSON type (bench/filters.py).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
_OPERATORS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$not"}
# Operators that combine whole filters, written where a key would be.
_LOGICAL = ("$or", "$and", "$not")
# `$or`, `$and` and `$not` (on a key or a filter) nested deeper than this are refused,
# before looking inside: a 100,000-deep `$or` costs four levels of checking.
MAX_LOGICAL_DEPTH = 4


# A value a condition compares with; lists and objects only where an operator takes them.
_SCALARS = (str, int, float, bool, type(None))
_ORDERED = {"$gt", "$gte", "$lt", "$lte"}
# Metadata keys are names, not documents; longer ones are refused, not looked up.
MAX_KEY_CHARS = 256


@dataclass
class _Budget:
    """What a filter may still hold: leaf conditions and listed values, all branches together."""

    conditions: int
    values: int
    limits: QuerySettings

    def take_conditions(self, count: int) -> None:
        if count > self.conditions:
            raise InvalidQueryError(
                f"filter has more than {self.limits.max_filter_conditions} conditions "
                "(setting query.max_filter_conditions)"
            )
        self.conditions -= count

    def take_values(self, where: str, count: int) -> None:
        if count > self.values:
            raise InvalidQueryError(
                f"{where}: too many values in the filter's lists (setting query.max_filter_values)"
            )
        self.values -= count


def validate_filter(spec: Any, limits: QuerySettings | None = None) -> dict[str, Any]:
    """Check a filter's shape and size; raise InvalidQueryError with what is wrong, and where.

    A filter is {key: condition, "$or": [filter, ...], "$and": [filter, ...], "$not": filter};
    a condition a scalar, or {operator: operand}, an operand being a scalar, a list of
    scalars for `$in` and `$nin`, or a condition for `$not`. `$or`, `$and` and `$not` nest
    at most MAX_LOGICAL_DEPTH deep. Its size is capped by `limits`
    (query.max_filter_conditions: leaf conditions in all branches; query.max_filter_values:
    values in all `$in`/`$nin` lists), checked before looking at more than that many
    entries, so a filter of 300,000 keys costs no more than one at the cap."""
    limits = limits or QuerySettings()
    if spec is None:
        return {}
    budget = _Budget(limits.max_filter_conditions, limits.max_filter_values, limits)
    _check_filter(spec, "", 0, budget)
    return spec


def _check_filter(spec: Any, path: str, depth: int, budget: _Budget) -> None:
    if not isinstance(spec, dict):
        where = f"filter {path}" if path else "filter"
        raise InvalidQueryError(f"{where} must be a JSON object of field: condition")
    if not spec and path:
        # An empty branch would hold no condition, so nothing would bound how many there are.
        raise InvalidQueryError(f"filter {path} is empty: give it at least one condition")
    # Every key holds at least one condition: a dict past the cap is refused unread.
    if len(spec) > budget.conditions:
        budget.take_conditions(len(spec))
    for key, condition in spec.items():
        if not isinstance(key, str) or not key:
            where = f"filter {path}: keys" if path else "filter keys"
            raise InvalidQueryError(f"{where} must be non-empty strings")
        if len(key) > MAX_KEY_CHARS:
            raise InvalidQueryError(
                f"filter key {_shown(key)} is longer than {MAX_KEY_CHARS} characters"
            )
        if key in _LOGICAL:
            _check_logical(key, condition, _joined(path, key), depth, budget)
        elif key.startswith("$"):
            raise InvalidQueryError(
                f"filter {_joined(path, _shown(key))}: unknown operator; "
                f"combine filters with {list(_LOGICAL)}"
            )
        else:
            _check_condition(condition, _joined(path, _named(key)), depth, budget)


def _check_logical(op: str, operand: Any, path: str, depth: int, budget: _Budget) -> None:
    if depth >= MAX_LOGICAL_DEPTH:
        raise InvalidQueryError(
            f"filter {path}: $or, $and and $not nest at most {MAX_LOGICAL_DEPTH} deep"
        )
    if op == "$not":
        _check_filter(operand, path, depth + 1, budget)
        return
    if not isinstance(operand, list) or not operand:
        raise InvalidQueryError(f"filter {path} takes a non-empty list of filters")
    if len(operand) > budget.conditions:
        budget.take_conditions(len(operand))
    for index, branch in enumerate(operand):
        _check_filter(branch, f"{path}[{index}]", depth + 1, budget)


def _check_condition(condition: Any, path: str, depth: int, budget: _Budget) -> None:
    """A key's condition: a scalar (equality) or {operator: operand}."""
    if isinstance(condition, list):
        raise InvalidQueryError(f"filter {path}: write {{'$in': [...]}} to match a list")
    operators = condition if isinstance(condition, dict) else {"$eq": condition}
    if not operators:
        raise InvalidQueryError(f"filter {path}: an empty condition; use {sorted(_OPERATORS)}")
    if len(operators) > budget.conditions:
        budget.take_conditions(len(operators))
    unknown = [op for op in operators if op not in _OPERATORS]
    if unknown:
        shown = ", ".join(_shown(str(op)) for op in unknown[:3])
        raise InvalidQueryError(
            f"filter {path}: unknown operator(s) [{shown}]; use {sorted(_OPERATORS)}"
        )
    for op, operand in operators.items():
        if op == "$not":
            if depth >= MAX_LOGICAL_DEPTH:
                raise InvalidQueryError(
                    f"filter {path}.$not: $or, $and and $not nest at most {MAX_LOGICAL_DEPTH} deep"
                )
            if not isinstance(operand, dict):
                raise InvalidQueryError(
                    f"filter {path}.$not takes operators, e.g. {{'$not': {{'$gt': 100}}}}"
                )
            _check_condition(operand, f"{path}.$not", depth + 1, budget)
            continue
        budget.take_conditions(1)
        _check_operand(path, op, operand, budget)


def _check_operand(path: str, op: str, operand: Any, budget: _Budget) -> None:
    """Raise InvalidQueryError unless `operand` suits `op`."""
    where = f"filter {path}: {op}"
    if op == "$exists":
        if not isinstance(operand, bool):
            raise InvalidQueryError(f"{where} takes true or false")
        return
    if op in ("$in", "$nin"):
        if not isinstance(operand, list):
            raise InvalidQueryError(f"{where} takes a list")
        budget.take_values(where, len(operand))
        for value in operand:
            _check_scalar(where, value)
        return
    _check_scalar(where, operand)
    if op in _ORDERED and (operand is None or isinstance(operand, bool)):
        raise InvalidQueryError(f"{where} takes a number or a string")


def _check_scalar(where: str, value: Any) -> None:
    if not isinstance(value, _SCALARS):
        raise InvalidQueryError(f"{where} takes a string, a number, true, false or null")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidQueryError(f"{where} takes a finite number")


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,40}")


def _named(key: str) -> str:
    """A key as a message's path shows it: plain names as they are, others quoted and cut."""
    return key if _PLAIN_KEY.fullmatch(key) else _shown(key)


def _joined(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part


def _shown(text: str) -> str:
    """A key or operator as a message quotes it: long ones cut, never echoed whole."""
    return repr(text if len(text) <= 40 else f"{text[:40]}...")


def filter_keys(spec: Any, depth: int = 0) -> set[str]:
    """Every key a filter addresses, inside `$or`, `$and` and `$not` too. Safe on a
    filter not yet validated (access checks run first): it looks no deeper than
    validation accepts, and skips what validation would refuse."""
    keys: set[str] = set()
    if not isinstance(spec, dict):
        return keys
    for key, condition in spec.items():
        if key not in _LOGICAL:
            keys.add(key)
        elif depth < MAX_LOGICAL_DEPTH:
            if key == "$not":
                branches = [condition]
            else:
                branches = condition if isinstance(condition, list) else []
            for branch in branches:
                keys |= filter_keys(branch, depth + 1)
    return keys


# -- evaluation over the items ----------------------------------------------------------
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
            if key == "$or":
                either = np.zeros(len(self.ids), dtype=bool)
                for branch in condition:
                    either |= self.matching(branch)
                mask &= either
            elif key == "$and":
                for branch in condition:
                    mask &= self.matching(branch)
            elif key == "$not":
                mask &= ~self.matching(condition)
            else:
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
    """No item has the key: only `$exists: false`, `$ne`, `$nin` and a `$not` whose
    conditions fail can hold."""
    ops = condition if isinstance(condition, dict) else {"$eq": condition}
    return all(
        (op == "$exists" and not value)
        or op in ("$ne", "$nin")
        or (op == "$not" and not _holds_when_absent(value))
        for op, value in ops.items()
    )


def _evaluate(column: pd.Series, condition: Any, key: str) -> np.ndarray:
    ops = condition if isinstance(condition, dict) else {"$eq": condition}
    present = column.notna().to_numpy()
    mask = np.ones(len(column), dtype=bool)
    for op, value in ops.items():
        try:
            if op == "$not":
                mask &= ~_evaluate(column, value, key)
            elif op == "$exists":
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
    if _holds_lists(column):
        wanted = [v for v in values if not isinstance(v, list | dict)]
        return column.map(
            lambda v: any(x in wanted for x in v) if isinstance(v, list) else v in wanted
        ).to_numpy(dtype=bool)
    return column.isin(values).to_numpy(dtype=bool)


# Column types pandas infers (in C) for columns that hold no list.
_FLAT_TYPES = frozenset(
    {"string", "integer", "floating", "boolean", "mixed-integer-float", "empty", "decimal"}
)


def _holds_lists(column: pd.Series) -> bool:
    # Asking each value (column.map) cost ~150 ms a filter at 200,000 items, even warm.
    if column.dtype != object or pd.api.types.infer_dtype(column, skipna=True) in _FLAT_TYPES:
        return False
    return bool(column.map(lambda v: isinstance(v, list)).any())


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


# -- LanceDB SQL ------------------------------------------------------------------------
# Item fields by how their column compares: text, or numbers (ints, or floats after the
# filter divisor).
_TEXT_FIELDS = frozenset(
    k for k, c in ITEM_FILTER_COLUMNS.items() if ITEM_COLUMNS[c].arrow == pa.string()
)
_SQL_COMPARE = {"$eq": "=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
# Integers DataFusion reads as int64 literals; larger ones are left to pandas.
_INT64 = 2**63 - 1


def filter_to_sql(spec: dict[str, Any]) -> str | None:
    """A validated filter as a LanceDB `where` clause over the items table, selecting the
    same items as ItemTable.matching; None when some condition has no exact translation
    (a metadata key, a value whose type differs from the column's, null or true/false).

    Only item fields are translated: column names come from ItemRecord's declarations,
    never from the filter, and values are literals (strings quoted with '' doubled,
    finite numbers by repr). Every leaf is TRUE or FALSE, never NULL, so that NOT and OR
    keep pandas' two-valued logic."""
    parts = []
    for key, condition in spec.items():
        if key in ("$or", "$and"):
            branches = [filter_to_sql(branch) for branch in condition]
            if any(b is None for b in branches):
                return None
            joined = f" {key[1:].upper()} ".join(f"({branch})" for branch in branches)
            parts.append(f"({joined})")
        elif key == "$not":
            inner = filter_to_sql(condition)
            if inner is None:
                return None
            parts.append(f"(NOT ({inner}))")
        else:
            clause = _field_sql(key, condition)
            if clause is None:
                return None
            parts.append(clause)
    return " AND ".join(parts) if parts else "TRUE"


def _field_sql(key: str, condition: Any) -> str | None:
    if key not in ITEM_FIELDS:
        return None
    name = ITEM_FILTER_COLUMNS[key]
    divisor = ITEM_COLUMNS[name].filter_divisor
    column = name if divisor == 1.0 else f"(CAST({name} AS DOUBLE) / {divisor!r})"
    text = key in _TEXT_FIELDS
    ops = condition if isinstance(condition, dict) else {"$eq": condition}
    parts = []
    for op, value in ops.items():
        if op == "$not":
            inner = _field_sql(key, value)
            if inner is None:
                return None
            parts.append(f"(NOT {inner})")
        elif op == "$exists":
            parts.append(f"({name} IS {'NOT ' if value else ''}NULL)")
        elif op in ("$in", "$nin"):
            literals = [_sql_literal(v, text) for v in value]
            if any(lit is None for lit in literals):
                return None
            member = f"COALESCE({column} IN ({', '.join(map(str, literals))}), FALSE)"
            member = member if literals else "FALSE"
            parts.append(member if op == "$in" else f"(NOT {member})")
        else:
            literal = _sql_literal(value, text)
            if literal is None:
                return None
            sign = _SQL_COMPARE["$eq" if op == "$ne" else op]
            compared = f"COALESCE({column} {sign} {literal}, FALSE)"
            parts.append(f"(NOT {compared})" if op == "$ne" else compared)
    return "(" + " AND ".join(parts) + ")"


def _sql_literal(value: Any, text: bool) -> str | None:
    """A value as a SQL literal for a text or a number column; None when its type is
    not the column's, or it is a string SQL should not carry (control characters, or
    not encodable as UTF-8)."""
    if text:
        if not isinstance(value, str) or not value.isprintable():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return None
        return "'" + value.replace("'", "''") + "'"
    if not _is_number(value) or abs(value) > _INT64:
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return repr(value) if "e" not in repr(value) else f"{value:.17e}"
    return str(int(value))
