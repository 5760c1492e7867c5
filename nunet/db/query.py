"""The query engine over decoded records: filter, sort, page. Pure, no I/O.

`where` maps a dotted field path to a condition; all conditions must hold:

- a plain value: equality (`{"status": "running"}`);
- `Range(gt=, gte=, lt=, lte=)`: bounds, any of them optional;
- `In(values)`: equal to one of the values;
- `Contains(value)`: substring of a text field, element of a list (or set, tuple), key of a dict.

Paths walk nested structs and dicts (`resources.cpu`, `allocations.a1.ram`). They are checked
against the record type before any record is read, and the query's values are converted to the
field's type (so `"running"` matches an enum field, and `"2"` from a URL matches an int). A field
that is missing or None on a record matches only an equality with None; sorting puts None last.
"""

from __future__ import annotations

import functools
import operator
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Annotated, Any, Generic, TypeVar

import msgspec

from nunet.errors import ValidationError

T = TypeVar("T", bound=msgspec.Struct)


class Range(msgspec.Struct, frozen=True, kw_only=True):
    gt: object = None
    gte: object = None
    lt: object = None
    lte: object = None


class In(msgspec.Struct, frozen=True):
    values: Collection[object]


class Contains(msgspec.Struct, frozen=True):
    value: object


class Page(msgspec.Struct, Generic[T]):
    items: list[T]
    total: int  # matches before offset and limit
    more: bool  # whether matches remain after this page


# The field type of a path that walks through `Any`: nothing can be checked statically.
_DYNAMIC: Any = Any

_Getter = Callable[[object], object]
_Test = Callable[[object], bool]


class Query(Generic[T]):
    """A validated query over records of one type; `run` applies it to any iterable of them."""

    def __init__(
        self,
        type_: type[T],
        where: Mapping[str, object] | None = None,
        *,
        order_by: str | None = None,
        desc: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> None:
        _check_count(limit, "limit", optional=True)
        _check_count(offset, "offset", optional=False)
        self._limit = limit
        self._offset = offset
        self._desc = desc
        self._tests: list[tuple[str, _Getter, _Test]] = []
        for path, condition in (where or {}).items():
            field_type = _field_type(type_, path)
            self._tests.append((path, _getter(path), _compile(condition, field_type, path)))
        self._order: tuple[str, _Getter] | None = None
        if order_by is not None:
            _field_type(type_, order_by)
            self._order = (order_by, _getter(order_by))

    def run(self, records: Iterable[T]) -> Page[T]:
        matches = [r for r in records if self._matches(r)]
        if self._order is not None:
            matches = self._sorted(matches, *self._order)
        total = len(matches)
        end = None if self._limit is None else self._offset + self._limit
        items = matches[self._offset : end]
        return Page(items=items, total=total, more=self._offset + len(items) < total)

    def _matches(self, record: T) -> bool:
        for path, get, test in self._tests:
            try:
                if not test(get(record)):
                    return False
            except TypeError as exc:
                raise ValidationError(f"cannot compare: {exc}", path=path) from exc
        return True

    def _sorted(self, records: list[T], path: str, get: _Getter) -> list[T]:
        keyed = [(get(r), r) for r in records]
        present = [kr for kr in keyed if kr[0] is not None]
        absent = [r for k, r in keyed if k is None]
        try:
            # Stable in both directions: ties keep the input (key) order.
            present.sort(key=operator.itemgetter(0), reverse=self._desc)
        except TypeError as exc:
            raise ValidationError(f"cannot order by this field: {exc}", path=path) from exc
        return [r for _, r in present] + absent


def _check_count(value: object, name: str, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValidationError(f"must be a non-negative integer, got {value!r}", path=name)


# --- paths ------------------------------------------------------------------------------------


def _getter(path: str) -> _Getter:
    segments = path.split(".")

    def get(obj: object) -> object:
        for seg in segments:
            if isinstance(obj, Mapping):
                obj = obj.get(seg)
            elif isinstance(obj, msgspec.Struct):
                obj = getattr(obj, seg, None)
            else:
                return None
        return obj

    return get


def _field_type(root: type, path: str) -> Any:
    """The declared type at `path` (`_DYNAMIC` past an `Any`), or ValidationError."""
    if not isinstance(path, str) or not path or any(not seg for seg in path.split(".")):
        raise ValidationError(f"not a field path: {path!r}", path=str(path))
    tp: Any = root
    for seg in path.split("."):
        if tp is _DYNAMIC:
            return _DYNAMIC
        tp = _child(tp, seg, path)
    return tp


def _child(tp: Any, seg: str, path: str) -> Any:
    found: list[Any] = []
    for member in _members(tp):
        if member is type(None):
            continue
        if member is _DYNAMIC or member is object or isinstance(member, TypeVar):
            return _DYNAMIC
        origin = typing.get_origin(member) or member
        if isinstance(origin, type) and issubclass(origin, msgspec.Struct):
            found += [f.type for f in msgspec.structs.fields(member) if f.name == seg]
        elif isinstance(origin, type) and issubclass(origin, Mapping):
            args = typing.get_args(member)
            found.append(args[1] if len(args) == 2 else _DYNAMIC)
        elif typing.is_typeddict(member):
            hints = typing.get_type_hints(member)
            if seg in hints:
                found.append(hints[seg])
    if not found:
        raise ValidationError(f"unknown field {seg!r}", path=path)
    if len(found) > 1 and any(t != found[0] for t in found):
        return _DYNAMIC  # the same name means different things in a union's members
    return found[0]


def _members(tp: Any) -> list[Any]:
    """A type's union members, with `Annotated` and `NewType` wrappers removed."""
    while True:
        if typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
        elif hasattr(tp, "__supertype__"):
            tp = tp.__supertype__
        else:
            break
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(tp) for m in _members(arg)]
    return [tp]


def _plain(tp: Any) -> Any:
    """`tp` without constraints, so that a bound like `Range(gte=-1)` on a `ge=0` field is valid."""
    return functools.reduce(operator.or_, _members(tp))


def _coerce(value: object, tp: Any, path: str) -> object:
    if tp is _DYNAMIC or value is None:
        return value
    try:
        return msgspec.convert(value, _plain(tp), strict=False)
    except (msgspec.ValidationError, TypeError) as exc:
        raise ValidationError(f"{value!r} does not fit this field: {exc}", path=path) from exc


# --- conditions -------------------------------------------------------------------------------


def _compile(condition: object, tp: Any, path: str) -> _Test:
    if isinstance(condition, Range):
        return _compile_range(condition, tp, path)
    if isinstance(condition, In):
        return _compile_in(condition, tp, path)
    if isinstance(condition, Contains):
        return _compile_contains(condition, tp, path)
    expected = _coerce(condition, tp, path)
    return lambda value: bool(value == expected)


def _compile_range(cond: Range, tp: Any, path: str) -> _Test:
    checks: list[tuple[Callable[[Any, Any], Any], object]] = [
        (op, _coerce(bound, tp, path))
        for op, bound in (
            (operator.gt, cond.gt),
            (operator.ge, cond.gte),
            (operator.lt, cond.lt),
            (operator.le, cond.lte),
        )
        if bound is not None
    ]

    def test(value: object) -> bool:
        return value is not None and all(op(value, bound) for op, bound in checks)

    return test


def _compile_in(cond: In, tp: Any, path: str) -> _Test:
    if isinstance(cond.values, str | bytes) or not isinstance(cond.values, Iterable):
        raise ValidationError(f"In needs a list of values, got {cond.values!r}", path=path)
    choices = [_coerce(v, tp, path) for v in cond.values]
    return lambda value: any(value == choice for choice in choices)


_SEQUENCES = (list, tuple, set, frozenset)


def _compile_contains(cond: Contains, tp: Any, path: str) -> _Test:
    needle = _coerce(cond.value, _element_type(tp, path), path)

    def test(value: object) -> bool:
        if value is None:
            return False
        if isinstance(value, str):
            if not isinstance(needle, str):
                raise ValidationError(f"Contains on text needs text, got {needle!r}", path=path)
            return needle in value
        if isinstance(value, (Mapping, *_SEQUENCES)):
            return needle in value
        raise ValidationError(f"Contains needs a text, list or dict, got {value!r}", path=path)

    return test


def _element_type(tp: Any, path: str) -> Any:
    """What a `Contains` value must be for a field of type `tp`."""
    members = [m for m in _members(tp) if m is not type(None)]
    if len(members) != 1:
        return _DYNAMIC
    member = members[0]
    origin = typing.get_origin(member) or member
    args = typing.get_args(member)
    if member is str or (origin is typing.Literal and all(isinstance(a, str) for a in args)):
        return str
    if origin in _SEQUENCES or (isinstance(origin, type) and issubclass(origin, Mapping)):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return _DYNAMIC  # a fixed-shape tuple
        return args[0] if args else _DYNAMIC
    if member is _DYNAMIC or member is object or isinstance(member, TypeVar):
        return _DYNAMIC
    raise ValidationError(f"Contains needs a text, list or dict field, not {member!r}", path=path)
