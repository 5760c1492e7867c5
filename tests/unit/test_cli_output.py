from __future__ import annotations

import json

import pytest

from nunet.cli.output import emit, human_bytes


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.00 KiB"), (5 << 20, "5.00 MiB"),
     (3 << 30, "3.00 GiB")],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


def test_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    emit({"ram_bytes": 2 << 30, "onboarded_at": 0, "updated_at": 1795510000, "gpus": [],
          "ok": True, "peers": [{"did": "d1"}], "name": ""}, False)
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "ram: 2.00 GiB", "onboarded at: 0", "updated at: 2026-11-24T08:46:40Z", "gpus: none",
        "ok: yes", "peers:", "  - [0]", "    did: d1", "name: -",
    ]


def test_json_output_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    data = {"a": [1, 2], "b": {"c": None}}
    emit(data, True)
    assert json.loads(capsys.readouterr().out) == data
