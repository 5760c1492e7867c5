"""The typed shape of `dms_config.json`: five frozen sections, names as in NuNet DMS.

Invariants:
- A `Config` that exists is valid: every rule beyond plain types lives in a section's
  `__post_init__`, which msgspec runs on decode and Python runs on construction, so no code path
  can hold a config that skipped validation.
- Rule violations raise `ConfigError` whose `path` is the dotted field (`rest.port`,
  `p2p.listen_address[0]`); `decode_config` translates msgspec's `$.rest.port` paths the same way.
- Paths are stored as written (`~/.nunet`); `Config.resolved()` expands `~`. The loader returns
  resolved configs; files keep the literal text so they stay portable between users.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import typing
from typing import Final, Literal

import msgspec
from msgspec.structs import force_setattr

from nunet.errors import ConfigError

# Larger values would not survive msgpack/int64 encoding downstream.
_INT64_MAX: Final = 2**63 - 1
LOGGING_LEVELS: Final = ("DEBUG", "INFO", "WARN", "WARNING", "ERROR")


def _check_int(path: str, value: int, low: int, high: int = _INT64_MAX) -> None:
    if low <= value <= high:
        return
    if high != _INT64_MAX:
        raise ConfigError(f"must be between {low} and {high}, got {value}", path=path)
    if value < low:
        raise ConfigError(f"must be at least {low}, got {value}", path=path)
    raise ConfigError(f"must be at most {high}, got {value}", path=path)


def _check_path_text(path: str, value: str, *, required: bool) -> None:
    if required and not value:
        raise ConfigError("must not be empty", path=path)
    if "\x00" in value:
        raise ConfigError("must not contain a NUL character", path=path)


def _check_multiaddr(path: str, addr: str) -> None:
    # A basic shape check (/ip4|ip6/<ip>/tcp|udp/<port>[/...]), not a full multiaddr parser.
    expected = f"expected a multiaddr like /ip4/0.0.0.0/udp/9000/quic-v1, got {addr!r}"
    parts = addr.split("/")
    if (
        len(parts) < 5
        or parts[0] != ""
        or parts[1] not in ("ip4", "ip6")
        or parts[3] not in ("tcp", "udp")
        or any(not part or part.strip() != part for part in parts[1:])
        or not parts[4].isascii()
        or not parts[4].isdigit()
        or int(parts[4]) > 65535
    ):
        raise ConfigError(expected, path=path)
    try:
        ip = ipaddress.ip_address(parts[2])
    except ValueError:
        raise ConfigError(expected, path=path) from None
    if ip.version != (4 if parts[1] == "ip4" else 6):
        raise ConfigError(f"{parts[2]!r} is not an /{parts[1]} address", path=path)


def _expand_home(value: str, home: str | None) -> str:
    if home is not None and (value == "~" or value.startswith("~/")):
        return home + value[1:]
    return os.path.expanduser(value)


class GeneralConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    user_dir: str = "~/.nunet"
    work_dir: str = "~/nunet"
    data_dir: str = "~/nunet/data"
    debug: bool = False
    host_city: str = ""
    host_country: str = ""
    host_continent: str = ""
    port_available_range_from: int = 16384
    port_available_range_to: int = 32768

    def __post_init__(self) -> None:
        for name in ("user_dir", "work_dir", "data_dir"):
            _check_path_text(f"general.{name}", getattr(self, name), required=True)
        low, high = self.port_available_range_from, self.port_available_range_to
        _check_int("general.port_available_range_from", low, 1024, 65535)
        _check_int("general.port_available_range_to", high, 1024, 65535)
        if low >= high:
            raise ConfigError(
                f"must be greater than general.port_available_range_from ({low}), got {high}",
                path="general.port_available_range_to",
            )


class RestConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    addr: str = "127.0.0.1"
    port: int = 9999
    unix_socket: str = ""  # "" = off; a path adds a 0600 unix socket beside the TCP listener

    def __post_init__(self) -> None:
        if self.addr != "localhost":
            try:
                ipaddress.ip_address(self.addr)
            except ValueError:
                raise ConfigError(
                    f"expected an IP address or 'localhost', got {self.addr!r}", path="rest.addr"
                ) from None
        _check_int("rest.port", self.port, 1, 65535)
        _check_path_text("rest.unix_socket", self.unix_socket, required=False)


class P2PConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Tuples, not lists: a frozen config must not be mutable through its fields.
    listen_address: tuple[str, ...] = ("/ip4/0.0.0.0/udp/9000/quic-v1",)
    bootstrap_peers: tuple[str, ...] = ()
    memory: int = 1024  # MiB
    fd: int = 512
    # QoS single check (not in DMS): probe known peers every `qos_interval` seconds, a probe
    # unanswered after `qos_deadline_ms` counts as a failure.
    qos_interval: int = 30
    qos_deadline_ms: int = 2000

    def __post_init__(self) -> None:
        for i, addr in enumerate(self.listen_address):
            _check_multiaddr(f"p2p.listen_address[{i}]", addr)
        for i, peer in enumerate(self.bootstrap_peers):
            if not peer or any(ch.isspace() for ch in peer):
                raise ConfigError(
                    f"expected a non-empty address without spaces, got {peer!r}",
                    path=f"p2p.bootstrap_peers[{i}]",
                )
        _check_int("p2p.memory", self.memory, 1)
        _check_int("p2p.fd", self.fd, 1)
        _check_int("p2p.qos_interval", self.qos_interval, 1, 86400)
        _check_int("p2p.qos_deadline_ms", self.qos_deadline_ms, 10, 60000)


class JobConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    allow_privileged_docker: bool = False


class ObservabilityConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    logging_level: str = "INFO"
    log_file: str = ""  # "" = stderr
    max_size: int = 100  # MiB
    max_backups: int = 3
    max_age: int = 28  # days
    elasticsearch_enabled: bool = False
    elasticsearch_url: str = ""
    elasticsearch_index: str = "nunet-dms"
    flush_interval: int = 5  # seconds

    def __post_init__(self) -> None:
        level = self.logging_level.upper()
        if level not in LOGGING_LEVELS:
            raise ConfigError(
                f"expected one of {', '.join(LOGGING_LEVELS)}, got {self.logging_level!r}",
                path="observability.logging_level",
            )
        # Frozen, but normalising here keeps every later comparison a plain string equality.
        force_setattr(self, "logging_level", level)
        _check_path_text("observability.log_file", self.log_file, required=False)
        for name in ("max_size", "max_backups", "max_age"):
            _check_int(f"observability.{name}", getattr(self, name), 0)
        _check_int("observability.flush_interval", self.flush_interval, 1)
        url = self.elasticsearch_url
        if url and not (url.startswith(("http://", "https://")) and url.split("://", 1)[1]):
            raise ConfigError(
                f"expected an http:// or https:// URL, got {url!r}",
                path="observability.elasticsearch_url",
            )
        if self.elasticsearch_enabled:
            if not url:
                raise ConfigError(
                    "required when observability.elasticsearch_enabled is true",
                    path="observability.elasticsearch_url",
                )
            if not self.elasticsearch_index:
                raise ConfigError(
                    "required when observability.elasticsearch_enabled is true",
                    path="observability.elasticsearch_index",
                )


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    general: GeneralConfig = msgspec.field(default_factory=GeneralConfig)
    rest: RestConfig = msgspec.field(default_factory=RestConfig)
    p2p: P2PConfig = msgspec.field(default_factory=P2PConfig)
    job: JobConfig = msgspec.field(default_factory=JobConfig)
    observability: ObservabilityConfig = msgspec.field(default_factory=ObservabilityConfig)

    def resolved(self, home: str | None = None) -> Config:
        """A copy with `~` expanded in every path field (`home` replaces `$HOME` when given)."""
        general = msgspec.structs.replace(
            self.general,
            user_dir=_expand_home(self.general.user_dir, home),
            work_dir=_expand_home(self.general.work_dir, home),
            data_dir=_expand_home(self.general.data_dir, home),
        )
        rest = msgspec.structs.replace(
            self.rest, unix_socket=_expand_home(self.rest.unix_socket, home)
        )
        observability = msgspec.structs.replace(
            self.observability, log_file=_expand_home(self.observability.log_file, home)
        )
        return msgspec.structs.replace(
            self, general=general, rest=rest, observability=observability
        )


# --- keys ---------------------------------------------------------------------------------------

FieldKind = Literal["bool", "int", "str", "list"]


def _kind(tp: object) -> FieldKind:
    if tp is bool:
        return "bool"
    if tp is int:
        return "int"
    if tp is str:
        return "str"
    if typing.get_origin(tp) is tuple:
        return "list"
    raise TypeError(f"config field type {tp!r} has no text form")  # a schema edit forgot _kind


SECTIONS: Final[dict[str, type[msgspec.Struct]]] = {
    f.name: typing.cast(type[msgspec.Struct], f.type) for f in msgspec.structs.fields(Config)
}
FIELD_KINDS: Final[dict[str, dict[str, FieldKind]]] = {
    name: {f.name: _kind(f.type) for f in msgspec.structs.fields(section)}
    for name, section in SECTIONS.items()
}


def _unknown(path: str, name: str, known: typing.Iterable[str], what: str) -> ConfigError:
    known = sorted(known)
    hint = difflib.get_close_matches(name, known, n=1)
    suggestion = f"did you mean {hint[0]!r}? " if hint else ""
    return ConfigError(f"unknown {what}; {suggestion}known: {', '.join(known)}", path=path)


def field_kind(key: str) -> FieldKind:
    """The kind of the leaf `section.field`; `ConfigError(path=key)` if there is no such leaf."""
    section, _, name = key.partition(".")
    if section not in FIELD_KINDS:
        raise _unknown(key, section, FIELD_KINDS, "config section")
    fields = FIELD_KINDS[section]
    if name not in fields:
        raise _unknown(key, name, fields, f"key in section {section!r}")
    return fields[name]


def _check_keys(obj: object) -> None:
    # Done before msgspec so an unknown key names its own path, and so that msgspec's messages,
    # parsed in `decode_config`, only ever hold schema names, never text from the file.
    if not isinstance(obj, dict):
        raise ConfigError(f"expected a JSON object at the top level, got {_type_name(obj)}")
    for section, body in obj.items():
        if not isinstance(section, str):
            raise ConfigError(f"keys must be strings, got {section!r}")
        if section not in FIELD_KINDS:
            raise _unknown(section, section, FIELD_KINDS, "config section")
        if not isinstance(body, dict):
            continue  # msgspec reports the wrong type with its path
        for name in body:
            if not isinstance(name, str):
                raise ConfigError(f"keys must be strings, got {name!r}", path=section)
            if name not in FIELD_KINDS[section]:
                raise _unknown(f"{section}.{name}", name, FIELD_KINDS[section], "key")


def _type_name(obj: object) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "a boolean"
    if isinstance(obj, int | float):
        return "a number"
    if isinstance(obj, str):
        return "a string"
    if isinstance(obj, list | tuple):
        return "an array"
    return type(obj).__name__


def decode_config(obj: object) -> Config:
    """Validate JSON-shaped builtins (dicts, lists, str, int, bool) into a `Config`."""
    _check_keys(obj)
    try:
        return msgspec.convert(obj, Config)
    except msgspec.ValidationError as exc:
        message, sep, where = str(exc).rpartition(" - at `")
        if not sep:
            message, where = str(exc), "$`"
        path = where.removesuffix("`").removeprefix("$").removeprefix(".") or None
        raise ConfigError(message[:1].lower() + message[1:], path=path) from None
