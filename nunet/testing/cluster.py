"""Real `nunet run` processes on loopback, each with its own home, ports and passphrase.

Used by the e2e tests, `make demo` and the start-up benchmark, so all three exercise the very
same binary path a user runs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec

from nunet.cli.client import ApiClient
from nunet.errors import NunetError

READY_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CliResult(msgspec.Struct):
    code: int
    stdout: str
    stderr: str

    def json(self) -> object:
        return msgspec.json.decode(self.stdout)


class NodeProcess:
    """One node. With `use_socket`, the test drives it through a unix socket, which works across
    network namespaces (a node started with an `ip netns exec` prefix is unreachable on TCP)."""

    def __init__(
        self, root: Path, name: str = "node", passphrase: str = "nunet-test",
        *, use_socket: bool = False,
    ) -> None:
        self.name = name
        self.home = root / name
        self.rest_port = free_port()
        self.passphrase = passphrase
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.home / "node.log"
        self.extra_env: dict[str, str] = {}
        # An ephemeral loopback port unless told otherwise (a netns host listens on its own IP).
        self.listen = "/ip4/127.0.0.1/udp/0/quic-v1"
        # e.g. ["ip", "netns", "exec", NAME] to run the node inside a network namespace
        self.prefix: list[str] = []
        # Short and outside the test's tmp dir: unix socket paths are limited to 107 bytes.
        self.socket = (
            f"{tempfile.gettempdir()}/nunet-{secrets.token_hex(4)}.sock" if use_socket else ""
        )

    @property
    def dir_flags(self) -> list[str]:
        return [
            "--user-dir", str(self.home / "user"),
            "--work-dir", str(self.home / "work"),
            "--data-dir", str(self.home / "work" / "data"),
            "--rest-port", str(self.rest_port),
        ]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DMS_")}
        env["DMS_PASSPHRASE"] = self.passphrase
        # Keep the nodes off any dms_config.json lying in the caller's directories.
        env["XDG_CONFIG_HOME"] = str(self.home / "xdg")
        env["HOME"] = str(self.home)
        env["DMS_P2P_LISTEN_ADDRESS"] = self.listen
        if self.socket:
            env["DMS_REST_UNIX_SOCKET"] = self.socket
        env.update(self.extra_env)
        return env

    def start(self, *extra: str) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "nunet", "run", *self.dir_flags, *extra],
            stdout=log, stderr=subprocess.STDOUT, env=self.env(), cwd=self.home,
        )
        log.close()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Seconds from now until /health answers; raises if the process dies first."""
        t0 = time.perf_counter()
        api = ApiClient("127.0.0.1", self.rest_port, self.socket, timeout=1.0)
        while time.perf_counter() - t0 < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(NunetError):
                api.get("/health")
                return time.perf_counter() - t0
            time.sleep(0.005)
        raise TimeoutError(f"{self.name} not ready after {timeout} s:\n{self.log()}")

    def cli(self, *args: str, input_text: str | None = None, timeout: float = 60) -> CliResult:
        """Run `nunet ARGS --user-dir ... --rest-port ...` against this node."""
        self.home.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "nunet", *args, *self._flags_for(args)],
            capture_output=True, text=True, env=self.env(), cwd=self.home, timeout=timeout,
            input=input_text,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    def _flags_for(self, args: Sequence[str]) -> list[str]:
        # Groups (`key`, `peers`...) take the flags on their subcommand, which is last here.
        return [] if any(a in ("-h", "--help") for a in args) else self.dir_flags

    def wait_exit(self, timeout: float = READY_TIMEOUT_S) -> int:
        """The exit code of a node expected to stop by itself (e.g. refusing to start)."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
        self.proc = None
        if self.socket:  # a killed node cannot remove its own socket file
            Path(self.socket).unlink(missing_ok=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""


@contextlib.contextmanager
def running_node(root: Path, name: str = "node", *extra: str) -> Iterator[NodeProcess]:
    node = NodeProcess(root, name)
    node.start(*extra)
    try:
        node.wait_ready()
        yield node
    finally:
        node.kill()
