"""Options shared by many commands: config file and overrides, JSON output, the API client."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from nunet.config.loader import LoadedConfig, load_config

F = TypeVar("F", bound=Callable[..., Any])
_META = "nunet.overrides"


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is not None and value is not False:
            ctx.meta.setdefault(_META, {})[key] = value

    return callback


# (flag, config key, click type, help). The flags mirror NuNet DMS's.
_CONFIG_FLAGS: tuple[tuple[str, str, Any, str], ...] = (
    ("--rest-addr", "rest.addr", str, "address of the node's local API"),
    ("--rest-port", "rest.port", click.IntRange(1, 65535), "port of the node's local API"),
    ("--user-dir", "general.user_dir", str, "node home: keys, config (default ~/.nunet)"),
    ("--work-dir", "general.work_dir", str, "work directory (default ~/nunet)"),
    ("--data-dir", "general.data_dir", str, "data directory (default ~/nunet/data)"),
)


def config_options(func: F) -> F:
    """Adds --config, the DMS override flags and --debug; read them back with `load(ctx)`."""
    for flag, key, type_, help_ in reversed(_CONFIG_FLAGS):
        func = click.option(
            flag, type=type_, expose_value=False, callback=_remember(key), help=help_
        )(func)
    func = click.option(
        "--debug", is_flag=True, expose_value=False, callback=_remember("general.debug"),
        help="debug logging",
    )(func)
    return click.option(
        "--config", "-C", "config_path", type=click.Path(dir_okay=False, path_type=Path),
        expose_value=False, callback=_remember("__path__"),
        help="config file (default: first dms_config.json in ./, ~/.nunet, "
        "$XDG_CONFIG_HOME/nunet, /etc/nunet)",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="print JSON")(func)


def _given(ctx: click.Context) -> dict[str, Any]:
    return dict(ctx.meta.get(_META, {}))


def load(ctx: click.Context) -> LoadedConfig:
    overrides = _given(ctx)
    path = overrides.pop("__path__", None)
    return load_config(path, overrides=overrides)


def config_file(ctx: click.Context) -> Path:
    """The file `config set` writes: --config, else the one found, else the default location.

    Found without loading it, so a broken file or variable can still be repaired with `set`.
    """
    import os

    from nunet.config.loader import default_config_path, find_config_file

    given = _given(ctx).get("__path__")
    if given is not None:
        return Path(given)
    return find_config_file(os.environ) or default_config_path(os.environ)


def client(ctx: click.Context) -> Any:
    from nunet.cli.client import ApiClient

    rest = load(ctx).config.rest
    return ApiClient(rest.addr, rest.port, rest.unix_socket)
