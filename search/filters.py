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
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from xmodal.search.errors import InvalidQueryError
from xmodal.search.store.records import ITEM_FILTER_COLUMNS

# The keys that address the item itself (declared on ItemRecord); others, its metadata.
ITEM_FIELDS = frozenset(ITEM_FILTER_COLUMNS)
_OPERATORS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"}


def validate_filter(spec: Any) -> dict[str, Any]:
    """Check a filter's shape; raise InvalidQueryError with what is wrong."""
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise InvalidQueryError("filter must be a JSON object of field: condition")
    for key, condition in spec.items():
        if not isinstance(key, str) or not key:
            raise InvalidQueryError("filter keys must be non-empty strings")
        if isinstance(condition, dict):
            unknown = set(condition) - _OPERATORS
            if unknown or not condition:
                raise InvalidQueryError(
                    f"filter on {key!r}: unknown operator(s) {sorted(unknown)}; "
                    f"use {sorted(_OPERATORS)}"
                )
            for op in ("$in", "$nin"):
                if op in condition and not isinstance(condition[op], list):
                    raise InvalidQueryError(f"filter on {key!r}: {op} takes a list")
        elif isinstance(condition, list):
            raise InvalidQueryError(f"filter on {key!r}: write {{'$in': [...]}} to match a list")
    return spec


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
        except TypeError as error:
            raise InvalidQueryError(f"filter on {key!r}: {op} {value!r} cannot compare") from error
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


def parse_filter_json(raw: str | None) -> dict[str, Any] | None:
    """A filter given as JSON text (CLI option, form field); None when absent."""
    if raw is None or not raw.strip():
        return None
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as error:
        raise InvalidQueryError(f"filter is not valid JSON: {error}") from error
    return validate_filter(parsed)
