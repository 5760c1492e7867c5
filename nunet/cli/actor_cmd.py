"""`nunet actor ...`: messages to actors, signed by a user context and sent through the local API.

The CLI holds the user's key (context `user` by default, as in DMS), so the envelope is built and
signed here with the capability chain the context provides (`nunet cap anchor --provide`, or a
self-issued root token that works where the receiver trusts the user as a root); the node only
relays it and hands the reply back (`POST /api/v1/actor/{send,invoke,broadcast}`). The node never
sees the user's key.

- `nunet actor msg BEHAVIOR [PAYLOAD]` prints a signed envelope (JSON) for `send`/`invoke`/
  `broadcast`, which take it as text, `@FILE` or `-` (standard input).
- `nunet actor cmd BEHAVIOR [flags]` builds, signs, invokes and prints the reply; the node's
  behaviours (nunet/node/behaviors.py) get one flag per field of their request (DMS's `-f FILE`
  for an ensemble, `-t` for a timeout); `-e/--expiry` is how long the message lives.
"""

from __future__ import annotations

import enum
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nunet.cli.options import client, config_options, json_option
from nunet.cli.output import emit

if TYPE_CHECKING:
    from nunet.actor.envelope import Envelope
    from nunet.actor.handle import Handle
    from nunet.node.behaviors import Behavior

API = "/api/v1/actor"
DEFAULT_CONTEXT = "user"
DEFAULT_TIMEOUT_S = 30.0
# The client waits this much longer than the message lives: the node answers 408 at expiry.
CLIENT_MARGIN_S = 5.0


def _context_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--context", "-c", default=DEFAULT_CONTEXT, show_default=True,
        help="capability context (and key) that signs the message",
    )(func)


def _dest_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--dest", "-d", default=None, metavar="DID",
        help="the node whose root actor gets the message (default: the local node)",
    )(func)


def _expiry_option(func: Callable[..., Any]) -> Callable[..., Any]:
    # Not --timeout: a behaviour's own arguments may be called that (deployment/new's -t).
    return click.option(
        "--expiry", "-e", "timeout", type=click.FloatRange(0.1, 300.0),
        default=DEFAULT_TIMEOUT_S, show_default=True,
        help="seconds the message lives (and the reply is waited for)",
    )(func)


@click.group("actor")
def actor() -> None:
    """Messages to actors (DMS `actor`): build, sign, send, invoke, broadcast."""


# --- building and signing ------------------------------------------------------------------------


class _Signer:
    """The user's key, its capability context and the local node's handle."""

    def __init__(self, ctx: click.Context, context: str) -> None:
        from nunet.actor.caps import CapabilityProvider
        from nunet.cli.cap_cmd import context_key, load_context

        trust = load_context(ctx, context)  # a missing context or key before any passphrase
        self.keypair = context_key(ctx, context)
        self.provider = CapabilityProvider(trust, self.keypair)
        self.api = client(ctx)
        self._node: str | None = None

    def node_did(self) -> str:
        if self._node is None:
            self._node = str(self.api.get(f"{API}/handle")["did"])
        return self._node

    def envelope(
        self, behavior: str, payload: bytes, *, dest: str | None, timeout: float,
        reply: bool, topic: str = "",
    ) -> Envelope:
        from nunet.actor.envelope import Envelope, Options
        from nunet.actor.handle import NO_HANDLE, ROOT_INBOX, Handle
        from nunet.actor.runtime import REPLY_PREFIX
        from nunet.crypto.did import public_key_from_did
        from nunet.ucan import is_path

        if not is_path(behavior):
            raise click.BadParameter(f"{behavior!r} is not a behaviour path like /public/hello",
                                     param_hint="BEHAVIOR")
        if topic and not is_path(topic):
            raise click.BadParameter(f"{topic!r} is not a topic path like /nunet/hello",
                                     param_hint="--broadcast")
        node = self.node_did()
        if dest is not None:
            public_key_from_did(dest)  # InvalidDID names the problem
        target: Handle
        if topic:
            target = NO_HANDLE
        else:
            to = dest or node
            target = Handle.for_actor(to, to, ROOT_INBOX)
        sender = Handle.for_actor(self.keypair.did, node, "user/" + secrets.token_hex(8))
        nonce = secrets.randbits(64)
        now = time.time()
        tokens = self.provider.tokens(behavior, topic or None, now)
        env = Envelope(
            to=target,
            behavior=behavior,
            sender=sender,
            nonce=nonce,
            options=Options(
                expiry=int((now + timeout) * 1e9),
                reply_to=REPLY_PREFIX + str(nonce) if reply else "",
                topic=topic,
            ),
            payload=payload,
            capabilities=tokens,
        )
        return env.sign(self.keypair)


def _read_text(path: str, hint: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint=hint) from None


def _read_message(text: str) -> Envelope:
    from nunet.actor.envelope import from_json

    if text == "-":
        data = sys.stdin.read()
    elif text.startswith("@"):
        try:
            data = Path(text[1:]).read_text()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {text[1:]}: {exc.strerror}",
                                     param_hint="MESSAGE") from None
    else:
        data = text
    return from_json(data.strip())


def _timed_client(ctx: click.Context, env: Envelope) -> Any:
    api = client(ctx)
    api.timeout = max(1.0, env.options.expiry / 1e9 - time.time()) + CLIENT_MARGIN_S
    return api


def _print_reply(doc: dict[str, Any], as_json: bool) -> None:
    """The reply's payload: the data of an answer, or its error as a failure (exit 1)."""
    import base64

    from nunet.actor.envelope import reply_result
    from nunet.errors import RemoteActorError

    payload = base64.b64decode(doc.get("payload", ""))
    try:
        data = reply_result(payload)
    except RemoteActorError as exc:
        raise click.ClickException(f"{exc.remote_code}: {exc}") from None
    _print_data(data, as_json)


def _print_data(data: bytes, as_json: bool) -> None:
    import msgspec

    from nunet.codec import DECODE_ERRORS

    try:
        value = msgspec.json.decode(data) if data else None
    except DECODE_ERRORS:
        click.echo(data.decode("utf-8", "replace") if not as_json else msgspec.json.encode(
            {"data": data}).decode())
        return
    if value is None and not as_json:
        click.echo("ok")
        return
    emit(value, as_json)


# --- msg / send / invoke / broadcast -------------------------------------------------------------


@actor.command("msg", epilog="\b\nExamples:\n"
               "  nunet actor msg /public/hello --invoke > hello.json\n"
               "  nunet actor invoke @hello.json\n"
               "  nunet actor msg /dms/node/peers/ping '{\"did\": \"did:key:z6Mk...\"}' "
               "--invoke -d did:key:z6Mk...")
@click.argument("behavior")
@click.argument("payload", default="")
@_context_option
@_dest_option
@_expiry_option
@click.option("--invoke", "-i", "reply", is_flag=True, help="ask for a reply (for `invoke`)")
@click.option("--broadcast", "-b", "topic", default="", metavar="TOPIC",
              help="publish on TOPIC (for `broadcast`)")
@config_options
@click.pass_context
def actor_msg(ctx: click.Context, behavior: str, payload: str, context: str, dest: str | None,
              timeout: float, reply: bool, topic: str) -> None:
    """Build and sign a message to BEHAVIOR with PAYLOAD (text, usually JSON); print it."""
    from nunet.actor.envelope import to_json

    signer = _Signer(ctx, context)
    env = signer.envelope(behavior, payload.encode(), dest=dest, timeout=timeout,
                          reply=reply or bool(topic), topic=topic)
    click.echo(to_json(env).decode())


@actor.command("send", epilog="\b\nExample:\n  nunet actor msg /public/hello | nunet actor send -")
@click.argument("message")
@config_options
@json_option
@click.pass_context
def actor_send(ctx: click.Context, message: str, as_json: bool) -> None:
    """Send a signed MESSAGE (JSON, @FILE or -) without waiting for anything."""
    from nunet.actor.envelope import to_doc

    env = _read_message(message)
    emit(_timed_client(ctx, env).post(f"{API}/send", to_doc(env)), as_json)


@actor.command("invoke", epilog="\b\nExample:\n"
               "  nunet actor msg /public/hello --invoke | nunet actor invoke -")
@click.argument("message")
@config_options
@json_option
@click.pass_context
def actor_invoke(ctx: click.Context, message: str, as_json: bool) -> None:
    """Send a signed MESSAGE and print the reply (waits until the message expires)."""
    from nunet.actor.envelope import to_doc

    env = _read_message(message)
    _print_reply(_timed_client(ctx, env).post(f"{API}/invoke", to_doc(env)), as_json)


@actor.command("broadcast", epilog="\b\nExample:\n"
               "  nunet actor msg /public/hello --broadcast /nunet/public -e 3 | "
               "nunet actor broadcast -")
@click.argument("message")
@config_options
@json_option
@click.pass_context
def actor_broadcast(ctx: click.Context, message: str, as_json: bool) -> None:
    """Publish a signed MESSAGE on its topic; print each reply that came before it expired."""
    import base64

    from nunet.actor.envelope import reply_result, to_doc
    from nunet.errors import NunetError

    env = _read_message(message)
    replies = _timed_client(ctx, env).post(f"{API}/broadcast", to_doc(env))
    out: list[dict[str, Any]] = []
    for doc in replies:
        entry: dict[str, Any] = {"from": doc["from"]["did"]}
        try:
            data = reply_result(base64.b64decode(doc.get("payload", "")))
            entry["reply"] = data.decode("utf-8", "replace")
        except NunetError as exc:
            entry["error"] = str(exc)
        out.append(entry)
    emit(out, as_json)


# --- cmd: one subcommand per behaviour -----------------------------------------------------------


class _BehaviorGroup(click.Group):
    """`nunet actor cmd BEHAVIOR`: the node's behaviours (with one flag per request field), and
    any other path with `--payload`. Built on demand: the table is not imported otherwise."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from nunet.node.behaviors import BEHAVIORS

        return [b.name for b in BEHAVIORS]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        from nunet.node.behaviors import BY_NAME

        if not cmd_name.startswith("/"):
            return None
        return _behavior_command(cmd_name, BY_NAME.get(cmd_name))


@actor.group("cmd", cls=_BehaviorGroup, epilog="\b\nExamples:\n"
             "  nunet actor cmd /public/hello\n"
             "  nunet actor cmd /dms/node/peers/ping --did did:key:z6Mk... -d did:key:z6Mk...\n"
             "  nunet actor cmd /dms/node/onboarding/offboard --force\n"
             "  nunet actor cmd /some/behavior --payload '{\"a\": 1}'")
def actor_cmd() -> None:
    """Invoke a behaviour with flags for its arguments and print the reply."""


# DMS's short flags for some arguments: `actor cmd /dms/node/deployment/new -f FILE -t 60`.
_SHORT = {"ensemble": "-f", "timeout": "-t"}
_FILE_FIELDS = frozenset({"ensemble"})  # given as a file to read (`-` for standard input)


def _plain_type(kind: Any) -> Any:
    """`int` for `Annotated[int, ...] | None` and the like; the type itself otherwise."""
    import types
    import typing

    if typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(members) == 1:
            return _plain_type(members[0])
    return kind


def _behavior_command(name: str, behavior: Behavior | None) -> click.Command:
    params: list[click.Parameter] = []
    fields: list[tuple[str, str, str]] = []  # (field, flag dest, how: plain | json | file)
    if behavior is not None:
        import msgspec

        for field in msgspec.structs.fields(behavior.request):
            dest = "f_" + field.name
            flags = ["--" + field.name.replace("_", "-")]
            if field.name in _SHORT:
                flags.append(_SHORT[field.name])
            kind = _plain_type(field.type)
            # Not enforced here: --payload may give everything; the node names what is missing.
            required = False
            if field.name in _FILE_FIELDS:
                params.append(click.Option([*flags, dest], required=required, metavar="FILE",
                                           help=f"{field.name}: a YAML or JSON file (- for stdin)"))
                fields.append((field.name, dest, "file"))
            elif kind is bool:
                params.append(click.Option([f"{flags[0]}/--no-{flags[0][2:]}", dest],
                                           default=None, help=f"{field.name} (yes/no)"))
                fields.append((field.name, dest, "plain"))
            elif isinstance(kind, type) and issubclass(kind, enum.Enum):
                params.append(click.Option([*flags, dest], required=required,
                                           type=click.Choice([str(m.value) for m in kind]),
                                           help=field.name))
                fields.append((field.name, dest, "plain"))
            elif kind in (str, int, float):
                params.append(click.Option([*flags, dest], type=kind, required=required,
                                           help=f"{field.name} ({kind.__name__})"))
                fields.append((field.name, dest, "plain"))
            else:
                params.append(click.Option([*flags, dest], required=required, metavar="JSON",
                                           help=f"{field.name} (JSON)"))
                fields.append((field.name, dest, "json"))
    params.append(click.Option(["--payload", "payload"], default=None, metavar="JSON",
                               help="the whole payload as JSON (instead of the flags)"))

    @_context_option
    @_dest_option
    @_expiry_option
    @config_options
    @json_option
    @click.pass_context
    def run(ctx: click.Context, /, context: str, dest: str | None, timeout: float, as_json: bool,
            payload: str | None, **values: Any) -> None:
        from nunet.actor.envelope import to_doc

        body = payload.encode() if payload is not None else _payload(fields, values)
        signer = _Signer(ctx, context)
        env = signer.envelope(name, body, dest=dest, timeout=timeout, reply=True)
        api = signer.api
        api.timeout = timeout + CLIENT_MARGIN_S
        _print_reply(api.post(f"{API}/invoke", to_doc(env)), as_json)

    # The decorators above only collected their options (click keeps them in reverse order).
    shared: list[click.Parameter] = list(reversed(getattr(run, "__click_params__", [])))
    return click.Command(
        name, callback=run, params=[*params, *shared],
        help=behavior.summary if behavior is not None else "Invoke this behaviour.",
    )


def _payload(fields: list[tuple[str, str, str]], values: dict[str, Any]) -> bytes:
    import msgspec

    out: dict[str, Any] = {}
    for field, dest, how in fields:
        value = values.get(dest)
        if value is None:
            continue
        if how == "file":
            value = _read_text(value, "--" + field.replace("_", "-"))
        elif how == "json":
            try:
                value = msgspec.json.decode(value)
            except msgspec.DecodeError as exc:
                raise click.BadParameter(f"not JSON: {exc}",
                                         param_hint="--" + field.replace("_", "-")) from None
        out[field] = value
    return msgspec.json.encode(out)
