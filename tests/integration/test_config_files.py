from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from nunet.config import (
    CONFIG_FILE_NAME,
    Config,
    default_config_path,
    find_config_file,
    load_config,
    search_paths,
    set_value,
)
from nunet.errors import ConfigError


@pytest.fixture
def fake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A cwd, HOME and XDG_CONFIG_HOME of our own, each empty."""
    places = {name: tmp_path / name for name in ("cwd", "home", "xdg")}
    for place in places.values():
        place.mkdir()
    monkeypatch.chdir(places["cwd"])
    monkeypatch.setenv("HOME", str(places["home"]))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(places["xdg"]))
    for var in list(os.environ):
        if var.startswith("DMS_") or var == "BOOTSTRAP_PEERS":
            monkeypatch.delenv(var)
    return places


def write_config(directory: Path, port: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_FILE_NAME
    path.write_text(json.dumps({"rest": {"port": port}}))
    return path


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- search order -------------------------------------------------------------------------------


def test_search_paths_order(fake_home: dict[str, Path]) -> None:
    env = dict(os.environ)
    assert search_paths(env) == [
        fake_home["cwd"] / CONFIG_FILE_NAME,
        fake_home["home"] / ".nunet" / CONFIG_FILE_NAME,
        fake_home["xdg"] / "nunet" / CONFIG_FILE_NAME,
        Path("/etc/nunet") / CONFIG_FILE_NAME,
    ]


def test_xdg_default_and_relative_xdg_ignored(fake_home: dict[str, Path]) -> None:
    home = fake_home["home"]
    for xdg in ({}, {"XDG_CONFIG_HOME": ""}, {"XDG_CONFIG_HOME": "relative/dir"}):
        env = {"HOME": str(home), **xdg}
        assert search_paths(env)[2] == home / ".config" / "nunet" / CONFIG_FILE_NAME


def test_user_dir_env_is_searched_and_written(fake_home: dict[str, Path]) -> None:
    env = {"HOME": str(fake_home["home"]), "DMS_GENERAL_USER_DIR": "~/custom"}
    expected = fake_home["home"] / "custom" / CONFIG_FILE_NAME
    assert search_paths(env)[1] == expected
    assert default_config_path(env) == expected
    assert default_config_path({"HOME": str(fake_home["home"])}) == (
        fake_home["home"] / ".nunet" / CONFIG_FILE_NAME
    )


@pytest.mark.skipif(Path("/etc/nunet", CONFIG_FILE_NAME).exists(), reason="host has /etc/nunet")
def test_first_existing_file_wins(fake_home: dict[str, Path]) -> None:
    in_xdg = write_config(fake_home["xdg"] / "nunet", 9003)
    in_home = write_config(fake_home["home"] / ".nunet", 9002)
    in_cwd = write_config(fake_home["cwd"], 9001)
    for expected_port, expected_source, winner in [
        (9001, in_cwd, in_cwd), (9002, in_home, in_home), (9003, in_xdg, in_xdg),
    ]:
        loaded = load_config()
        assert (loaded.config.rest.port, loaded.source) == (expected_port, expected_source)
        winner.unlink()
    loaded = load_config()
    assert loaded.source is None
    assert loaded.config == Config().resolved(str(fake_home["home"]))
    assert find_config_file(dict(os.environ)) is None


def test_directory_named_like_the_file_is_skipped(fake_home: dict[str, Path]) -> None:
    (fake_home["cwd"] / CONFIG_FILE_NAME).mkdir()
    in_home = write_config(fake_home["home"] / ".nunet", 9002)
    assert find_config_file(dict(os.environ)) == in_home


def test_explicit_path_beats_search(fake_home: dict[str, Path], tmp_path: Path) -> None:
    write_config(fake_home["cwd"], 9001)
    explicit = write_config(tmp_path / "elsewhere", 9005)
    loaded = load_config(explicit)
    assert (loaded.config.rest.port, loaded.source) == (9005, explicit)


def test_invalid_found_file_is_reported_with_its_name(fake_home: dict[str, Path]) -> None:
    bad = fake_home["cwd"] / CONFIG_FILE_NAME
    bad.write_text('{\n  "rest": {"port": 1,}\n}')
    with pytest.raises(ConfigError) as info:
        load_config()
    assert str(bad) in info.value.message
    assert "line 2" in info.value.message


# --- set_value ----------------------------------------------------------------------------------


def test_set_value_creates_file_and_parent(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / CONFIG_FILE_NAME
    config = set_value(path, "rest.port", "9998")
    assert config.rest.port == 9998
    assert json.loads(path.read_text()) == {"rest": {"port": 9998}}
    assert load_config(path, env={}).config.rest.port == 9998
    assert entries(path.parent) == [CONFIG_FILE_NAME]


def test_set_value_round_trip_keeps_other_keys(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_FILE_NAME
    path.write_text(json.dumps({"general": {"work_dir": "~/w"}, "rest": {"addr": "::1"}}))
    set_value(path, "rest.port", "9100")
    set_value(path, "general.debug", "yes")
    set_value(path, "p2p.bootstrap_peers", "/ip4/1.1.1.1/udp/1, /ip4/2.2.2.2/udp/2")
    config = set_value(path, "observability.logging_level", "warn")
    assert json.loads(path.read_text()) == {
        "general": {"work_dir": "~/w", "debug": True},
        "rest": {"addr": "::1", "port": 9100},
        "p2p": {"bootstrap_peers": ["/ip4/1.1.1.1/udp/1", "/ip4/2.2.2.2/udp/2"]},
        "observability": {"logging_level": "warn"},
    }
    assert config.general.work_dir == "~/w"  # the file's text, not expanded
    assert config.observability.logging_level == "WARN"
    loaded = load_config(path, env={"HOME": "/h"}).config
    assert loaded.general.work_dir == "/h/w"
    assert loaded.p2p.bootstrap_peers == ("/ip4/1.1.1.1/udp/1", "/ip4/2.2.2.2/udp/2")
    set_value(path, "p2p.bootstrap_peers", '["/ip4/3.3.3.3/udp/3"]')
    assert load_config(path, env={}).config.p2p.bootstrap_peers == ("/ip4/3.3.3.3/udp/3",)


@pytest.mark.parametrize(
    ("key", "value", "path"),
    [("rest.port", "abc", "rest.port"),
     ("rest.port", "70000", "rest.port"),
     ("rest.nope", "1", "rest.nope"),
     ("rest", "1", "rest"),
     ("general.debug", "maybe", "general.debug"),
     ("general.port_available_range_from", "40000", "general.port_available_range_to"),
     ("observability.elasticsearch_enabled", "true", "observability.elasticsearch_url"),
     ("p2p.listen_address", "/dns4/x/udp/1", "p2p.listen_address[0]")],
)
def test_set_invalid_value_leaves_file_byte_identical(
    tmp_path: Path, key: str, value: str, path: str
) -> None:
    config_file = tmp_path / CONFIG_FILE_NAME
    original = b'{ "rest": {"port": 9001},\n  "general": {"debug": false} }'
    config_file.write_bytes(original)
    before = config_file.stat()
    with pytest.raises(ConfigError) as info:
        set_value(config_file, key, value)
    assert info.value.path == path
    assert config_file.read_bytes() == original
    assert config_file.stat().st_ino == before.st_ino  # not even rewritten with the same bytes
    assert entries(tmp_path) == [CONFIG_FILE_NAME]


def test_set_on_invalid_file_fails_and_leaves_it(tmp_path: Path) -> None:
    config_file = tmp_path / CONFIG_FILE_NAME
    for original, message in [(b'{"rest": {"port": 1,}}', "malformed JSON"),
                              (b'{"rest": {"prot": 1}}', "unknown key"),
                              (b'{"rest": []}', "expected a JSON object")]:
        config_file.write_bytes(original)
        with pytest.raises(ConfigError) as info:
            set_value(config_file, "rest.addr", "::1")
        assert message in info.value.message
        assert config_file.read_bytes() == original
    assert entries(tmp_path) == [CONFIG_FILE_NAME]


def test_set_value_where_parent_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(ConfigError) as info:
        set_value(blocker / CONFIG_FILE_NAME, "rest.port", "9998")
    assert "not-a-dir" in info.value.message
    assert blocker.read_text() == "x"
    assert entries(tmp_path) == ["not-a-dir"]
    with pytest.raises(ConfigError):
        set_value(blocker / "sub" / CONFIG_FILE_NAME, "rest.port", "9998")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only directory")
def test_set_value_in_read_only_directory(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    config_file = write_config(directory, 9001)
    original = config_file.read_bytes()
    directory.chmod(0o500)
    try:
        with pytest.raises(ConfigError):
            set_value(config_file, "rest.port", "9998")
        assert config_file.read_bytes() == original
        assert entries(directory) == [CONFIG_FILE_NAME]
    finally:
        directory.chmod(0o700)


def test_set_value_preserves_mode(tmp_path: Path) -> None:
    config_file = write_config(tmp_path, 9001)
    for mode in (0o640, 0o600, 0o664):
        config_file.chmod(mode)
        set_value(config_file, "rest.port", "9002")
        assert stat.S_IMODE(config_file.stat().st_mode) == mode
    assert entries(tmp_path) == [CONFIG_FILE_NAME]


def test_new_file_is_not_group_or_world_writable(tmp_path: Path) -> None:
    config_file = tmp_path / CONFIG_FILE_NAME
    set_value(config_file, "rest.port", "9002")
    assert stat.S_IMODE(config_file.stat().st_mode) & 0o022 == 0


def test_set_value_writes_through_a_symlink(tmp_path: Path) -> None:
    real = write_config(tmp_path / "real", 9001)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    set_value(link, "rest.port", "9002")
    assert link.is_symlink()
    assert json.loads(real.read_text()) == {"rest": {"port": 9002}}
    assert entries(real.parent) == [CONFIG_FILE_NAME]


def test_set_value_replaces_rather_than_rewrites(tmp_path: Path) -> None:
    # A reader holding the old file keeps a complete old version: the write is a rename.
    config_file = write_config(tmp_path, 9001)
    with config_file.open("rb") as reader:
        set_value(config_file, "rest.port", "9002")
        assert json.loads(reader.read()) == {"rest": {"port": 9001}}
    assert json.loads(config_file.read_text()) == {"rest": {"port": 9002}}


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_failed_write_leaves_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    # Stands in for a read-only or full filesystem, which root cannot be denied in a test.
    config_file = write_config(tmp_path, 9001)
    original = config_file.read_bytes()

    def fail(*_args: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(os, step, fail)
    with pytest.raises(ConfigError) as info:
        set_value(config_file, "rest.port", "9002")
    monkeypatch.undo()
    assert "Read-only file system" in info.value.message
    assert config_file.read_bytes() == original
    assert entries(tmp_path) == [CONFIG_FILE_NAME]
