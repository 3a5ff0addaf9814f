"""``python -m tornado_echo.bench``: plan the runs, run them, write the results.

With no arguments it makes the full run the README's table and chart come
from; ``--smoke`` is the seconds-long version CI runs. See the package's
docstring (`tornado_echo.bench`) for what is measured and why.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from tornado_echo.bench.chart import write_chart
from tornado_echo.bench.report import Report, machine, malloc_settings, size_label
from tornado_echo.bench.servers import (
    KINDS,
    MALLOC_ENV,
    REFERENCE,
    START_TIMEOUT,
    BenchFailure,
    ServerConfig,
    ServerProcess,
    kind_named,
    malloc_env,
    raise_nofile_limit,
    start_all,
    stop_all,
)
from tornado_echo.bench.workloads import (
    TimeLimitReached,
    clamp_idle_connections,
    closed_loop,
    idle,
)
from tornado_echo.loops import LOOPS, LoopName

_Number = TypeVar("_Number", int, float)

#: Line servers are measured at this message size only: a line protocol's
#: cost is per line, and 64 bytes is a typical short command or reply.
LINE_SIZE = 64

#: The size of the extra many-connections point.
WIDE_SIZE = 1024

_MAX_SIZE = 1 << 20
_MAX_CONNECTIONS = 1000


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much to measure; `FULL` and `SMOKE` are the presets."""

    sizes: tuple[int, ...]
    connections: tuple[int, ...]
    #: Also this many connections at `WIDE_SIZE`, for byte echo; 0 for none.
    wide_connections: int
    repeat: int
    warmup: float
    duration: float
    #: Connections for the idle workload; 0 for none.
    idle: int
    chart: bool


# Budget: 37 runs per repeat of 1.3 s plus a client start, 3 repeats, and
# five idle servers: under 3 minutes on the 2-core development machine,
# well inside the 5 the full run is allowed.
FULL = Settings(
    sizes=(64, 1024, 16384),
    connections=(10,),
    wide_connections=100,
    repeat=3,
    warmup=0.3,
    duration=1.0,
    idle=10_000,
    chart=True,
)

SMOKE = Settings(
    sizes=(1024,),
    connections=(10,),
    wide_connections=0,
    repeat=1,
    warmup=0.1,
    duration=0.5,
    idle=200,
    chart=False,
)

# Seconds a run costs beyond warm-up and duration (client start, connect,
# finish), for the estimate printed before starting.
_RUN_OVERHEAD = 0.4


@dataclasses.dataclass(frozen=True)
class Step:
    """One closed-loop run."""

    repeat: int
    size: int
    connections: int
    config: ServerConfig

    def describe(self, repeats: int) -> str:
        return (
            f"repeat {self.repeat + 1}/{repeats} · {size_label(self.size)} × "
            f"{self.connections} · {self.config.name}"
        )


@dataclasses.dataclass(frozen=True)
class Plan:
    """Every server and every run, in the order they happen."""

    configs: tuple[ServerConfig, ...]
    steps: tuple[Step, ...]
    idle: tuple[ServerConfig, ...]


def select_configs(
    names: Sequence[str] | None, loops: Sequence[LoopName] | None, uvloop: bool
) -> tuple[ServerConfig, ...]:
    """The servers to measure, in catalogue order, the reference always first.

    ``names`` are kinds (``stream``) or full names (``stream (uvloop)``);
    `None` means every kind. A kind runs on each of ``loops``, or, when that
    is `None`, on asyncio's loop and also on uvloop if it is installed and
    the kind is measured there by default.
    """
    wanted: set[ServerConfig] = set()
    for kind in KINDS:
        for loop in LOOPS:
            config = ServerConfig(kind, loop)
            if names is not None and config.name in names:
                wanted.add(config)
            elif names is None or kind.name in names:
                if loops is not None:
                    chosen = loop in loops
                else:
                    chosen = loop == "asyncio" or (uvloop and kind.uvloop_by_default)
                if chosen:
                    wanted.add(config)
    # Every ratio is to the reference, so it is always measured.
    wanted.add(ServerConfig(kind_named(REFERENCE)))
    return tuple(
        config
        for loop in LOOPS
        for kind in KINDS
        if (config := ServerConfig(kind, loop)) in wanted
    )


def make_plan(settings: Settings, configs: Sequence[ServerConfig]) -> Plan:
    """Every run, interleaved: per repeat, per point, one run of each server.

    Interleaving spreads a slow moment of a shared machine over all the
    servers instead of one server's repeats, and each repeat starts the
    rotation at another server so none is always measured first.
    """
    byte_configs = [c for c in configs if not c.lines]
    line_configs = [c for c in configs if c.lines]
    reference = next(c for c in configs if c.is_reference)
    points: list[tuple[int, int, list[ServerConfig]]] = []
    for connections in settings.connections:
        sizes = set(settings.sizes) | ({LINE_SIZE} if line_configs else set())
        for size in sorted(sizes):
            here = list(byte_configs) if size in settings.sizes else []
            if size == LINE_SIZE:
                here += line_configs
            if reference not in here:
                here.insert(0, reference)
            points.append((size, connections, here))
    wide = settings.wide_connections
    if wide and WIDE_SIZE in settings.sizes and wide not in settings.connections:
        points.append((WIDE_SIZE, wide, list(byte_configs)))
    if len(configs) > 1:
        # The reference alone compares nothing: skip the sizes where only
        # it would run (say, for --servers lineserver).
        points = [point for point in points if point[2] != [reference]]
    steps = []
    for repeat in range(settings.repeat):
        for size, connections, here in points:
            turn = repeat % len(here)
            for config in here[turn:] + here[:turn]:
                steps.append(Step(repeat, size, connections, config))
    idle_configs = tuple(c for c in byte_configs if c.loop == "asyncio")
    if not settings.idle or (idle_configs == (reference,) and len(configs) > 1):
        idle_configs = ()
    return Plan(tuple(configs), tuple(steps), idle_configs)


def uvloop_installed() -> bool:
    """Whether uvloop can be imported (without importing it)."""
    return importlib.util.find_spec("uvloop") is not None


# -- arguments ---------------------------------------------------------------


def _number(
    kind: Callable[[str], _Number], low: _Number, high: _Number
) -> Callable[[str], _Number]:
    def parse(text: str) -> _Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:  # also rejects nan
            raise argparse.ArgumentTypeError(f"must be {low:,} to {high:,}, not {text}")
        return value

    return parse


def _size(text: str) -> int:
    lowered = text.strip().lower()
    scale = 1
    for suffix in ("kib", "k"):
        if lowered.endswith(suffix):
            lowered, scale = lowered.removesuffix(suffix), 1024
            break
    try:
        value = int(lowered) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a size in bytes: {text!r} (e.g. 64, 1024 or 16k)"
        ) from None
    if not 1 <= value <= _MAX_SIZE:
        raise argparse.ArgumentTypeError(f"sizes must be 1 to {_MAX_SIZE:,} bytes")
    return value


def _list(item: Callable[[str], _Number]) -> Callable[[str], tuple[_Number, ...]]:
    def parse(text: str) -> tuple[_Number, ...]:
        values = [item(part) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError("give at least one value")
        return tuple(dict.fromkeys(values))

    return parse


_KNOWN = [ServerConfig(kind, loop).name for loop in LOOPS for kind in KINDS]


def _servers(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise argparse.ArgumentTypeError("give at least one server name")
    for name in names:
        if name not in _KNOWN:
            raise argparse.ArgumentTypeError(
                f"unknown server {name!r}; known: {', '.join(_KNOWN)}"
            )
    return names


def _loops(text: str) -> tuple[LoopName, ...]:
    loops: list[LoopName] = []
    for part in text.split(","):
        name = part.strip()
        for loop in LOOPS:
            if name == loop:
                loops.append(loop)
                break
        else:
            raise argparse.ArgumentTypeError(
                f"unknown loop {name!r}; choose from {', '.join(LOOPS)}"
            )
    return tuple(dict.fromkeys(loops))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tornado_echo.bench",
        description="Benchmark echo servers on loopback: round trips per second "
        f"as a multiple of {REFERENCE}'s, with every byte verified, and memory "
        "per idle connection. With no arguments: the full run (about 3 "
        "minutes on 2 cores).",
    )
    what = parser.add_argument_group("what to measure")
    what.add_argument(
        "--sizes",
        type=_list(_size),
        metavar="LIST",
        help="message sizes for the byte-echo servers; line servers always use "
        f"{LINE_SIZE} B (default: {','.join(map(str, FULL.sizes))})",
    )
    what.add_argument(
        "--connections",
        type=_list(_number(int, 1, _MAX_CONNECTIONS)),
        metavar="LIST",
        help=f"concurrent connections of each run (default: {FULL.connections[0]})",
    )
    what.add_argument(
        "--wide-connections",
        type=_number(int, 0, _MAX_CONNECTIONS),
        metavar="N",
        help=f"also N connections at {size_label(WIDE_SIZE)} for the byte-echo "
        f"servers, if {WIDE_SIZE} is among --sizes; 0: no "
        f"(default: {FULL.wide_connections})",
    )
    what.add_argument(
        "--servers",
        type=_servers,
        metavar="LIST",
        help="comma-separated server names, e.g. 'stream,compat --lines' or "
        f"'stream (uvloop)'; {REFERENCE} is always added, as every ratio is "
        "to it (default: all)",
    )
    what.add_argument(
        "--loops",
        type=_loops,
        metavar="LIST",
        help="event loops for the servers named by kind: asyncio, uvloop "
        "(default: asyncio, and uvloop for a few servers if it is installed)",
    )
    what.add_argument(
        "--idle",
        type=_number(int, 0, 1_000_000),
        metavar="N",
        help="connections for the idle-memory measurement, clamped to the "
        f"open-file limit; 0: skip it (default: {FULL.idle:,})",
    )
    how = parser.add_argument_group("how")
    how.add_argument(
        "--repeat",
        type=_number(int, 1, 100),
        metavar="R",
        help=f"repeats, interleaved; medians are reported (default: {FULL.repeat})",
    )
    how.add_argument(
        "--warmup",
        type=_number(float, 0.0, 60.0),
        metavar="SECONDS",
        help=f"unmeasured start of each run (default: {FULL.warmup:g})",
    )
    how.add_argument(
        "--duration",
        type=_number(float, 0.1, 600.0),
        metavar="SECONDS",
        help=f"measured part of each run (default: {FULL.duration:g})",
    )
    how.add_argument(
        "--smoke",
        action="store_true",
        help="a few seconds per server, for CI: one repeat at "
        f"{size_label(SMOKE.sizes[0])} ({LINE_SIZE} B for line servers), "
        f"{SMOKE.duration:g} s runs, {SMOKE.idle} idle connections, no chart; "
        "other options still apply",
    )
    how.add_argument(
        "--time-limit",
        type=_number(float, 1.0, 86400.0),
        default=540.0,
        metavar="SECONDS",
        help="stop after this long, write what finished and exit 1 "
        "(default: %(default)g)",
    )
    how.add_argument(
        "--glibc-malloc-defaults",
        action="store_true",
        help="start the servers without "
        + " and ".join(f"{k}={v}" for k, v in MALLOC_ENV.items())
        + ", which keep glibc from mapping and unmapping asyncio's 256 KiB "
        "read buffer on every read",
    )
    how.add_argument(
        "--no-spin",
        dest="spin",
        action="store_false",
        help="let the client sleep between replies instead of busy-polling",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        metavar="DIR",
        help="where results.json, results.md, results.txt and chart.png go "
        "(default: %(default)s)",
    )
    out.add_argument(
        "--format",
        choices=("markdown", "text"),
        default="markdown",
        help="what is printed on stdout at the end (default: %(default)s)",
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    """The preset (`FULL` or `SMOKE`), with the options given replacing its values."""
    preset = SMOKE if args.smoke else FULL
    given = {
        field.name: value
        for field in dataclasses.fields(Settings)
        if (value := getattr(args, field.name, None)) is not None
    }
    settings = dataclasses.replace(preset, **given)
    return dataclasses.replace(settings, sizes=tuple(sorted(settings.sizes)))


# -- progress ----------------------------------------------------------------


class _Progress:
    """Progress on stderr: a rich bar on a terminal, else a line per step."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._done = 0
        self._what = ""
        self._bar: _RichBar | None = None
        if sys.stderr.isatty():
            try:
                self._bar = _RichBar(total)
            except ImportError:
                pass

    def __enter__(self) -> Self:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def begin(self, what: str) -> None:
        self._what = what
        if self._bar is not None:
            self._bar.describe(what)

    def done(self, summary: str) -> None:
        self._done += 1
        if self._bar is not None:
            self._bar.advance()
        else:
            self.note(f"[{self._done}/{self._total}] {self._what}: {summary}")

    def note(self, message: str) -> None:
        if self._bar is not None:
            self._bar.print(f"bench: {message}")
        else:
            print(f"bench: {message}", file=sys.stderr, flush=True)


class _RichBar:
    """rich's progress bar; making one raises `ImportError` without rich."""

    def __init__(self, total: int) -> None:
        # Optional (the bench extra installs it); the ignores keep mypy quiet
        # where it is not installed.
        from rich.console import Console  # type: ignore[import-not-found, unused-ignore]
        from rich.progress import (  # type: ignore[import-not-found, unused-ignore]
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self._console,
            # Few redraws: the bar shares the client's CPU.
            refresh_per_second=2,
        )
        self._task = self._progress.add_task("starting", total=total)

    def start(self) -> None:
        self._progress.start()

    def stop(self) -> None:
        self._progress.stop()

    def describe(self, what: str) -> None:
        self._progress.update(self._task, description=what)

    def advance(self) -> None:
        self._progress.advance(self._task)

    def print(self, message: str) -> None:
        self._console.print(message, markup=False, highlight=False)


# -- running -----------------------------------------------------------------


@contextlib.contextmanager
def _pinned(cpu: int | None) -> Iterator[None]:
    """Keep this process on ``cpu`` for the body, off the server's CPU."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _run_closed_loop(
    plan: Plan,
    settings: Settings,
    report: Report,
    progress: _Progress,
    *,
    cpus: tuple[int | None, int | None],
    env: dict[str, str],
    spin: bool,
    deadline: float,
) -> None:
    server_cpu, client_cpu = cpus
    servers = [ServerProcess(c, cpu=server_cpu, env=env) for c in plan.configs]
    by_name = {server.name: server for server in servers}
    try:
        progress.begin(f"starting {len(servers)} servers")
        # They start side by side on one CPU: a second more for each.
        start_all(servers, timeout=START_TIMEOUT + len(servers))
        for step in plan.steps:
            progress.begin(step.describe(settings.repeat))
            run = closed_loop(
                by_name[step.config.name],
                repeat=step.repeat,
                size=step.size,
                connections=step.connections,
                warmup=settings.warmup,
                duration=settings.duration,
                client_cpu=client_cpu,
                spin=spin,
                deadline=deadline,
            )
            report.runs.append(run)
            progress.done(
                f"{run.rate:,.0f} round trips/s, client busy {run.client_cpu:.0%}"
            )
    finally:
        stop_all(servers)
        for server in servers:
            report.exit_status.setdefault(server.name, []).append(server.returncode())


def _run_idle(
    plan: Plan,
    connections: int,
    requested: int,
    report: Report,
    progress: _Progress,
    *,
    server_cpu: int | None,
    env: dict[str, str],
    deadline: float,
) -> None:
    for config in plan.idle:
        progress.begin(f"idle · {connections:,} connections · {config.name}")
        # A fresh server each, so its memory holds nothing but the idle
        # connections and what a start costs.
        server = ServerProcess(config, cpu=server_cpu, env=env)
        try:
            with server:
                result = idle(
                    server, connections, requested=requested, deadline=deadline
                )
        finally:
            report.exit_status.setdefault(server.name, []).append(server.returncode())
        report.idle.append(result)
        progress.done(f"{result.bytes_per_connection:,.0f} bytes per connection")


def _estimate(plan: Plan, settings: Settings, idle_connections: int) -> float:
    per_run = settings.warmup + settings.duration + _RUN_OVERHEAD
    # Opening idle connections costs the server ~0.2 ms each, plus a start.
    per_idle = 1.0 + idle_connections * 0.0002
    return len(plan.steps) * per_run + len(plan.idle) * per_idle + 3.0


def _mode(args: argparse.Namespace, settings: Settings) -> str:
    """``smoke``, ``full`` (the README's run) or ``custom``."""
    if args.smoke:
        return "smoke"
    default = settings == FULL and args.servers is None and args.loops is None
    return "full" if default and not args.glibc_malloc_defaults else "custom"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (2 for a usage error)."""
    started = time.monotonic()
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = _settings(args)
    uvloop = uvloop_installed()
    wants_uvloop = (args.loops is not None and "uvloop" in args.loops) or any(
        name.endswith("(uvloop)") for name in args.servers or ()
    )
    if wants_uvloop and not uvloop:
        parser.error(
            "uvloop was asked for but is not installed "
            "(pip install 'tornado_echo[bench]')"
        )
    configs = select_configs(args.servers, args.loops, uvloop)
    plan = make_plan(settings, configs)
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--out {out}: {exc.strerror or exc}")

    deadline = started + args.time_limit
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    notes: list[str] = []
    server_cpu: int | None = None
    client_cpu: int | None = None
    if len(cpus) >= 2:
        server_cpu, client_cpu = cpus[0], cpus[1]
        pinning = f"server on CPU {server_cpu}, client on CPU {client_cpu}"
    else:
        pinning = "not pinned: only one CPU"
        notes.append(
            "only one CPU is usable, so client and server share it and nothing "
            "is pinned: the numbers say little"
        )
    if not uvloop and args.loops is None:
        notes.append("uvloop is not installed: no server was measured on it")
    nofile = raise_nofile_limit()
    idle_connections, clamped = clamp_idle_connections(settings.idle)
    if clamped is not None:
        notes.append(clamped)
    env = malloc_env(args.glibc_malloc_defaults)
    report = Report(
        servers=list(plan.configs),
        settings={
            "mode": _mode(args, settings),
            "sizes": list(settings.sizes),
            "line_size": LINE_SIZE,
            "connections": list(settings.connections),
            "wide_connections": settings.wide_connections,
            "repeat": settings.repeat,
            "warmup": settings.warmup,
            "duration": settings.duration,
            "idle_requested": settings.idle,
            "idle_connections": idle_connections,
            "time_limit": args.time_limit,
            "spin": args.spin,
            "glibc_malloc_defaults": args.glibc_malloc_defaults,
            "pinning": pinning,
            "server_cpu": server_cpu,
            "client_cpu": client_cpu,
            "nofile_limit": nofile,
            "order": "interleaved: per repeat, per size, one run of each server",
        },
        machine=machine(cpus),
        malloc_env=malloc_settings(env),
        notes=notes,
    )
    with _Progress(len(plan.steps) + len(plan.idle)) as progress:
        for note in notes:
            progress.note(note)
        estimate = _estimate(plan, settings, idle_connections)
        progress.note(
            f"{len(plan.configs)} servers, {len(plan.steps)} runs, idle memory on "
            f"{len(plan.idle)}; about {estimate / 60:.1f} minutes"
        )
        try:
            with _pinned(client_cpu):
                _run_closed_loop(
                    plan,
                    settings,
                    report,
                    progress,
                    cpus=(server_cpu, client_cpu),
                    env=env,
                    spin=args.spin,
                    deadline=deadline,
                )
                _run_idle(
                    plan,
                    idle_connections,
                    settings.idle,
                    report,
                    progress,
                    server_cpu=server_cpu,
                    env=env,
                    deadline=deadline,
                )
        except TimeLimitReached:
            report.stopped = (
                f"the time limit of {args.time_limit:g} s was reached; "
                "the runs that finished are reported"
            )
        except BenchFailure as exc:
            report.stopped = str(exc)
            report.stopped_detail = list(exc.detail)
        except KeyboardInterrupt:
            report.stopped = "interrupted"
    for name, statuses in report.exit_status.items():
        if any(status != 0 for status in statuses):
            report.notes.append(f"{name} exited with status(es) {statuses}")
    report.duration = time.monotonic() - started
    return _write(report, settings, out, args.format)


def _write(report: Report, settings: Settings, out: Path, fmt: str) -> int:
    """Write the files and print the table; returns the exit status."""
    written = []
    for name, text in (
        ("results.json", json.dumps(report.to_json(), indent=2) + "\n"),
        ("results.md", report.to_markdown()),
        ("results.txt", report.to_text() + "\n"),
    ):
        (out / name).write_text(text, encoding="utf-8")
        written.append(name)
    chart = out / "chart.png"
    if settings.chart and write_chart(report, chart, settings.connections[0]):
        written.append(chart.name)
    elif chart.exists():
        # A chart from an earlier run beside these results would mislead.
        chart.unlink()
    print(report.to_markdown() if fmt == "markdown" else report.to_text())
    err = sys.stderr
    print(
        f"bench: took {report.duration:.0f} s; wrote {', '.join(written)} in {out}/",
        file=err,
    )
    if report.stopped is not None:
        for line in report.stopped_detail:
            print(f"bench:   {line}", file=err)
        print(f"bench: stopped: {report.stopped}", file=err)
        return 1
    return 0
