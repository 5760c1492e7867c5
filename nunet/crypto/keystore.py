"""Encrypted key store: one `<name>.key` JSON file per key in `<user_dir>/key`.

The 32-byte Ed25519 seed is sealed with a nacl SecretBox under a key stretched from the
passphrase by Argon2id. The DID sits in clear beside the ciphertext so `did()` and `list()` need
no passphrase; `load()` checks it against the decrypted key.
"""

from __future__ import annotations

import errno
import getpass
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec
import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.utils

from nunet.codec import DECODE_ERRORS
from nunet.crypto.did import is_did
from nunet.crypto.keys import SEED_SIZE, KeyPair
from nunet.errors import (
    KeyExists,
    KeyNotFound,
    KeyStoreError,
    ValidationError,
    WrongPassphrase,
)
from nunet.fsutil import fsync_dir, write_temp

FILE_VERSION = 1
KDF = "argon2id"
KEY_SUFFIX = ".key"
PASSPHRASE_ENV = "DMS_PASSPHRASE"
NO_PASSPHRASE = f"no passphrase: set {PASSPHRASE_ENV} or run in a terminal"

# Names become file names: this pattern admits no separator and no leading dot, so no traversal.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# KDF limits a file may ask for. The upper bound stops a tampered file from making `load`
# allocate or spin without end; SENSITIVE leaves room to raise the defaults later.
_OPSLIMIT_RANGE = (argon2id.OPSLIMIT_MIN, argon2id.OPSLIMIT_SENSITIVE)
_MEMLIMIT_RANGE = (argon2id.MEMLIMIT_MIN, argon2id.MEMLIMIT_SENSITIVE)
_SEALED_SIZE = nacl.secret.SecretBox.NONCE_SIZE + nacl.secret.SecretBox.MACBYTES + SEED_SIZE
_MAX_FILE_SIZE = 64 * 1024


class KeyInfo(msgspec.Struct, frozen=True):
    name: str
    did: str
    created_at: float


class _KeyFile(msgspec.Struct, frozen=True):
    version: int
    name: str
    did: str
    created_at: float
    kdf: str
    opslimit: int
    memlimit: int
    salt: str
    ciphertext: str


class _Sealed(msgspec.Struct, frozen=True):
    """A key file checked for shape, with its hex fields decoded."""

    record: _KeyFile
    salt: bytes
    ciphertext: bytes


class KeyStore:
    def __init__(
        self,
        directory: Path,
        *,
        opslimit: int = argon2id.OPSLIMIT_INTERACTIVE,
        memlimit: int = argon2id.MEMLIMIT_INTERACTIVE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not _in_range(opslimit, _OPSLIMIT_RANGE):
            raise ValidationError(f"opslimit must be within {_OPSLIMIT_RANGE}", path="opslimit")
        if not _in_range(memlimit, _MEMLIMIT_RANGE):
            raise ValidationError(f"memlimit must be within {_MEMLIMIT_RANGE}", path="memlimit")
        self.directory = Path(directory)
        self._opslimit = opslimit
        self._memlimit = memlimit
        self._clock = clock

    def new(self, name: str, passphrase: str) -> KeyPair:
        """Generate a key and store it under `name`; KeyExists if the name is taken."""
        return self._add(name, KeyPair.generate(), passphrase)

    def import_key(self, name: str, key_hex: str, passphrase: str) -> KeyPair:
        """Store a key given as hex (see KeyPair.from_hex); KeyExists if the name is taken."""
        self._path(name)  # a bad name is reported before a bad key
        return self._add(name, KeyPair.from_hex(key_hex), passphrase)

    def load(self, name: str, passphrase: str) -> KeyPair:
        path = self._path(name)
        secret = _passphrase_bytes(passphrase)
        sealed = self._read(name, path)
        box = nacl.secret.SecretBox(
            _derive(secret, sealed.salt, sealed.record.opslimit, sealed.record.memlimit)
        )
        try:
            seed = box.decrypt(sealed.ciphertext)
        except nacl.exceptions.CryptoError:
            # A flipped ciphertext bit looks the same as a wrong passphrase: the MAC fails.
            raise WrongPassphrase(f"wrong passphrase for key {name!r}") from None
        key = KeyPair.from_seed(seed)
        if key.did != sealed.record.did:
            raise KeyStoreError(f"{path}: key file tampered: its DID does not match its key")
        return key

    def get_or_create(self, name: str, passphrase: str) -> tuple[KeyPair, bool]:
        """The key `name`, created first if absent; the bool says whether it was created."""
        try:
            return self.load(name, passphrase), False
        except KeyNotFound:
            pass
        try:
            return self.new(name, passphrase), True
        except KeyExists:  # another process created it between our load and our new
            return self.load(name, passphrase), False

    def did(self, name: str) -> str:
        return self._read(name, self._path(name)).record.did

    def list(self) -> list[KeyInfo]:
        """Every stored key, sorted by name; files that are not `<valid name>.key` are ignored."""
        try:
            with os.scandir(self.directory) as scan:
                entries = [entry.name for entry in scan]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise KeyStoreError(f"{self.directory}: cannot list keys: {exc.strerror}") from None
        infos = []
        for entry in entries:
            name = entry.removesuffix(KEY_SUFFIX)
            if name == entry or not _NAME_RE.fullmatch(name):
                continue
            try:
                record = self._read(name, self._path(name)).record
            except KeyNotFound:  # removed while we were listing
                continue
            infos.append(KeyInfo(name=name, did=record.did, created_at=record.created_at))
        infos.sort(key=lambda info: info.name)
        return infos

    def remove(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise KeyNotFound(f"no key named {name!r} in {self.directory}") from None
        except OSError as exc:
            raise KeyStoreError(f"{path}: cannot remove key file: {exc.strerror}") from None
        fsync_dir(self.directory)

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def _path(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ValidationError(
                "key name must be 1-64 characters of letters, digits, '_', '.' and '-', "
                "starting with a letter or digit",
                path="name",
            )
        return self.directory / f"{name}{KEY_SUFFIX}"

    def _add(self, name: str, key: KeyPair, passphrase: str) -> KeyPair:
        path = self._path(name)
        secret = _passphrase_bytes(passphrase)
        if path.exists():
            raise KeyExists(f"key {name!r} already exists in {self.directory}")
        salt = nacl.utils.random(argon2id.SALTBYTES)
        box = nacl.secret.SecretBox(_derive(secret, salt, self._opslimit, self._memlimit))
        record = _KeyFile(
            version=FILE_VERSION,
            name=name,
            did=key.did,
            created_at=self._clock(),
            kdf=KDF,
            opslimit=self._opslimit,
            memlimit=self._memlimit,
            salt=salt.hex(),
            ciphertext=bytes(box.encrypt(key.seed)).hex(),
        )
        data = msgspec.json.format(msgspec.json.encode(record), indent=2) + b"\n"
        self._make_directory()
        _write_new(path, data, name)
        return key

    def _make_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkdir's mode is filtered by the umask, and an older directory may be looser.
            if stat.S_IMODE(self.directory.stat().st_mode) != 0o700:
                os.chmod(self.directory, 0o700)
        except OSError as exc:
            raise KeyStoreError(
                f"{self.directory}: cannot create key directory: {exc.strerror}"
            ) from None

    def _read(self, name: str, path: Path) -> _Sealed:
        try:
            with open(path, "rb") as file:
                data = file.read(_MAX_FILE_SIZE + 1)
        except FileNotFoundError:
            raise KeyNotFound(f"no key named {name!r} in {self.directory}") from None
        except OSError as exc:
            raise KeyStoreError(f"{path}: cannot read key file: {exc.strerror}") from None
        if len(data) > _MAX_FILE_SIZE:
            raise KeyStoreError(f"{path}: corrupt key file: larger than {_MAX_FILE_SIZE} bytes")
        return _parse(path, data)


def _parse(path: Path, data: bytes) -> _Sealed:
    try:
        record = msgspec.json.decode(data, type=_KeyFile)
    except DECODE_ERRORS as exc:
        raise KeyStoreError(f"{path}: corrupt key file: {exc}") from None
    if record.version != FILE_VERSION:
        raise KeyStoreError(f"{path}: unsupported key file version {record.version}")
    if record.kdf != KDF:
        raise KeyStoreError(f"{path}: unsupported key derivation {record.kdf!r}")
    if not _in_range(record.opslimit, _OPSLIMIT_RANGE) or not _in_range(
        record.memlimit, _MEMLIMIT_RANGE
    ):
        raise KeyStoreError(f"{path}: corrupt key file: KDF limits out of range")
    try:
        salt = bytes.fromhex(record.salt)
        ciphertext = bytes.fromhex(record.ciphertext)
    except ValueError:
        raise KeyStoreError(f"{path}: corrupt key file: salt or ciphertext is not hex") from None
    if len(salt) != argon2id.SALTBYTES or len(ciphertext) != _SEALED_SIZE:
        raise KeyStoreError(f"{path}: corrupt key file: salt or ciphertext has the wrong length")
    if not is_did(record.did):
        raise KeyStoreError(f"{path}: corrupt key file: did is not an Ed25519 did:key")
    return _Sealed(record=record, salt=salt, ciphertext=ciphertext)


def _in_range(value: int, bounds: tuple[int, int]) -> bool:
    return isinstance(value, int) and bounds[0] <= value <= bounds[1]


def _passphrase_bytes(passphrase: str) -> bytes:
    if not isinstance(passphrase, str) or not passphrase:
        raise ValidationError("passphrase must be a non-empty string", path="passphrase")
    try:
        return passphrase.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("passphrase is not valid Unicode text", path="passphrase") from None


def _derive(secret: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, secret, salt, opslimit=opslimit, memlimit=memlimit
    )


def _write_new(path: Path, data: bytes, name: str) -> None:
    """Write `path` atomically, never replacing an existing file."""
    tmp: Path | None = None
    try:
        tmp = write_temp(path.parent, path.name, data, 0o600)
        _publish(tmp, path, name)
    except OSError as exc:
        raise KeyStoreError(f"{path}: cannot write key file: {exc.strerror}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _publish(tmp: Path, path: Path, name: str) -> None:
    # A hard link is atomic like os.replace but fails if the name exists: two nodes starting at
    # once with get_or_create cannot overwrite each other's fresh key.
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise KeyExists(f"key {name!r} already exists in {path.parent}") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        # Some filesystems (FAT, some network and FUSE mounts) have no hard links.
        if path.exists():
            raise KeyExists(f"key {name!r} already exists in {path.parent}") from None
        os.replace(tmp, path)


def passphrase_from_env_or_prompt(
    confirm: bool = False,
    env: Mapping[str, str] | None = None,
    prompt: Callable[[str], str] | None = None,
) -> str:
    """The passphrase from DMS_PASSPHRASE, else asked for in the terminal (twice if `confirm`).

    `prompt` replaces getpass (and the terminal check that guards it).
    """
    value = (os.environ if env is None else env).get(PASSPHRASE_ENV)
    if value is not None:
        if not value:
            raise ValidationError(f"{PASSPHRASE_ENV} is set but empty", path="passphrase")
        return value
    if prompt is None:
        if not _stdin_is_terminal():
            raise KeyStoreError(NO_PASSPHRASE)
        prompt = getpass.getpass
    try:
        passphrase = prompt("Passphrase: ")
        if not passphrase:
            raise ValidationError("passphrase must not be empty", path="passphrase")
        if confirm and prompt("Repeat passphrase: ") != passphrase:
            raise ValidationError("passphrases do not match", path="passphrase")
    except EOFError:
        raise KeyStoreError(NO_PASSPHRASE) from None
    return passphrase


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # stdin was closed
        return False
