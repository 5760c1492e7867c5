"""`nunet`: the command line. One entry point; verbs follow NuNet DMS where it has them.

Exit codes: 0 ok, 1 user error (a NunetError), 2 usage error, 3 node unreachable, 130 interrupted.
Commands import what they need inside their body so `nunet --help` stays fast.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from nunet import __version__
from nunet.cli.actor_cmd import actor
from nunet.cli.bench_cmd import bench
from nunet.cli.cap_cmd import cap
from nunet.cli.jobs_cmd import JOB_COMMANDS
from nunet.cli.options import client, config_file, config_options, json_option, load
from nunet.cli.output import emit
from nunet.errors import NodeUnreachable, NunetError

EXIT_USER, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_BUG, EXIT_INTERRUPTED = 1, 2, 3, 70, 130
API = "/api/v1"


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Examples:\n\n\b\n  nunet run\n  nunet onboard --cpu 1.5 --ram 2 --disk 10\n"
    "  nunet resources free --json\n\nShell completion: eval \"$(nunet completion bash)\"",
)
@click.version_option(__version__, "--version", "-V", prog_name="nunet")
def cli() -> None:
    """nunet: a node of a decentralized compute network (NuNet DMS compatible)."""


# --- the daemon --------------------------------------------------------------------------------


@cli.command(epilog="\b\nExamples:\n  nunet run\n  DMS_PASSPHRASE=... nunet run --context dms "
             "--rest-port 9998 --user-dir /srv/nunet")
@click.option("--context", "-c", default="dms", show_default=True,
              help="name of the node key in the keystore (created on first run)")
@config_options
@click.pass_context
def run(ctx: click.Context, context: str) -> None:
    """Run the node daemon until SIGINT/SIGTERM."""
    from nunet.crypto.keystore import passphrase_from_env_or_prompt
    from nunet.node.daemon import run_forever
    from nunet.telemetry.logs import setup_logging

    loaded = load(ctx)
    obs = loaded.config.observability
    setup_logging(
        obs.logging_level, debug=loaded.config.general.debug, log_file=obs.log_file,
        max_size_mib=obs.max_size, max_backups=obs.max_backups,
    )
    passphrase = passphrase_from_env_or_prompt()
    run_forever(loaded, context=context, passphrase=passphrase)


# --- keys --------------------------------------------------------------------------------------


@cli.group()
def key() -> None:
    """Manage keys in the encrypted keystore (<user_dir>/key)."""


def _keystore(ctx: click.Context) -> Any:
    from pathlib import Path

    from nunet.crypto.keystore import KeyStore

    return KeyStore(Path(load(ctx).config.general.user_dir).expanduser() / "key")


@key.command("new", epilog="\b\nExample:\n  DMS_PASSPHRASE=... nunet key new user")
@click.argument("name")
@config_options
@json_option
@click.pass_context
def key_new(ctx: click.Context, name: str, as_json: bool) -> None:
    """Create a new Ed25519 key NAME and print its DID."""
    from nunet.crypto.keystore import passphrase_from_env_or_prompt

    store = _keystore(ctx)
    pair = store.new(name, passphrase_from_env_or_prompt(confirm=True))
    emit({"name": name, "did": pair.did}, as_json)


@key.command("import", epilog="\b\nExample:\n  nunet key import backup 9d61b1...7f60")
@click.argument("name")
@click.argument("key_hex")
@config_options
@json_option
@click.pass_context
def key_import(ctx: click.Context, name: str, key_hex: str, as_json: bool) -> None:
    """Import a private key given as hex (32-byte seed or 64-byte seed||public key)."""
    from nunet.crypto.keystore import passphrase_from_env_or_prompt

    store = _keystore(ctx)
    pair = store.import_key(name, key_hex, passphrase_from_env_or_prompt(confirm=True))
    emit({"name": name, "did": pair.did}, as_json)


@key.command("did")
@click.argument("name")
@config_options
@json_option
@click.pass_context
def key_did(ctx: click.Context, name: str, as_json: bool) -> None:
    """Print the DID of key NAME (no passphrase needed)."""
    did = _keystore(ctx).did(name)
    if as_json:
        emit({"name": name, "did": did}, True)
    else:
        click.echo(did)


@key.command("list")
@config_options
@json_option
@click.pass_context
def key_list(ctx: click.Context, as_json: bool) -> None:
    """List keys with their DIDs."""
    import msgspec

    keys = msgspec.to_builtins(_keystore(ctx).list())
    if as_json:
        emit(keys, True)
    elif not keys:
        click.echo("no keys yet: `nunet key new NAME` creates one")
    for info in [] if as_json else keys:
        click.echo(f"{info['name']:<20} {info['did']}")


@key.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@config_options
@click.pass_context
def key_remove(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete key NAME from the keystore (it cannot be recovered)."""
    store = _keystore(ctx)
    did = store.did(name)
    if not yes:
        click.confirm(f"delete key {name} ({did})?", abort=True)
    store.remove(name)
    click.echo(f"removed {name}")


# --- config ------------------------------------------------------------------------------------


@cli.group("config")
def config_group() -> None:
    """Read and change dms_config.json."""


@config_group.command("show")
@config_options
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective configuration (file, env and flags applied)."""
    from nunet.config.loader import dump_config

    loaded = load(ctx)
    click.echo(f"# source: {loaded.source or 'embedded defaults'}", err=True)
    click.echo(dump_config(loaded.config))


@config_group.command("get", epilog="\b\nExample:\n  nunet config get rest.port")
@click.argument("key")
@config_options
@json_option
@click.pass_context
def config_get(ctx: click.Context, key: str, as_json: bool) -> None:
    """Print one value (`rest.port`) or a section (`rest`)."""
    from nunet.config.loader import get_value

    value = get_value(load(ctx).config, key)
    if as_json or isinstance(value, dict | list):
        emit(value, True)
    else:
        click.echo(value)


@config_group.command("set", epilog="\b\nExamples:\n  nunet config set rest.port 9998\n"
                      "  nunet config set p2p.bootstrap_peers /ip4/10.0.0.1/udp/9000/quic-v1")
@click.argument("key")
@click.argument("value")
@config_options
@click.pass_context
def config_set(ctx: click.Context, key: str, value: str) -> None:
    """Set KEY to VALUE in the config file (validated, written atomically)."""
    from nunet.config.loader import set_value

    path = config_file(ctx)
    set_value(path, key, value)
    click.echo(f"{key} = {value}  ({path})")


# --- onboarding and resources --------------------------------------------------------------------


def _parse_gpus(text: str) -> list[dict[str, float]]:
    gpus = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        idx, sep, vram = item.partition(":")
        try:
            gpus.append({"index": int(idx), "vram_gib": float(vram)})
        except ValueError:
            raise click.BadParameter(
                f"{item!r}: expected INDEX:VRAM_GIB, e.g. 0:8", param_hint="--gpus"
            ) from None
        if not sep:
            raise click.BadParameter(f"{item!r}: expected INDEX:VRAM_GIB", param_hint="--gpus")
    return gpus


@cli.command(epilog="\b\nExamples:\n  nunet onboard --cpu 1.5 --ram 2 --disk 10\n"
             "  nunet onboard --cpu 4 --ram 8 --disk 100 --gpus 0:6\n"
             "  nunet onboard --update --cpu 2 --ram 4 --disk 20")
@click.option("--cpu", type=float, required=True, help="cores to offer (fractions allowed)")
@click.option("--ram", type=float, required=True, help="RAM to offer, GiB")
@click.option("--disk", type=float, required=True, help="disk to offer, GiB")
@click.option("--gpus", default="", help="GPUs to offer: INDEX:VRAM_GIB,...")
@click.option("--no-gpu", is_flag=True, help="offer no GPU")
@click.option("--update", is_flag=True, help="change the capacity of an onboarded node")
@click.option("--no-bench", is_flag=True,
              help="skip the quick benchmark run when no recent one is stored")
@config_options
@json_option
@click.pass_context
def onboard(ctx: click.Context, cpu: float, ram: float, disk: float, gpus: str, no_gpu: bool,
            update: bool, no_bench: bool, as_json: bool) -> None:
    """Offer part of this machine to the network (DMS Onboard / ResourceConfig).

    A first onboarding runs the quick machine benchmark (`nunet bench --quick`, ~5 s) when the
    node has no recent result, so matching uses measured figures; `--no-bench` skips it."""
    body = {"cpu": cpu, "ram": ram, "disk": disk, "gpus": _parse_gpus(gpus), "no_gpu": no_gpu}
    path = "resource-config" if update else "onboard"
    emit(client(ctx).post(f"{API}/onboarding/{path}", body), as_json)
    if not (update or no_bench):
        from nunet.cli.bench_cmd import ensure_recent_benchmark

        ensure_recent_benchmark(ctx)


@cli.command()
@click.option("--force", is_flag=True, help="offboard even when not onboarded or busy")
@config_options
@click.pass_context
def offboard(ctx: click.Context, force: bool) -> None:
    """Withdraw this machine from the network (DMS Offboard)."""
    client(ctx).post(f"{API}/onboarding/offboard", {"force": force})
    click.echo("offboarded")


def _read_command(group: click.Group, name: str, path: str, help_text: str) -> None:
    """A command that GETs `path` from the node and prints the reply."""

    @group.command(name, help=help_text)
    @config_options
    @json_option
    @click.pass_context
    def command(ctx: click.Context, as_json: bool) -> None:
        emit(client(ctx).get(f"{API}{path}"), as_json)


_read_command(cli, "status", "/onboarding/status", "Onboarding status and resources (DMS Status).")
_read_command(cli, "info", "/node/info", "The running node's DID, version and uptime.")


@cli.command()
@click.argument("kind", type=click.Choice(["onboarded", "free", "allocated", "machine"]),
                default="onboarded")
@config_options
@json_option
@click.pass_context
def resources(ctx: click.Context, kind: str, as_json: bool) -> None:
    """Resources: onboarded (default), free, allocated, or the whole machine."""
    emit(client(ctx).get(f"{API}/resources/{kind}"), as_json)


@cli.group()
def peers() -> None:
    """This node's peers."""


_read_command(peers, "self", "/peers/self", "This node as a peer (DID, listen addresses).")
_read_command(peers, "list", "/peers/list", "Connected peers.")
_read_command(peers, "dht", "/peers/dht", "The DHT routing table and lookup statistics.")
_read_command(peers, "score", "/peers/score", "QoS scores: RTT, availability, 0-100 score.")
_read_command(peers, "heard", "/peers/heard", "Nodes heard announcing themselves on /nunet/hello.")


@peers.command("hello")
@config_options
@json_option
@click.pass_context
def peers_hello(ctx: click.Context, as_json: bool) -> None:
    """Announce this node on the /nunet/hello gossip topic now (it also does every 5 minutes)."""
    emit(client(ctx).post(f"{API}/peers/hello"), as_json)


@peers.command(
    "connect", epilog="\b\nExample:\n  nunet peers connect /ip4/10.0.0.7/udp/9000/quic-v1"
)
@click.argument("address")
@config_options
@json_option
@click.pass_context
def peers_connect(ctx: click.Context, address: str, as_json: bool) -> None:
    """Dial a peer by its multiaddr (optionally ending /p2p/DID)."""
    emit(client(ctx).post(f"{API}/peers/connect", {"address": address}), as_json)


@peers.command("ping")
@click.argument("did")
@config_options
@json_option
@click.pass_context
def peers_ping(ctx: click.Context, did: str, as_json: bool) -> None:
    """Round-trip time to a peer (looked up in the DHT when not connected)."""
    emit(client(ctx).post(f"{API}/peers/ping", {"did": did}), as_json)


# --- wallet --------------------------------------------------------------------------------------


@cli.group()
def wallet() -> None:
    """Payment addresses (DMS CreatePaymentAddress)."""


@wallet.command("new", epilog="\b\nExamples:\n  nunet wallet new --chain ethereum\n"
                "  nunet wallet new --chain cardano --testnet")
@click.option("--chain", type=click.Choice(["ethereum", "cardano"]), required=True)
@click.option("--testnet", is_flag=True, help="a testnet address")
@json_option
def wallet_new(chain: str, testnet: bool, as_json: bool) -> None:
    """Create an address and its mnemonic; printed once, nothing is stored."""
    import msgspec

    from nunet.crypto.wallet import new_wallet

    emit(msgspec.to_builtins(new_wallet(chain, testnet)), as_json)
    if not as_json:
        click.echo("write the mnemonic down now: it is not stored anywhere", err=True)


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: eval "$(nunet completion bash)"."""
    from click.shell_completion import get_completion_class

    comp_cls = get_completion_class(shell)
    assert comp_cls is not None
    click.echo(comp_cls(cli, {}, "nunet", "_NUNET_COMPLETE").source())


cli.add_command(bench)
for job_command in JOB_COMMANDS:
    cli.add_command(job_command)
cli.add_command(cap)
cli.add_command(actor)


# --- entry point ---------------------------------------------------------------------------------


def _nunet_error(exc: BaseException) -> NunetError | None:
    if isinstance(exc, NunetError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _nunet_error(inner)
            if found is not None:
                return found
    return None


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="nunet", standalone_mode=False)
    except click.exceptions.Abort as exc:
        # click turns Ctrl-C into Abort; a declined confirmation is an Abort too.
        if isinstance(exc.__context__, KeyboardInterrupt):
            click.echo("interrupted", err=True)
            return EXIT_INTERRUPTED
        click.echo("aborted", err=True)
        return EXIT_USER
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except (NunetError, BaseExceptionGroup) as exc:
        err = _nunet_error(exc)
        if err is None:
            return _bug(exc)
        click.echo(f"error: {err}", err=True)
        return EXIT_UNREACHABLE if isinstance(err, NodeUnreachable) else EXIT_USER
    except Exception as exc:
        return _bug(exc)
    return 0


def _bug(exc: BaseException) -> int:
    import os
    import traceback

    if os.environ.get("NUNET_TRACEBACK"):
        traceback.print_exception(exc)
    click.echo(
        f"error: unexpected {type(exc).__name__}: {exc} (a bug in nunet; "
        "NUNET_TRACEBACK=1 shows where)",
        err=True,
    )
    return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
