"""Finding, layering, reading and writing `dms_config.json`.

Precedence, lowest first: embedded defaults < the file < `DMS_<SECTION>_<KEY>` environment
variables (plus DMS's `BOOTSTRAP_PEERS` alias) < `overrides` (the CLI flags). Layers are merged as
plain JSON-shaped data and validated once, so a rule that spans two fields sees the final values;
an error caused by an env var or an override says where the value came from.

`load_config` returns the config with `~` expanded (`Config.resolved`); `set_value` writes the
file's own literal text and returns the file's config as written, unexpanded.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import msgspec

from nunet.codec import DECODE_ERRORS
from nunet.config.schema import FIELD_KINDS, Config, FieldKind, decode_config, field_kind
from nunet.errors import ConfigError
from nunet.fsutil import write_atomic

CONFIG_FILE_NAME: Final = "dms_config.json"
ENV_PREFIX: Final = "DMS_"
BOOTSTRAP_PEERS_ALIAS: Final = "BOOTSTRAP_PEERS"
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})
_INT_TEXT: Final = re.compile(r"[+-]?[0-9]+")

_Raw = dict[str, object]
_LIST_ERRORS: tuple[type[Exception], ...] = (*DECODE_ERRORS, RecursionError)


class LoadedConfig(msgspec.Struct, frozen=True):
    config: Config
    source: Path | None  # the file used; None = embedded defaults only


# --- where ----------------------------------------------------------------------------------------


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME")
    return Path(home) if home else Path.home()


def _expand(text: str, env: Mapping[str, str]) -> Path:
    if text == "~" or text.startswith("~/"):
        return _home(env) / text[2:]
    return Path(text).expanduser()


def search_paths(env: Mapping[str, str]) -> list[Path]:
    """Candidate files, best first: ./, $DMS_GENERAL_USER_DIR (if set), ~/.nunet,
    $XDG_CONFIG_HOME/nunet (default ~/.config/nunet), /etc/nunet."""
    home = _home(env)
    dirs: list[Path] = []
    with contextlib.suppress(OSError):  # the working directory may have been deleted under us
        dirs.append(Path.cwd())
    user_dir = env.get("DMS_GENERAL_USER_DIR")
    if user_dir:
        # `config set` writes here when no file exists, so loading must look here too.
        dirs.append(_expand(user_dir, env))
    dirs.append(home / ".nunet")
    xdg = env.get("XDG_CONFIG_HOME", "")
    # The XDG spec says to ignore a relative XDG_CONFIG_HOME.
    dirs.append((Path(xdg) if os.path.isabs(xdg) else home / ".config") / "nunet")
    dirs.append(Path("/etc/nunet"))
    unique = list(dict.fromkeys(dirs))
    return [d / CONFIG_FILE_NAME for d in unique]


def find_config_file(env: Mapping[str, str]) -> Path | None:
    """The first existing file of `search_paths(env)`, or None."""
    return next((p for p in search_paths(env) if p.is_file()), None)


def default_config_path(env: Mapping[str, str]) -> Path:
    """Where `config set` writes when no file exists: <user dir>/dms_config.json."""
    user_dir = env.get("DMS_GENERAL_USER_DIR")
    base = _expand(user_dir, env) if user_dir else _home(env) / ".nunet"
    return base / CONFIG_FILE_NAME


# --- parsing --------------------------------------------------------------------------------------


def _json_location(data: bytes, exc: Exception) -> tuple[str, int]:
    if isinstance(exc, UnicodeDecodeError):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            return "invalid UTF-8", bad.start
        return "invalid UTF-8", len(data)
    text = str(exc)
    found = re.search(r"\(byte (\d+)\)$", text)
    if found:
        detail = text[: found.start()].removeprefix("JSON is malformed:").strip()
        return detail or "malformed JSON", min(int(found.group(1)), len(data))
    if "truncated" in text:
        return "unexpected end of input", len(data)
    return text, len(data)


def parse_json(data: bytes, *, source: str | None = None) -> _Raw:
    """Decode a config file's bytes into a JSON object, with line and column on errors."""
    prefix = f"{source}: " if source else ""
    try:
        obj = msgspec.json.decode(data)
    except DECODE_ERRORS as exc:
        detail, offset = _json_location(data, exc)
        line = data.count(b"\n", 0, offset) + 1
        column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
        raise ConfigError(
            f"{prefix}malformed JSON at line {line}, column {column}: {detail}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{prefix}JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{prefix}expected a JSON object at the top level")
    return obj


def parse_config(data: bytes, *, source: str | None = None) -> Config:
    """Bytes of a config file to a validated (unexpanded) `Config`, or `ConfigError`."""
    return _decode(parse_json(data, source=source), {}, source)


def parse_text(kind: FieldKind, text: str, name: str) -> object:
    """A value given as text (env var, `config set`) in the field's JSON form; `name` is the
    env var or key that errors name. Lists are JSON arrays or comma-separated."""
    stripped = text.strip()
    if kind == "bool":
        if stripped.lower() in _TRUE:
            return True
        if stripped.lower() in _FALSE:
            return False
        raise ConfigError(
            f"expected a boolean (true/false, 1/0, yes/no, on/off), got {text!r}", path=name
        )
    if kind == "int":
        if _INT_TEXT.fullmatch(stripped):
            return int(stripped)
        raise ConfigError(f"expected an integer, got {text!r}", path=name)
    if kind == "list":
        if stripped.startswith("["):
            try:
                return msgspec.json.decode(stripped, type=list[str])
            except _LIST_ERRORS:
                raise ConfigError(
                    f"expected a JSON array of strings or a comma-separated list, got {text!r}",
                    path=name,
                ) from None
        return [item.strip() for item in stripped.split(",") if item.strip()]
    return text


def _section_of(raw: _Raw, section: str, source: str | None) -> _Raw:
    body = raw.setdefault(section, {})
    if not isinstance(body, dict):
        where = f" (in {source})" if source else ""
        raise ConfigError(f"expected a JSON object{where}", path=section)
    return body


def _decode(raw: _Raw, origins: Mapping[str, str], source: str | None) -> Config:
    try:
        return decode_config(raw)
    except ConfigError as exc:
        origin = origins.get(exc.path or "")
        if origin is None and exc.path is not None:
            # `p2p.listen_address[1]` came from wherever `p2p.listen_address` came from.
            origin = origins.get(exc.path.partition("[")[0])
        where = f"from {origin}" if origin else f"in {source}" if source else ""
        if not where:
            raise
        raise ConfigError(f"{exc.message} ({where})", path=exc.path) from None


def _apply_env(
    raw: _Raw, env: Mapping[str, str], origins: dict[str, str], source: str | None
) -> None:
    alias = env.get(BOOTSTRAP_PEERS_ALIAS)
    if alias is not None and f"{ENV_PREFIX}P2P_BOOTSTRAP_PEERS" not in env:
        peers = parse_text("list", alias, BOOTSTRAP_PEERS_ALIAS)
        _section_of(raw, "p2p", source)["bootstrap_peers"] = peers
        origins["p2p.bootstrap_peers"] = f"environment variable {BOOTSTRAP_PEERS_ALIAS}"
    for var in sorted(env):  # sorted: the same environment always fails on the same variable
        if not var.startswith(ENV_PREFIX):
            continue
        section_text, sep, key_text = var.removeprefix(ENV_PREFIX).partition("_")
        section = section_text.lower()
        if not sep or section not in FIELD_KINDS or section.upper() != section_text:
            continue  # not a config variable (DMS_PASSPHRASE and friends)
        name = key_text.lower()
        if key_text != key_text.upper() or name not in FIELD_KINDS[section]:
            raise ConfigError(
                f"unknown config key {section}.{name or '?'} "
                f"(known: {', '.join(sorted(FIELD_KINDS[section]))})",
                path=var,
            )
        value = parse_text(FIELD_KINDS[section][name], env[var], var)
        _section_of(raw, section, source)[name] = value
        origins[f"{section}.{name}"] = f"environment variable {var}"


def _apply_overrides(
    raw: _Raw, overrides: Mapping[str, object], origins: dict[str, str], source: str | None
) -> None:
    for key, value in overrides.items():
        if value is None:  # an option that was not given
            continue
        kind = field_kind(key)
        if isinstance(value, str):
            value = parse_text(kind, value, key)
        elif isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif isinstance(value, tuple):
            value = list(value)
        section, _, name = key.partition(".")
        _section_of(raw, section, source)[name] = value
        origins[key] = "command-line override"


def load_config(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> LoadedConfig:
    """The effective config: defaults < file (`path`, or the first of `search_paths`) < env <
    overrides, with `~` expanded. `overrides` maps `section.key` to a value or its text."""
    env = os.environ if env is None else env
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist or is not a regular file")
    source = path if path is not None else find_config_file(env)
    raw = _read(source) if source is not None else {}
    origins: dict[str, str] = {}
    file_name = str(source) if source is not None else None
    _apply_env(raw, env, origins, file_name)
    _apply_overrides(raw, overrides or {}, origins, file_name)
    config = _decode(raw, origins, file_name)
    return LoadedConfig(config=config.resolved(env.get("HOME") or None), source=source)


def _read(path: Path) -> _Raw:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_json(data, source=str(path))


# --- reading and writing single values ------------------------------------------------------------


def get_value(config: Config, key: str) -> object:
    """`rest.port` gives the value, `rest` the section as a dict; JSON types (lists, not tuples)."""
    value: object
    if key in FIELD_KINDS:
        value = getattr(config, key)
    else:
        field_kind(key)  # raises ConfigError(path=key) unless `key` names a leaf
        section, _, name = key.partition(".")
        value = getattr(getattr(config, section), name)
    return msgspec.json.decode(msgspec.json.encode(value))


def dump_config(config: Config) -> str:
    """Pretty JSON, as `nunet config show` prints it."""
    return msgspec.json.format(msgspec.json.encode(config), indent=2).decode()


def set_value(path: Path, key: str, value: str) -> Config:
    """Set leaf `key` to `value` (text parsed to the field's type) in the file at `path`,
    creating it if missing. The whole resulting file is validated before an atomic write; on any
    error the file is untouched. Returns the file's config (without env, unexpanded)."""
    parsed = parse_text(field_kind(key), value, key)
    # Write through a symlink rather than replace it with a plain file.
    target = Path(os.path.realpath(path))
    try:
        data: bytes | None = target.read_bytes()
    except FileNotFoundError:
        data = None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    raw = parse_json(data, source=str(path)) if data is not None else {}
    section, _, name = key.partition(".")
    _section_of(raw, section, str(path))[name] = parsed
    config = _decode(raw, {key: "the value being set"}, str(path))
    _write_atomic(target, msgspec.json.format(msgspec.json.encode(raw), indent=2) + b"\n")
    return config


def _write_atomic(target: Path, data: bytes) -> None:
    try:
        # 0700: the user dir also holds the node's keys.
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(target, data)
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from None
