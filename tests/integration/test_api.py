"""The local API over real HTTP on loopback, backed by a real Node on a real rocksdict store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from nunet.api.routes import ROUTES
from nunet.api.server import OPENAPI_PATH, build_app, guard_and_errors
from nunet.config.loader import load_config
from nunet.crypto.keys import KeyPair
from nunet.db.store import Store
from nunet.node.node import Node

GIB = 1 << 30


@pytest.fixture
def node(tmp_path: Path) -> Any:
    store = Store.open(tmp_path / "db")
    config = load_config(None, env={}).config
    yield Node(
        config=config, keypair=KeyPair.generate(), store=store, context="dms", work_dir=tmp_path
    )
    store.close()


@pytest.fixture
async def client(node: Node) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(build_app(node), host="127.0.0.1")) as c:
        yield c


async def test_health_and_handle(client: TestClient[Any, Any], node: Node) -> None:
    reply = await client.get("/health")
    assert reply.status == 200
    assert (await reply.json())["did"] == node.did
    handle = await (await client.get("/api/v1/actor/handle")).json()
    assert handle == {
        "id": node.did, "did": node.did,
        "address": {"host_id": node.did, "inbox_address": "root"},
    }


async def test_openapi_matches_routes(client: TestClient[Any, Any]) -> None:
    doc = await (await client.get(OPENAPI_PATH)).json()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = {(r.method, r.path) for r in ROUTES} | {("GET", OPENAPI_PATH)}
    assert documented == served
    assert doc["openapi"].startswith("3.")
    onboard = doc["paths"]["/api/v1/onboarding/onboard"]["post"]
    ref = onboard["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]


async def test_onboard_flow(client: TestClient[Any, Any], node: Node) -> None:
    machine = node.machine()
    body = {"cpu": 1, "ram": round(machine.ram_bytes * 0.2 / GIB, 2), "disk": 0.5}
    reply = await client.post("/api/v1/onboarding/onboard", json=body)
    assert reply.status == 200, await reply.text()
    meta = await reply.json()
    assert meta["onboarded"]["cpu_cores"] == 1
    status = await (await client.get("/api/v1/onboarding/status")).json()
    assert status["onboarded"] is True
    free = await (await client.get("/api/v1/resources/free")).json()
    assert free["disk_bytes"] == GIB // 2
    again = await client.post("/api/v1/onboarding/onboard", json=body)
    assert again.status == 409
    assert (await again.json())["error"]["code"] == "already_onboarded"
    off = await client.post("/api/v1/onboarding/offboard", json={})
    assert off.status == 200
    off_again = await client.post("/api/v1/onboarding/offboard", json={})
    assert off_again.status == 409
    assert (await off_again.json())["error"]["code"] == "not_onboarded"


async def test_over_limit_onboarding_names_the_field(client: TestClient[Any, Any]) -> None:
    reply = await client.post(
        "/api/v1/onboarding/onboard", json={"cpu": 100000, "ram": 1, "disk": 1}
    )
    assert reply.status == 400
    err = (await reply.json())["error"]
    assert err["field"] == "cpu"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cpu": "two", "ram": 1, "disk": 1}, "cpu"),
        ({"ram": 1, "disk": 1}, None),
        ({"cpu": 1, "ram": 1, "disk": 1, "colour": "red"}, None),
    ],
)
async def test_bad_bodies(client: TestClient[Any, Any], body: object, field: str | None) -> None:
    reply = await client.post("/api/v1/onboarding/onboard", json=body)
    assert reply.status == 400
    err = (await reply.json())["error"]
    assert err["code"] == "validation_error"
    if field:
        assert err["field"] == field


async def test_garbage_json(client: TestClient[Any, Any]) -> None:
    reply = await client.post("/api/v1/onboarding/onboard", data=b"{not json",
                              headers={"Content-Type": "application/json"})
    assert reply.status == 400
    assert "not valid JSON" in (await reply.json())["error"]["message"]


async def test_unknown_route_and_kind(client: TestClient[Any, Any]) -> None:
    reply = await client.get("/api/v1/nope")
    assert reply.status == 404
    assert (await reply.json())["error"]["code"] == "not_found"
    reply = await client.get("/api/v1/resources/bogus")
    assert reply.status == 404
    assert (await reply.json())["error"]["field"] == "kind"
    reply = await client.delete("/health")
    assert reply.status == 405


async def test_rebinding_host_refused(client: TestClient[Any, Any]) -> None:
    reply = await client.get("/health", headers={"Host": "rebound.example:9999"})
    assert reply.status == 403
    assert (await reply.json())["error"]["code"] == "forbidden"


async def test_foreign_origin_refused_and_no_cors(client: TestClient[Any, Any]) -> None:
    reply = await client.post("/api/v1/onboarding/offboard", json={"force": True},
                              headers={"Origin": "https://evil.example"})
    assert reply.status == 403
    ok = await client.get("/health", headers={"Origin": "http://localhost:3000"})
    assert ok.status == 200
    assert "Access-Control-Allow-Origin" not in ok.headers


async def test_remote_peer_refused_by_middleware() -> None:
    transport = mock.Mock()
    transport.get_extra_info.return_value = ("10.9.8.7", 40000)
    request = make_mocked_request("GET", "/health", headers={"Host": "127.0.0.1:9999"},
                                  transport=transport)
    called = False

    async def handler(_r: web.Request) -> web.StreamResponse:
        nonlocal called
        called = True
        return web.Response()

    reply = await guard_and_errors(request, handler)
    assert reply.status == 403
    assert not called


async def test_unexpected_error_is_a_plain_500(client: TestClient[Any, Any], node: Node) -> None:
    with mock.patch.object(Node, "status", side_effect=RuntimeError("secret internals")):
        reply = await client.get("/api/v1/onboarding/status")
    assert reply.status == 500
    text = await reply.text()
    assert "secret internals" not in text
    assert "Traceback" not in text
    assert (await reply.json())["error"]["code"] == "internal"


async def test_invalid_utf8_body_is_a_validation_error(client: TestClient[Any, Any]) -> None:
    reply = await client.post("/api/v1/onboarding/onboard", data=b'{"cpu": "\xff"}',
                              headers={"Content-Type": "application/json"})
    assert reply.status == 400
    assert (await reply.json())["error"]["code"] == "validation_error"
