"""`nunet cap`: capability contexts, as in NuNet DMS (`<user_dir>/cap/<context>.cap`).

A context is a trust context (roots, require and provide anchors, revocations) in its own file,
with the keystore key of the same name as its identity. The commands change the file directly (so
they work whether or not the node runs), then ask a running node to re-read it
(`POST /api/v1/cap/reload`, best effort).

Tokens travel as text: `ucan1:` + base64url (`nunet.ucan.to_text`). A chain (a token and its
proofs, leaf first) is the tokens' texts joined with commas: one shell word, pasteable into
`nunet cap anchor --provide`. Where a TOKEN is asked for, `@FILE` reads it from a file (`@-`:
standard input).
"""

from __future__ import annotations

import datetime
import re
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from nunet.cli.options import config_options, json_option, load
from nunet.cli.output import emit
from nunet.errors import AlreadyExists, NotFound, NunetError, ValidationError

if TYPE_CHECKING:
    from nunet.crypto.keys import KeyPair
    from nunet.crypto.keystore import KeyStore
    from nunet.ucan import CapabilityStore, Token, TrustContext

F = TypeVar("F", bound=Callable[..., Any])

RELOAD_PATH = "/api/v1/cap/reload"
REVOKE_PATH = "/api/v1/cap/revoke"
RELOAD_TIMEOUT_S = 3.0
NOT_RUNNING = "node not running: changes apply at next start"
CHAIN_SEPARATOR = ","
SHORT_ID = 16
MIN_ID_PREFIX = 8
_DURATION = re.compile(r"(?:\d+[smhdw])+\Z")
_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_HEX = re.compile(r"[0-9a-fA-F]+\Z")


@click.group(
    "cap",
    epilog="\b\nExample (a user joins an organisation; run where each key lives):\n"
    "  nunet cap new org; nunet cap new user; nunet cap new dms\n"
    "  G=$(nunet cap grant -c org --audience USER_DID --cap /dms/deployment --duration 30d "
    "USER_DID)\n"
    "  nunet cap anchor -c user --provide $G\n"
    "  C=$(nunet cap delegate -c user --audience NODE_DID --cap /dms/deployment --duration 7d)\n"
    "  nunet cap anchor -c dms --require $G --root USER_DID --provide $C",
)
def cap() -> None:
    """Capability contexts: trust anchors, grants, delegations and revocations (DMS `cap`).

    A context NAME lives in <user_dir>/cap/NAME.cap and signs with the keystore key NAME."""


def _context_option(func: F) -> F:
    return click.option(
        "--context", "-c", required=True, metavar="NAME",
        help="capability context (its key is the keystore key of the same name)",
    )(func)


def _verbose_option(func: F) -> F:
    return click.option(
        "--verbose", "-v", is_flag=True, help="say whether the running node re-read the context"
    )(func)


def _grant_options(func: F) -> F:
    """--audience --cap --topic --expiry --duration --depth --action, shared by grant/delegate."""
    for option in reversed((
        click.option("--audience", "-a", metavar="DID",
                     help="who receives the token (required but for --action broadcast)"),
        click.option("--cap", "caps", multiple=True, metavar="PATH",
                     help="behaviour path granted, e.g. /dms/deployment (repeatable)"),
        click.option("--topic", "topics", multiple=True, metavar="TOPIC",
                     help="gossip topic granted, e.g. /nunet/deployment (repeatable)"),
        click.option("--expiry", metavar="ISO",
                     help="valid until, ISO 8601 (UTC unless it has an offset): 2026-01-31, "
                     "2026-01-31T12:00:00Z"),
        click.option("--duration", metavar="D",
                     help="valid for D from now: 90s, 30m, 1h, 30d, 1w2d"),
        click.option("--depth", type=click.IntRange(0, 255), default=None,
                     help="how many more delegations may follow (default: no own limit)"),
        click.option("--action", type=click.Choice(["delegate", "invoke", "broadcast"]),
                     default="delegate", show_default=True, help="what the token is for"),
    )):
        func = option(func)
    return func


# --- new ---------------------------------------------------------------------------------------


@cap.command("new", epilog="\b\nExamples:\n  DMS_PASSPHRASE=... nunet cap new user\n"
             "  nunet cap new dms --json")
@click.argument("context")
@config_options
@json_option
@_verbose_option
@click.pass_context
def cap_new(ctx: click.Context, context: str, as_json: bool, verbose: bool) -> None:
    """Create capability context CONTEXT, trusting its own key as root.

    The key is the keystore key CONTEXT, created if missing (passphrase from DMS_PASSPHRASE or
    asked for, as in `nunet key new`)."""
    from nunet.crypto.keystore import passphrase_from_env_or_prompt
    from nunet.errors import KeyExists
    from nunet.ucan import CapabilityStore, TrustContext
    from nunet.ucan.store import check_context

    check_context(context)
    cap_dir = _cap_dir(ctx)
    if CapabilityStore.exists(cap_dir, context):
        raise AlreadyExists(
            f"capability context {context!r} already exists in {cap_dir}: "
            f"`nunet cap list -c {context}` shows it"
        )
    keys = _keystore(ctx)
    created = not keys.exists(context)
    if created:
        try:
            did = keys.new(context, passphrase_from_env_or_prompt(confirm=True)).did
        except KeyExists:  # made by another process meanwhile
            did, created = keys.did(context), False
    else:
        did = keys.did(context)
    store = CapabilityStore.open(cap_dir, context, create=True)
    TrustContext(store=store).add_root(did)
    _done(ctx, context, {"context": context, "did": did, "key_created": created,
                         "path": str(store.path)}, as_json, verbose)


# --- anchors ------------------------------------------------------------------------------------


@cap.command("anchor", epilog="\b\nExamples:\n  nunet cap anchor -c dms --root did:key:z6Mk...\n"
             "  nunet cap anchor -c dms --require ucan1:lgHZ...\n"
             "  nunet cap anchor -c dms --provide @chain.txt\n"
             "  nunet cap anchor -c dms --revoke ucan1:lgHZ...")
@_context_option
@click.option("--root", "roots", multiple=True, metavar="DID",
              help="trust chains rooted at DID for everything")
@click.option("--require", "requires", multiple=True, metavar="TOKEN",
              help="trust chains rooted at TOKEN's issuer, for what TOKEN (a root delegation) "
              "grants")
@click.option("--provide", "provides", multiple=True, metavar="CHAIN",
              help="keep a chain addressed to this context, to present and delegate from")
@click.option("--revoke", "revokes", multiple=True, metavar="TOKEN",
              help="apply a revocation someone signed")
@config_options
@json_option
@_verbose_option
@click.pass_context
def cap_anchor(ctx: click.Context, context: str, roots: tuple[str, ...],
               requires: tuple[str, ...], provides: tuple[str, ...], revokes: tuple[str, ...],
               as_json: bool, verbose: bool) -> None:
    """Add trust anchors or revocations to a context (checked before they are stored).

    TOKEN and CHAIN are text as `grant`, `delegate` and `revoke` print it, or @FILE."""
    from nunet.ucan import token_id

    if not (roots or requires or provides or revokes):
        raise click.UsageError("nothing to anchor: give --root, --require, --provide or --revoke")
    now = _now()
    # Parse everything first: a bad argument changes nothing.
    require_tokens = [_single(text, "--require") for text in requires]
    provide_chains = [_tokens(text, "--provide") for text in provides]
    revoke_tokens = [_single(text, "--revoke") for text in revokes]
    trust = load_context(ctx, context)
    if provide_chains and trust.did is None:
        raise NotFound(f"context {context!r} has no key {context!r} in the keystore: a provide "
                       "anchor must be checked to be addressed to it")
    added: list[dict[str, str]] = []
    for did in roots:
        trust.add_root(did)
        added.append({"kind": "root", "did": did})
    for raw in require_tokens:
        added.append({"kind": "require", "id": trust.add_require(raw, now).hex()})
    for leaf, *proofs in provide_chains:
        added.append({"kind": "provide", "id": trust.add_provide(leaf, proofs, now).hex()})
    for raw in revoke_tokens:
        target = trust.add_revocation(raw, now)
        added.append({"kind": "revoke", "id": token_id(raw).hex(), "revokes": target.hex()})
    _done(ctx, context, {"context": context, "added": added}, as_json, verbose)


@cap.command("remove", epilog="\b\nExamples:\n  nunet cap remove -c dms --root did:key:z6Mk...\n"
             "  nunet cap remove -c dms --provide 3f2a9c1d\n"
             "  nunet cap remove -c org --token 3f2a9c1d5e6b7a80")
@_context_option
@click.option("--root", "roots", multiple=True, metavar="DID", help="a root anchor")
@click.option("--require", "requires", multiple=True, metavar="REF", help="a require anchor")
@click.option("--provide", "provides", multiple=True, metavar="REF", help="a provide anchor")
@click.option("--revoke", "revokes", multiple=True, metavar="REF",
              help="a revocation (the revoked token becomes valid again)")
@click.option("--token", "tokens", multiple=True, metavar="REF",
              help="a token kept by grant or delegate")
@config_options
@json_option
@_verbose_option
@click.pass_context
def cap_remove(ctx: click.Context, context: str, roots: tuple[str, ...],
               requires: tuple[str, ...], provides: tuple[str, ...], revokes: tuple[str, ...],
               tokens: tuple[str, ...], as_json: bool, verbose: bool) -> None:
    """Remove anchors, revocations or kept tokens from a context.

    REF is a token id as `nunet cap list` shows it (8 hex digits or more), the token's text, or
    @FILE."""
    if not (roots or requires or provides or revokes or tokens):
        raise click.UsageError(
            "nothing to remove: give --root, --require, --provide, --revoke or --token"
        )
    trust = load_context(ctx, context)
    store = _store_of(trust)
    # Resolve everything first: an unknown reference changes nothing.
    missing = [did for did in roots if did not in trust.roots]
    if missing:
        raise NotFound(f"{missing[0]} is not a root anchor of {context!r}")
    require_ids = [_resolve(ref, trust.require_anchors(), "require anchor") for ref in requires]
    provide_ids = [
        _resolve(ref, [leaf for leaf, _ in trust.provide_anchors()], "provide anchor")
        for ref in provides
    ]
    revoke_ids = [_resolve(ref, trust.revocations(), "revocation") for ref in revokes]
    token_ids = [_resolve(ref, store.tokens(), "kept token") for ref in tokens]
    removed: list[dict[str, str]] = []
    with store.edit():  # one write
        for did in roots:
            trust.remove_root(did)
            removed.append({"kind": "root", "did": did})
        for tid in require_ids:
            trust.remove_require(tid)
            removed.append({"kind": "require", "id": tid.hex()})
        for tid in provide_ids:
            trust.remove_provide(tid)
            removed.append({"kind": "provide", "id": tid.hex()})
        for tid in revoke_ids:
            store.delete_revocation(tid)
            removed.append({"kind": "revoke", "id": tid.hex()})
        for tid in token_ids:
            store.delete_token(tid)
            removed.append({"kind": "token", "id": tid.hex()})
    _done(ctx, context, {"context": context, "removed": removed}, as_json, verbose)


# --- issuing ------------------------------------------------------------------------------------


@cap.command("grant", epilog="\b\nExamples:\n  nunet cap grant -c org --audience did:key:z6MkU... "
             "--cap /dms/deployment \\\n      --topic /nunet/deployment --duration 30d "
             "did:key:z6MkU...\n  nunet cap grant -c dms --audience did:key:z6MkP... "
             "--cap /public \\\n      --expiry 2026-06-30 --depth 0 did:key:z6MkP...")
@_context_option
@_grant_options
@click.argument("subject")
@config_options
@json_option
@_verbose_option
@click.pass_context
def cap_grant(ctx: click.Context, context: str, audience: str | None, caps: tuple[str, ...],
              topics: tuple[str, ...], expiry: str | None, duration: str | None,
              depth: int | None, action: str, subject: str, as_json: bool,
              verbose: bool) -> None:
    """Issue a root token signed by the context's key to --audience, about SUBJECT (a DID).

    Prints the token as text, to paste into `nunet cap anchor` where it is to be trusted
    (--require) or held (--provide). The context keeps a copy (`nunet cap list`)."""
    from nunet.ucan import issue

    now = _now()
    until = _expiry(expiry, duration, now)
    _check_request(audience, caps, topics, action)
    trust = load_context(ctx, context)
    key = context_key(ctx, context)
    raw = issue(
        key, action=action,  # type: ignore[arg-type]
        subject=subject, audience=audience or "", capabilities=caps, topics=topics,
        not_before=now, expiry=until, depth=depth,
    )
    _store_of(trust).put_token(raw)
    _print_issued(ctx, context, [raw], as_json, verbose, "granted")


@cap.command("delegate", epilog="\b\nExamples:\n  nunet cap delegate -c user --audience "
             "did:key:z6MkN... --cap /dms/deployment --duration 7d\n"
             "  nunet cap delegate -c user --audience did:key:z6MkN... --cap /dms/deployment/bid "
             "\\\n      --topic /nunet/deployment --expiry 2026-01-31 --depth 1 did:key:z6MkU...")
@_context_option
@_grant_options
@click.argument("subject", required=False)
@config_options
@json_option
@_verbose_option
@click.pass_context
def cap_delegate(ctx: click.Context, context: str, audience: str | None, caps: tuple[str, ...],
                 topics: tuple[str, ...], expiry: str | None, duration: str | None,
                 depth: int | None, action: str, subject: str | None, as_json: bool,
                 verbose: bool) -> None:
    """Delegate, from one of the context's provide anchors, to --audience.

    The narrowest provide anchor that grants every --cap and --topic until the expiry is the
    parent (with SUBJECT, only anchors about SUBJECT). Prints the new chain (the token and its
    proofs) as one word, to paste into `nunet cap anchor --provide` on the audience's side."""
    from nunet.ucan import issue

    now = _now()
    until = _expiry(expiry, duration, now)
    _check_request(audience, caps, topics, action)
    trust = load_context(ctx, context)
    parent, parent_proofs = _pick_parent(trust, context, caps, topics, until, subject, now)
    key = context_key(ctx, context)
    parent_tok = _decode(parent)
    raw = issue(
        key, action=action,  # type: ignore[arg-type]
        subject=parent_tok.subject, audience=audience or "", capabilities=caps, topics=topics,
        not_before=max(now, parent_tok.not_before), expiry=until, depth=depth, parent=parent,
    )
    chain = [raw, parent, *parent_proofs]
    trust.verifier.verify(raw, chain[1:], now, anchored=False)  # never print a chain that fails
    _store_of(trust).put_token(raw)
    _print_issued(ctx, context, chain, as_json, verbose, "delegated")


@cap.command("revoke", epilog="\b\nExamples:\n  nunet cap revoke -c org ucan1:lgHZ...\n"
             "  nunet cap revoke -c org 3f2a9c1d   # a token the context kept")
@_context_option
@click.argument("token")
@click.option("--broadcast/--no-broadcast", default=True, show_default=True,
              help="also hand the revocation to the running node, which gossips it to all nodes")
@config_options
@json_option
@_verbose_option
@click.pass_context
def cap_revoke(ctx: click.Context, context: str, token: str, broadcast: bool, as_json: bool,
               verbose: bool) -> None:
    """Revoke TOKEN with the context's key; the revocation is stored in the context and printed.

    TOKEN is a token's text (or a chain: its first token is revoked), @FILE, or the id of a token
    the context holds. It takes effect where it is anchored (`nunet cap anchor --revoke`) and
    only if this key issued TOKEN or one of its ancestors."""
    from nunet.errors import ExpiredError
    from nunet.ucan import revoke

    now = _now()
    trust = load_context(ctx, context)
    target = _target(trust, token)
    tok = _decode(target)
    if tok.expiry <= now:
        raise ExpiredError(f"token {_short(target)} expired at {_iso(tok.expiry)}: nothing to "
                           "revoke", path="TOKEN")
    rev = revoke(context_key(ctx, context), target, not_before=now)
    trust.add_revocation(rev, now)
    gossip = _broadcast_revocation(ctx, rev) if broadcast else None
    _print_issued(ctx, context, [rev], as_json, verbose, "revoked", gossip)
    if tok.issuer != trust.did and not as_json:
        click.echo(f"note: {context!r} did not issue {_short(target)}: the revocation applies "
                   "only to chains in which it issued an ancestor", err=True)


# --- list --------------------------------------------------------------------------------------


@cap.command("list", epilog="\b\nExamples:\n  nunet cap list\n  nunet cap list -c dms\n"
             "  nunet cap list -c dms --json")
@click.option("--context", "-c", metavar="NAME", help="the context to show (default: list them)")
@config_options
@json_option
@click.pass_context
def cap_list(ctx: click.Context, context: str | None, as_json: bool) -> None:
    """Show a context's roots, anchors, revocations and kept tokens; without -c, the contexts."""
    from nunet.ucan import CapabilityStore

    if context is None:
        names = CapabilityStore.contexts(_cap_dir(ctx))
        if as_json:
            emit(names, True)
        elif not names:
            click.echo("no capability contexts yet: `nunet cap new NAME` creates one")
        for name in [] if as_json else names:
            click.echo(name)
        return
    trust = load_context(ctx, context)
    store = _store_of(trust)
    if as_json:
        emit({
            "context": context,
            "did": trust.did,
            "path": str(store.path),
            "roots": sorted(trust.roots),
            "require": [_doc(raw) for raw in trust.require_anchors()],
            "provide": [{"id": _id(leaf), "chain": [_doc(raw) for raw in (leaf, *proofs)]}
                        for leaf, proofs in trust.provide_anchors()],
            "revocations": [_doc(raw) for raw in trust.revocations()],
            "tokens": [_doc(raw) for raw in store.tokens()],
        }, True)
        return
    click.echo(f"context {context}  {trust.did or '(no key)'}  {store.path}")
    _section("roots", [did + ("  (this context)" if did == trust.did else "")
                       for did in sorted(trust.roots)])
    _section("require", [_row(raw) for raw in trust.require_anchors()])
    _section("provide", [f"{_row(leaf)}  chain of {1 + len(proofs)}"
                         for leaf, proofs in trust.provide_anchors()])
    _section("revocations", [_revocation_row(raw) for raw in trust.revocations()])
    _section("tokens", [_row(raw) for raw in store.tokens()])


def _section(title: str, rows: list[str]) -> None:
    click.echo(f"{title}:" + ("" if rows else " none"))
    for row in rows:
        click.echo(f"  {row}")


def _row(raw: bytes) -> str:
    tok = _decode(raw)
    parts = [_short(raw), tok.action]
    if tok.issuer:
        parts.append(f"from {tok.issuer}")
    if tok.audience:
        parts.append(f"to {tok.audience}")
    if tok.capabilities:
        parts.append("caps " + " ".join(tok.capabilities))
    if tok.topics:
        parts.append("topics " + " ".join(tok.topics))
    if tok.depth is not None:
        parts.append(f"depth {tok.depth}")
    parts.append(f"until {_iso(tok.expiry)}")
    return "  ".join(parts)


def _revocation_row(raw: bytes) -> str:
    tok = _decode(raw)
    return f"{_short(raw)}  revokes {tok.proofs[0][:SHORT_ID // 2].hex()}  by {tok.issuer}  " \
           f"until {_iso(tok.expiry)}"


# --- helpers ------------------------------------------------------------------------------------


def _user_dir(ctx: click.Context) -> Path:
    return Path(load(ctx).config.general.user_dir).expanduser()


def _cap_dir(ctx: click.Context) -> Path:
    return _user_dir(ctx) / "cap"


def _keystore(ctx: click.Context) -> KeyStore:
    from nunet.crypto.keystore import KeyStore

    return KeyStore(_user_dir(ctx) / "key")


def load_context(ctx: click.Context, context: str) -> TrustContext:
    """The context, loaded; its DID is its key's (None if that key is gone). NotFound when there
    is no such context."""
    from nunet.errors import KeyNotFound
    from nunet.ucan import CapabilityStore, TrustContext

    store = CapabilityStore.open(_cap_dir(ctx), context)
    try:
        did: str | None = _keystore(ctx).did(context)
    except KeyNotFound:
        did = None
    return TrustContext(did=did, store=store)


def _store_of(trust: TrustContext) -> CapabilityStore:
    assert trust.store is not None  # `_trust` made it with one
    return trust.store


def context_key(ctx: click.Context, context: str) -> KeyPair:
    """The context's signing key (the keystore key of the same name), passphrase asked for only
    once the key is known to exist."""
    from nunet.crypto.keystore import passphrase_from_env_or_prompt

    keys = _keystore(ctx)
    keys.did(context)  # a missing key is reported before the passphrase is asked for
    return keys.load(context, passphrase_from_env_or_prompt())


def _now() -> int:
    return int(time.time())


def _expiry(expiry: str | None, duration: str | None, now: int) -> int:
    from nunet.ucan.token import MAX_TIME

    if (expiry is None) == (duration is None):
        raise click.UsageError("give one of --expiry or --duration")
    if duration is not None:
        text = duration.strip().lower()
        if not _DURATION.match(text):
            raise click.BadParameter(
                f"{duration!r}: expected a number and a unit (s, m, h, d, w), e.g. 1h, 30d, 1d12h",
                param_hint="--duration",
            )
        seconds = sum(int(n) * _UNIT_S[unit] for n, unit in _DURATION_PART.findall(text))
        if seconds <= 0 or now + seconds > MAX_TIME:
            raise click.BadParameter(f"{duration!r} is out of range", param_hint="--duration")
        return now + seconds
    assert expiry is not None
    try:
        stamp = datetime.datetime.fromisoformat(expiry.strip())
    except ValueError:
        raise click.BadParameter(
            f"{expiry!r} is not an ISO 8601 time, e.g. 2026-01-31 or 2026-01-31T12:00:00Z",
            param_hint="--expiry",
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    until = int(stamp.timestamp())
    if until <= now:
        raise click.BadParameter(f"{expiry} is in the past", param_hint="--expiry")
    if until > MAX_TIME:
        raise click.BadParameter(f"{expiry} is too far away", param_hint="--expiry")
    return until


def _check_request(audience: str | None, caps: Iterable[str], topics: Iterable[str],
                   action: str) -> None:
    from nunet.ucan import is_path

    if not audience and action != "broadcast":
        raise click.UsageError("--audience is required (but for --action broadcast)")
    for flag, paths in (("--cap", caps), ("--topic", topics)):
        for path in paths:
            if not is_path(path):
                raise click.BadParameter(
                    f"{path!r} is not a path like /dms/deployment (printable ASCII segments)",
                    param_hint=flag,
                )
    if not caps and not topics:
        raise click.UsageError("nothing to grant: give --cap or --topic")
    if action == "invoke" and topics:
        raise click.UsageError("an invoke token grants no topics: drop --topic or pick "
                               "another --action")


def _pick_parent(trust: TrustContext, context: str, caps: tuple[str, ...],
                 topics: tuple[str, ...], until: int, subject: str | None,
                 now: int) -> tuple[bytes, tuple[bytes, ...]]:
    """The narrowest provide anchor a delegation of `caps` and `topics` until `until` can hang
    from, or NotFound listing why each anchor does not fit."""
    from nunet.errors import SecurityError
    from nunet.ucan import covers

    anchors = trust.provide_anchors()
    if not anchors:
        raise NotFound(f"context {context!r} has no provide anchor to delegate from: anchor a "
                       f"chain addressed to it with `nunet cap anchor -c {context} --provide`")
    fits: list[tuple[tuple[int, int, int, int], bytes, tuple[bytes, ...]]] = []
    why: list[str] = []
    for leaf, proofs in anchors:
        tok = _decode(leaf)
        name = _short(leaf)
        missing = [c for c in caps if not any(covers(g, c) for g in tok.capabilities)]
        missing += [t for t in topics if not any(covers(g, t) for g in tok.topics)]
        if tok.action != "delegate":
            why.append(f"{name}: a {tok.action} token, not a delegation")
        elif subject is not None and tok.subject != subject:
            why.append(f"{name}: about {tok.subject}")
        elif missing:
            why.append(f"{name}: does not grant {', '.join(missing)}")
        elif tok.expiry < until:
            why.append(f"{name}: expires at {_iso(tok.expiry)}, before the requested expiry")
        else:
            try:
                link = trust.verifier.verify(leaf, proofs, now, audience=trust.did,
                                             anchored=False)
            except SecurityError as exc:
                why.append(f"{name}: {exc.message}")
                continue
            if link.allowance < 1:
                why.append(f"{name}: its depth limit allows no further delegation")
                continue
            # Narrowest first: the broadest path it grants is deepest, then fewest paths, then
            # the shortest chain, then the earliest expiry (so what can be spared is used).
            paths = (*tok.capabilities, *tok.topics)
            shallowest = min(0 if p == "/" else p.count("/") for p in paths)
            fits.append(((-shallowest, len(paths), len(proofs), tok.expiry), leaf, proofs))
    if not fits:
        raise NotFound(f"no provide anchor of {context!r} can be delegated from: "
                       + "; ".join(why))
    fits.sort(key=lambda fit: fit[0])
    return fits[0][1], fits[0][2]


def _tokens(text: str, where: str) -> list[bytes]:
    """The tokens in `text` (a token or chain as text, or @FILE), leaf first."""
    from nunet.ucan import from_text

    if text.startswith("@"):
        text = _read_argument(text[1:], where)
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not parts:
        raise ValidationError("no token given", path=where)
    out = []
    for i, part in enumerate(parts):
        try:
            out.append(from_text(part))
        except ValidationError as exc:
            at = where if len(parts) == 1 else f"{where}[{i}]"
            raise ValidationError(exc.message, path=at) from None
    return out


def _single(text: str, where: str) -> bytes:
    tokens = _tokens(text, where)
    if len(tokens) != 1:
        raise ValidationError(f"one token expected, got a chain of {len(tokens)}", path=where)
    return tokens[0]


def _read_argument(name: str, where: str) -> str:
    try:
        if name == "-":
            return sys.stdin.read()
        return Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValidationError(f"cannot read {name}: {reason}", path=where) from None


def _resolve(ref: str, records: list[bytes], what: str) -> bytes:
    """The id of the record `ref` names: an id or unique id prefix, or the token itself."""
    from nunet.ucan import token_id

    ids = [token_id(raw) for raw in records]
    ref = ref.strip()
    if _HEX.match(ref):
        if len(ref) < MIN_ID_PREFIX:
            raise ValidationError(f"an id prefix has at least {MIN_ID_PREFIX} hex digits",
                                  path="REF")
        found = [tid for tid in ids if tid.hex().startswith(ref.lower())]
        if len(found) > 1:
            raise ValidationError(f"{ref} names {len(found)} {what}s: give more digits",
                                  path="REF")
    else:
        wanted = token_id(_tokens(ref, "REF")[0])
        found = [tid for tid in ids if tid == wanted]
    if not found:
        raise NotFound(f"no {what} {ref[:SHORT_ID]}")
    return found[0]


def _target(trust: TrustContext, ref: str) -> bytes:
    """The token to revoke: given as text, or by the id of one the context holds."""
    ref = ref.strip()
    if not _HEX.match(ref):
        return _tokens(ref, "TOKEN")[0]
    held = list(_store_of(trust).tokens()) + trust.require_anchors()
    for leaf, proofs in trust.provide_anchors():
        held += [leaf, *proofs]
    tid = _resolve(ref, held, "token")
    return next(raw for raw in held if _id(raw) == tid.hex())


def _decode(raw: bytes) -> Token:
    from nunet.ucan import decode_token

    return decode_token(raw)


def _id(raw: bytes) -> str:
    from nunet.ucan import token_id

    return token_id(raw).hex()


def _short(raw: bytes) -> str:
    return _id(raw)[:SHORT_ID]


def _iso(seconds: int) -> str:
    from nunet.ucan.token import iso_time

    return iso_time(seconds)


def _doc(raw: bytes) -> Any:
    import msgspec

    from nunet.ucan import to_json

    return msgspec.json.decode(to_json(raw))


def chain_text(chain: Iterable[bytes]) -> str:
    """A token and its proofs (leaf first) as one pasteable word."""
    from nunet.ucan import to_text

    return CHAIN_SEPARATOR.join(to_text(raw) for raw in chain)


def _print_issued(ctx: click.Context, context: str, chain: list[bytes], as_json: bool,
                  verbose: bool, verb: str, gossip: dict[str, Any] | None = None) -> None:
    text = chain_text(chain)
    node = _notify(ctx, context)
    if as_json:
        extra = {} if gossip is None else {"broadcast": gossip}
        emit({"context": context, "id": _id(chain[0]), "chain": text,
              "token": _doc(chain[0]), "node": node, **extra}, True)
        return
    if gossip is not None and not gossip["broadcast"]:
        click.echo(f"not broadcast: {gossip['reason']}", err=True)
    click.echo(text)
    tok = _decode(chain[0])
    click.echo(f"{verb}: {_short(chain[0])} ({tok.action}) until {_iso(tok.expiry)}"
               + (f", chain of {len(chain)}" if len(chain) > 1 else ""), err=True)
    if verbose and not node["reloaded"]:
        click.echo(node["reason"], err=True)


def _done(ctx: click.Context, context: str, result: dict[str, Any], as_json: bool,
          verbose: bool) -> None:
    node = _notify(ctx, context)
    if as_json:
        emit({**result, "node": node}, True)
        return
    changes = [("added", c) for c in result.get("added", ())]
    changes += [("removed", c) for c in result.get("removed", ())]
    if changes:
        for verb, change in changes:
            what = change.get("did") or change["id"][:SHORT_ID]
            click.echo(f"{verb} {change['kind']} {what}")
    else:
        emit(result, False)
    if verbose:
        click.echo("node re-read the context" if node["reloaded"] else node["reason"], err=True)


def _ask_node(ctx: click.Context, path: str, body: dict[str, str]) -> Any:
    """POST `body` to the running node, briefly: raises NodeUnreachable when none answers."""
    from nunet.cli.client import ApiClient

    rest = load(ctx).config.rest
    return ApiClient(rest.addr, rest.port, rest.unix_socket, timeout=RELOAD_TIMEOUT_S).post(
        path, body
    )


def _broadcast_revocation(ctx: click.Context, revocation: bytes) -> dict[str, Any]:
    """Hand a revocation to the running node to apply and gossip; never fails the command."""
    from nunet.errors import NodeUnreachable
    from nunet.ucan import to_text

    try:
        _ask_node(ctx, REVOKE_PATH, {"token": to_text(revocation)})
    except NodeUnreachable:
        return {"broadcast": False, "reason": "node not running: nothing was gossiped"}
    except NunetError as exc:
        return {"broadcast": False, "reason": f"the node did not take the revocation: {exc}"}
    return {"broadcast": True}


def _notify(ctx: click.Context, context: str) -> dict[str, Any]:
    """Ask a running node to re-read `context`; never fails the command."""
    from nunet.errors import NodeUnreachable

    try:
        reply = _ask_node(ctx, RELOAD_PATH, {"context": context})
    except NodeUnreachable:
        return {"reloaded": False, "reason": NOT_RUNNING}
    except NunetError as exc:
        return {"reloaded": False, "reason": f"the node did not re-read the context: {exc}"}
    if isinstance(reply, dict) and reply.get("reloaded") is False:
        return {"reloaded": False, "reason": f"node: {reply.get('reason', 'not reloaded')}"}
    return {"reloaded": True}
