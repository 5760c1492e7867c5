"""Shared fixtures for the whole test suite."""

from __future__ import annotations

import importlib
import os
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
