"""`nunet run`: one process, one uvloop event loop, every long-lived component owned by a TaskGroup.

Start-up order: identity (keystore), store, node facade, then components (API server now; network,
actors and executors in later issues), each started and awaited until it reports ready, in the
style of trio's `Nursery.start`. SIGINT/SIGTERM set a stop event; components are then cancelled
in reverse start order, the store is closed last, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nunet.config.loader import LoadedConfig
from nunet.crypto.keystore import KeyStore
from nunet.db.store import Store
from nunet.errors import ConfigError, NunetError
from nunet.node.node import Node

if TYPE_CHECKING:
    from nunet.actor.runtime import ActorSystem
    from nunet.ucan import TrustContext

NULL_EXECUTOR_ENV = "NUNET_NULL_EXECUTOR"  # "1": also offer the null executor (tests, benches)
BID_WINDOW_ENV = "NUNET_BID_WINDOW_S"  # how long a deployment's bid request collects bids

log = logging.getLogger("nunet.node")


class Component(Protocol):
    """A long-lived part of the node: runs until cancelled, calls `started()` once ready."""

    async def run(self, started: Callable[[], None]) -> None: ...


class NodePaths:
    def __init__(self, loaded: LoadedConfig) -> None:
        general = loaded.config.general
        self.user_dir = Path(general.user_dir).expanduser()
        self.work_dir = Path(general.work_dir).expanduser()
        self.data_dir = Path(general.data_dir).expanduser()
        self.key_dir = self.user_dir / "key"
        self.cap_dir = self.user_dir / "cap"
        self.db_path = self.data_dir / "db"


def node_trust(cap_dir: Path, context: str, did: str) -> TrustContext:
    """The node's capability context (`<user_dir>/cap/<context>.cap`), created on first start
    trusting only the node's own DID; `nunet cap anchor -c <context>` extends it."""
    from nunet.ucan import CapabilityStore, TrustContext

    store = CapabilityStore.open(cap_dir, context, create=True)
    trust = TrustContext(did=did, store=store)
    if did not in trust.roots:
        trust.add_root(did)
    return trust


async def start_component(tg: asyncio.TaskGroup, component: Component) -> asyncio.Task[None]:
    """Start `component` in `tg` and wait until it is ready (or has failed trying)."""
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def started() -> None:
        if not ready.done():
            ready.set_result(None)

    task = tg.create_task(component.run(started), name=type(component).__name__)
    # A component that fails before it is ready fails the TaskGroup, which cancels us here and
    # then raises the component's own error from the `async with`.
    task.add_done_callback(lambda _t: ready.cancel())
    await ready
    return task


def job_components(node: Node, actors: ActorSystem) -> tuple[list[Component], dict[str, Any]]:
    """The deployment service (this node as an orchestrator) and the provider service (this
    node running allocations) with its executors: Docker always (the provider re-checks every
    few seconds whether an engine answers, so one started later is picked up; aiodocker is
    imported on first use), the null executor only when NUNET_NULL_EXECUTOR=1 (tests and
    benchmarks: it runs nothing)."""
    from nunet.executor.docker import DockerExecutor
    from nunet.jobs.orchestration import Tuning
    from nunet.jobs.orchestrator import DeploymentService
    from nunet.jobs.provider import ProviderService

    executors: dict[str, Any] = {"docker": DockerExecutor()}
    if os.environ.get(NULL_EXECUTOR_ENV, "") not in ("", "0"):
        from nunet.executor.null import NullExecutor, behaviour_of_command

        executors["null"] = NullExecutor(behaviour_of_command)
    window = os.environ.get(BID_WINDOW_ENV, "")
    try:
        seconds = float(window) if window else Tuning().bid_window_s
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 60:
        raise ConfigError(f"must be seconds in (0, 60], got {window!r}", path=BID_WINDOW_ENV)
    tuning = Tuning(bid_window_s=seconds)
    deployments = DeploymentService(node, tuning=tuning)
    node.deployments = deployments
    return [deployments, ProviderService(actors, node, executors)], executors


async def serve(
    loaded: LoadedConfig,
    *,
    context: str,
    passphrase: str,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Node], None] | None = None,
) -> None:
    from nunet.actor.runtime import ActorSystem
    from nunet.api.server import ApiServer
    from nunet.net.stack import NetworkStack
    from nunet.node import behaviors

    t0 = time.perf_counter()
    config = loaded.config
    paths = NodePaths(loaded)
    paths.work_dir.mkdir(parents=True, exist_ok=True)
    keypair, created = KeyStore(paths.key_dir).get_or_create(context, passphrase)
    if created:
        log.info("created node key %r: %s", context, keypair.did)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    executors: dict[str, Any] = {}
    store = Store.open(paths.db_path)
    try:
        trust = node_trust(paths.cap_dir, context, keypair.did)
        stack = NetworkStack(config.p2p, keypair)
        node = Node(
            config=config, keypair=keypair, store=store, context=context,
            work_dir=paths.work_dir, network=stack, trust=trust,
        )
        stack.serve_benchmark(node.benchmark)
        actors = ActorSystem(stack.network, keypair, trust, gossip=stack.gossip)
        node.actors = actors
        behaviors.register(actors.root, node)
        jobs, executors = job_components(node, actors)
        api = ApiServer(node, config.rest.addr, config.rest.port, config.rest.unix_socket)
        async with asyncio.TaskGroup() as tg:
            components = [*stack.components(), actors, *jobs, api]
            tasks = [await start_component(tg, c) for c in components]
            log.info(
                "node ready in %.3f s: did=%s p2p=%s api=%s (config: %s)",
                time.perf_counter() - t0, node.did, ", ".join(stack.advertised()) or "-",
                ", ".join(api.bound), loaded.source or "embedded defaults",
            )
            if on_ready is not None:
                on_ready(node)
            await stop.wait()
            log.info("stopping")
            for task in reversed(tasks):
                task.cancel()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for executor in executors.values():
            with contextlib.suppress(NunetError):
                await executor.close()
        store.close()
    log.info("stopped cleanly")


def run_forever(loaded: LoadedConfig, *, context: str, passphrase: str) -> None:
    import uvloop

    uvloop.run(serve(loaded, context=context, passphrase=passphrase))
