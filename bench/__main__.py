"""`python -m bench [PREFIX...] [--all] [--quick] [--out FILE]`: run the benchmarks whose metric
names start with a prefix, print one JSON line per metric, optionally write them all to FILE with
the machine facts."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import bench
from bench._harness import BenchContext, Metric, machine_facts
from nunet.fsutil import write_atomic


def bench_modules() -> Iterator[ModuleType]:
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda i: i.name):
        if info.name.startswith("bench_"):
            yield importlib.import_module(f"bench.{info.name}")


def selected(module: ModuleType, ctx: BenchContext) -> bool:
    return any(ctx.wants(name) for name in module.METRICS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("prefixes", nargs="*", metavar="PREFIX", help="e.g. frame.decode")
    parser.add_argument("--all", action="store_true", help="run every benchmark")
    parser.add_argument("--quick", action="store_true", help="3 short repeats: a smoke run")
    parser.add_argument("--repeats", type=int, help="interleaved rounds (default 7, quick 3)")
    parser.add_argument("--min-time", type=float, help="seconds per sample (default 0.2)")
    parser.add_argument("--out", type=Path, help="also write {machine, metrics} JSON here")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPU 0")
    parser.add_argument("--list", action="store_true", help="list metric names and exit")
    args = parser.parse_args(argv)
    if not (args.prefixes or args.all or args.list):
        parser.error("name one or more metric prefixes, or --all")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = BenchContext(
        repeats=args.repeats or (3 if args.quick else 7),
        min_time=args.min_time or (0.05 if args.quick else 0.2),
        prefixes=() if args.all else tuple(args.prefixes),
        pin=not args.no_pin,
    )
    if args.list:
        for module in bench_modules():
            for name in module.METRICS:
                print(name)
        return 0
    metrics: list[Metric] = []
    errors: list[dict[str, str]] = []
    for module in bench_modules():
        if not selected(module, ctx):
            continue
        ctx.log(f"bench: {module.__name__}")
        try:
            for metric in module.run(ctx):
                if ctx.wants(metric.name):
                    metrics.append(metric)
                    print(json.dumps(metric.to_dict()), flush=True)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            errors.append({"module": module.__name__, "error": f"{type(exc).__name__}: {exc}"})
    if not metrics and not errors:
        ctx.log(f"bench: no metric starts with {' or '.join(args.prefixes)} (see --list)")
        return 2
    if args.out:
        report = {
            "machine": machine_facts(),
            "settings": {"repeats": ctx.repeats, "min_time_s": ctx.min_time, "pinned": ctx.pin},
            "metrics": [m.to_dict() for m in metrics],
            "errors": errors,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.out, (json.dumps(report, indent=2) + "\n").encode())
        ctx.log(f"bench: wrote {args.out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
