"""A small synchronous client for the node's local API (stdlib http.client: the CLI starts fast)."""

from __future__ import annotations

import http.client
import socket
from typing import Any

import msgspec

from nunet import errors
from nunet.codec import DECODE_ERRORS
from nunet.errors import NodeUnreachable, NunetError

TIMEOUT_S = 30.0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _error_classes() -> dict[str, type[NunetError]]:
    found: dict[str, type[NunetError]] = {}
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, NunetError):
            found.setdefault(value.code, value)
    return found


def _rebuild(cls: type[NunetError], message: str, field: str | None) -> NunetError:
    """The error the node raised; for one built from more than a message (EnsembleInvalid,
    IllegalTransition, ...), its nearest base class that is not, with the same code."""
    for kind in cls.__mro__:
        if not (isinstance(kind, type) and issubclass(kind, NunetError)):
            continue
        try:
            error = kind(message, path=field)
        except TypeError:
            continue
        error.code = cls.code
        return error
    return NunetError(message, path=field)


class ApiClient:
    def __init__(self, addr: str, port: int, unix_socket: str = "", timeout: float = TIMEOUT_S):
        self.addr = addr
        self.port = port
        self.unix_socket = unix_socket
        self.timeout = timeout

    @property
    def where(self) -> str:
        return self.unix_socket or f"{self.addr}:{self.port}"

    def _connection(self) -> http.client.HTTPConnection:
        if self.unix_socket:
            return _UnixConnection(self.unix_socket, self.timeout)
        return http.client.HTTPConnection(self.addr, self.port, timeout=self.timeout)

    def request(self, method: str, path: str, body: object | None = None) -> Any:
        conn = self._connection()
        payload = msgspec.json.encode(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            raise NodeUnreachable(
                f"node not running at {self.where} — start it with `nunet run`"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise NodeUnreachable(f"node at {self.where} did not answer: {exc}") from exc
        finally:
            conn.close()
        try:
            decoded = msgspec.json.decode(data) if data else None
        except DECODE_ERRORS:
            raise NodeUnreachable(
                f"{self.where} answered with something that is not a nunet node (HTTP "
                f"{response.status})"
            ) from None
        if response.status >= 400:
            err = decoded.get("error", {}) if isinstance(decoded, dict) else {}
            cls = _error_classes().get(str(err.get("code")), NunetError)
            raise _rebuild(cls, str(err.get("message", f"HTTP {response.status}")),
                           err.get("field"))
        return decoded

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: object | None = None) -> Any:
        return self.request("POST", path, body if body is not None else {})
