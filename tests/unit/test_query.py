from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nunet.db.query import Contains, In, Page, Query, Range
from nunet.errors import ValidationError


class Level(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Res(msgspec.Struct, frozen=True):
    cpu: int
    ram: Annotated[int, msgspec.Meta(ge=0)] = 0
    gpu: str | None = None


class Rec(msgspec.Struct):
    name: str
    status: str = "idle"
    res: Res = Res(cpu=1)
    tags: list[str] = []
    score: float | None = None
    meta: dict[str, Any] = {}
    level: Level = Level.LOW
    backup: Res | None = None


def run(records: list[Rec], where: Mapping[str, object] | None = None, **kw: Any) -> Page[Rec]:
    return Query(Rec, where, **kw).run(records)


def names(page: Page[Rec]) -> list[str]:
    return [r.name for r in page.items]


RECS = [
    Rec("web-1", "running", Res(cpu=2, ram=4, gpu="a100"), ["web", "prod"], 0.5),
    Rec("web-2", "running", Res(cpu=4, ram=8), ["web"], None, {"owner": {"id": 7}}),
    Rec("db-1", "stopped", Res(cpu=8, ram=32), ["db", "prod"], 0.9, level=Level.HIGH),
    Rec("batch", "running", Res(cpu=2), [], 0.1, {"owner": {"id": "x"}}),
]


# --- conditions ---------------------------------------------------------------------------------


def test_equality_and_nested_paths_are_and_ed() -> None:
    assert names(run(RECS, {"status": "running"})) == ["web-1", "web-2", "batch"]
    assert names(run(RECS, {"status": "running", "res.cpu": 2})) == ["web-1", "batch"]
    assert names(run(RECS, {"res.gpu": "a100"})) == ["web-1"]
    assert names(run(RECS, {"res.gpu": None})) == ["web-2", "db-1", "batch"]
    assert names(run(RECS, {"status": "nope"})) == []
    assert names(run(RECS)) == [r.name for r in RECS]


def test_range_bounds_are_inclusive_or_exclusive_as_asked() -> None:
    assert names(run(RECS, {"res.cpu": Range(gte=4)})) == ["web-2", "db-1"]
    assert names(run(RECS, {"res.cpu": Range(gt=4)})) == ["db-1"]
    assert names(run(RECS, {"res.cpu": Range(lte=4)})) == ["web-1", "web-2", "batch"]
    assert names(run(RECS, {"res.cpu": Range(lt=4)})) == ["web-1", "batch"]
    assert names(run(RECS, {"res.cpu": Range(gt=2, lt=8)})) == ["web-2"]
    assert names(run(RECS, {"res.cpu": Range(gte=2, lte=2)})) == ["web-1", "batch"]
    assert names(run(RECS, {"res.cpu": Range()})) == [r.name for r in RECS]


def test_range_never_matches_none() -> None:
    assert names(run(RECS, {"score": Range(gte=0)})) == ["web-1", "db-1", "batch"]
    assert names(run(RECS, {"backup.cpu": Range(gte=0)})) == []


def test_in() -> None:
    assert names(run(RECS, {"res.cpu": In([4, 8])})) == ["web-2", "db-1"]
    assert names(run(RECS, {"status": In({"stopped"})})) == ["db-1"]
    assert names(run(RECS, {"status": In([])})) == []
    assert names(run(RECS, {"score": In([None])})) == ["web-2"]


def test_contains_substring_list_and_dict_key() -> None:
    assert names(run(RECS, {"name": Contains("web")})) == ["web-1", "web-2"]
    assert names(run(RECS, {"name": Contains("-")})) == ["web-1", "web-2", "db-1"]
    assert names(run(RECS, {"tags": Contains("prod")})) == ["web-1", "db-1"]
    assert names(run(RECS, {"tags": Contains("pro")})) == []  # membership, not substring
    assert names(run(RECS, {"meta": Contains("owner")})) == ["web-2", "batch"]
    assert names(run(RECS, {"res.gpu": Contains("100")})) == ["web-1"]  # None never contains


def test_query_values_are_converted_to_the_field_type() -> None:
    assert names(run(RECS, {"level": "high"})) == ["db-1"]
    assert names(run(RECS, {"level": In(["high", "low"])})) == [r.name for r in RECS]
    assert names(run(RECS, {"res.cpu": "8"})) == ["db-1"]  # e.g. from a URL
    assert names(run(RECS, {"res.cpu": Range(gte="4")})) == ["web-2", "db-1"]
    assert names(run(RECS, {"res": {"cpu": 2, "ram": 4, "gpu": "a100"}})) == ["web-1"]
    # The field's constraints do not apply to bounds: ram >= -1 is a fine question.
    assert len(run(RECS, {"res.ram": Range(gte=-1)}).items) == 4


def test_paths_through_any_are_resolved_per_record() -> None:
    assert names(run(RECS, {"meta.owner.id": 7})) == ["web-2"]
    assert names(run(RECS, {"meta.owner.id": "x"})) == ["batch"]
    assert names(run(RECS, {"meta.nothing.here": None})) == [r.name for r in RECS]


# --- ordering -----------------------------------------------------------------------------------


def test_order_ascending_and_descending_with_stable_ties() -> None:
    assert names(run(RECS, order_by="res.cpu")) == ["web-1", "batch", "web-2", "db-1"]
    assert names(run(RECS, order_by="res.cpu", desc=True)) == ["db-1", "web-2", "web-1", "batch"]
    assert names(run(RECS, order_by="name")) == ["batch", "db-1", "web-1", "web-2"]


def test_none_sorts_last_in_both_directions() -> None:
    assert names(run(RECS, order_by="score")) == ["batch", "web-1", "db-1", "web-2"]
    assert names(run(RECS, order_by="score", desc=True)) == ["db-1", "web-1", "batch", "web-2"]
    assert names(run(RECS, order_by="res.gpu")) == ["web-1", "web-2", "db-1", "batch"]


def test_order_on_values_that_cannot_be_compared() -> None:
    with pytest.raises(ValidationError) as info:
        run(RECS, order_by="meta.owner.id")
    assert info.value.path == "meta.owner.id"
    with pytest.raises(ValidationError) as info:
        run(RECS, order_by="level")  # a plain Enum has no order
    assert info.value.path == "level"


# --- paging -------------------------------------------------------------------------------------


def test_limit_offset_total_more() -> None:
    where = {"status": "running"}
    page = run(RECS, where, limit=1)
    assert (names(page), page.total, page.more) == (["web-1"], 3, True)
    page = run(RECS, where, limit=1, offset=1)
    assert (names(page), page.total, page.more) == (["web-2"], 3, True)
    page = run(RECS, where, limit=1, offset=2)
    assert (names(page), page.total, page.more) == (["batch"], 3, False)
    page = run(RECS, where, limit=5, offset=1)
    assert (names(page), page.total, page.more) == (["web-2", "batch"], 3, False)
    page = run(RECS, where, offset=7)
    assert (names(page), page.total, page.more) == ([], 3, False)
    page = run(RECS, where, limit=0)
    assert (names(page), page.total, page.more) == ([], 3, True)
    page = run([], where, limit=1)
    assert (names(page), page.total, page.more) == ([], 0, False)


def test_paging_applies_after_ordering() -> None:
    page = run(RECS, order_by="res.cpu", desc=True, limit=2, offset=1)
    assert (names(page), page.total, page.more) == (["web-2", "web-1"], 4, True)


def test_page_encodes_as_json() -> None:
    page = run(RECS, {"name": "batch"})
    assert msgspec.json.decode(msgspec.json.encode(page))["total"] == 1


# --- bad queries ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "path"),
    [
        ({"nope": 1}, "nope"),
        ({"res.nope": 1}, "res.nope"),
        ({"backup.nope": 1}, "backup.nope"),
        ({"res.cpu.deeper": 1}, "res.cpu.deeper"),  # an int has no fields
        ({"tags.x": 1}, "tags.x"),  # nor does a list
        ({"res..cpu": 1}, "res..cpu"),
        ({"": 1}, ""),
        ({"res.cpu": "many"}, "res.cpu"),  # cannot be an int
        ({"res.cpu": Range(gte="many")}, "res.cpu"),
        ({"tags": Range(gte=1)}, "tags"),
        ({"level": "medium"}, "level"),
        ({"status": In("running")}, "status"),  # a string is not a list of values
        ({"status": In(5)}, "status"),  # type: ignore[arg-type]
        ({"res.cpu": Contains(1)}, "res.cpu"),  # an int contains nothing
        ({"level": Contains("h")}, "level"),
        ({"tags": Contains(["a"])}, "tags"),  # tags hold strings
    ],
)
def test_bad_conditions_name_the_field(where: dict[str, object], path: str) -> None:
    with pytest.raises(ValidationError) as info:
        Query(Rec, where)
    assert info.value.path == path


def test_bad_conditions_fail_before_any_record_is_read() -> None:
    def records() -> Any:
        raise AssertionError("read records")
        yield

    with pytest.raises(ValidationError):
        Query(Rec, {"nope": 1}).run(records())


def test_bad_order_and_paging() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"order_by": "nope"}, "nope"),
        ({"order_by": "res.nope"}, "res.nope"),
        ({"limit": -1}, "limit"),
        ({"offset": -1}, "offset"),
        ({"limit": True}, "limit"),
        ({"offset": None}, "offset"),
        ({"limit": 1.5}, "limit"),
    ]
    for kw, path in cases:
        with pytest.raises(ValidationError) as info:
            Query(Rec, **kw)
        assert info.value.path == path, kw


def test_comparisons_across_types_in_dynamic_fields_are_validation_errors() -> None:
    with pytest.raises(ValidationError) as info:
        run(RECS, {"meta.owner.id": Range(gte=1)})  # 7 fine, "x" not
    assert info.value.path == "meta.owner.id"
    with pytest.raises(ValidationError) as info:
        run([Rec("a", meta={"n": 3})], {"meta.n": Contains("x")})
    assert info.value.path == "meta.n"
    with pytest.raises(ValidationError) as info:
        run([Rec("a", meta={"n": "text"})], {"meta.n": Contains(3)})
    assert info.value.path == "meta.n"


# --- against a naive model ----------------------------------------------------------------------


class Item(msgspec.Struct):
    name: str
    cpu: int | None
    res: Res
    tags: list[str]


TAGS = ["a", "b", "c"]
items_st = st.builds(
    Item,
    name=st.text(alphabet="abc", max_size=3),
    cpu=st.none() | st.integers(0, 5),
    res=st.builds(Res, cpu=st.integers(0, 5), ram=st.integers(0, 3)),
    tags=st.lists(st.sampled_from(TAGS), max_size=3),
)
small = st.integers(0, 5)
bound = st.none() | small
conditions_st = st.fixed_dictionaries(
    {},
    optional={
        "cpu": st.one_of(
            st.none(),
            small,
            st.builds(Range, gt=bound, gte=bound, lt=bound, lte=bound),
            st.builds(In, st.lists(st.none() | small, max_size=3)),
        ),
        "res.cpu": st.one_of(small, st.builds(Range, gte=bound, lt=bound)),
        "res.ram": st.builds(In, st.lists(small, max_size=3)),
        "name": st.one_of(
            st.text("abc", max_size=2), st.builds(Contains, st.text("abc", max_size=2))
        ),
        "tags": st.builds(Contains, st.sampled_from(TAGS)),
    },
)


def naive_value(item: Item, path: str) -> Any:
    obj: Any = item
    for seg in path.split("."):
        obj = getattr(obj, seg)
    return obj


def naive_holds(value: Any, cond: object) -> bool:
    if isinstance(cond, Range):
        if value is None:
            return False
        return (
            (cond.gt is None or value > cond.gt)
            and (cond.gte is None or value >= cond.gte)
            and (cond.lt is None or value < cond.lt)
            and (cond.lte is None or value <= cond.lte)
        )
    if isinstance(cond, In):
        return value in list(cond.values)
    if isinstance(cond, Contains):
        return cond.value in value
    return bool(value == cond)


def naive(
    items: list[Item],
    where: dict[str, object],
    order_by: str | None,
    desc: bool,
    limit: int | None,
    offset: int,
) -> tuple[list[Item], int, bool]:
    hits = [i for i in items if all(naive_holds(naive_value(i, p), c) for p, c in where.items())]
    if order_by is not None:

        def cmp(a: Item, b: Item) -> int:
            x, y = naive_value(a, order_by), naive_value(b, order_by)
            if x is None or y is None:
                return (x is None) - (y is None)
            if desc:
                x, y = y, x
            return int(x > y) - int(x < y)

        hits = sorted(hits, key=functools.cmp_to_key(cmp))
    page = hits[offset:] if limit is None else hits[offset : offset + limit]
    return page, len(hits), offset + len(page) < len(hits)


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(items_st, max_size=12),
    where=conditions_st,
    order_by=st.sampled_from([None, "name", "cpu", "res.cpu", "res.ram"]),
    desc=st.booleans(),
    limit=st.none() | st.integers(0, 6),
    offset=st.integers(0, 6),
)
def test_query_equals_naive_filter_sort_slice(
    items: list[Item],
    where: dict[str, object],
    order_by: str | None,
    desc: bool,
    limit: int | None,
    offset: int,
) -> None:
    page = Query(Item, where, order_by=order_by, desc=desc, limit=limit, offset=offset).run(items)
    expected, total, more = naive(items, where, order_by, desc, limit, offset)
    assert page.total == total
    assert page.more == more
    assert [id(i) for i in page.items] == [id(i) for i in expected]
