"""The local API's actor endpoints and `nunet actor` against one real node: the good path, and
each bad input answered with its specific error (no traceback, the node still healthy)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from nunet.cli.client import ApiClient
from nunet.errors import BadSender, DecodeError, InvokeTimeout, ValidationError
from nunet.testing.cluster import NodeProcess


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("actor-api"), "alice")
    proc.start()
    try:
        proc.wait_ready()
        user = proc.cli("cap", "new", "user", "--json")
        assert user.code == 0, user.stderr
        did = user.json()["did"]  # type: ignore[index]
        assert proc.cli("cap", "anchor", "-c", "dms", "--root", did).code == 0
        yield proc
    finally:
        proc.kill()


def _api(node: NodeProcess) -> ApiClient:
    return ApiClient("127.0.0.1", node.rest_port, timeout=10)


def _msg(node: NodeProcess, *args: str) -> dict[str, object]:
    built = node.cli("actor", "msg", *args)
    assert built.code == 0, built.stderr
    doc = json.loads(built.stdout)
    assert isinstance(doc, dict)
    return doc


def test_cmd_invokes_a_node_behaviour(node: NodeProcess) -> None:
    result = node.cli("actor", "cmd", "/public/status", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["onboarded"] is False  # type: ignore[index]


def test_msg_then_invoke(node: NodeProcess, tmp_path: Path) -> None:
    path = tmp_path / "hello.json"
    path.write_text(json.dumps(_msg(node, "/public/hello", "--invoke")))
    result = node.cli("actor", "invoke", f"@{path}", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["did"]  # type: ignore[index]


def test_per_behaviour_flags_reach_the_handler(node: NodeProcess) -> None:
    result = node.cli("actor", "cmd", "/dms/node/peers/ping", "--did", "did:key:zNope")
    assert result.code == 1
    assert "invalid_did" in result.stderr or "did" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_handler_error_is_a_clean_failure(node: NodeProcess) -> None:
    result = node.cli("actor", "cmd", "/dms/node/onboarding/offboard")
    assert result.code == 1
    assert "not_onboarded" in result.stderr


def test_unsigned_envelope_is_refused(node: NodeProcess) -> None:
    doc = _msg(node, "/public/hello", "--invoke")
    doc["signature"] = ""
    with pytest.raises(BadSender):
        _api(node).post("/api/v1/actor/invoke", doc)


def test_tampered_envelope_is_refused(node: NodeProcess) -> None:
    from nunet.errors import SignatureError

    doc = _msg(node, "/public/hello", "--invoke")
    doc["behavior"] = "/public/status"
    with pytest.raises(SignatureError):
        _api(node).post("/api/v1/actor/invoke", doc)


@pytest.mark.parametrize("body", [{}, {"to": 1}, {"behavior": "no-slash"}])
def test_malformed_envelope_is_a_validation_error(node: NodeProcess, body: object) -> None:
    with pytest.raises((ValidationError, DecodeError)):
        _api(node).post("/api/v1/actor/invoke", body)


def test_invoke_without_reply_path_is_refused(node: NodeProcess) -> None:
    doc = _msg(node, "/public/hello")  # no --invoke: nothing to reply to
    with pytest.raises(ValidationError) as info:
        _api(node).post("/api/v1/actor/invoke", doc)
    assert info.value.path == "options.reply_to"


def test_invoke_times_out_with_408(node: NodeProcess) -> None:
    # Dialling an unroutable address takes longer than the message lives.
    doc = _msg(node, "/dms/node/peers/connect",
               json.dumps({"address": "/ip4/10.255.255.1/udp/9/quic-v1"}), "--invoke", "-e", "1")
    with pytest.raises(InvokeTimeout):
        _api(node).post("/api/v1/actor/invoke", doc)
    assert _api(node).get("/health")["status"] == "ok"


def test_bad_cli_input(node: NodeProcess) -> None:
    for args in (["actor", "cmd", "/public/hello", "-d", "did:key:bogus"],
                 ["actor", "msg", "not-a-path"],
                 ["actor", "invoke", "{not json"],
                 ["actor", "cmd", "/public/hello", "-c", "nobody"]):
        result = node.cli(*args)
        assert result.code in (1, 2), (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stderr.strip()


def test_deployment_behaviours_take_dms_flags(node: NodeProcess) -> None:
    """`nunet actor cmd /dms/node/deployment/new -f FILE -t SECONDS`, as in DMS."""
    examples = Path(__file__).resolve().parents[2] / "examples"
    made = node.cli("actor", "cmd", "/dms/node/deployment/new",
                    "-f", str(examples / "hello.yaml"), "-t", "30", "--json")
    assert made.code == 0, made.stderr
    reply = made.json()
    assert isinstance(reply, dict)
    listed = node.cli("actor", "cmd", "/dms/node/deployment/list", "--status", "Preparing",
                      "--json")
    assert listed.code == 0, listed.stderr
    assert reply["id"] in str(listed.json())
    bad = node.cli("actor", "cmd", "/dms/node/deployment/new", "-f", "/no/such/file.yaml")
    assert bad.code == 2
    assert "cannot read /no/such/file.yaml" in bad.stderr
