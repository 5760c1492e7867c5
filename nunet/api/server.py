"""The local REST API (aiohttp): a thin adapter from HTTP to the Node facade.

Every reply is JSON. Errors are `{"error": {"code", "message", "field"?}}` with the status of the
NunetError; anything unexpected is logged with its traceback and answered with a plain 500, so a
caller never sees a traceback.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from nunet.api.guard import refusal
from nunet.api.openapi import OPENAPI_PATH, build_openapi
from nunet.api.routes import ROUTES, ErrorBody, ErrorReply, Route
from nunet.codec import DECODE_ERRORS
from nunet.errors import BrokenResourceError, ForbiddenCaller, NotFound, NunetError, ValidationError
from nunet.node.node import Node

log = logging.getLogger("nunet.api")

MAX_BODY_BYTES = 2 << 20  # an envelope's 1 MiB payload is ~1.4 MiB as base64 JSON
_encoder = msgspec.json.Encoder()
NODE_KEY: web.AppKey[Node] = web.AppKey("node", Node)


def _json(value: object, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(value), status=status, content_type="application/json")


def error_response(exc: NunetError) -> web.Response:
    body = ErrorReply(ErrorBody(code=exc.code, message=exc.message, field=exc.path))
    return _json(body, exc.http_status)


def _peer_ip(request: web.Request) -> str | None:
    transport = request.transport
    if transport is None:
        return ""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return None  # unix socket: peername is '' or None


@web.middleware
async def guard_and_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    why = refusal(_peer_ip(request), request.headers.get("Host"), request.headers.get("Origin"))
    if why is not None:
        log.warning("refused %s %s: %s", request.method, request.path, why)
        return error_response(ForbiddenCaller(why))
    try:
        return await handler(request)
    except NunetError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status, "http_error"
        )
        reply = ErrorReply(ErrorBody(code=code, message=f"{exc.reason}: {request.path}"))
        return _json(reply, exc.status)
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _json(ErrorReply(ErrorBody(code="internal", message="internal error")), 500)


async def _decode_body(request: web.Request, body_type: type) -> object:
    raw = await request.read()
    if not raw.strip():
        raw = b"{}"
    try:
        return msgspec.json.decode(raw, type=body_type)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$")
        path = where.rstrip("`").lstrip(".") or None
        raise ValidationError(message, path=path) from None
    except DECODE_ERRORS as exc:
        raise ValidationError(f"request body is not valid JSON: {exc}") from None


def _make_handler(route: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        node = request.app[NODE_KEY]
        params = {**request.query, **request.match_info}  # the path wins over the query
        for name, allowed in (route.path_params or {}).items():
            if params.get(name) not in allowed:
                raise NotFound(
                    f"unknown {name} {params.get(name)!r}; expected one of {', '.join(allowed)}",
                    path=name,
                )
        body = await _decode_body(request, route.body) if route.body is not None else None
        result = route.handler(node, body, params)
        if inspect.isawaitable(result):
            result = await result
        return _json(result)

    return handle


def build_app(node: Node) -> web.Application:
    app = web.Application(middlewares=[guard_and_errors], client_max_size=MAX_BODY_BYTES)
    app[NODE_KEY] = node
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _make_handler(route))
    openapi: list[bytes] = []  # built on first request: schema generation costs start-up time

    async def serve_openapi(_request: web.Request) -> web.Response:
        if not openapi:
            openapi.append(_encoder.encode(build_openapi()))
        return web.Response(body=openapi[0], content_type="application/json")

    app.router.add_get(OPENAPI_PATH, serve_openapi)
    return app


def _prepare_socket_path(path: str) -> None:
    """Parent directory present, no stale socket from a killed node in the way."""
    sock = Path(path)
    sock.parent.mkdir(parents=True, exist_ok=True)
    sock.unlink(missing_ok=True)


class ApiServer:
    """Runs the app on TCP (and optionally a 0600 unix socket) until cancelled."""

    def __init__(self, node: Node, addr: str, port: int, unix_socket: str = "") -> None:
        self.node = node
        self.addr = addr
        self.port = port
        self.unix_socket = unix_socket
        self.bound: list[str] = []

    async def run(self, started: Callable[[], None]) -> None:
        import asyncio

        runner = web.AppRunner(
            build_app(self.node), access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await runner.setup()
        try:
            sites: list[Any] = [web.TCPSite(runner, self.addr, self.port, reuse_address=True)]
            if self.unix_socket:
                _prepare_socket_path(self.unix_socket)
                sites.append(web.UnixSite(runner, self.unix_socket))
            for site in sites:
                # The socket file must never exist with wider permissions, not even briefly.
                old_umask = os.umask(0o177)
                try:
                    await site.start()
                except OSError as exc:
                    raise BrokenResourceError(
                        f"cannot listen on {site.name}: {exc.strerror or exc}"
                    ) from None
                finally:
                    os.umask(old_umask)
                self.bound.append(site.name)
            started()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
            if self.unix_socket:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.unix_socket)
