"""A real `nunet run` process driven only through the `nunet` CLI, as a user would."""

from __future__ import annotations

import signal
import stat
from pathlib import Path

from nunet.testing.cluster import NodeProcess

GIB = 1 << 30


def _fifth(node: NodeProcess) -> list[str]:
    machine = node.cli("resources", "machine", "--json").json()
    assert isinstance(machine, dict)
    ram = round(machine["ram_bytes"] * 0.2 / GIB, 2)
    return ["--cpu", "1", "--ram", str(ram), "--disk", "0.5"]


def test_identity_onboarding_and_clean_restart(node: NodeProcess) -> None:
    me = node.cli("peers", "self", "--json")
    assert me.code == 0, me.stderr
    did = me.json()["did"]  # type: ignore[index]
    assert did.startswith("did:key:z6Mk")
    assert node.cli("key", "did", "dms").stdout.strip() == did

    done = node.cli("onboard", *_fifth(node), "--no-bench", "--json")
    assert done.code == 0, done.stderr
    status = node.cli("status", "--json").json()
    assert status["onboarded"] is True  # type: ignore[index]
    free = node.cli("resources", "free", "--json").json()
    assert free["disk_bytes"] == GIB // 2  # type: ignore[index]
    assert node.cli("peers", "list", "--json").json() == []

    assert node.stop(signal.SIGTERM) == 0
    assert "stopped cleanly" in node.log()

    node.start()
    node.wait_ready()
    assert node.cli("peers", "self", "--json").json()["did"] == did  # type: ignore[index]
    assert node.cli("status", "--json").json()["onboarded"] is True  # type: ignore[index]
    assert node.stop(signal.SIGINT) == 0


def test_bad_requests_get_clear_errors(node: NodeProcess) -> None:
    over = node.cli("onboard", "--cpu", "100000", "--ram", "1", "--disk", "1")
    assert over.code == 1
    assert "cpu" in over.stderr
    assert "Traceback" not in over.stderr

    off = node.cli("offboard")
    assert off.code == 1
    assert "not onboarded" in off.stderr
    assert node.cli("offboard", "--force").code == 0

    bad_flag = node.cli("onboard", "--cpu", "lots", "--ram", "1", "--disk", "1")
    assert bad_flag.code == 2
    assert "--cpu" in bad_flag.stderr

    bad_gpus = node.cli("onboard", "--cpu", "1", "--ram", "1", "--disk", "1", "--gpus", "zero")
    assert bad_gpus.code == 2
    unknown = node.cli("resources", "bogus")
    assert unknown.code == 2


def test_cli_says_when_node_is_not_running(tmp_path: Path) -> None:
    ghost = NodeProcess(tmp_path, "ghost")
    result = ghost.cli("status")
    assert result.code == 3
    assert f"node not running at 127.0.0.1:{ghost.rest_port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_passphrase_is_refused_and_key_untouched(node: NodeProcess) -> None:
    assert node.stop() == 0
    key_file = node.home / "user" / "key" / "dms.key"
    before = key_file.read_bytes()
    node.passphrase = "not-the-right-one"
    node.start()
    assert node.wait_exit(timeout=20) == 1
    assert "passphrase" in node.log().lower()
    assert "Traceback" not in node.log()
    assert key_file.read_bytes() == before


def test_second_node_on_same_data_dir_is_refused(node: NodeProcess, tmp_path: Path) -> None:
    twin = NodeProcess(tmp_path, "alice")  # same home, new port
    twin.start()
    try:
        assert twin.wait_exit(timeout=20) == 1
    finally:
        twin.kill()
    assert "in use" in twin.log()
    assert node.cli("status").code == 0


def test_port_in_use_is_a_clear_error(node: NodeProcess, tmp_path: Path) -> None:
    other = NodeProcess(tmp_path, "bob")
    other.rest_port = node.rest_port
    other.start()
    try:
        assert other.wait_exit(timeout=20) == 1
    finally:
        other.kill()
    assert "cannot listen" in other.log()
    assert "Traceback" not in other.log()


def test_unix_socket_is_private(tmp_path: Path) -> None:
    proc = NodeProcess(tmp_path, "dave")
    sock = tmp_path / "dave" / "api.sock"
    proc.extra_env["DMS_REST_UNIX_SOCKET"] = str(sock)
    proc.start()
    try:
        proc.wait_ready()
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        result = proc.cli("status", "--json")
        assert result.code == 0, result.stderr
        assert result.json()["onboarded"] is False  # type: ignore[index]
    finally:
        assert proc.stop() == 0
    assert not sock.exists()
