"""The CLI's local commands (no node needed), run in-process on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nunet.cli.main import main

SEED_HEX = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"  # RFC 8032 test 1


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("DMS_PASSPHRASE", "DMS_GENERAL_USER_DIR", "DMS_REST_PORT", "BOOTSTRAP_PEERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_key_lifecycle(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                       home: Path) -> None:
    monkeypatch.setenv("DMS_PASSPHRASE", "correct horse")
    code, out, _ = run(capsys, "key", "new", "user", "--json")
    assert code == 0
    did = json.loads(out)["did"]
    assert did.startswith("did:key:z6Mk")
    assert (home / ".nunet" / "key" / "user.key").exists()
    code, out, _ = run(capsys, "key", "did", "user")
    assert (code, out.strip()) == (0, did)
    code, out, err = run(capsys, "key", "new", "user")
    assert code == 1
    assert "exists" in err
    code, out, _ = run(capsys, "key", "import", "rfc", SEED_HEX, "--json")
    assert code == 0
    assert json.loads(out)["did"] == "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw"
    code, out, _ = run(capsys, "key", "list", "--json")
    assert [k["name"] for k in json.loads(out)] == ["rfc", "user"]
    code, out, _ = run(capsys, "key", "remove", "rfc", "--yes")
    assert code == 0
    code, _, err = run(capsys, "key", "did", "rfc")
    assert code == 1
    assert "rfc" in err


def test_key_errors(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run(capsys, "key", "new", "user")
    assert code == 1
    assert "DMS_PASSPHRASE" in err
    monkeypatch.setenv("DMS_PASSPHRASE", "x")
    code, _, err = run(capsys, "key", "new", "../escape")
    assert code == 1
    assert "name" in err
    code, _, err = run(capsys, "key", "import", "bad", "zz")
    assert code == 1
    assert "Traceback" not in err


def test_config_set_get_show(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    code, out, _ = run(capsys, "config", "get", "rest.port")
    assert (code, out.strip()) == (0, "9999")
    code, out, _ = run(capsys, "config", "set", "rest.port", "9998")
    assert code == 0
    written = home / ".nunet" / "dms_config.json"
    assert json.loads(written.read_text())["rest"]["port"] == 9998
    code, out, _ = run(capsys, "config", "get", "rest.port")
    assert out.strip() == "9998"
    code, out, _ = run(capsys, "config", "show")
    assert json.loads(out)["rest"]["port"] == 9998
    before = written.read_bytes()
    code, _, err = run(capsys, "config", "set", "rest.port", "99999")
    assert code == 1
    assert "rest.port" in err
    assert written.read_bytes() == before
    code, _, err = run(capsys, "config", "get", "rest.nope")
    assert code == 1
    assert "rest.nope" in err


def test_config_set_repairs_a_broken_file(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    path = home / "dms_config.json"
    path.write_text('{"rest": {"port": 0}}')
    code, _, err = run(capsys, "config", "show")
    assert code == 1
    assert "rest.port" in err
    code, _, err = run(capsys, "config", "set", "rest.port", "9000")
    assert code == 0, err
    assert json.loads(path.read_text())["rest"]["port"] == 9000


def test_unknown_config_key_in_file(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    (home / "dms_config.json").write_text('{"rest": {"prot": 1}}')
    code, _, err = run(capsys, "status")
    assert code == 1
    assert "rest.prot" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "onboard", "--cpu", "x", "--ram", "1", "--disk", "1")
    assert code == 2
    assert "--cpu" in err
    code, _, err = run(capsys, "frobnicate")
    assert code == 2
    code, _, err = run(capsys, "status", "--rest-port", "70000")
    assert code == 2


def test_help_version_completion(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "Examples" in out
    code, out, _ = run(capsys, "onboard", "--help")
    assert code == 0
    assert "nunet onboard --cpu" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert "nunet" in out
    code, out, _ = run(capsys, "completion", "bash")
    assert code == 0
    assert "_NUNET_COMPLETE" in out


def test_wallet_new(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "wallet", "new", "--chain", "ethereum", "--json")
    assert code == 0
    wallet = json.loads(out)
    assert wallet["address"].startswith("0x")
    assert len(wallet["mnemonic"].split()) == 24
    code, out, _ = run(capsys, "wallet", "new", "--chain", "cardano", "--testnet", "--json")
    assert json.loads(out)["address"].startswith("addr_test1")
    code, _, _ = run(capsys, "wallet", "new", "--chain", "dogecoin")
    assert code == 2


def test_node_not_running(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "status", "--rest-port", "1")
    assert code == 3
    assert "node not running at 127.0.0.1:1" in err


def test_ctrl_c_exits_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nunet.cli import main as cli_main

    def interrupted(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "client", interrupted)
    code, _, err = run(capsys, "status")
    assert code == 130
    assert "interrupted" in err
