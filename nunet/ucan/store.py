"""Capability state on disk: anchors, tokens and revocations of one context under `cap/`.

Keys (`<ctx>` is the context name, `dms` for the node; hex ids are token ids):
```
cap/<ctx>/root/<did>        -> b""                   a root anchor
cap/<ctx>/require/<hex id>  -> token bytes           a require anchor
cap/<ctx>/provide/<hex id>  -> msgpack [token, [proof, ...]]   a provide anchor with its chain
cap/<ctx>/revoke/<hex id>   -> revocation bytes      keyed by the revocation's own id
cap/<ctx>/token/<hex id>    -> token bytes           tokens kept for `nunet cap list`
```
Values are stored as they were verified. Reading decodes them (a record that does not decode is
a `StoreError` naming its key) but does not verify signatures again: the store is this node's own
disk, and a node with hundreds of revocations would otherwise spend a signature each at start.
"""

from __future__ import annotations

import re

import msgspec

from nunet.codec import DECODE_ERRORS
from nunet.db.store import Store
from nunet.errors import LocalProtocolError, StoreError
from nunet.ucan.token import token_id

_CONTEXT = re.compile(r"[A-Za-z0-9_.-]+\Z")
_provide_codec = msgspec.msgpack.Decoder(tuple[bytes, tuple[bytes, ...]])
_encoder = msgspec.msgpack.Encoder()

Chain = tuple[bytes, tuple[bytes, ...]]


class CapabilityStore:
    """The `cap/<context>/` records of one capability context in a node's `Store`."""

    def __init__(self, store: Store, context: str = "dms") -> None:
        if not isinstance(context, str) or not _CONTEXT.match(context):
            raise LocalProtocolError(
                f"a context name is letters, digits, '_', '.' or '-', got {context!r}"
            )
        self.store = store
        self.context = context
        self._prefix = f"cap/{context}/".encode()

    def __repr__(self) -> str:
        return f"<CapabilityStore {self.context!r} in {self.store!r}>"

    @staticmethod
    def contexts(store: Store) -> list[str]:
        """The names of the contexts that have records in `store`."""
        names = {
            key[4:].split(b"/", 1)[0].decode(errors="replace") for key, _ in store.scan(b"cap/")
        }
        return sorted(names)

    # --- roots ------------------------------------------------------------------------------------

    def roots(self) -> list[str]:
        return [key.decode(errors="replace") for key, _ in self._scan(b"root/")]

    def put_root(self, did: str) -> None:
        self.store.put(self._key(b"root/", did.encode()), b"")

    def delete_root(self, did: str) -> None:
        self.store.delete(self._key(b"root/", did.encode()))

    # --- require anchors, revocations, tokens: token bytes keyed by id ----------------------------

    def requires(self) -> list[bytes]:
        return [raw for _, raw in self._scan(b"require/")]

    def put_require(self, raw: bytes) -> bytes:
        return self._put_token(b"require/", raw)

    def delete_require(self, tid: bytes) -> None:
        self.store.delete(self._key(b"require/", tid.hex().encode()))

    def revocations(self) -> list[bytes]:
        return [raw for _, raw in self._scan(b"revoke/")]

    def put_revocation(self, raw: bytes) -> bytes:
        return self._put_token(b"revoke/", raw)

    def delete_revocation(self, tid: bytes) -> None:
        self.store.delete(self._key(b"revoke/", tid.hex().encode()))

    def tokens(self) -> list[bytes]:
        return [raw for _, raw in self._scan(b"token/")]

    def put_token(self, raw: bytes) -> bytes:
        return self._put_token(b"token/", raw)

    def get_token(self, tid: bytes) -> bytes | None:
        return self.store.get(self._key(b"token/", tid.hex().encode()))

    def delete_token(self, tid: bytes) -> None:
        self.store.delete(self._key(b"token/", tid.hex().encode()))

    # --- provide anchors: a token with its proofs -------------------------------------------------

    def provides(self) -> list[Chain]:
        out: list[Chain] = []
        for key, raw in self._scan(b"provide/"):
            try:
                out.append(_provide_codec.decode(raw))
            except DECODE_ERRORS as exc:
                raise StoreError(
                    f"record {self._prefix.decode()}provide/{key.decode(errors='replace')} in "
                    f"{self.store.path} is not a token chain: {exc}"
                ) from exc
        return out

    def put_provide(self, raw: bytes, proofs: tuple[bytes, ...]) -> bytes:
        tid = token_id(raw)
        self.store.put(self._key(b"provide/", tid.hex().encode()), _encoder.encode((raw, proofs)))
        return tid

    def delete_provide(self, tid: bytes) -> None:
        self.store.delete(self._key(b"provide/", tid.hex().encode()))

    # --- helpers ----------------------------------------------------------------------------------

    def _key(self, kind: bytes, name: bytes) -> bytes:
        return self._prefix + kind + name

    def _put_token(self, kind: bytes, raw: bytes) -> bytes:
        tid = token_id(raw)
        self.store.put(self._key(kind, tid.hex().encode()), raw)
        return tid

    def _scan(self, kind: bytes) -> list[tuple[bytes, bytes]]:
        """(name after the kind prefix, value) of every record of one kind."""
        prefix = self._prefix + kind
        return [(key[len(prefix) :], value) for key, value in self.store.scan(prefix)]
