"""The node's configuration: `dms_config.json`, `DMS_*` env vars and CLI overrides (see README)."""

from __future__ import annotations

from nunet.config.loader import (
    CONFIG_FILE_NAME,
    LoadedConfig,
    default_config_path,
    dump_config,
    find_config_file,
    get_value,
    load_config,
    parse_config,
    search_paths,
    set_value,
)
from nunet.config.schema import (
    Config,
    GeneralConfig,
    JobConfig,
    ObservabilityConfig,
    P2PConfig,
    RestConfig,
    decode_config,
)

__all__ = [
    "CONFIG_FILE_NAME",
    "Config",
    "GeneralConfig",
    "JobConfig",
    "LoadedConfig",
    "ObservabilityConfig",
    "P2PConfig",
    "RestConfig",
    "decode_config",
    "default_config_path",
    "dump_config",
    "find_config_file",
    "get_value",
    "load_config",
    "parse_config",
    "search_paths",
    "set_value",
]
