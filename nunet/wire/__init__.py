"""Wire formats shared by the transport: stream framing (`nunet.wire.framing`)."""
