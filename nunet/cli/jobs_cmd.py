"""Commands about jobs: `nunet validate` checks an ensemble file without a running node; `deploy`,
`get deployments|allocations`, `logs`, `shutdown` and `results` talk to the running node (its
`/api/v1/deployments` routes, the same operations as `/dms/node/deployment/*`)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

from nunet.cli.options import client, config_options, json_option
from nunet.cli.output import emit

if TYPE_CHECKING:
    from nunet.jobs.spec import Ensemble

EXIT_INVALID = 1
API = "/api/v1"
POLL_S = 0.25  # status and log polling
STATUSES = ("Preparing", "Committing", "Provisioning", "Running", "ShuttingDown", "Completed",
            "Failed")
ENDED = ("Completed", "Failed")
SETTLED = ("Running", *ENDED)


def _read_ensemble(file: str, as_json: bool, *, problems_to_stderr: bool = True) -> Ensemble:
    """The ensemble of FILE (`-`: stdin); every problem printed and exit 1 when invalid (on
    stderr, unless listing problems is the command's own output: `validate`)."""
    from nunet.errors import EnsembleInvalid
    from nunet.jobs.spec import load_ensemble, parse_ensemble

    try:
        return parse_ensemble(sys.stdin.buffer.read()) if file == "-" else load_ensemble(file)
    except EnsembleInvalid as exc:
        if as_json:
            emit({"valid": False, "file": file,
                  "errors": [p.to_dict() for p in exc.problems]}, True)
        else:
            n = len(exc.problems)
            click.echo(f"invalid: {file}: {n} problem{'s' * (n != 1)}", err=problems_to_stderr)
            for problem in exc.problems:
                click.echo(f"  {problem}", err=problems_to_stderr)
        raise SystemExit(EXIT_INVALID) from None


@click.command(
    "validate",
    epilog="\b\nExamples:\n  nunet validate examples/hello.yaml\n"
    "  nunet validate ensemble.json --json\n  cat ensemble.yaml | nunet validate -",
)
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@json_option
def validate(file: str, as_json: bool) -> None:
    """Check an ensemble file (YAML or JSON, `-` for stdin) and list every problem in it.

    Exit code 0 when it is valid, 1 when it is not."""
    from nunet.jobs.spec import ensemble_id

    ensemble = _read_ensemble(file, as_json, problems_to_stderr=False)
    if as_json:
        emit({"valid": True, "file": file, "id": ensemble_id(ensemble),
              "allocations": sorted(ensemble.allocations), "nodes": sorted(ensemble.nodes)}, True)
    else:
        click.echo(f"valid: {ensemble.summary()}")


# --- deploy ------------------------------------------------------------------------------------


def _path(deployment: str, *rest: str) -> str:
    from urllib.parse import quote

    return "/".join((f"{API}/deployments", quote(deployment, safe=""), *rest))


def _query(**params: object) -> str:
    from urllib.parse import urlencode

    given = {k: v for k, v in params.items() if v is not None}
    return "?" + urlencode(given) if given else ""


@click.command(
    "deploy",
    epilog="\b\nExamples:\n  nunet deploy -f examples/hello.yaml\n"
    "  nunet deploy -f examples/hello.yaml --wait\n"
    "  nunet deploy -f ensemble.json -t 300 --json\n"
    "  DEP=$(nunet deploy -f examples/two-tasks.yaml) && nunet logs $DEP --allocation task-one",
)
@click.option("-f", "--file", "file", required=True,
              type=click.Path(dir_okay=False, allow_dash=True),
              help="the ensemble, YAML or JSON (`-`: stdin)")
@click.option("-t", "--timeout", type=click.FloatRange(min=0, min_open=True),
              help="seconds to find providers and get running (default: the node's, 120)")
@click.option("--wait/--no-wait", default=False, show_default=True,
              help="follow the deployment until it ends (Completed or Failed), or, with a "
              "service, until it is Running")
@config_options
@json_option
@click.pass_context
def deploy(ctx: click.Context, file: str, timeout: float | None, wait: bool,
           as_json: bool) -> None:
    """Deploy an ensemble on the network from the running node; prints the deployment id.

    The file is checked here first: every problem is listed and nothing is sent. With
    --wait, exit code 1 when the deployment fails (its reason is printed)."""
    import msgspec

    ensemble = _read_ensemble(file, as_json)
    api = client(ctx)
    body = {"ensemble": msgspec.json.decode(ensemble.to_json()), "timeout": timeout}
    created = api.post(f"{API}/deployments", body)
    if not wait:
        if as_json:
            emit(created, True)
        else:
            click.echo(created["id"])
        return
    if not as_json:
        click.echo(created["id"])
    # Tasks run to their end; an ensemble with a service is settled once it runs.
    services = any(a.type == "service" for a in ensemble.allocations.values())
    final = _follow(api, created["id"], quiet=as_json, until=SETTLED if services else ENDED)
    if as_json:
        emit(final, True)
    if final["status"] == "Failed":
        raise SystemExit(EXIT_INVALID)


def _follow(api: Any, deployment: str, *, quiet: bool, until: tuple[str, ...]) -> dict[str, Any]:
    """Poll the deployment until its status is one of `until`; each change goes to stderr
    unless `quiet`."""
    seen: tuple[str, str] | None = None
    while True:
        status = api.get(_path(deployment))
        now = (status["status"], status["reason"])
        if now != seen and not quiet:
            click.echo(f"{now[0]}{': ' + now[1] if now[1] else ''}", err=now[0] != "Failed")
            seen = now
        if status["status"] in until:
            return dict(status)
        time.sleep(POLL_S)


# --- get ---------------------------------------------------------------------------------------


@click.group("get")
def get() -> None:
    """List deployments or allocations (DMS `get deployments|allocations`)."""


def _age(stamp: float) -> str:
    seconds = max(0, int(time.time() - stamp))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@get.command(
    "deployments",
    epilog="\b\nExamples:\n  nunet get deployments\n"
    "  nunet get deployments --status Running --limit 10\n"
    "  nunet get deployments --status Preparing --json   # queued ones, with why",
)
@click.option("--status", type=click.Choice(STATUSES), help="only deployments in this status")
@click.option("--limit", type=click.IntRange(1, 1000), help="at most this many")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True,
              help="skip this many first (newest first)")
@config_options
@json_option
@click.pass_context
def get_deployments(ctx: click.Context, status: str | None, limit: int | None, offset: int,
                    as_json: bool) -> None:
    """Deployments of this node, newest first, with why each waits or failed."""
    page = client(ctx).get(f"{API}/deployments"
                           + _query(status=status, limit=limit, offset=offset or None))
    if as_json:
        emit(page, True)
        return
    if not page["items"]:
        click.echo("no deployments" + (f" in status {status}" if status else ""))
        return
    click.echo(f"{'ID':<32}  {'STATUS':<12}  {'AGE':>4}  {'ALLOCATIONS':<24}  REASON")
    for item in page["items"]:
        allocs = ",".join(f"{n}={s}" for n, s in item["allocations"].items())
        click.echo(f"{item['id']:<32}  {item['status']:<12}  {_age(item['created_at']):>4}  "
                   f"{allocs:<24}  {item['reason'] or '-'}")
    shown = offset + len(page["items"])
    if page["more"]:
        click.echo(f"({shown} of {page['total']}: --offset {shown} for more)", err=True)


@get.command(
    "allocations",
    epilog="\b\nExamples:\n  nunet get allocations\n  nunet get allocations 3f2a...e1 --json",
)
@click.argument("deployment", required=False)
@config_options
@json_option
@click.pass_context
def get_allocations(ctx: click.Context, deployment: str | None, as_json: bool) -> None:
    """Allocations of one deployment, or of every deployment of this node."""
    items = client(ctx).get(f"{API}/allocations" + _query(deployment=deployment))
    if as_json:
        emit(items, True)
        return
    if not items:
        click.echo("no allocations")
        return
    click.echo(f"{'DEPLOYMENT':<32}  {'ALLOCATION':<16}  {'STATUS':<10}  {'PROVIDER':<24}  REASON")
    for a in items:
        provider = a["provider"] or "-"
        if len(provider) > 24:
            provider = provider[:15] + "…" + provider[-8:]
        click.echo(f"{a['deployment']:<32}  {a['name']:<16}  {a['status']:<10}  "
                   f"{provider:<24}  {a['reason'] or '-'}")


# --- logs, shutdown, results ---------------------------------------------------------------------


@click.command(
    "logs",
    epilog="\b\nExamples:\n  nunet logs 3f2a...e1\n  nunet logs 3f2a...e1 --allocation web -f\n"
    "  nunet logs 3f2a...e1 --allocation hello --json",
)
@click.argument("deployment")
@click.option("--allocation", "-a", help="which allocation (default: every one)")
@click.option("--follow", "-f", is_flag=True,
              help="keep printing new output until the allocations end")
@config_options
@json_option
@click.pass_context
def logs(ctx: click.Context, deployment: str, allocation: str | None, follow: bool,
         as_json: bool) -> None:
    """Print an allocation's output (stdout and stderr, as written), from its provider.

    With several allocations and no --allocation, each line is prefixed with its allocation."""
    api = client(ctx)
    names = [allocation] if allocation else sorted(
        a["name"] for a in api.get(_path(deployment))["allocations"])
    offsets = dict.fromkeys(names, 0)
    finished: set[str] = set()
    collected: dict[str, bytes] = dict.fromkeys(names, b"")
    partial: dict[str, bytes] = dict.fromkeys(names, b"")
    prefix = len(names) > 1
    while True:
        for name in names:
            if name in finished:
                continue
            chunk = api.get(_path(deployment, "logs")
                            + _query(allocation=name, offset=offsets[name]))
            data = _b64(chunk["data"])
            offsets[name] = chunk["next_offset"]
            if chunk["finished"]:
                finished.add(name)
            if as_json:
                collected[name] += data
            else:
                partial[name] = _write(name if prefix else None, partial[name] + data,
                                       flush=name in finished)
        if not follow or len(finished) == len(names):
            break
        if _settled(api, deployment):
            follow = False  # one more round picks up what was written last
            continue
        time.sleep(POLL_S)
    if as_json:
        emit({n: {"data": d.decode(errors="replace"), "next_offset": offsets[n],
                  "finished": n in finished} for n, d in collected.items()}, True)
    else:
        for name in names:
            _write(name if prefix else None, partial[name], flush=True)


def _settled(api: Any, deployment: str) -> bool:
    return api.get(_path(deployment))["status"] in ENDED


def _b64(text: str) -> bytes:
    import base64

    return base64.b64decode(text)


def _write(prefix: str | None, data: bytes, *, flush: bool) -> bytes:
    """Write whole lines (prefixed); keep an unfinished last line unless `flush`."""
    if prefix is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return b""
    *lines, rest = data.split(b"\n")
    if flush and rest:
        lines, rest = [*lines, rest], b""
    for line in lines:
        sys.stdout.buffer.write(f"[{prefix}] ".encode() + line + b"\n")
    sys.stdout.flush()
    return rest


@click.command(
    "shutdown",
    epilog="\b\nExamples:\n  nunet shutdown 3f2a...e1\n  nunet shutdown 3f2a...e1 --wait",
)
@click.argument("deployment")
@click.option("--wait/--no-wait", default=False, show_default=True,
              help="wait until every allocation stopped")
@config_options
@json_option
@click.pass_context
def shutdown(ctx: click.Context, deployment: str, wait: bool, as_json: bool) -> None:
    """Stop a deployment: its allocations are shut down, then it is Completed."""
    api = client(ctx)
    reply = api.post(_path(deployment, "shutdown"))
    if wait:
        while reply["status"] not in ENDED:
            time.sleep(POLL_S)
            reply = api.get(_path(deployment))
    if as_json:
        emit(reply, True)
    else:
        click.echo(f"{deployment}: {reply['status']}")


@click.command(
    "results",
    epilog="\b\nExamples:\n  nunet results 3f2a...e1 -o out/\n"
    "  nunet results 3f2a...e1 --allocation train -o out/ --json",
)
@click.argument("deployment")
@click.option("-o", "--output", required=True,
              type=click.Path(file_okay=False, writable=True),
              help="directory to write the files into (created if missing)")
@click.option("--allocation", "-a", help="which allocation (default: every one, each in its "
              "own subdirectory when there are several)")
@config_options
@json_option
@click.pass_context
def results(ctx: click.Context, deployment: str, output: str, allocation: str | None,
            as_json: bool) -> None:
    """Download the output files of a deployment's allocations."""
    from pathlib import Path

    api = client(ctx)
    names = [allocation] if allocation else sorted(
        a["name"] for a in api.get(_path(deployment))["allocations"])
    root = Path(output)
    written: list[str] = []
    for name in names:
        target = root / name if len(names) > 1 else root
        for file in _listing(api, deployment, name):
            written.append(str(_download(api, deployment, name, file, target)))
    if as_json:
        emit({"files": written}, True)
    elif not written:
        click.echo("no output files")
    else:
        for path in written:
            click.echo(path)


def _listing(api: Any, deployment: str, allocation: str) -> list[str]:
    files: list[str] = []
    offset = 0
    while True:
        chunk = api.get(_path(deployment, "results")
                        + _query(allocation=allocation, offset=offset or None))
        files += chunk["files"]
        if chunk["eof"] or chunk["next_offset"] <= offset:
            return files
        offset = chunk["next_offset"]


def _download(api: Any, deployment: str, allocation: str, file: str, target: Any) -> Any:
    """One output file into `target`, written atomically; a name that would leave `target` is
    refused (the names come from the provider)."""
    import os
    import secrets
    from pathlib import PurePosixPath

    from nunet.errors import UnsafePath

    parts = PurePosixPath(file).parts
    if not parts or PurePosixPath(file).is_absolute() or any(p in ("..", ".") for p in parts):
        raise UnsafePath(f"the provider named an output file {file!r}", path="results")
    dest = target.joinpath(*parts)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.tmp-{secrets.token_hex(4)}")
    offset = 0
    try:
        with tmp.open("wb") as out:
            while True:
                chunk = api.get(_path(deployment, "results")
                                + _query(allocation=allocation, path=file, offset=offset))
                data = _b64(chunk["data"])
                out.write(data)
                offset = chunk["next_offset"]
                if chunk["eof"] or not data:
                    break
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


JOB_COMMANDS = (validate, deploy, get, logs, shutdown, results)
