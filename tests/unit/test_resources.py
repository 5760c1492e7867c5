from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nunet.errors import ValidationError
from nunet.node.resources import GIB, GPU, Resources, format_gib, gib, to_gib


def gpu(index: int, vram_gib: float) -> GPU:
    return GPU(index=index, vendor="NVIDIA", model=f"GPU{index}", vram_bytes=gib(vram_gib))


def test_gib_conversions() -> None:
    assert GIB == 1073741824
    assert gib(1) == GIB
    assert gib(0.5) == GIB // 2
    assert gib(2.34) == round(2.34 * GIB)
    assert to_gib(3 * GIB) == 3.0
    assert format_gib(gib(23.4)) == "23.4 GiB"
    assert format_gib(2 * GIB) == "2 GiB"


def test_add_sums_every_field_and_merges_gpus_by_index() -> None:
    a = Resources(cpu_cores=1.5, ram_bytes=gib(2), disk_bytes=gib(10), gpus=(gpu(0, 4),))
    b = Resources(cpu_cores=0.5, ram_bytes=gib(1), disk_bytes=gib(5), gpus=(gpu(1, 2), gpu(0, 1)))
    total = a + b
    assert total == a.add(b)
    assert total.cpu_cores == 2.0
    assert total.ram_bytes == gib(3)
    assert total.disk_bytes == gib(15)
    assert total.gpus == (gpu(0, 5), gpu(1, 2))


def test_cpu_cores_have_no_float_artefacts() -> None:
    assert (Resources(cpu_cores=0.1) + Resources(cpu_cores=0.2)).cpu_cores == 0.3
    assert (Resources(cpu_cores=0.3) - Resources(cpu_cores=0.1)).cpu_cores == 0.2
    assert Resources(cpu_cores=0.3).fits(Resources(cpu_cores=0.1) + Resources(cpu_cores=0.2))


def test_subtract_and_gpus_used_up_disappear() -> None:
    have = Resources(
        cpu_cores=4, ram_bytes=gib(8), disk_bytes=gib(100), gpus=(gpu(0, 8), gpu(1, 4))
    )
    used = Resources(cpu_cores=1, ram_bytes=gib(2), disk_bytes=gib(10), gpus=(gpu(1, 4),))
    left = have - used
    assert left == have.subtract(used)
    assert left == Resources(cpu_cores=3, ram_bytes=gib(6), disk_bytes=gib(90), gpus=(gpu(0, 8),))
    assert (have - have) == Resources()
    assert (have - have).is_zero()


@pytest.mark.parametrize(
    ("need", "path"),
    [
        (Resources(cpu_cores=2.001), "cpu_cores"),
        (Resources(ram_bytes=gib(8) + 1), "ram_bytes"),
        (Resources(disk_bytes=gib(100) + 1), "disk_bytes"),
        (Resources(gpus=(gpu(3, 1),)), "gpus[0].index"),
        (Resources(gpus=(gpu(1, 1), gpu(0, 8.5))), "gpus[1].vram_bytes"),
    ],
)
def test_underflow_names_the_resource(need: Resources, path: str) -> None:
    have = Resources(
        cpu_cores=2, ram_bytes=gib(8), disk_bytes=gib(100), gpus=(gpu(0, 8), gpu(1, 4))
    )
    assert not have.fits(need)
    with pytest.raises(ValidationError) as err:
        have - need
    assert err.value.path == path


def test_underflow_reports_first_of_several_and_exact_amounts() -> None:
    have = Resources(cpu_cores=1, ram_bytes=gib(2))
    with pytest.raises(ValidationError) as err:
        have - Resources(cpu_cores=2, ram_bytes=gib(3))
    assert err.value.path == "cpu_cores"
    assert "2 cores needed, 1 there" in err.value.message
    assert [p for p, _ in have.shortfalls(Resources(cpu_cores=2, ram_bytes=gib(3)))] == [
        "cpu_cores",
        "ram_bytes",
    ]
    assert have.shortfalls(Resources(ram_bytes=gib(3)))[0][1] == "3 GiB needed, 2 GiB there"
    assert have.shortfalls(Resources(cpu_cores=1.001))[0][1] == "1.001 cores needed, 1 there"
    assert have.shortfalls(Resources(ram_bytes=gib(2) + 1))[0][1] == (
        f"{gib(2) + 1} bytes needed, {gib(2)} bytes there"
    )
    gpu_short = Resources(gpus=(gpu(0, 1),)).shortfalls(Resources(gpus=(gpu(0, 1.5),)))
    assert gpu_short == [("gpus[0].vram_bytes", "GPU 0: VRAM 1.5 GiB needed, 1 GiB there")]


def test_fits_at_the_boundary() -> None:
    have = Resources(cpu_cores=2, ram_bytes=gib(8), disk_bytes=gib(1), gpus=(gpu(0, 8),))
    assert have.fits(have)
    assert have.fits(Resources())
    assert not Resources().fits(have)
    assert not have.fits(Resources(disk_bytes=gib(1) + 1))
    assert not have.fits(Resources(gpus=(gpu(0, 8.001),)))


def test_is_zero() -> None:
    assert Resources().is_zero()
    assert Resources(gpus=(gpu(0, 0),)).is_zero()
    assert not Resources(disk_bytes=1).is_zero()
    assert not Resources(cpu_cores=0.001).is_zero()
    assert not Resources(gpus=(gpu(0, 1),)).is_zero()


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"cpu_cores": -0.5}, "cpu_cores"),
        ({"cpu_cores": math.nan}, "cpu_cores"),
        ({"cpu_cores": math.inf}, "cpu_cores"),
        ({"ram_bytes": -1}, "ram_bytes"),
        ({"disk_bytes": -1}, "disk_bytes"),
        ({"gpus": (gpu(0, 1), gpu(0, 2))}, "gpus[1].index"),
        ({"gpus": (GPU(0, "AMD", "x", -1),)}, "gpus[0].vram_bytes"),
    ],
)
def test_invalid_amounts_are_rejected(kwargs: dict[str, object], path: str) -> None:
    with pytest.raises(ValidationError) as err:
        Resources(**kwargs)  # type: ignore[arg-type]
    assert err.value.path == path


def test_decoding_applies_the_same_checks() -> None:
    good = Resources(cpu_cores=1.5, ram_bytes=3, gpus=(gpu(0, 1),))
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(good), type=Resources) == good
    bad = msgspec.json.encode({"ram_bytes": -5})
    with pytest.raises(ValidationError) as err:
        msgspec.json.decode(bad, type=Resources)
    assert err.value.path == "ram_bytes"


cores = st.integers(0, 1_000_000).map(lambda n: n / 1000)
amounts = st.integers(0, 1 << 44)
gpu_sets = st.dictionaries(st.integers(0, 7), st.integers(1, 1 << 37), max_size=4).map(
    lambda d: tuple(GPU(i, "NVIDIA", "m", v) for i, v in sorted(d.items()))
)
resources = st.builds(
    Resources, cpu_cores=cores, ram_bytes=amounts, disk_bytes=amounts, gpus=gpu_sets
)


@given(resources, resources)
def test_add_then_subtract_is_identity(a: Resources, b: Resources) -> None:
    total = a + b
    assert total.fits(a)
    assert total.fits(b)
    assert total - b == a
    assert total - a == b
    assert a + b == b + a


@given(resources, resources)
def test_fits_agrees_with_subtract(a: Resources, b: Resources) -> None:
    if a.fits(b):
        assert (a - b) + b == a
    else:
        with pytest.raises(ValidationError):
            a - b
