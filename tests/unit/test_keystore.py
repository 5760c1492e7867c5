"""The encrypted key store and the passphrase source."""

from __future__ import annotations

import errno
import io
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nacl.pwhash.argon2id as argon2id
import pytest

from nunet.crypto.keys import KeyPair
from nunet.crypto.keystore import KeyInfo, KeyStore, passphrase_from_env_or_prompt
from nunet.errors import (
    KeyExists,
    KeyNotFound,
    KeyStoreError,
    ValidationError,
    WrongPassphrase,
)

PASS = "correct horse battery staple"
NOW = 1_700_000_000.25
OPS, MEM = argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN  # the KDF at its cheapest: fast tests


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "home" / "key"


@pytest.fixture
def store(directory: Path) -> KeyStore:
    return KeyStore(directory, opslimit=OPS, memlimit=MEM, clock=lambda: NOW)


def snapshot(path: Path) -> tuple[bytes, int, int]:
    info = path.stat()
    return path.read_bytes(), info.st_mtime_ns, info.st_size


def edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


# --- the good path ----------------------------------------------------------------------------


def test_new_then_load(store: KeyStore) -> None:
    key = store.new("default", PASS)
    assert store.load("default", PASS) == key
    assert store.did("default") == key.did
    assert store.exists("default")


def test_new_writes_the_documented_file(store: KeyStore, directory: Path) -> None:
    key = store.new("node", PASS)
    path = directory / "node.key"
    record = json.loads(path.read_text())
    assert set(record) == {
        "version",
        "name",
        "did",
        "created_at",
        "kdf",
        "opslimit",
        "memlimit",
        "salt",
        "ciphertext",
    }
    assert record["version"] == 1
    assert record["name"] == "node"
    assert record["did"] == key.did
    assert record["created_at"] == NOW
    assert record["kdf"] == "argon2id"
    assert record["opslimit"] == argon2id.OPSLIMIT_MIN
    assert record["memlimit"] == argon2id.MEMLIMIT_MIN
    assert len(bytes.fromhex(record["salt"])) == 16
    assert len(bytes.fromhex(record["ciphertext"])) == 24 + 16 + 32  # nonce, MAC, seed
    assert key.seed.hex() not in path.read_text()


def test_each_file_has_its_own_salt_and_nonce(store: KeyStore, directory: Path) -> None:
    key = KeyPair.generate()
    store.import_key("a", key.seed.hex(), PASS)
    store.import_key("b", key.seed.hex(), PASS)
    a = json.loads((directory / "a.key").read_text())
    b = json.loads((directory / "b.key").read_text())
    assert a["salt"] != b["salt"]
    assert a["ciphertext"] != b["ciphertext"]


def test_default_limits_are_interactive(directory: Path) -> None:
    KeyStore(directory).new("default", PASS)
    record = json.loads((directory / "default.key").read_text())
    assert record["opslimit"] == argon2id.OPSLIMIT_INTERACTIVE
    assert record["memlimit"] == argon2id.MEMLIMIT_INTERACTIVE


def test_load_uses_the_limits_in_the_file(store: KeyStore, directory: Path) -> None:
    key = store.new("default", PASS)
    stronger = KeyStore(directory, opslimit=3, memlimit=argon2id.MEMLIMIT_MIN * 2)
    assert stronger.load("default", PASS) == key


@pytest.mark.parametrize(
    ("opslimit", "memlimit", "path"),
    [
        (0, MEM, "opslimit"),
        (argon2id.OPSLIMIT_SENSITIVE + 1, MEM, "opslimit"),
        (OPS, argon2id.MEMLIMIT_MIN - 1, "memlimit"),
        (OPS, argon2id.MEMLIMIT_SENSITIVE + 1, "memlimit"),
    ],
)
def test_bad_limits_rejected(directory: Path, opslimit: int, memlimit: int, path: str) -> None:
    with pytest.raises(ValidationError) as info:
        KeyStore(directory, opslimit=opslimit, memlimit=memlimit)
    assert info.value.path == path


def test_list_sorted_with_info(store: KeyStore) -> None:
    created = {name: store.new(name, PASS) for name in ("charlie", "alpha", "Bravo", "0zero")}
    infos = store.list()
    assert [info.name for info in infos] == sorted(created)
    assert infos == [
        KeyInfo(name=name, did=created[name].did, created_at=NOW) for name in sorted(created)
    ]


def test_list_empty_and_missing_directory(store: KeyStore, directory: Path) -> None:
    assert not directory.exists()
    assert store.list() == []
    assert not directory.exists()  # reading never creates the directory
    directory.mkdir(parents=True)
    assert store.list() == []


def test_list_ignores_files_that_are_not_keys(store: KeyStore, directory: Path) -> None:
    key = store.new("real", PASS)
    (directory / "notes.txt").write_text("hello")
    (directory / "bad name.key").write_text("{}")
    (directory / ".hidden.key").write_text("{}")
    (directory / "real.key.tmp-0123456789abcdef").write_text("{}")
    (directory / ".key").write_text("{}")
    assert store.list() == [KeyInfo(name="real", did=key.did, created_at=NOW)]


def test_list_reports_a_corrupt_key_file(store: KeyStore, directory: Path) -> None:
    store.new("good", PASS)
    (directory / "broken.key").write_text("{")
    with pytest.raises(KeyStoreError, match=r"broken\.key"):
        store.list()


def test_remove(store: KeyStore, directory: Path) -> None:
    store.new("gone", PASS)
    kept = store.new("kept", PASS)
    store.remove("gone")
    assert not store.exists("gone")
    assert not (directory / "gone.key").exists()
    assert [info.name for info in store.list()] == ["kept"]
    assert store.load("kept", PASS) == kept
    with pytest.raises(KeyNotFound):
        store.remove("gone")
    with pytest.raises(KeyNotFound):
        store.load("gone", PASS)


def test_missing_key(store: KeyStore) -> None:
    assert not store.exists("nope")
    with pytest.raises(KeyNotFound, match="nope"):
        store.load("nope", PASS)
    with pytest.raises(KeyNotFound):
        store.did("nope")
    with pytest.raises(KeyNotFound):
        store.remove("nope")


def test_key_not_found_is_a_keystore_error_and_not_found() -> None:
    from nunet.errors import NotFound

    assert issubclass(KeyNotFound, KeyStoreError)
    assert issubclass(KeyNotFound, NotFound)


def test_new_refuses_existing_name(store: KeyStore, directory: Path) -> None:
    key = store.new("default", PASS)
    before = snapshot(directory / "default.key")
    with pytest.raises(KeyExists):
        store.new("default", PASS)
    with pytest.raises(KeyExists):
        store.import_key("default", KeyPair.generate().seed.hex(), PASS)
    assert snapshot(directory / "default.key") == before
    assert store.load("default", PASS) == key


def test_import_key_both_hex_forms(store: KeyStore) -> None:
    key = KeyPair.generate()
    assert store.import_key("short", key.seed.hex(), PASS) == key
    assert store.import_key("long", (key.seed + key.public_key).hex(), PASS) == key
    assert store.load("short", PASS) == key
    assert store.load("long", PASS) == key
    assert store.did("long") == key.did


def test_import_key_bad_hex(store: KeyStore, directory: Path) -> None:
    key, other = KeyPair.generate(), KeyPair.generate()
    for text in ("nothex" * 10, "00" * 16, (key.seed + other.public_key).hex()):
        with pytest.raises(ValidationError) as info:
            store.import_key("imported", text, PASS)
        assert info.value.path == "key"
    assert not directory.exists()


def test_get_or_create(store: KeyStore) -> None:
    key, created = store.get_or_create("node", PASS)
    assert created
    again, created_again = store.get_or_create("node", PASS)
    assert not created_again
    assert again == key


def test_get_or_create_never_overwrites_on_wrong_passphrase(
    store: KeyStore, directory: Path
) -> None:
    store.new("node", PASS)
    before = snapshot(directory / "node.key")
    with pytest.raises(WrongPassphrase):
        store.get_or_create("node", "not it")
    assert snapshot(directory / "node.key") == before


def test_get_or_create_loses_a_creation_race(
    store: KeyStore, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner = KeyStore(directory, opslimit=OPS, memlimit=MEM).new("node", PASS)
    real_load = store.load
    calls = []

    def load_missing_first(name: str, passphrase: str) -> KeyPair:
        calls.append(name)
        if len(calls) == 1:  # the other process had not written it yet when we looked
            raise KeyNotFound(name)
        return real_load(name, passphrase)

    monkeypatch.setattr(store, "load", load_missing_first)
    key, created = store.get_or_create("node", PASS)
    assert (key, created) == (winner, False)
    assert len(calls) == 2


def test_did_needs_no_passphrase(store: KeyStore, directory: Path) -> None:
    key = store.new("default", PASS)
    assert KeyStore(directory).did("default") == key.did


# --- wrong passphrase, corrupt and tampered files -------------------------------------------


def test_wrong_passphrase_leaves_file_untouched(store: KeyStore, directory: Path) -> None:
    store.new("default", PASS)
    path = directory / "default.key"
    before = snapshot(path)
    listing = sorted(os.listdir(directory))
    for wrong in ("wrong", PASS + " ", PASS.upper(), PASS[:-1]):
        with pytest.raises(WrongPassphrase, match="default"):
            store.load("default", wrong)
    assert snapshot(path) == before
    assert sorted(os.listdir(directory)) == listing


def test_wrong_passphrase_error_carries_no_secret(store: KeyStore) -> None:
    key = store.new("default", PASS)
    with pytest.raises(WrongPassphrase) as info:
        store.load("default", "guess")
    assert "guess" not in str(info.value)
    assert key.seed.hex() not in str(info.value)
    assert info.value.code == "wrong_passphrase"


@pytest.mark.parametrize("bad", ["", None, 123, b"bytes"])
def test_empty_or_non_text_passphrase_rejected(store: KeyStore, directory: Path, bad: Any) -> None:
    with pytest.raises(ValidationError) as info:
        store.new("default", bad)
    assert info.value.path == "passphrase"
    with pytest.raises(ValidationError):
        store.import_key("default", KeyPair.generate().seed.hex(), bad)
    assert not directory.exists()
    KeyStore(directory, opslimit=OPS, memlimit=MEM).new("default", PASS)
    with pytest.raises(ValidationError):
        store.load("default", bad)


def test_unencodable_passphrase_rejected(store: KeyStore) -> None:
    with pytest.raises(ValidationError) as info:
        store.new("default", "lone \udc80 surrogate")
    assert info.value.path == "passphrase"


def test_unicode_passphrase(store: KeyStore) -> None:
    key = store.new("default", "пароль 🔑 contraseña")
    assert store.load("default", "пароль 🔑 contraseña") == key


def corrupt_cases() -> Iterator[tuple[str, Callable[[Path], object]]]:
    def write(text: str) -> Callable[[Path], object]:
        return lambda path: path.write_text(text)

    def field(name: str, value: Any) -> Callable[[Path], object]:
        return lambda path: edit(path, lambda record: record.__setitem__(name, value))

    def drop(name: str) -> Callable[[Path], object]:
        return lambda path: edit(path, lambda record: record.pop(name))

    yield "empty", write("")
    yield "not json", write("{not json")
    yield "json array", write("[1, 2, 3]")
    yield "json null", write("null")
    yield "truncated", lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    yield "binary", lambda path: path.write_bytes(b"\x00\xff" * 40)
    yield "oversize", write(" " * (64 * 1024 + 1))
    yield "missing ciphertext", drop("ciphertext")
    yield "missing did", drop("did")
    yield "version 2", field("version", 2)
    yield "version text", field("version", "1")
    yield "other kdf", field("kdf", "scrypt")
    yield "opslimit zero", field("opslimit", 0)
    yield "opslimit huge", field("opslimit", 2**32)
    yield "memlimit huge", field("memlimit", 2**40)
    yield "memlimit negative", field("memlimit", -1)
    yield "salt not hex", field("salt", "xyz")
    yield "salt short", field("salt", "00" * 8)
    yield "ciphertext not hex", field("ciphertext", "zz" * 72)
    yield "ciphertext short", field("ciphertext", "00" * 40)
    yield "did not a did", field("did", "did:web:example.com")
    yield "did wrong type", field("did", 7)
    yield "created_at text", field("created_at", "yesterday")


@pytest.mark.parametrize(("case", "damage"), list(corrupt_cases()), ids=lambda c: str(c))
def test_corrupt_file_names_the_file(
    store: KeyStore, directory: Path, case: str, damage: Callable[[Path], object]
) -> None:
    store.new("default", PASS)
    path = directory / "default.key"
    damage(path)
    for call in (lambda: store.load("default", PASS), lambda: store.did("default"), store.list):
        with pytest.raises(KeyStoreError) as info:
            call()
        assert str(path) in str(info.value)
        assert type(info.value) is KeyStoreError  # not WrongPassphrase, not KeyNotFound


def test_key_file_is_a_directory(store: KeyStore, directory: Path) -> None:
    (directory / "odd.key").mkdir(parents=True)
    with pytest.raises(KeyStoreError, match=r"odd\.key"):
        store.load("odd", PASS)


def test_tampered_did_detected(store: KeyStore, directory: Path) -> None:
    store.new("default", PASS)
    impostor = KeyPair.generate().did
    path = directory / "default.key"
    edit(path, lambda record: record.__setitem__("did", impostor))
    with pytest.raises(KeyStoreError, match="tampered") as info:
        store.load("default", PASS)
    assert str(path) in str(info.value)
    # did() reads the clear copy without the passphrase, so it cannot notice; load() does.
    assert store.did("default") == impostor


def test_tampered_ciphertext_reads_as_wrong_passphrase(store: KeyStore, directory: Path) -> None:
    store.new("default", PASS)

    def flip(record: dict[str, Any]) -> None:
        raw = bytearray(bytes.fromhex(record["ciphertext"]))
        raw[-1] ^= 0x01
        record["ciphertext"] = raw.hex()

    edit(directory / "default.key", flip)
    with pytest.raises(WrongPassphrase):
        store.load("default", PASS)


def test_swapped_salt_reads_as_wrong_passphrase(store: KeyStore, directory: Path) -> None:
    store.new("default", PASS)
    edit(directory / "default.key", lambda record: record.__setitem__("salt", "ab" * 16))
    with pytest.raises(WrongPassphrase):
        store.load("default", PASS)


def test_renamed_file_still_loads(store: KeyStore, directory: Path) -> None:
    key = store.new("old", PASS)
    os.rename(directory / "old.key", directory / "new.key")
    assert store.load("new", PASS) == key
    assert [info.name for info in store.list()] == ["new"]


# --- permissions and atomic writes ------------------------------------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("open_umask")
def test_modes_with_permissive_umask(store: KeyStore, directory: Path) -> None:
    store.new("default", PASS)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "default.key").stat().st_mode) == 0o600


def test_modes_with_strict_umask(store: KeyStore, directory: Path) -> None:
    directory.parent.mkdir()  # so the umask cannot lock pytest out of its own tmp_path
    old = os.umask(0o277)
    try:
        store.new("default", PASS)
    finally:
        os.umask(old)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "default.key").stat().st_mode) == 0o600


def test_loose_existing_directory_is_tightened(store: KeyStore, directory: Path) -> None:
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    store.new("default", PASS)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_no_temp_files_left(store: KeyStore, directory: Path) -> None:
    store.new("a", PASS)
    store.import_key("b", KeyPair.generate().seed.hex(), PASS)
    store.get_or_create("c", PASS)
    with pytest.raises(KeyExists):
        store.new("a", PASS)
    store.remove("b")
    assert sorted(os.listdir(directory)) == ["a.key", "c.key"]


def test_failed_write_leaves_nothing(
    store: KeyStore, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.new("first", PASS)

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(KeyStoreError, match="No space left") as info:
        store.new("second", PASS)
    assert "second.key" in str(info.value)
    assert sorted(os.listdir(directory)) == ["first.key"]


def test_key_written_by_another_process_meanwhile_is_not_overwritten(
    store: KeyStore, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_link = os.link

    def link_after_rival(src: Any, dst: Any) -> None:
        Path(dst).write_text("rival")  # lands after our exists() check, before our link
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_after_rival)
    with pytest.raises(KeyExists):
        store.new("default", PASS)
    assert (directory / "default.key").read_text() == "rival"
    assert os.listdir(directory) == ["default.key"]


def test_filesystem_without_hard_links(
    store: KeyStore, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(src: Any, dst: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    key = store.new("default", PASS)
    assert store.load("default", PASS) == key
    assert os.listdir(directory) == ["default.key"]
    assert stat.S_IMODE((directory / "default.key").stat().st_mode) == 0o600


def test_unexpected_link_error_is_a_keystore_error(
    store: KeyStore, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_link(src: Any, dst: Any) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "link", failing_link)
    with pytest.raises(KeyStoreError, match="Input/output error"):
        store.new("default", PASS)
    assert os.listdir(directory) == []


# --- names ------------------------------------------------------------------------------------

BAD_NAMES = [
    "",
    ".",
    "..",
    ".hidden",
    "../evil",
    "a/b",
    "/abs",
    "a\\b",
    "-dash",
    "_under",
    "a b",
    "name\n",
    "\nname",
    "ключ",
    "a" * 65,
    "a\x00b",
    None,
    7,
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_rejected_everywhere(store: KeyStore, tmp_path: Path, name: Any) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.new(name, PASS),
        lambda: store.import_key(name, KeyPair.generate().seed.hex(), PASS),
        lambda: store.load(name, PASS),
        lambda: store.get_or_create(name, PASS),
        lambda: store.did(name),
        lambda: store.remove(name),
        lambda: store.exists(name),
    ]
    for call in calls:
        with pytest.raises(ValidationError) as info:
            call()
        assert info.value.path == "name"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["a", "0", "A" * 64, "a.b-c_d", "node.key", "x..y", "Z-"])
def test_good_names_accepted(store: KeyStore, name: str) -> None:
    key = store.new(name, PASS)
    assert store.load(name, PASS) == key
    assert [info.name for info in store.list()] == [name]


# --- passphrase source ------------------------------------------------------------------------


class Prompt:
    def __init__(self, *answers: str | BaseException) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    def __call__(self, text: str) -> str:
        self.asked.append(text)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


class FakeStdin(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_passphrase_from_env() -> None:
    prompt = Prompt()
    assert (
        passphrase_from_env_or_prompt(env={"DMS_PASSPHRASE": "s3cret"}, prompt=prompt) == "s3cret"
    )
    assert passphrase_from_env_or_prompt(True, {"DMS_PASSPHRASE": "s3cret"}, prompt) == "s3cret"
    assert prompt.asked == []


def test_passphrase_from_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMS_PASSPHRASE", "from-os")
    assert passphrase_from_env_or_prompt() == "from-os"


def test_empty_env_passphrase_rejected() -> None:
    with pytest.raises(ValidationError, match="DMS_PASSPHRASE") as info:
        passphrase_from_env_or_prompt(env={"DMS_PASSPHRASE": ""}, prompt=Prompt("x"))
    assert info.value.path == "passphrase"


def test_passphrase_from_prompt() -> None:
    prompt = Prompt("typed")
    assert passphrase_from_env_or_prompt(env={}, prompt=prompt) == "typed"
    assert len(prompt.asked) == 1


def test_passphrase_confirmed() -> None:
    prompt = Prompt("typed", "typed")
    assert passphrase_from_env_or_prompt(confirm=True, env={}, prompt=prompt) == "typed"
    assert len(prompt.asked) == 2
    assert prompt.asked[0] != prompt.asked[1]


def test_passphrase_confirmation_mismatch() -> None:
    with pytest.raises(ValidationError, match="do not match") as info:
        passphrase_from_env_or_prompt(confirm=True, env={}, prompt=Prompt("typed", "typo"))
    assert info.value.path == "passphrase"


def test_empty_typed_passphrase() -> None:
    with pytest.raises(ValidationError) as info:
        passphrase_from_env_or_prompt(confirm=True, env={}, prompt=Prompt("", ""))
    assert info.value.path == "passphrase"


def test_prompt_end_of_input() -> None:
    with pytest.raises(KeyStoreError, match="no passphrase"):
        passphrase_from_env_or_prompt(env={}, prompt=Prompt(EOFError()))


def test_no_terminal_no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", FakeStdin(tty=False))
    with pytest.raises(KeyStoreError) as info:
        passphrase_from_env_or_prompt(env={})
    assert str(info.value) == "no passphrase: set DMS_PASSPHRASE or run in a terminal"


def test_no_stdin_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", None)
    with pytest.raises(KeyStoreError, match="no passphrase"):
        passphrase_from_env_or_prompt(env={})


def test_closed_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = io.StringIO()
    closed.close()  # isatty() on a closed stream raises ValueError
    monkeypatch.setattr("sys.stdin", closed)
    with pytest.raises(KeyStoreError, match="no passphrase"):
        passphrase_from_env_or_prompt(env={})


def test_terminal_uses_getpass(monkeypatch: pytest.MonkeyPatch) -> None:
    prompt = Prompt("typed", "typed")
    monkeypatch.setattr("sys.stdin", FakeStdin(tty=True))
    monkeypatch.setattr("getpass.getpass", prompt)
    assert passphrase_from_env_or_prompt(confirm=True, env={}) == "typed"
    assert len(prompt.asked) == 2
