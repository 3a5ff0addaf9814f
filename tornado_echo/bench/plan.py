"""What the benchmark runs, and in which order.

`Settings` says how much to measure (`FULL` and `SMOKE` are the presets)
and `select_configs` which servers; `make_plan` turns both into a `Plan`:
every closed-loop run (`Step`), interleaved so that a slow moment of the
machine hits every server alike, and the servers whose idle memory is
measured.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Sequence

from tornado_echo.bench.report import size_label
from tornado_echo.bench.servers import KINDS, REFERENCE, ServerConfig, kind_named
from tornado_echo.loops import LOOPS, LoopName

#: Line servers are measured at this message size only: a line protocol's
#: cost is per line, and 64 bytes is a typical short command or reply.
LINE_SIZE = 64

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


# Budget: 41 runs per repeat of 1.3 s plus a client start, 3 repeats, and
# six idle servers: about 3 min 10 s on the 2-core development machine,
# well inside the 5 the full run is allowed.
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
)

#: The seconds-long run CI makes (``--smoke``).
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


def estimate(plan: Plan, settings: Settings, idle_connections: int) -> float:
    """Roughly how many seconds ``plan`` takes, for the note printed first."""
    per_run = settings.warmup + settings.duration + _RUN_OVERHEAD
    # Opening idle connections costs the server ~0.2 ms each, plus a start.
    per_idle = 1.0 + idle_connections * 0.0002
    return len(plan.steps) * per_run + len(plan.idle) * per_idle + 3.0
