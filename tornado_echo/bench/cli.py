"""``python -m tornado_echo.bench``: plan the runs, run them, write the results.

With no arguments it makes the full run the README's table and chart come
from; ``--smoke`` is the seconds-long version CI runs. See the package's
docstring (`tornado_echo.bench`) for what is measured and why. The runs
and their order come from `tornado_echo.bench.plan`, the progress shown
from `tornado_echo.bench.progress`.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

from tornado_echo.bench.chart import write_chart, write_line_chart
from tornado_echo.bench.plan import (
    FULL,
    LINE_SIZE,
    PRESSURE,
    SMOKE,
    WIDE_SIZE,
    Plan,
    PressureName,
    Settings,
    estimate,
    make_plan,
    select_configs,
    uvloop_installed,
)
from tornado_echo.bench.progress import Progress
from tornado_echo.bench.report import (
    Report,
    clamp_share,
    machine,
    malloc_settings,
    point_label,
    size_label,
)
from tornado_echo.bench.servers import (
    KINDS,
    LINE_REFERENCE,
    MALLOC_ENV,
    REFERENCE,
    START_TIMEOUT,
    BenchFailure,
    ServerConfig,
    ServerProcess,
    malloc_env,
    pinned,
    raise_nofile_limit,
    start_all,
    stop_all,
    unavailable,
)
from tornado_echo.bench.workloads import (
    TimeLimitReached,
    bulk,
    clamp_idle_connections,
    closed_loop,
    fairness,
    idle,
    stuck,
)
from tornado_echo.loops import LOOPS, LoopName

__all__ = ["build_parser", "given_fields", "main", "number", "out_dir"]

_Number = TypeVar("_Number", int, float)

_MAX_SIZE = 1 << 20
_MAX_CONNECTIONS = 1000


# -- arguments ---------------------------------------------------------------


@overload
def number(
    kind: type[int], low: int, high: int | None = None
) -> Callable[[str], int]: ...


@overload
def number(
    kind: type[float], low: float, high: float | None = None
) -> Callable[[str], float]: ...


def number(
    kind: type[_Number], low: _Number, high: _Number | None = None
) -> Callable[[str], _Number]:
    """An argparse ``type``: a whole (`int`) or any (`float`) number in a range.

    From ``low`` to ``high``, or with no upper bound if ``high`` is `None`;
    anything else is refused in one line that says what was expected.

    >>> number(int, 1, 100)("42"), number(float, 0.0, 1.0)("0.5")
    (42, 0.5)
    >>> number(int, 1)("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be at least 1, not 0
    """
    what = "a whole number" if kind is int else "a number"
    bounds = f"at least {_shown(low)}"
    if high is not None:
        bounds = f"{_shown(low)} to {_shown(high)}"

    def parse(text: str) -> _Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        # Also rejects nan.
        if not (low <= value if high is None else low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be {bounds}, not {text}")
        return value

    return parse


def _shown(bound: float) -> str:
    """``1,000`` or ``0.5``: a bound as an error message shows it."""
    return f"{bound:,}" if isinstance(bound, int) else f"{bound:,g}"


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


_KNOWN = [
    ServerConfig(kind, loop).name
    for loop in LOOPS
    for kind in KINDS
    if loop in kind.loops
]


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


def _pressure(text: str) -> tuple[PressureName, ...]:
    chosen: set[str] = set()
    for part in text.split(","):
        name = part.strip()
        if name not in (*PRESSURE, "all", "none"):
            raise argparse.ArgumentTypeError(
                f"unknown pressure workload {name!r}; choose from all, none, "
                f"{', '.join(PRESSURE)}"
            )
        chosen |= set(PRESSURE) if name == "all" else {name}
    if "none" in chosen and len(chosen) > 1:
        raise argparse.ArgumentTypeError("none cannot be combined with others")
    return tuple(name for name in PRESSURE if name in chosen)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tornado_echo.bench",
        description="Benchmark echo servers on loopback: round trips per second "
        f"as a multiple of {REFERENCE}'s, with every byte verified, memory "
        "per idle connection, and under pressure: a light client's latency "
        "while others flood the server, one connection's bulk throughput, and "
        "the memory of clients that never read; and line protocols, ours "
        "against asyncio streams' readline, Twisted, AnyIO and gevent. With no "
        "arguments: the full run (about 12 minutes on 2 cores).",
    )
    _add_what_options(parser)
    _add_how_options(parser)
    _add_output_options(parser)
    return parser


def _add_what_options(parser: argparse.ArgumentParser) -> None:
    """Options for what to measure."""
    what = parser.add_argument_group("what to measure")
    what.add_argument(
        "--sizes",
        type=_list(_size),
        metavar="LIST",
        help="message sizes for the byte-echo servers "
        f"(default: {','.join(map(str, FULL.sizes))})",
    )
    what.add_argument(
        "--line-sizes",
        type=_list(_size),
        metavar="LIST",
        help="line lengths, newline included, for the line servers "
        f"(default: {','.join(map(str, FULL.line_sizes))})",
    )
    what.add_argument(
        "--connections",
        type=_list(number(int, 1, _MAX_CONNECTIONS)),
        metavar="LIST",
        help=f"concurrent connections of each run (default: {FULL.connections[0]})",
    )
    what.add_argument(
        "--wide-connections",
        type=number(int, 0, _MAX_CONNECTIONS),
        metavar="N",
        help=f"also N connections at {size_label(WIDE_SIZE)} for the byte-echo "
        f"servers, if {WIDE_SIZE} is among --sizes; 0: no "
        f"(default: {FULL.wide_connections})",
    )
    what.add_argument(
        "--line-wide-connections",
        type=number(int, 0, _MAX_CONNECTIONS),
        metavar="N",
        help=f"also N connections at {LINE_SIZE} B for the line servers, if "
        f"{LINE_SIZE} is among --line-sizes; 0: no "
        f"(default: {FULL.line_wide_connections})",
    )
    what.add_argument(
        "--pipeline",
        type=number(int, 0, _MAX_SIZE // LINE_SIZE),
        metavar="N",
        help=f"the pipelined point: each write carries N lines of {LINE_SIZE} B "
        "and the client waits for all N echoes; 0 or 1: no "
        f"(default: {FULL.pipeline})",
    )
    what.add_argument(
        "--servers",
        type=_servers,
        metavar="LIST",
        help="comma-separated server names, e.g. 'stream,compat --lines' or "
        f"'stream (uvloop)'; {REFERENCE} is always added, as every ratio is "
        f"to it, and {LINE_REFERENCE} on the loop of each line server; a peer "
        "whose framework is not installed is skipped (default: all)",
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
        type=number(int, 0, 1_000_000),
        metavar="N",
        help="connections for the idle-memory measurement, clamped to the "
        f"open-file limit; 0: skip it (default: {FULL.idle:,})",
    )
    what.add_argument(
        "--pressure",
        type=_pressure,
        metavar="LIST",
        help="pressure workloads, after the closed loop and idle memory, on "
        "asyncio's loop unless --servers or --loops say otherwise: fairness (a "
        "64-byte line's round trips while "
        f"{FULL.flood_connections} connections flood the server), bulk (one "
        "connection's MiB/s and the server's CPU time per MiB), stuck (memory "
        f"held for {FULL.stuck_clients} clients that never read, and whether "
        "it comes back); all, none, or a comma-separated list (default: all)",
    )


def _add_how_options(parser: argparse.ArgumentParser) -> None:
    """Options for how to measure."""
    how = parser.add_argument_group("how")
    how.add_argument(
        "--repeat",
        type=number(int, 1, 100),
        metavar="R",
        help=f"repeats, interleaved; medians are reported (default: {FULL.repeat})",
    )
    how.add_argument(
        "--warmup",
        type=number(float, 0.0, 60.0),
        metavar="SECONDS",
        help=f"unmeasured start of each run (default: {FULL.warmup:g})",
    )
    how.add_argument(
        "--duration",
        type=number(float, 0.1, 600.0),
        metavar="SECONDS",
        help=f"measured part of each run (default: {FULL.duration:g})",
    )
    how.add_argument(
        "--smoke",
        action="store_true",
        help="a few seconds per server, for CI: one repeat at "
        f"{size_label(SMOKE.sizes[0])} ({LINE_SIZE} B and "
        f"{point_label(SMOKE.pipeline * LINE_SIZE, SMOKE.pipeline)} for line "
        f"servers), {SMOKE.duration:g} s runs, {SMOKE.idle} idle connections, "
        f"{SMOKE.flood_connections} flood connections for "
        f"{SMOKE.fairness_duration:g} s, {SMOKE.stuck_clients} clients that "
        "never read, no chart; other options still apply",
    )
    how.add_argument(
        "--time-limit",
        type=number(float, 1.0, 86400.0),
        default=1200.0,
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


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    """Options for where the results go."""
    out = parser.add_argument_group("output")
    out.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        metavar="DIR",
        help="where results.json, results.md, results.txt, chart.png and "
        "chart-lines.png go "
        "(default: %(default)s)",
    )
    out.add_argument(
        "--redraw",
        type=Path,
        metavar="RESULTS.json",
        help="measure nothing: write results.md, results.txt and the charts "
        "again from a results.json a run wrote, into --out; the other options "
        "are ignored",
    )
    out.add_argument(
        "--format",
        choices=("markdown", "text"),
        default="markdown",
        help="what is printed on stdout at the end (default: %(default)s)",
    )


def given_fields(args: argparse.Namespace, cls: type[Any]) -> dict[str, Any]:
    """The fields of the dataclass ``cls`` that ``args`` gives a value for.

    An option left out is `None` in ``args``, and left out here, so that
    ``dataclasses.replace(preset, **given_fields(args, type(preset)))`` is
    the preset with the options given replacing its values.
    """
    return {
        field.name: value
        for field in dataclasses.fields(cls)
        if (value := getattr(args, field.name, None)) is not None
    }


def out_dir(parser: argparse.ArgumentParser, out: Path) -> Path:
    """``out``, created with its parents if need be; a usage error if it cannot be."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--out {out}: {exc.strerror or exc}")
    return out


def _settings(args: argparse.Namespace) -> Settings:
    """The preset (`FULL` or `SMOKE`), with the options given replacing its values."""
    preset = SMOKE if args.smoke else FULL
    settings = dataclasses.replace(preset, **given_fields(args, Settings))
    return dataclasses.replace(
        settings,
        sizes=tuple(sorted(settings.sizes)),
        line_sizes=tuple(sorted(settings.line_sizes)),
    )


# -- running -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Context:
    """What running any workload needs."""

    settings: Settings
    report: Report
    progress: Progress
    server_cpu: int | None
    client_cpu: int | None
    env: dict[str, str]
    spin: bool
    deadline: float

    def _stopped(self, server: ServerProcess) -> None:
        statuses = self.report.exit_status.setdefault(server.name, [])
        statuses.append(server.returncode())

    @contextlib.contextmanager
    def started(
        self, configs: Sequence[ServerConfig]
    ) -> Iterator[dict[str, ServerProcess]]:
        """``configs``' servers, started side by side, by name; stopped after."""
        servers = [ServerProcess(c, cpu=self.server_cpu, env=self.env) for c in configs]
        try:
            self.progress.begin(f"starting {len(servers)} servers")
            # They start side by side on one CPU: a second more for each.
            start_all(servers, timeout=START_TIMEOUT + len(servers))
            yield {server.name: server for server in servers}
        finally:
            stop_all(servers)
            for server in servers:
                self._stopped(server)

    @contextlib.contextmanager
    def fresh(self, config: ServerConfig) -> Iterator[ServerProcess]:
        """A server just started for ``config``, ready; stopped after.

        Its memory then holds nothing but what a start costs.
        """
        server = ServerProcess(config, cpu=self.server_cpu, env=self.env)
        try:
            with server:
                yield server
        finally:
            self._stopped(server)


def _run_closed_loop(plan: Plan, ctx: _Context) -> None:
    settings = ctx.settings
    with ctx.started(plan.configs) as by_name:
        for step in plan.steps:
            ctx.progress.begin(step.describe(settings.repeat))
            run = closed_loop(
                by_name[step.config.name],
                repeat=step.repeat,
                size=step.size,
                connections=step.connections,
                warmup=settings.warmup,
                duration=settings.duration,
                client_cpu=ctx.client_cpu,
                spin=ctx.spin,
                deadline=ctx.deadline,
                pipeline=step.pipeline,
            )
            ctx.report.runs.append(run)
            lines = f" ({run.lines_per_s:,.0f} lines/s)" if run.pipeline > 1 else ""
            ctx.progress.done(
                f"{run.rate:,.0f} round trips/s{lines}, client busy "
                f"{clamp_share(run.client_cpu):.0%}" + _preempted(run.client_preempted)
            )


def _preempted(share: float | None) -> str:
    """What to add when the busy-polling client was not running for a while."""
    # A few percent are the usual on a quiet machine; the report judges.
    if share is None or share < 0.05:
        return ""
    return f" (not running {share:.0%} of the time)"


def _run_idle(plan: Plan, ctx: _Context, connections: int) -> None:
    for config in plan.idle:
        ctx.progress.begin(f"idle · {connections:,} connections · {config.name}")
        with ctx.fresh(config) as server:
            result = idle(
                server,
                connections,
                requested=ctx.settings.idle,
                deadline=ctx.deadline,
            )
        ctx.report.idle.append(result)
        ctx.progress.done(f"{result.bytes_per_connection:,.0f} bytes per connection")


def _run_pressure(plan: Plan, ctx: _Context) -> None:
    """The fairness and bulk runs, on servers started for them."""
    if not plan.pressure:
        return
    settings = ctx.settings
    with ctx.started(plan.pressure_configs) as by_name:
        for step in plan.pressure:
            ctx.progress.begin(step.describe(settings.repeat))
            server = by_name[step.config.name]
            if step.workload == "fairness":
                fair = fairness(
                    server,
                    repeat=step.repeat,
                    connections=settings.flood_connections,
                    warmup=settings.fairness_warmup,
                    duration=settings.fairness_duration,
                    client_cpu=ctx.client_cpu,
                    deadline=ctx.deadline,
                )
                ctx.report.fairness.append(fair)
                ctx.progress.done(
                    f"probe p99 {fair.p99_ms:.2f} ms, "
                    f"flood {fair.flood_mib_per_s:,.0f} MiB/s"
                )
                continue
            run = bulk(
                server,
                repeat=step.repeat,
                warmup=settings.bulk_warmup,
                duration=settings.bulk_duration,
                client_cpu=ctx.client_cpu,
                deadline=ctx.deadline,
            )
            ctx.report.bulk.append(run)
            ctx.progress.done(
                f"{run.mib_per_s:,.0f} MiB/s, client busy "
                f"{clamp_share(run.client_cpu):.0%}"
            )


def _run_stuck(plan: Plan, ctx: _Context) -> None:
    clients = ctx.settings.stuck_clients
    for config in plan.stuck:
        ctx.progress.begin(f"stuck · {clients} clients that never read · {config.name}")
        with ctx.fresh(config) as server:
            result = stuck(server, clients, deadline=ctx.deadline)
        ctx.report.stuck.append(result)
        back = result.back_seconds
        ctx.progress.done(
            f"{result.bytes_per_client:,.0f} bytes per client, memory "
            + ("not back in 10 s" if back is None else f"back in {back:.1f} s")
        )


def _run_all(plan: Plan, ctx: _Context, idle_connections: int) -> None:
    """Every workload in turn; why it stopped early goes in the report."""
    report = ctx.report
    try:
        with pinned(ctx.client_cpu):
            _run_closed_loop(plan, ctx)
            _run_idle(plan, ctx, idle_connections)
            _run_pressure(plan, ctx)
            _run_stuck(plan, ctx)
    except TimeLimitReached:
        report.stopped = (
            f"the time limit of {report.settings['time_limit']:g} s was reached; "
            "the runs that finished are reported"
        )
    except BenchFailure as exc:
        report.stopped = str(exc)
        report.stopped_detail = list(exc.detail)
    except KeyboardInterrupt:
        report.stopped = "interrupted"


def _mode(args: argparse.Namespace, settings: Settings) -> str:
    """``smoke``, ``full`` (the README's run) or ``custom``."""
    if args.smoke:
        return "smoke"
    default = settings == FULL and args.servers is None and args.loops is None
    return "full" if default and not args.glibc_malloc_defaults else "custom"


def _plan(
    parser: argparse.ArgumentParser, args: argparse.Namespace, settings: Settings
) -> tuple[Plan, list[str]]:
    """The runs ``args`` ask for, and a note for each server skipped.

    A usage error if they need uvloop and it is missing; a peer whose
    framework is missing is left out, and its note says how to install it.
    """
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
    # The pressure workloads run on asyncio's loop unless loops are named.
    pressure = select_configs(
        args.servers, args.loops or ("asyncio",), uvloop, reference=False
    )
    configs, skipped = _installed(configs)
    pressure, _ = _installed(pressure)
    return make_plan(settings, configs, pressure), skipped


def _installed(
    configs: Sequence[ServerConfig],
) -> tuple[tuple[ServerConfig, ...], list[str]]:
    """``configs`` less those that cannot run here, and one note per kind left out."""
    kept: list[ServerConfig] = []
    skipped: dict[str, str] = {}
    for config in configs:
        reason = unavailable(config.kind)
        if reason is None:
            kept.append(config)
        else:
            skipped[config.kind.name] = f"skipping {config.kind.name}: {reason}"
    return tuple(kept), list(skipped.values())


def _settings_json(args: argparse.Namespace, settings: Settings) -> dict[str, object]:
    """The settings as ``results.json`` keeps them, less what the machine sets."""
    return {
        "mode": _mode(args, settings),
        "sizes": list(settings.sizes),
        "line_size": LINE_SIZE,
        "connections": list(settings.connections),
        "wide_connections": settings.wide_connections,
        "repeat": settings.repeat,
        "warmup": settings.warmup,
        "duration": settings.duration,
        "idle_requested": settings.idle,
        "pressure": list(settings.pressure),
        "flood_connections": settings.flood_connections,
        "fairness_warmup": settings.fairness_warmup,
        "fairness_duration": settings.fairness_duration,
        "bulk_warmup": settings.bulk_warmup,
        "bulk_duration": settings.bulk_duration,
        "stuck_clients": settings.stuck_clients,
        "line_sizes": list(settings.line_sizes),
        "line_wide_connections": settings.line_wide_connections,
        "pipeline": settings.pipeline,
        "time_limit": args.time_limit,
        "spin": args.spin,
        "glibc_malloc_defaults": args.glibc_malloc_defaults,
        "order": "interleaved: per repeat, per point, one run of each server",
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (2 for a usage error)."""
    started = time.monotonic()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.redraw is not None:
        return _redraw(parser, args)
    settings = _settings(args)
    plan, skipped = _plan(parser, args, settings)
    out = out_dir(parser, args.out)

    cpus = tuple(sorted(os.sched_getaffinity(0)))
    notes: list[str] = list(skipped)
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
    if not uvloop_installed() and args.loops is None:
        notes.append(
            "uvloop is not installed: no server was measured on it, and the "
            "load client ran on asyncio's slower loop, so more results may be "
            "client-bound"
        )
    nofile = raise_nofile_limit()
    idle_connections, clamped = clamp_idle_connections(settings.idle)
    if clamped is not None:
        notes.append(clamped)
    env = malloc_env(args.glibc_malloc_defaults)
    report = Report(
        servers=list(plan.servers),
        settings={
            **_settings_json(args, settings),
            "idle_connections": idle_connections,
            "pinning": pinning,
            "server_cpu": server_cpu,
            "client_cpu": client_cpu,
            "nofile_limit": nofile,
        },
        machine=machine(cpus),
        malloc_env=malloc_settings(env),
        notes=notes,
    )
    runs = len(plan.steps) + len(plan.idle) + len(plan.pressure) + len(plan.stuck)
    with Progress(runs) as progress:
        for note in notes:
            progress.note(note)
        seconds = estimate(plan, settings, idle_connections)
        progress.note(
            f"{len(plan.servers)} servers: {len(plan.steps)} closed-loop runs, "
            f"idle memory on {len(plan.idle)}, {len(plan.pressure)} fairness and "
            f"bulk runs, clients that never read on {len(plan.stuck)}; about "
            f"{seconds / 60:.1f} minutes"
        )
        ctx = _Context(
            settings, report, progress, server_cpu, client_cpu, env, args.spin,
            started + args.time_limit,
        )  # fmt: skip
        _run_all(plan, ctx, idle_connections)
    for name, statuses in report.exit_status.items():
        if any(status != 0 for status in statuses):
            report.notes.append(f"{name} exited with status(es) {statuses}")
    report.duration = time.monotonic() - started
    return _write(report, settings, out, args.format)


def _write(report: Report, settings: Settings, out: Path, fmt: str) -> int:
    """Write the files and print the table; returns the exit status."""
    (out / "results.json").write_text(
        json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8"
    )
    written = ["results.json", *_write_tables(report, out)]
    written += _write_charts(report, out, settings.connections[0], settings.chart)
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


def _write_charts(
    report: Report, out: Path, connections: int, wanted: bool = True
) -> list[str]:
    """Write ``chart.png`` and ``chart-lines.png``, if ``wanted``; their names.

    A chart from an earlier run that this one has no rows for is removed: it
    would mislead beside these results.
    """
    charts: list[tuple[Path, Callable[[Path], bool]]] = [
        (out / "chart.png", lambda path: write_chart(report, path, connections)),
        (out / "chart-lines.png", lambda path: write_line_chart(report, path)),
    ]
    written = []
    for chart, draw in charts:
        if wanted and draw(chart):
            written.append(chart.name)
        elif chart.exists():
            chart.unlink()
    return written


def _write_tables(report: Report, out: Path) -> list[str]:
    """Write ``results.md`` and ``results.txt``; returns their names."""
    for name, text in (
        ("results.md", report.to_markdown()),
        ("results.txt", report.to_text() + "\n"),
    ):
        (out / name).write_text(text, encoding="utf-8")
    return ["results.md", "results.txt"]


def _redraw(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--redraw``: the tables and the chart again, from a ``results.json``."""
    source: Path = args.redraw
    try:
        report = Report.from_json(json.loads(source.read_text(encoding="utf-8")))
    except OSError as exc:
        parser.error(f"--redraw {source}: {exc.strerror or exc}")
    except ValueError as exc:  # json.JSONDecodeError is one too
        parser.error(f"--redraw {source}: {exc}")
    out = out_dir(parser, args.out)
    written = _write_tables(report, out)
    # The chart is of the first connection count, as when it was measured.
    points = report.points()
    if points:
        written += _write_charts(report, out, points[0][1])
    print(report.to_markdown() if args.format == "markdown" else report.to_text())
    print(
        f"bench: measured nothing; wrote {', '.join(written)} in {out}/ from {source}",
        file=sys.stderr,
    )
    return 0
