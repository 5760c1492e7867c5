"""GPU stage: each GPU's model and VRAM (NVML, else sysfs), and an fp32 matrix-multiply figure when
a GPU library that can run one is installed (PyTorch or CuPy; nunet does not depend on either).
No GPU, or no library, is a note, not an error."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from importlib.util import find_spec
from typing import Any

from nunet.benchmark.measure import StageContext, summarize
from nunet.benchmark.model import Outcome, Result
from nunet.node.gpu import GPUInfo

STEPS = 1
STAGE = "gpu"
GIB = 1 << 30
# (library name, fp32 GEMM seconds for an n x n multiply on device i, repeated `calls` times)
Timer = Callable[[int, int, int], float]


def run(
    ctx: StageContext,
    *,
    detect: Callable[[], tuple[tuple[GPUInfo, ...], str | None]] | None = None,
    timer: tuple[str, Timer] | None = None,
) -> Outcome:
    gpus, why_none = (detect or _detect)()
    if not gpus:
        ctx.step("no GPU")
        return [], why_none or "no GPU detected"
    found = timer if timer is not None else _timer()
    results: list[Result] = []
    for gpu in gpus:
        results.append(summarize(f"gpu.{gpu.index}.vram", STAGE, "GiB", [gpu.vram_bytes / GIB],
                                 note=f"{gpu.vendor} {gpu.model} ({gpu.source})"))
        if found is None or gpu.vendor != "NVIDIA":
            continue
        library, time_gemm = found
        n = 2048 if ctx.plan.quick else 4096
        calls = 4 if ctx.plan.quick else 16
        samples = [2.0 * n**3 * calls / time_gemm(gpu.index, n, calls) / 1e12
                   for _ in range(ctx.plan.repeats)]
        results.append(summarize(f"gpu.{gpu.index}.fp32", STAGE, "TFLOPS", samples,
                                 note=f"fp32 {n}x{n} matmul via {library}, {gpu.model}"))
    ctx.step("GPUs")
    if found is None:
        return results, "no GPU library (PyTorch or CuPy) installed: compute not measured"
    return results, ""


def _detect() -> tuple[tuple[GPUInfo, ...], str | None]:
    from nunet.node.gpu import detect_gpus, no_gpu_reason

    gpus = detect_gpus()
    return gpus, None if gpus else no_gpu_reason()


def _timer() -> tuple[str, Timer] | None:
    """The first usable library; importing one costs seconds, so only when a GPU is present."""
    if find_spec("torch") is not None and importlib.import_module("torch").cuda.is_available():
        return "torch", _torch_gemm
    if find_spec("cupy") is not None:
        return "cupy", _cupy_gemm
    return None


def _torch_gemm(index: int, n: int, calls: int) -> float:
    torch = importlib.import_module("torch")

    device = torch.device("cuda", index)
    a = torch.rand((n, n), device=device, dtype=torch.float32)
    b = torch.rand((n, n), device=device, dtype=torch.float32)
    torch.matmul(a, b)  # warm-up: cuBLAS picks its kernel on the first call
    torch.cuda.synchronize(device)
    return _timed_calls(lambda: torch.matmul(a, b), lambda: torch.cuda.synchronize(device), calls)


def _cupy_gemm(index: int, n: int, calls: int) -> float:
    cupy = importlib.import_module("cupy")

    with cupy.cuda.Device(index):
        a = cupy.random.rand(n, n, dtype=cupy.float32)
        b = cupy.random.rand(n, n, dtype=cupy.float32)
        cupy.matmul(a, b)
        cupy.cuda.Device(index).synchronize()
        return _timed_calls(
            lambda: cupy.matmul(a, b), lambda: cupy.cuda.Device(index).synchronize(), calls
        )


def _timed_calls(call: Callable[[], Any], sync: Callable[[], Any], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        call()
    sync()
    return time.perf_counter() - t0
