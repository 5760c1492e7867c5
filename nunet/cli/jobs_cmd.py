"""Commands about jobs: `nunet validate` checks an ensemble file without a running node."""

from __future__ import annotations

import sys

import click

from nunet.cli.options import json_option
from nunet.cli.output import emit

EXIT_INVALID = 1


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
    from nunet.errors import EnsembleInvalid
    from nunet.jobs.spec import ensemble_id, load_ensemble, parse_ensemble

    try:
        ensemble = parse_ensemble(sys.stdin.buffer.read()) if file == "-" else load_ensemble(file)
    except EnsembleInvalid as exc:
        if as_json:
            emit({"valid": False, "file": file,
                  "errors": [p.to_dict() for p in exc.problems]}, True)
        else:
            n = len(exc.problems)
            click.echo(f"invalid: {file}: {n} problem{'s' * (n != 1)}")
            for problem in exc.problems:
                click.echo(f"  {problem}")
        raise SystemExit(EXIT_INVALID) from None
    if as_json:
        emit({"valid": True, "file": file, "id": ensemble_id(ensemble),
              "allocations": sorted(ensemble.allocations), "nodes": sorted(ensemble.nodes)}, True)
    else:
        click.echo(f"valid: {ensemble.summary()}")
