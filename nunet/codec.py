"""Shared facts about our encodings (msgspec msgpack on disk and wire, JSON for humans)."""

from __future__ import annotations

import msgspec

# msgspec raises UnicodeDecodeError, not DecodeError, for invalid UTF-8 inside a string: every
# decoder of untrusted bytes must catch both, or hostile input escapes as an unexpected error.
DECODE_ERRORS: tuple[type[Exception], ...] = (msgspec.DecodeError, UnicodeDecodeError)
