"""QUIC transport: nunet's `Network` (nunet/net/api.py) over aioquic, authenticated to DIDs.

See README.md. `QuicNetwork` is the one entry point; `QuicLimits` its knobs.
"""

from __future__ import annotations

from nunet.net.quic.addr import QuicAddr, parse_addr
from nunet.net.quic.limits import QuicLimits
from nunet.net.quic.network import QuicNetwork

__all__ = ["QuicAddr", "QuicLimits", "QuicNetwork", "parse_addr"]
