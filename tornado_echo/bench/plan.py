"""What the benchmark runs, and in which order.

`Settings` says how much to measure (`FULL` and `SMOKE` are the presets)
and `select_configs` which servers; `make_plan` turns both into a `Plan`:
every closed-loop run (`Step`), interleaved so that a slow moment of the
machine hits every server alike, the servers whose idle memory is
measured, and the pressure workloads (`PRESSURE`): fairness and bulk runs
(`PressureStep`), interleaved the same way, and the servers whose clients
never read.

Line servers (ours and the peers) have points of their own, which the
reference joins as it joins every point: each of ``line_sizes`` at each
connection count, `LINE_SIZE` at ``line_wide_connections``, and the
pipelined point, ``pipeline`` lines of `LINE_SIZE` bytes in each write.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, TypeVar

from tornado_echo.bench.line_peers import KINDS as LINE_PEERS
from tornado_echo.bench.report import point_label
from tornado_echo.bench.servers import (
    KINDS,
    REFERENCE,
    ServerConfig,
    kind_named,
    line_yardstick,
)
from tornado_echo.bench.workloads import fairness_yardstick
from tornado_echo.loops import LOOPS, LoopName

_T = TypeVar("_T")

PressureName = Literal["fairness", "bulk", "stuck"]

#: The pressure workloads, in the order they run (``--pressure``).
PRESSURE: tuple[PressureName, ...] = ("fairness", "bulk", "stuck")

#: The servers each pressure workload measures, of those selected. Bulk is
#: for byte echo only: a line server's cost is per line, which the closed
#: loop measures.
FAIRNESS_KINDS = (
    "asyncio-protocol",
    "asyncio-streams",
    "stream",
    "stream-public-api",
    "compat",
    "stream --lines",
    "compat --lines",
    "lineserver",
)
BULK_KINDS = (
    "asyncio-protocol",
    "asyncio-streams",
    "tornado-naive",
    "stream",
    "stream-public-api",
    "compat",
)
STUCK_KINDS = (
    "asyncio-protocol",
    "asyncio-streams",
    "tornado-naive",
    "stream",
    "compat",
    "stream --lines",
    "compat --lines",
    "lineserver",
)

#: The line of the many-connections and pipelined line points: a line
#: protocol's cost is per line, and 64 bytes is a typical short command or
#: reply.
LINE_SIZE = 64

#: The line servers whose idle memory is measured (the byte servers' always
#: is): ours, next to the peers.
IDLE_LINE_KINDS = ("lineserver", *LINE_PEERS)

#: The size of the extra many-connections point.
WIDE_SIZE = 1024


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
    #: The pressure workloads to run, after the closed loop and idle memory.
    pressure: tuple[PressureName, ...]
    #: Fairness: connections that flood, their head start (the probe's
    #: warm-up), and the probe's measured time.
    flood_connections: int
    fairness_warmup: float
    fairness_duration: float
    #: Bulk: the warm-up, and the measured time.
    bulk_warmup: float
    bulk_duration: float
    #: Clients that never read, for the stuck workload.
    stuck_clients: int
    #: Line lengths (delimiter included) for the line servers, at each of
    #: ``connections``.
    line_sizes: tuple[int, ...]
    #: Also this many connections at `LINE_SIZE`, for line servers; 0 for none.
    line_wide_connections: int
    #: Lines of `LINE_SIZE` bytes in each write of the pipelined point, at
    #: each of ``connections``; 0 or 1 for none.
    pipeline: int


# Budget: 82 closed-loop runs per repeat of 1.3 s plus a client start
# (41 with byte servers, 41 more for the line section), 3 repeats; twelve
# idle servers; the pressure workloads: about 12 minutes on the 2-core
# development machine, inside the 15 the full run is allowed.
#: The full run, which the README's tables and chart come from.
FULL = Settings(
    sizes=(64, 1024, 16384),
    connections=(10,),
    wide_connections=100,
    repeat=3,
    warmup=0.3,
    duration=1.0,
    idle=10_000,
    chart=True,
    pressure=PRESSURE,
    flood_connections=16,
    fairness_warmup=0.5,
    fairness_duration=3.0,
    bulk_warmup=0.3,
    bulk_duration=1.5,
    stuck_clients=200,
    line_sizes=(64, 1024),
    line_wide_connections=100,
    pipeline=16,
)

#: The seconds-long run CI makes (``--smoke``).
SMOKE = Settings(
    sizes=(1024,),
    connections=(10,),
    wide_connections=0,
    repeat=1,
    warmup=0.05,
    duration=0.2,
    idle=200,
    chart=False,
    pressure=PRESSURE,
    flood_connections=4,
    fairness_warmup=0.2,
    fairness_duration=0.5,
    bulk_warmup=0.1,
    bulk_duration=0.5,
    stuck_clients=50,
    line_sizes=(LINE_SIZE,),
    line_wide_connections=0,
    pipeline=16,
)

# Seconds a run costs beyond warm-up and duration (client start, connect,
# finish), for the estimate printed before starting.
_RUN_OVERHEAD = 0.4

# A fairness run's: three interpreter starts, two of them on a CPU the
# flood keeps busy.
_FAIRNESS_OVERHEAD = 1.0

# A server of the stuck workload: its start, two waits for it to be idle,
# the burst; 10 s more where the memory does not come back.
_STUCK_SECONDS = 3.0

# Starting a set of servers side by side.
_START_SECONDS = 3.0


@dataclasses.dataclass(frozen=True)
class Step:
    """One closed-loop run."""

    repeat: int
    #: Bytes per message: with ``pipeline`` above 1, of that many lines.
    size: int
    connections: int
    config: ServerConfig
    pipeline: int = 1

    def describe(self, repeats: int) -> str:
        what = point_label(self.size, self.pipeline)
        return (
            f"repeat {self.repeat + 1}/{repeats} · {what} × {self.connections} · "
            f"{self.config.name}"
        )


@dataclasses.dataclass(frozen=True)
class PressureStep:
    """One fairness or bulk run."""

    workload: Literal["fairness", "bulk"]
    repeat: int
    config: ServerConfig

    def describe(self, repeats: int) -> str:
        return (
            f"repeat {self.repeat + 1}/{repeats} · {self.workload} · {self.config.name}"
        )


@dataclasses.dataclass(frozen=True)
class Plan:
    """Every server and every run, in the order they happen."""

    #: The closed-loop servers.
    configs: tuple[ServerConfig, ...]
    #: The closed-loop runs, interleaved.
    steps: tuple[Step, ...]
    #: The servers whose idle memory is measured, once each.
    idle: tuple[ServerConfig, ...]
    #: Fairness and bulk runs, interleaved as `steps` are.
    pressure: tuple[PressureStep, ...] = ()
    #: The servers measured with clients that never read, once each.
    stuck: tuple[ServerConfig, ...] = ()

    @property
    def pressure_configs(self) -> tuple[ServerConfig, ...]:
        """The servers of the fairness and bulk runs, in catalogue order."""
        return _catalogue_order(step.config for step in self.pressure)

    @property
    def servers(self) -> tuple[ServerConfig, ...]:
        """Every server measured by any workload, in catalogue order."""
        return _catalogue_order((*self.configs, *self.pressure_configs, *self.stuck))


def _catalogue_order(configs: Iterable[ServerConfig]) -> tuple[ServerConfig, ...]:
    """``configs`` by loop, then in the order of `.KINDS`, once each."""
    wanted = set(configs)
    return tuple(
        config
        for loop in LOOPS
        for kind in KINDS
        if (config := ServerConfig(kind, loop)) in wanted
    )


def _rotated(here: Sequence[_T], repeat: int) -> list[_T]:
    """``here``, starting at another item in each repeat."""
    turn = repeat % len(here)
    return [*here[turn:], *here[:turn]]


def select_configs(
    names: Sequence[str] | None,
    loops: Sequence[LoopName] | None,
    uvloop: bool,
    *,
    reference: bool = True,
) -> tuple[ServerConfig, ...]:
    """The servers to measure, in catalogue order, the reference always first.

    ``names`` are kinds (``stream``) or full names (``stream (uvloop)``);
    `None` means every kind. A kind runs on each of ``loops`` it can run on,
    or, when that is `None`, on asyncio's loop and also on uvloop if it is
    installed and the kind is measured there by default. With ``reference``
    false, the reference is there only if selected; with it true, each line
    server also brings its `.line_yardstick`.
    """
    wanted: set[ServerConfig] = set()
    for kind in KINDS:
        for loop in kind.loops:
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
    # Every ratio is to the reference, so it is always measured; so is the
    # line-protocol table's for each line server.
    if reference:
        wanted.add(ServerConfig(kind_named(REFERENCE)))
        wanted |= {line_yardstick(c) for c in wanted if c.lines}
    return _catalogue_order(wanted)


def make_plan(
    settings: Settings,
    configs: Sequence[ServerConfig],
    pressure: Sequence[ServerConfig] | None = None,
) -> Plan:
    """Every run, interleaved: per repeat, per point, one run of each server.

    Interleaving spreads a slow moment of a shared machine over all the
    servers instead of one server's repeats, and each repeat starts the
    rotation at another server so none is always measured first.
    ``pressure`` are the servers selected for the pressure workloads
    (default: those of ``configs`` on asyncio's loop); each workload takes
    those it measures, and the yardsticks they are compared with.
    """
    byte_configs = [c for c in configs if not c.lines]
    line_configs = [c for c in configs if c.lines]
    reference = next(c for c in configs if c.is_reference)
    # (size, connections, pipeline) -> its servers, in the order run.
    points: dict[tuple[int, int, int], list[ServerConfig]] = {}

    def add(point: tuple[int, int, int], here: Iterable[ServerConfig]) -> None:
        servers = points.setdefault(point, [reference])
        servers += [config for config in here if config not in servers]

    for connections in settings.connections:
        sizes = set(settings.sizes) | (
            set(settings.line_sizes) if line_configs else set()
        )
        for size in sorted(sizes):
            if size in settings.sizes:
                add((size, connections, 1), byte_configs)
            if size in settings.line_sizes:
                add((size, connections, 1), line_configs)
    wide = settings.wide_connections
    if wide and WIDE_SIZE in settings.sizes and wide not in settings.connections:
        add((WIDE_SIZE, wide, 1), byte_configs)
    line_wide = settings.line_wide_connections
    if (
        line_configs
        and line_wide
        and LINE_SIZE in settings.line_sizes
        and line_wide not in settings.connections
    ):
        add((LINE_SIZE, line_wide, 1), line_configs)
    if line_configs and settings.pipeline > 1:
        for connections in settings.connections:
            add(
                (settings.pipeline * LINE_SIZE, connections, settings.pipeline),
                line_configs,
            )
    if len(configs) > 1:
        # The reference alone compares nothing: skip the points where only
        # it would run (say, the byte sizes for --servers lineserver).
        points = {point: here for point, here in points.items() if here != [reference]}
    steps = tuple(
        Step(repeat, size, connections, config, pipeline)
        for repeat in range(settings.repeat)
        for (size, connections, pipeline), here in points.items()
        for config in _rotated(here, repeat)
    )
    idle_configs = _catalogue_order(
        c
        for c in configs
        if c.loop == "asyncio" and (not c.lines or c.kind.name in IDLE_LINE_KINDS)
    )
    if not settings.idle or (idle_configs == (reference,) and len(configs) > 1):
        idle_configs = ()
    if pressure is None:
        pressure = [c for c in configs if c.loop == "asyncio"]
    runs, stuck = _pressure_plan(settings, pressure)
    return Plan(tuple(configs), steps, idle_configs, runs, stuck)


def _with_yardsticks(
    selected: Iterable[ServerConfig],
    kinds: Sequence[str],
    yardstick: Callable[[ServerConfig], str],
) -> list[ServerConfig]:
    """The servers of ``kinds`` among ``selected``, and those they are compared with.

    As the reference is in the closed loop, a yardstick is measured whenever
    a server compared with it is, selected or not.
    """
    here = {c for c in selected if c.kind.name in kinds}
    here |= {ServerConfig(kind_named(yardstick(c))) for c in here}
    return list(_catalogue_order(here))


def _pressure_plan(
    settings: Settings, selected: Sequence[ServerConfig]
) -> tuple[tuple[PressureStep, ...], tuple[ServerConfig, ...]]:
    """The fairness and bulk runs, interleaved, and the stuck workload's servers."""
    points: list[tuple[Literal["fairness", "bulk"], list[ServerConfig]]] = []
    if "fairness" in settings.pressure:
        points.append(
            ("fairness", _with_yardsticks(selected, FAIRNESS_KINDS, fairness_yardstick))
        )
    if "bulk" in settings.pressure:
        points.append(("bulk", _with_yardsticks(selected, BULK_KINDS, _reference)))
    steps = tuple(
        PressureStep(workload, repeat, config)
        for repeat in range(settings.repeat)
        for workload, here in points
        if here
        for config in _rotated(here, repeat)
    )
    stuck: tuple[ServerConfig, ...] = ()
    if "stuck" in settings.pressure:
        stuck = tuple(c for c in selected if c.kind.name in STUCK_KINDS)
    return steps, stuck


def _reference(config: ServerConfig) -> str:
    return REFERENCE


def uvloop_installed() -> bool:
    """Whether uvloop can be imported (without importing it)."""
    return importlib.util.find_spec("uvloop") is not None


def estimate(plan: Plan, settings: Settings, idle_connections: int) -> float:
    """Roughly how many seconds ``plan`` takes, for the note printed first."""
    per_run = settings.warmup + settings.duration + _RUN_OVERHEAD
    # Opening idle connections costs the server ~0.2 ms each, plus a start.
    per_idle = 1.0 + idle_connections * 0.0002
    per_workload = {
        "fairness": settings.fairness_warmup
        + settings.fairness_duration
        + _FAIRNESS_OVERHEAD,
        "bulk": settings.bulk_warmup + settings.bulk_duration + _RUN_OVERHEAD,
    }
    pressure = sum(per_workload[step.workload] for step in plan.pressure)
    starts = _START_SECONDS * (1 + bool(plan.pressure))
    return (
        len(plan.steps) * per_run
        + len(plan.idle) * per_idle
        + pressure
        + len(plan.stuck) * _STUCK_SECONDS
        + starts
    )
