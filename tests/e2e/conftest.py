from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nunet.testing.cluster import NodeProcess


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path, "alice")
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.kill()
