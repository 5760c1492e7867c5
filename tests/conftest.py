"""Shared fixtures for the whole test suite."""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# --- native twins -------------------------------------------------------------------------------
# Every native module `nunet._native.NAME` has a pure-Python twin `nunet._native._reference.NAME`;
# a fixture made by `native_twins(NAME)` runs each test that asks for it against both. To cover a
# new module, add one line below: `dedup = native_twins("dedup")`, then take `dedup` as an argument.


def native_required() -> bool:
    """CI builds the extensions and sets NUNET_REQUIRE_NATIVE=1: a missing one is then a failure."""
    return os.environ.get("NUNET_REQUIRE_NATIVE", "") not in ("", "0")


def import_native(name: str) -> ModuleType:
    """The compiled `nunet._native.NAME`; skips the test (fails it under NUNET_REQUIRE_NATIVE=1)
    when it is not built."""
    try:
        return importlib.import_module(f"nunet._native.{name}")
    except ImportError as exc:
        reason = (
            f"native module nunet._native.{name} is not built ({exc}); "
            "build it with `pip install -e .` or `python setup.py build_ext --inplace`"
        )
        if native_required():
            pytest.fail(f"NUNET_REQUIRE_NATIVE=1 but {reason}")
        pytest.skip(reason)


def native_twins(name: str) -> Any:
    """A fixture named NAME, parametrized over the compiled module and its reference twin."""

    @pytest.fixture(name=name, params=["native", "reference"])
    def _twin(request: pytest.FixtureRequest) -> ModuleType:
        if request.param == "native":
            return import_native(name)
        return importlib.import_module(f"nunet._native._reference.{name}")

    return _twin


framing = native_twins("framing")


@pytest.fixture(name="native")
def _native() -> Any:
    """`native(NAME)`: the compiled module, for tests that compare it with its twin directly."""
    return import_native
dedup = native_twins("dedup")
kernels = native_twins("kernels")
ucan_verify = native_twins("ucan_verify")


# --- docker -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The answering Docker engine's version; skips (with the reason) when none answers."""
    import asyncio

    from nunet.executor.docker import DockerExecutor

    async def probe() -> Any:
        executor = DockerExecutor()
        try:
            return await executor.available()
        finally:
            await executor.close()

    availability = asyncio.run(probe())
    if not availability.ok:
        pytest.skip(f"no Docker engine answers: {availability.reason}")
    return str(availability.version)


@pytest.fixture(scope="session")
def busybox_image(docker_engine: str) -> str:
    """`nunet-test/busybox:latest`, built from this machine's busybox-static when missing."""
    from nunet.testing.images import ensure_busybox_image

    return ensure_busybox_image()


# --- S3: moto's server mode as a real HTTP server on loopback ---------------------------------


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    admin: tuple[str, str]  # (access key id, secret) allowed everything
    reader: tuple[str, str]  # allowed s3:GetObject and s3:ListBucket only


_IAM_SETUP_CALLS = 6  # create_user, create_access_key, put_user_policy, for two users


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto S3 server in its own process that enforces IAM credentials: its first
    `_IAM_SETUP_CALLS` requests are unauthenticated (to create the two users), every later one
    must be signed by a known key with a policy that allows it. Runs in a subprocess so moto's
    and werkzeug's own warnings never meet this process's `filterwarnings = error`."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    import boto3

    log = tmp_path_factory.mktemp("moto") / "server.log"
    port = _free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(_IAM_SETUP_CALLS))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        _wait_listening(proc, port, log)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        admin = _user(iam, "nunet-admin", ["*"])
        reader = _user(iam, "nunet-reader", ["s3:GetObject", "s3:ListBucket"])
        iam.close()
        yield S3Server(endpoint, admin, reader)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _user(iam: object, name: str, actions: list[str]) -> tuple[str, str]:
    statement = {"Effect": "Allow", "Action": actions, "Resource": "*"}
    policy = {"Version": "2012-10-17", "Statement": [statement]}
    iam.create_user(UserName=name)  # type: ignore[attr-defined]
    key = iam.create_access_key(UserName=name)["AccessKey"]  # type: ignore[attr-defined]
    iam.put_user_policy(  # type: ignore[attr-defined]
        UserName=name, PolicyName="storage", PolicyDocument=json.dumps(policy)
    )
    return key["AccessKeyId"], key["SecretAccessKey"]


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"moto server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"moto server did not listen on 127.0.0.1:{port} within 60 s")


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real ENOSPC."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
