"""`nunet bench`: measure this machine, show the figures, keep them in the node's store.

The measuring runs in this process with the compiled kernels (the node need not be running). The
report is stored through the running node's API when it answers, else straight into the node's
store (`<data_dir>/db`), which only one process may hold open.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from nunet.cli.options import client, config_options, json_option, load
from nunet.cli.output import emit
from nunet.errors import NodeUnreachable, NotFound, NunetError

API = "/api/v1/benchmark"
EXIT_INTERRUPTED = 130
RECENT_S = 7 * 24 * 3600.0


@click.group(
    "bench",
    invoke_without_command=True,
    epilog="\b\nExamples:\n  nunet bench\n  nunet bench --quick --only cpu,memory\n"
    "  nunet bench --json --no-save\n  nunet bench history\n  nunet bench show --json",
)
@click.option("--quick", is_flag=True, help="the short plan (about 5 s), as onboarding runs it")
@click.option("--only", default="", metavar="STAGES",
              help="comma-separated stages: cpu,memory,disk,network,gpu (default: all)")
@click.option("--disk-dir", type=click.Path(file_okay=False, path_type=Path),
              help="where the disk test file goes (default: the node's work dir)")
@click.option("--save/--no-save", default=True, show_default=True,
              help="store the report in the node's store")
@config_options
@json_option
@click.pass_context
def bench(ctx: click.Context, quick: bool, only: str, disk_dir: Path | None, save: bool,
          as_json: bool) -> None:
    """Measure this machine: CPU, memory, disk, network and GPU.

    Figures are measured (effective clock, GFLOPS, GB/s, IOPS), not read from the OS; matching
    uses the stored scores. Ctrl-C stops cleanly and saves nothing.
    """
    if ctx.invoked_subcommand is not None:
        return
    report = measure(ctx, quick=quick, only=only.split(","), disk_dir=disk_dir)
    if as_json:
        emit(report, True)
    else:
        print_report(report)
    if save:
        click.echo(save_report(ctx, report), err=True)


@bench.command("history")
@config_options
@json_option
@click.pass_context
def bench_history(ctx: click.Context, as_json: bool) -> None:
    """Stored benchmark reports, newest first."""
    from nunet.benchmark.model import BenchSummary

    summaries = _read(ctx, "history", lambda reports: reports.history(), list[BenchSummary])
    if as_json:
        emit(summaries, True)
        return
    if not summaries:
        click.echo("no benchmark stored yet: run `nunet bench`")
        return
    _history_table(summaries)


@bench.command("show")
@click.argument("report_id", required=False)
@config_options
@json_option
@click.pass_context
def bench_show(ctx: click.Context, report_id: str | None, as_json: bool) -> None:
    """One stored report: the latest, or REPORT_ID (see `nunet bench history`)."""
    from nunet.benchmark.model import BenchReport

    if report_id is None:
        report = _read(ctx, "latest", lambda reports: reports.latest(), BenchReport)
        if report is None:
            raise NotFound("no benchmark stored yet: run `nunet bench`")
    else:
        report = _read(ctx, f"reports/{report_id}", lambda reports: reports.get(report_id),
                       BenchReport)
    if as_json:
        emit(report, True)
    else:
        print_report(report)


# --- measuring --------------------------------------------------------------------------------


def measure(ctx: click.Context, *, quick: bool, only: list[str], disk_dir: Path | None) -> Any:
    """Runs the benchmark here with a progress display on stderr; Ctrl-C or SIGTERM stop it
    between two kernel calls (the disk stage removes its file on the way out)."""
    from nunet.benchmark.plan import FULL, QUICK
    from nunet.benchmark.runner import native_kernels, parse_stages, run_benchmark

    stages = parse_stages(only)
    kernels = native_kernels()
    general = load(ctx).config.general
    where = disk_dir or Path(general.work_dir).expanduser()
    try:
        with _sigterm_interrupts(), _progress() as progress:
            return run_benchmark(QUICK if quick else FULL, disk_dir=where, stages=stages,
                                 kernels=kernels, progress=progress, network=_network(ctx))
    except KeyboardInterrupt:
        click.echo("interrupted: nothing measured is saved", err=True)
        # Past click, which would turn the interrupt into "aborted" and exit status 1.
        raise SystemExit(EXIT_INTERRUPTED) from None


def _network(ctx: click.Context) -> Any:
    """The network stage: peers are the running node's, so the node measures them."""
    import msgspec

    from nunet.benchmark.model import BenchReport

    def probe() -> tuple[list[Any], str]:
        api = client(ctx)
        try:
            found = api.post(f"{API}/run", {"only": ["network"], "save": False})
        except NodeUnreachable:
            return [], "offline: the node is not running, so there are no peers to measure"
        except NotFound:
            return [], f"skipped: the node at {api.where} cannot measure its peers (update it)"
        report = msgspec.convert(found, BenchReport)
        return list(report.results), "; ".join(n.note for n in report.notes if n.note)

    return probe


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops a run the way Ctrl-C does, so the disk stage still cleans up."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _progress() -> Iterator[Any]:
    """Bars with ETA per stage, on stderr (stdout stays clean for --json)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from nunet.benchmark.model import StageNote

    bar = Progress(
        TextColumn("{task.fields[stage]:<8}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.description}"),
        console=Console(stderr=True),
    )

    class Shown:
        def __init__(self) -> None:
            self.tasks: dict[str, Any] = {}

        def begin(self, stage: str, steps: int) -> None:
            self.tasks[stage] = bar.add_task("starting", total=steps, stage=stage)

        def advance(self, stage: str, label: str) -> None:
            bar.update(self.tasks[stage], advance=1, description=label)

        def end(self, stage: str, note: StageNote) -> None:
            task = self.tasks[stage]
            bar.update(task, completed=bar.tasks[task].total,
                       description=note.note or f"done in {note.seconds:.1f} s")

    with bar:
        yield Shown()


# --- storing and reading ------------------------------------------------------------------------


def save_report(ctx: click.Context, report: Any) -> str:
    """Stores `report` through the running node, else in the node's store; says where."""
    api = client(ctx)
    try:
        api.post(f"{API}/reports", report)
        return f"saved as {report.id} by the node at {api.where}"
    except NodeUnreachable:
        pass
    except NotFound as exc:
        raise NunetError(
            f"the node at {api.where} is running but does not store benchmark reports ({exc}); "
            "update it, or stop it and run `nunet bench` again"
        ) from None
    with _store(ctx, create=True) as reports:
        assert reports is not None
        reports.save(report)
        return f"saved as {report.id} in {reports.repo.store.path}"


def _read(ctx: click.Context, path: str, local: Any, type_: Any) -> Any:
    """GET `API/path` from the running node (as `type_`), else `local(BenchmarkStore)`."""
    import msgspec

    try:
        return msgspec.convert(client(ctx).get(f"{API}/{path}"), type_)
    except NodeUnreachable:
        pass
    except NotFound as exc:
        if str(exc).startswith("Not Found: "):  # aiohttp's answer for a route it does not have
            raise NunetError(
                f"the node at {client(ctx).where} is running but does not serve benchmark "
                "reports: update it, or stop it to read its store directly"
            ) from None
        raise
    with _store(ctx, create=False) as reports:
        if reports is None:  # no node has ever run with this data dir
            return local(_Empty())
        return local(reports)


class _Empty:
    def history(self) -> list[object]:
        return []

    def latest(self) -> None:
        return None

    def get(self, report_id: str) -> None:
        raise NotFound(f"no benchmark report {report_id!r}: nothing is stored yet")


@contextlib.contextmanager
def _store(ctx: click.Context, *, create: bool) -> Iterator[Any]:
    from nunet.benchmark.store import BenchmarkStore
    from nunet.db.store import Store

    path = Path(load(ctx).config.general.data_dir).expanduser() / "db"
    if not create and not path.exists():
        yield None
        return
    store = Store.open(path)
    try:
        yield BenchmarkStore(store)
    finally:
        store.close()


def ensure_recent_benchmark(ctx: click.Context, *, max_age_s: float = RECENT_S) -> Any | None:
    """For `nunet onboard`: runs and stores the quick benchmark when the running node has no
    report younger than `max_age_s`; returns the new report, or None when a recent one exists."""
    api = client(ctx)
    try:
        latest = api.get(f"{API}/latest")
        if time.time() - float(latest["finished_at"]) <= max_age_s:
            return None
    except NotFound:
        pass
    click.echo("no recent benchmark of this machine: measuring it first (--no-bench skips)",
               err=True)
    report = measure(ctx, quick=True, only=[], disk_dir=None)
    api.post(f"{API}/reports", report)
    return report


# --- human output -------------------------------------------------------------------------------


def print_report(report: Any) -> None:
    from rich.table import Table

    m = report.machine
    console = _console()
    plan = "quick" if report.quick else "full"
    console.print(
        f"{m.cpu_model}: {m.cores} cores / {m.threads} threads ({m.usable_cpus} usable), "
        f"{m.ram_bytes / (1 << 30):.1f} GiB RAM, kernels {m.simd}; "
        f"{plan} run of {report.finished_at - report.started_at:.1f} s, id {report.id}"
    )
    table = Table(box=None, pad_edge=False)
    for column, justify in (("figure", "left"), ("value", "right"), ("unit", "left"),
                            ("min .. max", "right"), ("spread", "right"), ("threads", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for r in report.results:
        table.add_row(r.name, _num(r.value), r.unit, f"{_num(r.min)} .. {_num(r.max)}",
                      f"{r.spread_pct:.1f}%", str(r.threads))
    console.print(table)
    for note in report.notes:
        if note.status != "ok" or note.note:
            console.print(f"{note.stage}: {note.note or note.status}")
    if report.scores.cpu_gflops_per_core is not None:
        per_core = report.scores.cpu_gflops_per_core
        console.print(f"CPU capacity score: {per_core:.4g} GFLOPS per core (x cores onboarded)")


def _history_table(summaries: list[Any]) -> None:
    import datetime

    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    columns = ("id", "measured (UTC)", "plan", "s", "GHz", "GFLOPS/core", "GFLOPS", "GB/s",
               "ns", "read MB/s", "read IOPS")
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:3] else "right")
    for s in summaries:
        when = datetime.datetime.fromtimestamp(s.started_at, tz=datetime.UTC)
        cells = [_cell(getattr(s.scores, key)) for key in (
            "clock_ghz", "cpu_gflops_per_core", "cpu_gflops_all", "memory_gbs_all",
            "memory_latency_ns", "disk_read_mbs", "disk_read_iops")]
        table.add_row(s.id, when.strftime("%Y-%m-%d %H:%M:%S"), "quick" if s.quick else "full",
                      f"{s.seconds:.1f}", *cells)
    _console().print(table)


def _cell(value: float | None) -> str:
    return "-" if value is None else _num(value)


def _num(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10_000 else f"{value:.4g}"


def _console() -> Any:
    """Tables are never cut to 80 columns when the output goes to a file or a pipe."""
    import sys

    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)
