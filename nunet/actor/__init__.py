"""The actor runtime: handles, envelopes, dispatch, capabilities on the wire, supervision.

Light imports only here (node.py takes `Handle` from this package); the runtime lives in
`nunet.actor.runtime` (`ActorSystem`, `Actor`, `Message`), the core in `nunet.actor.dispatch`.
"""

from __future__ import annotations

from nunet.actor.handle import NO_HANDLE, ROOT_INBOX, Address, Handle

__all__ = ["NO_HANDLE", "ROOT_INBOX", "Address", "Handle"]
