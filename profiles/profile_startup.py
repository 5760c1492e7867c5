"""Workload for the start-up flame graph: one in-process node start, ready, stop, repeated."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile

from nunet.config.loader import load_config
from nunet.node.daemon import serve
from nunet.testing.cluster import free_port

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 20


async def one_start(root: str) -> None:
    stop = asyncio.Event()
    overrides = {
        "general.user_dir": f"{root}/user", "general.work_dir": f"{root}/work",
        "general.data_dir": f"{root}/work/data", "rest.port": free_port(),
    }
    loaded = load_config(None, env={}, overrides=overrides)
    await serve(loaded, context="dms", passphrase="profile", stop=stop,
                on_ready=lambda _node: stop.set())


def main() -> None:
    import uvloop

    with tempfile.TemporaryDirectory() as root:
        os.environ.pop("DMS_PASSPHRASE", None)
        for _ in range(ROUNDS):
            uvloop.run(one_start(root))


if __name__ == "__main__":
    main()
