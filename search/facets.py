"""Facets: what the indexed items' metadata holds, for a page to build filters from.

Computed from one space snapshot's items (every indexed item, its metadata keys as
columns, nested keys dotted as filters address them), once per store version.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import pandas as pd

from xmodal.search.filters import ItemTable

FacetType = Literal["string", "number", "boolean", "list", "mixed"]
MAX_KEYS = 50  # keys described, the most common first
MAX_VALUES = 50  # a key with more distinct values gets no value counts
MAX_VALUE_CHARS = 200  # a key with a longer value (a caption) gets no value counts


@dataclass(frozen=True)
class FacetValue:
    value: str | float | bool
    count: int


@dataclass(frozen=True)
class Facet:
    """One metadata key: its type, the items holding it, and (when few) its values."""

    key: str
    type: FacetType
    count: int  # items with a value for the key
    values: list[FacetValue] | None = None  # None: too many distinct values, or long ones
    min: float | None = None  # numbers (and lists of numbers)
    max: float | None = None


@dataclass(frozen=True)
class Facets:
    items: int
    kinds: dict[str, int]
    keys: list[Facet] = field(default_factory=list)
    truncated: bool = False  # more keys than MAX_KEYS


def facets_of(items: ItemTable, max_keys: int = MAX_KEYS) -> Facets:
    """The facets of a snapshot's items; costs a pass over their metadata."""
    kinds = Counter(items.fields["kind"].astype(str)) if len(items.ids) else Counter()
    metadata = items.metadata
    described = [_facet(str(key), metadata[key]) for key in metadata.columns]
    found = sorted((f for f in described if f is not None), key=lambda f: (-f.count, f.key))
    return Facets(
        items=len(items.ids),
        kinds=dict(sorted(kinds.items())),
        keys=found[:max_keys],
        truncated=len(found) > max_keys,
    )


def _facet(key: str, column: pd.Series) -> Facet | None:
    present = [value for value in column.tolist() if _present(value)]
    if not present:
        return None
    scalars: list[Any] = []
    kinds: set[str] = set()
    for value in present:
        if isinstance(value, list):
            kinds.add("list")
            scalars.extend(element for element in value if _present(element))
        else:
            kinds.add(_scalar_type(value))
            scalars.append(value)
    listed = {_scalar_type(value) for value in scalars}
    if kinds == {"list"}:
        facet_type: FacetType = "list"
    elif len(kinds) == 1:
        facet_type = cast(FacetType, next(iter(kinds)))
    else:
        facet_type = "mixed"
    numbers = [float(v) for v in scalars if _scalar_type(v) == "number"]
    bounded = listed == {"number"} and numbers
    return Facet(
        key=key,
        type=facet_type,
        count=len(present),
        values=_values(scalars),
        min=min(numbers) if bounded else None,
        max=max(numbers) if bounded else None,
    )


def _values(scalars: list[Any]) -> list[FacetValue] | None:
    if any(not isinstance(v, str | int | float | bool) for v in scalars):
        return None  # objects inside lists: nothing a checkbox could name
    if any(isinstance(v, str) and len(v) > MAX_VALUE_CHARS for v in scalars):
        return None
    # bool before int: True == 1 would merge them in a Counter.
    counted = Counter((type(v) is bool, v) for v in scalars)
    if len(counted) > MAX_VALUES:
        return None
    ranked = sorted(counted.items(), key=lambda entry: (-entry[1], str(entry[0][1])))
    return [FacetValue(value=value, count=count) for (_, value), count in ranked]


def _scalar_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "mixed"


def _present(value: Any) -> bool:
    """Whether a cell holds a value (pandas fills a key's absence with NaN or None)."""
    if value is None:
        return False
    return not (isinstance(value, float) and math.isnan(value))


__all__ = ["Facet", "FacetValue", "Facets", "facets_of"]
