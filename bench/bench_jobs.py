"""Deployments (issue 5): a job end to end on real node processes against `docker run --rm`, and
deployments per second with the null executor on ten real nodes.

Every node is a real `nunet run` process on loopback QUIC (`nunet.testing.cluster.NodeProcess`),
made a member of one organisation with the real `nunet cap` commands (`nunet.testing.org`),
providers onboarded with `nunet onboard`, as in `tests/e2e/test_jobs.py`. The bench process
drives the orchestrator ("alice", not onboarded: it only orchestrates) through its local REST API
(`ApiClient`, what `nunet deploy` uses, posting the ensemble as JSON data parsed once by the
client, as `nunet deploy` does) unless a metric says CLI. Node processes are not pinned to CPUs:
they share the machine's cores with each other and with the bench process. Every node runs with
NUNET_BID_WINDOW_S=`BID_WINDOW_S` (0.2 s).

- `job.e2e.busybox` (s): `examples/hello.yaml` (busybox `echo "Hello from nunet!"`) pinned to the
  provider bob (`peer:` its DID, so the provider is invoked directly, no bid window): from the
  POST /api/v1/deployments to the deployment Completed *and* its log line read back from
  alice's API (status polled every 10 ms). Baseline `docker-run-cli`: `docker run --rm` of the
  same local image and command, output captured; interleaved rounds, medians. Goal: ratio <= 1.2
  (for context, Bacalhau publishes ~1.3 s for a single job).
- `job.e2e.busybox.unpinned` (s): the same without `peer:`: the bid request is broadcast and
  collects bids for the whole bid window (`NUNET_BID_WINDOW_S`, `BID_WINDOW_S` here), which is a
  floor of this figure.
- `job.e2e.busybox.cli` (s): what a user types: `nunet deploy -f hello.yaml --wait` then
  `nunet logs DEP --allocation hello`, two CLI processes (start-up ~0.25 s each, and `--wait`
  polls every 0.25 s), pinned.
- `job.e2e.busybox_vs_executor` (s): the pinned figure against `executor-direct`: the same task
  through `DockerExecutor` in the bench process (create, start, wait, logs, remove: what
  `executor.start` measures): what orchestration adds on top of running the container.
- `job.e2e.null` (s): the pinned deployment with the null executor (`echo`), no container: the
  protocol's own latency (bid, commit, allocate, start, reports, log fetch).
- `orchestrator.deployments_per_s` (deployments/s): 1 orchestrator + 9 provider processes (ten
  real nodes, NUNET_NULL_EXECUTOR=1); `THROUGHPUT_N` small unpinned null tasks (`echo`, 0.01 core,
  8 MiB) posted at once from 4 client threads, timed from the first POST until every one is
  Completed (counted with the status filter of GET /api/v1/deployments, polled every 50 ms; the
  previous burst's deployments are deleted before, untimed, so the count stays cheap). No baseline
  runs here: Bacalhau's devstack publishes 0.75 jobs/s. Goal >= 50/s.
- `orchestrator.deployments_per_s.cpu_ms`, `.orchestrator_cpu_ms` (ms): CPU time (user + system,
  from /proc) every node process, and alice alone, spent during a burst, per deployment: steadier
  than the rate on a shared machine, and 2 cores / this = the rate this machine could reach.
- `orchestrator.deployments_per_s.pinned` (and its `.cpu_ms`, `.orchestrator_cpu_ms`): the same,
  each deployment pinned to one of the nine providers in turn (no broadcast: one bid request per
  deployment instead of nine). Unpinned and pinned bursts alternate.

Needs a Docker engine for the `job.e2e.busybox*` metrics (skipped with a message when none answers);
the null metrics need none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from bench._harness import BenchContext, Metric, alone, compare

METRICS = (
    "job.e2e.busybox",
    "job.e2e.busybox.unpinned",
    "job.e2e.busybox.cli",
    "job.e2e.busybox_vs_executor",
    "job.e2e.null",
    "orchestrator.deployments_per_s",
    "orchestrator.deployments_per_s.cpu_ms",
    "orchestrator.deployments_per_s.orchestrator_cpu_ms",
    "orchestrator.deployments_per_s.pinned",
    "orchestrator.deployments_per_s.pinned.cpu_ms",
    "orchestrator.deployments_per_s.pinned.orchestrator_cpu_ms",
)

E2E_ROUNDS = 20
THROUGHPUT_ROUNDS = 5
THROUGHPUT_N = 100  # deployments per throughput sample
THROUGHPUT_PROVIDERS = 9
SUBMIT_THREADS = 4
BID_WINDOW_S = 0.2  # NUNET_BID_WINDOW_S of every node here
POLL_S = 0.01  # one deployment's status
BURST_POLL_S = 0.05  # the Completed count during a burst
DEPLOY_TIMEOUT_S = 120.0
IDLE_S = 3.0  # the idle network's CPU use is measured (logged) over this long
GREETING = "Hello from nunet!"
API = "/api/v1/deployments"
ROOT = Path(__file__).resolve().parents[1]


def hello_yaml(image: str, peer: str | None) -> str:
    return f"""version: "V1"
allocations:
  hello:
    type: task
    executor: docker
    resources: {{cpu: {{cores: 0.5}}, ram: {{size: 0.25}}, disk: {{size: 0.5}}}}
    execution: {{type: docker, image: {image}, cmd: ["echo", "{GREETING}"]}}
    failure_recovery: stay_down
nodes:
  node1:
    allocations: [hello]
    failure_recovery: stay_down
""" + (f"    peer: {peer}\n" if peer else "")


def null_yaml(peer: str | None, name: str = "hello") -> str:
    """A tiny null-executor task: 1/100 core, 8 MiB, so that a provider holds many at once."""
    return f"""version: "V1"
allocations:
  {name}:
    type: task
    executor: null
    resources: {{cpu: {{cores: 0.01}}, ram: {{size: 8MiB}}, disk: {{size: 8MiB}}}}
    execution: {{type: null, cmd: ["echo", "{GREETING}"]}}
nodes:
  node1:
    allocations: [{name}]
""" + (f"    peer: {peer}\n" if peer else "")


# --- a network of real nodes ----------------------------------------------------------------------


class Network:
    """alice (organisation holder, user and orchestrator) and `providers` onboarded providers,
    every one a `nunet run` process on loopback, all members of one organisation."""

    def __init__(self, root: Path, providers: int, *, null: bool, log: Callable[[str], None]):
        from nunet.testing.cluster import NodeProcess

        self.log = log
        names = ["alice", *(f"p{i}" for i in range(1, providers + 1))]
        self.nodes = [NodeProcess(root, name) for name in names]
        for node in self.nodes:
            node.extra_env["NUNET_BID_WINDOW_S"] = str(BID_WINDOW_S)
            if null:
                node.extra_env["NUNET_NULL_EXECUTOR"] = "1"
        self.dids: list[str] = []

    @property
    def alice(self) -> Any:
        return self.nodes[0]

    @property
    def providers(self) -> list[Any]:
        return self.nodes[1:]

    def start(self) -> None:
        from nunet.testing.org import organisation

        t0 = time.perf_counter()
        alice = self.alice
        alice.start()
        alice.wait_ready()
        boot = _cli_json(alice, "peers", "self")["addresses"][0]
        for node in self.providers:
            node.extra_env["BOOTSTRAP_PEERS"] = boot
            node.start()
        for node in self.providers:
            node.wait_ready(timeout=60)
        self.log(f"bench: {len(self.nodes)} nodes up in {time.perf_counter() - t0:.1f} s")
        members = organisation(self.nodes)
        self.dids = [m.node_did for m in members]
        # Onboarding takes 10-90% of the machine's RAM; each node sees the whole machine.
        ram = round(_cli_json(self.alice, "resources", "machine")["ram_bytes"] * 0.15 / 2**30, 2)
        for node in self.providers:
            _cli_ok(node, "onboard", "--cpu", "1", "--ram", str(ram), "--disk", "2", "--no-bench")
        self.log(f"bench: organisation and onboarding done at {time.perf_counter() - t0:.1f} s")

    def pids(self) -> list[int]:
        """The node processes' ids, alice first."""
        return [node.proc.pid for node in self.nodes if node.proc is not None]

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def api(self) -> Any:
        from nunet.cli.client import ApiClient

        return ApiClient("127.0.0.1", self.alice.rest_port, timeout=60)


def _cli_ok(node: Any, *args: str) -> Any:
    result = node.cli(*args, timeout=120)
    if result.code != 0:
        raise RuntimeError(f"nunet {' '.join(args)} on {node.name}: {result.stderr}\n{node.log()}")
    return result


def _cli_json(node: Any, *args: str) -> dict[str, Any]:
    data = _cli_ok(node, *args, "--json").json()
    assert isinstance(data, dict)
    return data


@contextlib.contextmanager
def network(providers: int, *, null: bool, log: Callable[[str], None]) -> Iterator[Network]:
    root = Path(tempfile.mkdtemp(prefix="nunet-bench-jobs-"))
    net = Network(root, providers, null=null, log=log)
    try:
        net.start()
        yield net
    finally:
        net.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- one deployment through the API ---------------------------------------------------------------


def deploy_and_wait(api: Any, body: dict[str, Any], *, timeout: float = 60.0) -> str:
    """POST the deployment, poll until it ended; Completed or RuntimeError. Returns the id."""
    dep = api.post(API, body)["id"]
    path = f"{API}/{dep}"
    deadline = time.perf_counter() + timeout + 10
    while True:
        state = api.get(path)
        if state["status"] == "Completed":
            return str(dep)
        if state["status"] == "Failed":
            raise RuntimeError(f"deployment {dep} failed: {state['reason']}")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"deployment {dep} still {state['status']}: {state['reason']}")
        time.sleep(POLL_S)


def read_log(api: Any, dep: str, allocation: str = "hello", *, timeout: float = 10.0) -> str:
    """The allocation's whole log once it holds the greeting (the orchestrator may still be
    fetching it from the provider right after Completed)."""
    import base64

    deadline = time.perf_counter() + timeout
    while True:
        chunk = api.get(f"{API}/{dep}/logs?allocation={allocation}")
        text = base64.b64decode(chunk["data"]).decode(errors="replace")
        if GREETING in text:
            return text
        if time.perf_counter() > deadline:
            raise RuntimeError(f"no greeting in the log of {dep}: {text!r}")
        time.sleep(POLL_S)


@functools.lru_cache(maxsize=64)
def _body_json(text: str) -> bytes:
    from nunet.jobs.spec import parse_ensemble

    return parse_ensemble(text).to_json()


def _body(text: str) -> dict[str, Any]:
    """The POST body `nunet deploy` sends: the ensemble as JSON data (parsed by the client)."""
    return {"ensemble": msgspec.json.decode(_body_json(text)), "timeout": DEPLOY_TIMEOUT_S}


def timed_deploy(api: Any, text: str) -> float:
    body = _body(text)
    t0 = time.perf_counter()
    dep = deploy_and_wait(api, body)
    read_log(api, dep)
    return time.perf_counter() - t0


# --- job.e2e.* -----------------------------------------------------------------------------------


def _docker_answers() -> str | None:
    """None when a Docker engine answers, else why not."""
    try:
        done = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                              capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"docker: {exc}"
    return None if done.returncode == 0 else f"docker: {done.stderr.strip() or done.returncode}"


def run_e2e(ctx: BenchContext) -> Iterator[Metric]:
    docker_wanted = any(ctx.wants(n) for n in METRICS if n.startswith("job.e2e.busybox"))
    why = _docker_answers() if docker_wanted else None
    if why is not None:
        ctx.log(f"bench: job.e2e.busybox* skipped: no Docker engine answers ({why})")
    null_wanted = ctx.wants("job.e2e.null")
    if why is not None and not null_wanted:
        return
    rounds = max(E2E_ROUNDS, ctx.repeats) if ctx.repeats >= 5 else ctx.repeats
    rctx = dataclasses.replace(ctx, repeats=rounds)
    image = ""
    if why is None:
        from nunet.testing.images import ensure_busybox_image

        image = ensure_busybox_image()
    with network(1, null=null_wanted, log=ctx.log) as net:
        api = net.api()
        bob = net.dids[1]
        pinned, unpinned = hello_yaml(image, bob), hello_yaml(image, None)
        if why is None:
            yield from _e2e_docker(ctx, rctx, net, api, image, pinned, unpinned)
        if null_wanted:
            text = null_yaml(bob)
            timed_deploy(api, text)  # warm-up
            samples = rctx.repeat(lambda: timed_deploy(api, text))
            yield alone("job.e2e.null", "s", samples, "lower")


def _docker_run(image: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(["docker", "run", "--rm", image, "echo", GREETING],
                          capture_output=True, check=True, timeout=120)
    elapsed = time.perf_counter() - t0
    if done.stdout.decode().strip() != GREETING:
        raise RuntimeError(f"docker run printed {done.stdout!r}")
    return elapsed


def _e2e_docker(ctx: BenchContext, rctx: BenchContext, net: Network, api: Any, image: str,
                pinned: str, unpinned: str) -> Iterator[Metric]:
    candidates: dict[str, Callable[[], float]] = {
        "pinned": lambda: timed_deploy(api, pinned),
        "docker": lambda: _docker_run(image),
    }
    if ctx.wants("job.e2e.busybox.unpinned"):
        candidates["unpinned"] = lambda: timed_deploy(api, unpinned)
    if ctx.wants("job.e2e.busybox.cli"):
        file = net.alice.home / "hello.yaml"
        file.write_text(pinned)
        candidates["cli"] = lambda: _cli_deploy(net.alice, file)
    executor = None
    if ctx.wants("job.e2e.busybox_vs_executor"):
        executor = _DirectExecutor(image)
        candidates["executor"] = executor.cycle
    try:
        s = rctx.interleave(candidates)
    finally:
        if executor is not None:
            executor.close()
    yield compare("job.e2e.busybox", "s", s["pinned"], "docker-run-cli", s["docker"],
                  better="lower")
    if "unpinned" in s:
        yield compare("job.e2e.busybox.unpinned", "s", s["unpinned"], "docker-run-cli",
                      s["docker"], better="lower")
    if "cli" in s:
        yield compare("job.e2e.busybox.cli", "s", s["cli"], "docker-run-cli", s["docker"],
                      better="lower")
    if "executor" in s:
        yield compare("job.e2e.busybox_vs_executor", "s", s["pinned"], "executor-direct",
                      s["executor"], better="lower")


def _cli_deploy(alice: Any, file: Path) -> float:
    t0 = time.perf_counter()
    result = alice.cli("deploy", "-f", str(file), "--wait", "-t", "60", timeout=120)
    if result.code != 0:
        raise RuntimeError(f"nunet deploy: {result.stderr}\n{alice.log()}")
    dep = result.stdout.splitlines()[0].strip()
    logs = alice.cli("logs", dep, "--allocation", "hello", timeout=60)
    elapsed = time.perf_counter() - t0
    if GREETING not in logs.stdout:
        raise RuntimeError(f"nunet logs {dep}: {logs.stdout!r} {logs.stderr}")
    return elapsed


class _DirectExecutor:
    """The same container through `DockerExecutor` in this process (bench_executor's cycle)."""

    def __init__(self, image: str) -> None:
        import asyncio

        from nunet.executor.docker import DockerExecutor

        self.image = image
        self.runner = asyncio.Runner()
        self.executor = DockerExecutor()

    async def _cycle(self) -> None:
        import uuid

        from nunet.executor.api import ExecutionSpec

        spec = ExecutionSpec(execution_id=f"bench-{uuid.uuid4().hex[:12]}", image=self.image,
                             deployment_id="bench", cmd=("echo", GREETING))
        eid = await self.executor.start(spec)
        try:
            result = await self.executor.wait(eid)
            lines = [line.data async for line in self.executor.logs(eid, follow=False)]
        finally:
            await self.executor.remove(eid)
        if result.status != "completed" or lines != [GREETING.encode() + b"\n"]:
            raise RuntimeError(f"bench task went wrong: {result} {lines}")

    def cycle(self) -> float:
        t0 = time.perf_counter()
        self.runner.run(self._cycle())
        return time.perf_counter() - t0

    def close(self) -> None:
        self.runner.run(self.executor.close())
        self.runner.close()


# --- jobs.throughput.* ----------------------------------------------------------------------------


def _count(api: Any, status: str) -> int:
    return int(api.get(f"{API}?status={status}&limit=1")["total"])


def _forget_finished(api: Any) -> None:
    """DELETE every Completed deployment, so that the status counts stay cheap (the list is
    filtered by decoding every record) and each burst starts from an empty list."""
    while True:
        page = api.get(f"{API}?status=Completed&limit=1000")
        for item in page["items"]:
            api.request("DELETE", f"{API}/{item['id']}")
        if not page["more"]:
            return


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Burst(msgspec.Struct, frozen=True):
    rate: float  # deployments/s
    cpu_ms: float  # CPU time of every node process per deployment
    orchestrator_cpu_ms: float  # of alice alone


def burst(api: Any, texts: Sequence[str], pids: Sequence[int] = (), *,
          timeout: float = 300.0) -> Burst:
    """Post every ensemble (SUBMIT_THREADS threads), wait until all are Completed; deployments/s
    from the first POST, and the CPU the processes `pids` (alice first) spent meanwhile."""
    bodies = [_body(text) for text in texts]
    _forget_finished(api)
    failed_before = _count(api, "Failed")
    errors: list[BaseException] = []
    queue = iter(bodies)
    lock = threading.Lock()

    def submit() -> None:
        while True:
            with lock:
                body = next(queue, None)
            if body is None:
                return
            try:
                api.post(API, body)
            except BaseException as exc:  # reported below, in the main thread
                errors.append(exc)
                return

    threads = [threading.Thread(target=submit) for _ in range(SUBMIT_THREADS)]
    cpu0 = [cpu_seconds(pid) for pid in pids]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"submitting failed: {errors[0]!r}")
    deadline = t0 + timeout
    while True:
        done = _count(api, "Completed")
        if done >= len(texts):
            elapsed = time.perf_counter() - t0
            cpu = [cpu_seconds(pid) - c for pid, c in zip(pids, cpu0, strict=True)]
            n = len(texts)
            return Burst(n / elapsed, sum(cpu) / n * 1e3, (cpu[0] if cpu else 0.0) / n * 1e3)
        failed = _count(api, "Failed") - failed_before
        if failed:
            raise RuntimeError(f"{failed} deployments failed")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"only {done} of {len(texts)} Completed after {timeout} s")
        time.sleep(BURST_POLL_S)


def run_throughput(ctx: BenchContext) -> Iterator[Metric]:
    rounds = max(3, min(ctx.repeats, THROUGHPUT_ROUNDS))
    n = THROUGHPUT_N if ctx.repeats >= 5 else THROUGHPUT_N // 2
    wanted = {kind: any(ctx.wants(f"orchestrator.deployments_per_s{suffix}{extra}")
                        for extra in ("", ".cpu_ms", ".orchestrator_cpu_ms"))
              for kind, suffix in (("unpinned", ""), ("pinned", ".pinned"))}
    samples: dict[str, list[Burst]] = {"unpinned": [], "pinned": []}
    with network(THROUGHPUT_PROVIDERS, null=True, log=ctx.log) as net:
        api = net.api()
        providers = net.dids[1:]
        pids = net.pids()
        # Warm-up: every provider answers a pinned deployment, then a small unpinned burst.
        burst(api, [null_yaml(p) for p in providers])
        burst(api, [null_yaml(None)] * 10)
        cpu0 = [cpu_seconds(pid) for pid in pids]
        time.sleep(IDLE_S)
        idle = sum(cpu_seconds(p) - c for p, c in zip(pids, cpu0, strict=True)) / IDLE_S
        ctx.log(f"bench: the idle network uses {idle * 1e3:.0f} ms of CPU per second")
        cycle = itertools.cycle(providers)
        for _ in range(rounds):  # unpinned and pinned bursts alternate
            for kind in ("unpinned", "pinned"):
                if wanted[kind]:
                    texts = [null_yaml(next(cycle) if kind == "pinned" else None)
                             for _ in range(n)]
                    b = burst(api, texts, pids)
                    samples[kind].append(b)
                    ctx.log(f"bench: {kind} {b.rate:.1f}/s, CPU {b.cpu_ms:.1f} ms per "
                            f"deployment (orchestrator {b.orchestrator_cpu_ms:.1f} ms)")
    for kind, suffix in (("unpinned", ""), ("pinned", ".pinned")):
        got = samples[kind]
        if not got:
            continue
        name = f"orchestrator.deployments_per_s{suffix}"
        yield alone(name, "deployments/s", [b.rate for b in got], "higher")
        yield alone(f"{name}.cpu_ms", "ms", [b.cpu_ms for b in got], "lower")
        yield alone(f"{name}.orchestrator_cpu_ms", "ms", [b.orchestrator_cpu_ms for b in got],
                    "lower")


def run(ctx: BenchContext) -> Iterator[Metric]:
    if any(ctx.wants(n) for n in METRICS if n.startswith("job.e2e")):
        yield from run_e2e(ctx)
    if any(ctx.wants(n) for n in METRICS if n.startswith("orchestrator.")):
        yield from run_throughput(ctx)
