"""Log set-up from the `observability` config section (stderr, or a rotating file)."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"
_LEVELS = {"WARN": logging.WARNING}


def setup_logging(
    level: str, *, debug: bool = False, log_file: str = "", max_size_mib: int = 100,
    max_backups: int = 3,
) -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    handler: logging.Handler
    if log_file:
        path = Path(log_file).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_size_mib << 20, backupCount=max_backups, encoding="utf-8"
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    name = "DEBUG" if debug else level.upper()
    root.setLevel(_LEVELS.get(name, logging.getLevelName(name)))
    # aiohttp logs every client disconnect at INFO; that is noise for a node operator.
    logging.getLogger("aiohttp").setLevel(max(root.level, logging.WARNING))
