"""How actors name each other: a handle is an actor's DID plus where it lives (host node, inbox).

The JSON shape is DMS's (`{"id", "did", "address": {"host_id", "inbox_address"}}`); on the actor
wire the same structs travel inside the msgpack envelope.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

ROOT_INBOX = "root"  # the inbox of a node's root actor

# did:key for Ed25519 is 56 characters; room for other methods, never for a novel. Empty strings
# are allowed on the wire: a broadcast is addressed to no handle in particular.
_Text = Annotated[str, msgspec.Meta(max_length=128)]
_Inbox = Annotated[str, msgspec.Meta(max_length=256)]


class Address(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host_id: _Text  # the DID of the node the actor runs on
    inbox_address: _Inbox


class Handle(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An actor's name (DMS: `{id, did, address}`)."""

    id: _Text
    did: _Text
    address: Address

    @classmethod
    def for_actor(cls, did: str, host_did: str, inbox: str) -> Handle:
        return cls(id=did, did=did, address=Address(host_id=host_did, inbox_address=inbox))


NO_HANDLE = Handle(id="", did="", address=Address(host_id="", inbox_address=""))  # broadcasts
