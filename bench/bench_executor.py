"""Docker executor overhead (issue 5): one short task through `DockerExecutor` (create, start,
wait, read its logs, remove) against `docker run --rm` of the same local image doing the same
work, interleaved, medians of 20 rounds. Needs a Docker engine; the busybox test image is built
locally when missing."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import time
import uuid
from collections.abc import Iterator

from bench._harness import BenchContext, Metric, compare

METRICS = ("executor.start", "executor.start.network_none")
ROUNDS = 20


def run(ctx: BenchContext) -> Iterator[Metric]:
    from nunet.executor.api import ExecutionSpec, NetworkMode
    from nunet.executor.docker import DockerExecutor
    from nunet.testing.images import ensure_busybox_image

    image = ensure_busybox_image()
    # A smoke run (--quick) keeps its 3 rounds; a real one quotes medians of at least 20.
    rounds = max(ROUNDS, ctx.repeats) if ctx.repeats >= 5 else ctx.repeats
    rctx = dataclasses.replace(ctx, repeats=rounds)

    with asyncio.Runner() as runner:
        executor = DockerExecutor()
        availability = runner.run(executor.available())
        if not availability.ok:
            raise RuntimeError(f"no Docker engine: {availability.reason}")

        async def cycle(network: NetworkMode) -> None:
            spec = ExecutionSpec(
                execution_id=f"bench-{uuid.uuid4().hex[:12]}",
                image=image,
                deployment_id="bench",
                cmd=("echo", "hello"),
                network_mode=network,
            )
            eid = await executor.start(spec)
            try:
                result = await executor.wait(eid)
                lines = [line.data async for line in executor.logs(eid, follow=False)]
            finally:
                await executor.remove(eid)
            if result.status != "completed" or lines != [b"hello\n"]:
                raise RuntimeError(f"bench task went wrong: {result} {lines}")

        def ours(network: NetworkMode) -> float:
            t0 = time.perf_counter()
            runner.run(cycle(network))
            return time.perf_counter() - t0

        def cli(*extra: str) -> float:
            t0 = time.perf_counter()
            done = subprocess.run(
                ["docker", "run", "--rm", *extra, image, "echo", "hello"],
                capture_output=True,
                check=True,
            )
            elapsed = time.perf_counter() - t0
            if done.stdout != b"hello\n":
                raise RuntimeError(f"docker run printed {done.stdout!r}")
            return elapsed

        try:
            if ctx.wants("executor.start"):
                s = rctx.interleave({"ours": lambda: ours("bridge"), "cli": cli})
                yield compare(
                    "executor.start", "s", s["ours"], "docker-run-cli", s["cli"], better="lower"
                )
            if ctx.wants("executor.start.network_none"):
                s = rctx.interleave(
                    {"ours": lambda: ours("none"), "cli": lambda: cli("--network", "none")}
                )
                yield compare(
                    "executor.start.network_none",
                    "s",
                    s["ours"],
                    "docker-run-cli",
                    s["cli"],
                    better="lower",
                )
        finally:
            runner.run(executor.close())
