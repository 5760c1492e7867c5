"""Typed records over a `Store`: one namespace of msgpack-encoded structs per repository.

Every write takes `sync` as `Store.put` does: True (the default) fsyncs before returning, False
leaves the fsync to the store's group commit (the write still survives a killed process).

A record lives at key `b"<namespace>/<id>"`; a singleton at key `b"<key>"`. Namespaces and
singleton keys contain no "/", so a prefix scan of `b"job/"` never sees `b"jobs/..."` and no
singleton can collide with a record.

Query cost: `query`, `list` and `ids` read and decode the whole namespace (one prefix scan), then
filter and sort in Python: fine for the thousands of records a node keeps (jobs, allocations,
capabilities). A namespace that grows to hundreds of thousands would need secondary indexes
(`b"<namespace>#<field>/<value>/<id>"` keys written in the same batch as the record) and a
planner that picks one; the `Query` API would not change.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterator, Mapping
from typing import Generic

import msgspec

from nunet.codec import DECODE_ERRORS
from nunet.db.query import Page as Page
from nunet.db.query import Query, T
from nunet.db.store import Store
from nunet.errors import (
    AlreadyExists,
    LocalProtocolError,
    NotFound,
    StoreError,
    ValidationError,
)

_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")
_encoder = msgspec.msgpack.Encoder()


class Repository(Generic[T]):
    """Records of type `T` in one namespace, addressed by a string id."""

    def __init__(self, store: Store, namespace: str, type_: type[T]) -> None:
        _check_name(namespace, "namespace")
        self.store = store
        self.namespace = namespace
        self.type = type_
        self._prefix = namespace.encode() + b"/"
        self._decoder = msgspec.msgpack.Decoder(type_)

    def __repr__(self) -> str:
        return f"<Repository {self.namespace!r} of {self.type.__name__}>"

    def key_for(self, id: str) -> bytes:
        """The store key of record `id`, for writing it in a `Store.batch()` with others."""
        if not isinstance(id, str) or not id:
            raise ValidationError(f"a record id is a non-empty string, got {id!r}", path="id")
        try:
            return self._prefix + id.encode()
        except UnicodeEncodeError as exc:
            raise ValidationError(f"record id {id!r} is not valid text", path="id") from exc

    def encode(self, obj: T) -> bytes:
        """The stored form of `obj`, for writing it in a `Store.batch()` with others."""
        if not isinstance(obj, self.type):
            raise LocalProtocolError(
                f"{self.namespace} stores {self.type.__name__}, got {type(obj).__name__}"
            )
        return _encode(obj, self.namespace)

    def create(self, id: str, obj: T, *, sync: bool = True) -> T:
        key, value = self.key_for(id), self.encode(obj)
        with self.store.write_lock:
            if self.store.get(key) is not None:
                raise AlreadyExists(f"{self.namespace} {id!r} already exists")
            self.store.put(key, value, sync=sync)
        return obj

    def get(self, id: str) -> T:
        obj = self.find(id)
        if obj is None:
            raise NotFound(f"{self.namespace} {id!r} not found")
        return obj

    def find(self, id: str) -> T | None:
        key = self.key_for(id)
        raw = self.store.get(key)
        return None if raw is None else self._decode(key, raw)

    def put(self, id: str, obj: T, *, sync: bool = True) -> T:
        key, value = self.key_for(id), self.encode(obj)
        with self.store.write_lock:
            self.store.put(key, value, sync=sync)
        return obj

    def update(self, id: str, obj: T, *, sync: bool = True) -> T:
        key, value = self.key_for(id), self.encode(obj)
        with self.store.write_lock:
            if self.store.get(key) is None:
                raise NotFound(f"{self.namespace} {id!r} not found")
            self.store.put(key, value, sync=sync)
        return obj

    def delete(self, id: str, *, sync: bool = True) -> None:
        key = self.key_for(id)
        with self.store.write_lock:
            if self.store.get(key) is None:
                raise NotFound(f"{self.namespace} {id!r} not found")
            self.store.delete(key, sync=sync)

    def exists(self, id: str) -> bool:
        return self.store.get(self.key_for(id)) is not None

    def ids(self) -> builtins.list[str]:
        cut = len(self._prefix)
        return [key[cut:].decode(errors="replace") for key, _ in self.store.scan(self._prefix)]

    def list(self) -> builtins.list[T]:
        return builtins.list(self._records())

    def query(
        self,
        where: Mapping[str, object] | None = None,
        *,
        order_by: str | None = None,
        desc: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> Page[T]:
        # Built before reading anything, so a bad query fails even on an empty namespace.
        plan = Query(self.type, where, order_by=order_by, desc=desc, limit=limit, offset=offset)
        return plan.run(self._records())

    def _records(self) -> Iterator[T]:
        for key, raw in self.store.scan(self._prefix):
            yield self._decode(key, raw)

    def _decode(self, key: bytes, raw: bytes) -> T:
        try:
            return self._decoder.decode(raw)
        except DECODE_ERRORS as exc:  # msgspec.ValidationError is a DecodeError
            raise StoreError(
                f"record {key.decode(errors='replace')!r} in {self.store.path} "
                f"does not decode as {self.type.__name__}: {exc}"
            ) from exc


class Singleton(Generic[T]):
    """One record of type `T` under its own key (e.g. the onboarding state)."""

    def __init__(self, store: Store, key: str, type_: type[T]) -> None:
        _check_name(key, "key")
        self.store = store
        self.type = type_
        self._key = key.encode()
        self._decoder = msgspec.msgpack.Decoder(type_)

    def __repr__(self) -> str:
        return f"<Singleton {self._key.decode()!r} of {self.type.__name__}>"

    def get(self) -> T | None:
        raw = self.store.get(self._key)
        if raw is None:
            return None
        try:
            return self._decoder.decode(raw)
        except DECODE_ERRORS as exc:
            raise StoreError(
                f"record {self._key.decode()!r} in {self.store.path} "
                f"does not decode as {self.type.__name__}: {exc}"
            ) from exc

    def set(self, obj: T, *, sync: bool = True) -> None:
        if not isinstance(obj, self.type):
            raise LocalProtocolError(
                f"{self._key.decode()} stores {self.type.__name__}, got {type(obj).__name__}"
            )
        self.store.put(self._key, _encode(obj, self._key.decode()), sync=sync)

    def clear(self, *, sync: bool = True) -> None:
        self.store.delete(self._key, sync=sync)


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise LocalProtocolError(f"a {what} is letters, digits, '_', '.' or '-', got {name!r}")


def _encode(obj: msgspec.Struct, where: str) -> bytes:
    try:
        return _encoder.encode(obj)
    except (msgspec.EncodeError, TypeError, OverflowError) as exc:
        raise ValidationError(f"cannot store this {type(obj).__name__}: {exc}", path=where) from exc
