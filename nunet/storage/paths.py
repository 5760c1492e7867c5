"""Names and keys that cannot leave their volume.

A key is a relative, `/`-separated path inside a volume (an S3 object key below the volume's
prefix, a file below a local volume's directory). Keys come from users and from other people's
buckets, so every one is checked before it touches the disk: no absolute keys, no `.`/`..`/empty
components, no NUL, components short enough for a filename. A volume or deployment name becomes
one directory name, so it is narrower still.
"""

from __future__ import annotations

import re

from nunet.errors import UnsafePath

NAME_MAX = 255  # bytes in one filename component on every Linux filesystem we run on
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name: str, path: str) -> str:
    """A volume or deployment name usable as one directory name, or `UnsafePath`."""
    if not _NAME_RE.fullmatch(name):
        raise UnsafePath(
            f"expected 1-128 of [A-Za-z0-9._-] starting with a letter or digit, got {name!r}",
            path=path,
        )
    return name


def split_key(key: str, path: str) -> tuple[str, ...]:
    """The components of a relative key (`""` is the volume itself: no components). One
    trailing `/` is accepted, as users write prefixes that way."""
    if key.endswith("/"):
        key = key[:-1]
    if not key:
        return ()
    if "\x00" in key:
        raise UnsafePath("a key cannot contain a NUL byte", path=path)
    if key.startswith("/"):
        raise UnsafePath(f"a key must be relative, got {key!r}", path=path)
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafePath(f"a key must be valid UTF-8, got {key!r}", path=path) from None
    parts = tuple(key.split("/"))
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafePath(f"a key cannot have '', '.' or '..' parts, got {key!r}", path=path)
        if len(part.encode("utf-8")) > NAME_MAX:
            raise UnsafePath(f"a key component is longer than {NAME_MAX} bytes: {key!r}", path=path)
    return parts


def join_key(*keys: str) -> str:
    """Keys joined with `/`, empty ones dropped (each already checked by `split_key`)."""
    return "/".join(k.strip("/") for k in keys if k.strip("/"))
