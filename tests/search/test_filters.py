"""The filter language: its shape and caps, what each operator selects, and LanceDB SQL
that selects exactly what the Python evaluation does."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xmodal.search.errors import InvalidQueryError
from xmodal.search.filters import (
    MAX_LOGICAL_DEPTH,
    ItemTable,
    filter_keys,
    filter_to_sql,
    parse_filter_json,
    validate_filter,
)
from xmodal.search.settings import QuerySettings
from xmodal.search.store import ItemRecord, Store, item_id_for
from xmodal.search.store.records import FAILED

KINDS = ("image", "video", "audio")


def records() -> list[ItemRecord]:
    """30 items: three kinds, a few sizes and times, metadata with lists, nesting and gaps."""
    made = []
    for i in range(30):
        uri = f"/media/{i:02d} it's.jpg" if i % 7 == 0 else f"/media/{i:02d}.jpg"
        metadata: dict = {"category": ["shoes", "hats", "bags"][i % 3], "price": i * 2.5}
        if i % 4 == 0:
            metadata["tags"] = ["red", "blue"] if i % 8 == 0 else ["green"]
        if i % 5 == 0:
            metadata["sku"] = f"{i:06d}"
            metadata["shop"] = {"city": "Paris" if i % 10 else "Lyon"}
        if i % 6 == 0:
            del metadata["price"]
        made.append(
            ItemRecord(
                item_id_for(uri),
                uri,
                KINDS[i % 3],
                "/media",
                bytes=1000 * i,
                mtime_ns=1_700_000_000_000_000_000 + i * 500_000_000,
                width=[0, 320, 1000, 4000][i % 4],
                height=[0, 240, 750][i % 3],
                metadata=metadata,
                status=FAILED if i == 29 else "indexed",
            )
        )
    return made


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    made = Store(tmp_path_factory.mktemp("filters"))
    made.upsert_items(records())
    return made


@pytest.fixture(scope="module")
def table(store) -> ItemTable:
    return ItemTable.of(store.items_table())


def selected(table: ItemTable, spec: dict) -> list[int]:
    """Item numbers (0-29) a filter selects, by the Python evaluation."""
    uris = table.fields["uri"].to_numpy()
    chosen = uris[table.matching(validate_filter(spec))]
    return sorted(int(uri.split("/")[-1][:2]) for uri in chosen)


# -- shape and caps ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"$or": [{"a": 1}, {"b": 2}, {"price": {"$gt": True}}]}, "filter $or[2].price: $gt"),
        ({"$or": []}, "filter $or takes a non-empty list"),
        ({"$and": {"a": 1}}, "filter $and takes a non-empty list"),
        ({"$or": [{}]}, "filter $or[0] is empty"),
        ({"$not": {}}, "filter $not is empty"),
        ({"$or": [3]}, "filter $or[0] must be a JSON object"),
        ({"$nor": [{"a": 1}]}, "unknown operator"),
        ({"price": {"$or": [{"$gt": 1}]}}, "filter price: unknown operator(s) ['$or']"),
        ({"price": {"$not": 3}}, "filter price.$not takes operators"),
        ({"price": {"$not": {}}}, "filter price.$not: an empty condition"),
        ({"$and": [{"$not": {"p": {"$in": "x"}}}]}, "filter $and[0].$not.p: $in takes a list"),
    ],
)
def test_malformed_filters_are_refused_with_where_the_problem_is(spec, message):
    with pytest.raises(InvalidQueryError) as refused:
        validate_filter(spec)
    assert message in str(refused.value)


def test_logical_operators_nest_at_most_four_deep_and_deeper_is_refused_cheaply():
    spec: dict = {"a": 1}
    for _ in range(MAX_LOGICAL_DEPTH):
        spec = {"$or": [spec]}
    assert validate_filter(spec) == spec
    field = {"p": {"$not": {"$not": {"$not": {"$not": {"$gt": 1}}}}}}
    assert validate_filter(field) == field
    with pytest.raises(InvalidQueryError, match="nest at most 4 deep"):
        validate_filter({"$not": field})
    deep: dict = {"a": 1}
    for _ in range(100_000):  # deeper than Python could recurse
        deep = {"$or": [deep]}
    with pytest.raises(InvalidQueryError, match=r"filter \$or\[0\]\.\$or\[0\].*nest at most 4"):
        validate_filter(deep)
    with pytest.raises(InvalidQueryError, match="nested too deeply"):
        parse_filter_json('{"$or": [' * 100_000 + "]}" * 100_000)


def test_every_leaf_of_every_branch_counts_toward_the_caps():
    limits = QuerySettings(max_filter_conditions=6, max_filter_values=10)
    six = {
        "a": 1,
        "$or": [{"b": 1, "c": {"$gt": 1, "$lt": 5}}, {"$not": {"d": {"$ne": 2, "$in": [1]}}}],
    }
    assert validate_filter(six, limits) == six
    seven = {**six, "e": {"$not": {"$exists": True}}}
    with pytest.raises(InvalidQueryError, match=r"query\.max_filter_conditions"):
        validate_filter(seven, limits)
    eleven = {"$or": [{"a": {"$in": list(range(6))}}, {"b": {"$nin": list(range(5))}}]}
    with pytest.raises(InvalidQueryError, match=r"\$or\[1\]\.b: \$nin: too many values"):
        validate_filter(eleven, limits)
    # A list past the cap is refused before its branches are looked at.
    huge = {"$or": [{"a": object()} for _ in range(300_000)]}
    with pytest.raises(InvalidQueryError, match=r"query\.max_filter_conditions"):
        validate_filter(huge, limits)


def test_filter_keys_finds_keys_inside_logical_operators_even_unvalidated():
    spec = {"kind": "image", "$or": [{"uri": "/x"}, {"$not": {"$and": [{"width": 1}]}}]}
    assert filter_keys(spec) == {"kind", "uri", "width"}
    assert filter_keys({"$or": "nonsense", "$not": 3, "a": {"$not": {"uri": 1}}}) == {"a"}


# -- what each operator selects ---------------------------------------------------------
def test_or_and_not_select_as_in_mongodb(table):
    shoes = selected(table, {"category": "shoes"})
    assert shoes == list(range(0, 30, 3))
    assert selected(table, {"$or": [{"category": "shoes"}, {"kind": "video"}]}) == sorted(
        set(shoes) | set(range(1, 30, 3))
    )
    assert selected(table, {"$and": [{"category": "shoes"}, {"width": 4000}]}) == [3, 15, 27]
    assert selected(table, {"$not": {"category": "shoes"}}) == sorted(set(range(30)) - set(shoes))
    # Siblings of a logical operator must hold as well.
    assert selected(table, {"width": 0, "$or": [{"kind": "video"}, {"kind": "audio"}]}) == [
        4,
        8,
        16,
        20,
        28,
    ]
    # On a key, $not negates its conditions, and holds where the key is absent.
    no_price = list(range(0, 30, 6))
    cheap_or_none = selected(table, {"price": {"$not": {"$gt": 20}}})
    assert cheap_or_none == sorted(set(no_price) | {i for i in range(9)})
    assert selected(table, {"nowhere": {"$not": {"$gt": 1}}}) == list(range(30))
    assert selected(table, {"nowhere": {"$not": {"$exists": False}}}) == []
    # Lists match when any element does, through $not too.
    assert selected(table, {"tags": {"$not": {"$in": ["red"]}}}) == [
        i for i in range(30) if i % 8 != 0
    ]
    assert selected(table, {"shop.city": {"$not": {"$eq": "Paris"}}}) == [
        i for i in range(30) if i % 10 == 0 or i % 5 != 0
    ]


def test_the_store_selects_by_filter_through_sql_or_python(store):
    by_number = {item_id_for(r.uri): int(r.uri.split("/")[-1][:2]) for r in records()}

    def numbers(spec, **options):
        return sorted(by_number[i] for i in store.item_ids_matching(spec, **options))

    assert filter_to_sql({"kind": "video"}) is not None
    assert numbers({"kind": "video"}) == list(range(1, 29, 3))  # 29 failed to index
    assert numbers({"kind": "video"}, status=None) == list(range(1, 30, 3))
    assert filter_to_sql({"sku": "000005"}) is None  # metadata: Python
    assert numbers({"sku": "000005"}) == [5]
    assert numbers({"uri": "/media/07 it's.jpg"}) == [7]
    assert len(numbers(None)) == 29
    with pytest.raises(InvalidQueryError):
        store.item_ids_matching({"$or": []})


# -- SQL and Python select the same items -----------------------------------------------
def test_sql_quotes_values_and_never_takes_names_from_the_filter():
    sql = filter_to_sql({"uri": "x' OR '1'='1", "width": {"$in": [1, 2.5]}})
    assert sql == (
        "(COALESCE(uri = 'x'' OR ''1''=''1', FALSE)) AND (COALESCE(width IN (1, 2.5), FALSE))"
    )
    assert filter_to_sql({"metadata.kind": "x"}) is None
    assert filter_to_sql({"kind": "line\nbreak"}) is None
    assert filter_to_sql({"width": True}) is None  # true/false: left to pandas
    assert filter_to_sql({"width": "320"}) is None
    assert filter_to_sql({"mtime": {"$gt": 1e9}}) == (
        "(COALESCE((CAST(mtime_ns AS DOUBLE) / 1000000000.0) > 1000000000.0, FALSE))"
    )
    assert filter_to_sql({}) == "TRUE"


NUMBERS = st.one_of(
    st.sampled_from([0, 240, 320, 750, 1000, 4000, 5000, 14000]),
    st.integers(-10, 30_000),
    st.floats(-1e4, 1e4, allow_nan=False),
    st.sampled_from([1_700_000_005.0, 1_700_000_005, 1_700_000_004.5, 1.7e9]),
)
TEXTS = st.one_of(
    st.sampled_from([*KINDS, "/media/07 it's.jpg", "/media/10.jpg", "/media/1", ""]),
    st.text(max_size=6),
)
SCALARS = st.one_of(NUMBERS, TEXTS, st.booleans(), st.none())


def conditions(values: st.SearchStrategy, depth: int = 1) -> st.SearchStrategy:
    """A key's condition on `values`; now and then with a value of any type."""
    some = st.one_of(values, values, values, SCALARS)
    leaf = st.one_of(
        some,
        st.dictionaries(
            st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]),
            st.one_of(values, values, values, NUMBERS, TEXTS),
            min_size=1,
            max_size=2,
        ),
        st.fixed_dictionaries({"$in": st.lists(some, max_size=4)}),
        st.fixed_dictionaries({"$nin": st.lists(some, max_size=4)}),
        st.fixed_dictionaries({"$exists": st.booleans()}),
    )
    if depth == 0:
        return leaf
    negated = st.fixed_dictionaries({"$not": conditions(values, depth - 1)})
    return st.one_of(leaf, negated.filter(lambda c: isinstance(c["$not"], dict)))


# Item fields, each with values of its own type most of the time.
FIELD_CONDITIONS = st.one_of(
    st.tuples(st.sampled_from(["kind", "uri"]), conditions(TEXTS)),
    st.tuples(st.sampled_from(["width", "height", "bytes", "mtime"]), conditions(NUMBERS)),
)


def filters(depth: int = 2) -> st.SearchStrategy:
    fields = st.lists(FIELD_CONDITIONS, min_size=1, max_size=2).map(dict)
    if depth == 0:
        return fields
    inner = filters(depth - 1)
    logical = st.one_of(
        st.fixed_dictionaries({"$or": st.lists(inner, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"$and": st.lists(inner, min_size=1, max_size=2)}),
        st.fixed_dictionaries({"$not": inner}),
    )
    return st.one_of(fields, logical, st.builds(lambda a, b: {**a, **b}, fields, logical))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=filters())
def test_sql_selects_exactly_the_items_python_selects(store, table, spec):
    spec = validate_filter(spec, QuerySettings(max_filter_conditions=1000))
    sql = filter_to_sql(spec)
    try:
        mask = table.matching(spec)
    except InvalidQueryError:
        assert sql is None  # pandas cannot compare: neither may SQL answer
        return
    if sql is None:
        return
    expected = set(np.asarray(table.ids)[mask])
    found = store._items.search().where(sql).select(["id"]).limit(None).to_arrow()
    assert set(found.column("id").to_pylist()) == expected, json.dumps(spec)
