"""Turning runs into results: ratios, medians, and the three outputs.

`Report` collects every `.RunResult` and `.IdleResult` of a benchmark (and
the pressure workloads' `.FairnessResult`, `.BulkResult` and
`.StuckResult`). For
each message size, connection count and repeat, each server's round trips
per second are divided by those of `.REFERENCE` (asyncio's Protocol echo
on asyncio's loop) **in the same repeat**, and a `Row` reports the median
of those ratios over the repeats: a slow moment of the machine then
weighs on both sides of a ratio rather than on one server's numbers. The
other columns are medians over the repeats too.

A row whose client was busy more than `CLIENT_BOUND` of its core in any
repeat is flagged ``client-bound``: the client, not the server, may have
set the pace, so its rate is a floor. Busy shares are shown clamped to 0
to 1. A row is flagged ``noisy``, rather than presented as if nothing
happened, when a repeat's share as measured was more than 5 points
outside that range, when the busy-polling client was not running for more
than a tenth of a repeat (something else had its core, so the busy share
and the rate say less about the server), or when the repeats disagree
widely (busy shares more than 25 points apart, or ratios more than 1.5
times apart); `ClientLoad.noise` says which.

Line servers' rows (`Report.line_rows`, the line-protocol table) add the
same ratio taken against `.LINE_REFERENCE` (asyncio streams' ``readline``)
on the same loop, and the server's CPU time per line; a pipelined point's
row (16 lines in each message, say) counts lines as well as round trips.

The pressure workloads' ratios are taken the same way, in the same
repeat: a fairness row's probe p99 to its yardstick's (`.FAIRNESS_YARDSTICK`,
or `~tornado_echo.bench.workloads.LINE_FAIRNESS_YARDSTICK` for line servers), a bulk row's MiB/s to the
reference's. Clients that never read are measured once per server.

Outputs: `Report.to_json` (everything, raw runs included),
`Report.to_markdown` (for the README) and `Report.to_text` (for a
terminal); `Report.from_json` reads the first back, so the other two and
the chart can be written again without measuring anything.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import tornado

from tornado_echo import __version__
from tornado_echo.bench.servers import (
    LINE_REFERENCE,
    REFERENCE,
    ServerConfig,
    kind_named,
    line_yardstick,
)
from tornado_echo.bench.workloads import (
    STUCK_BYTES,
    BulkResult,
    FairnessResult,
    IdleResult,
    RunResult,
    StuckResult,
    result_fields,
)
from tornado_echo.loops import LOOPS

__all__ = [
    "BUSY_SPREAD_NOISY",
    "CLIENT_BOUND",
    "PREEMPTED_NOISY",
    "RATIO_SPREAD_NOISY",
    "BulkRow",
    "ClientLoad",
    "FairnessRow",
    "IdleRow",
    "LineRow",
    "Report",
    "Row",
    "clamp_share",
    "format_ratio",
    "format_us",
    "machine",
    "malloc_settings",
    "median_or_none",
    "noise",
    "point_label",
    "size_label",
]

#: Above this busy share of its core, the client may be what limits a run.
CLIENT_BOUND = 0.9

# A busy share this far outside 0..1 is not rounding but a broken measurement.
_SHARE_MARGIN = 0.05
#: A row is noisy if the busy-polling client was not running for more than
#: this share of a repeat. It never sleeps, so that time went to another
#: process on its core; past a tenth of the window that process, not the
#: server, may have shaped the run.
PREEMPTED_NOISY = 0.1
# Repeats of a good full run on the development VM: busy shares within 12
# points of each other, ratios within 1.4 times; these are well past that.
#: A row is noisy if its repeats' client busy shares are more than this far
#: apart.
BUSY_SPREAD_NOISY = 0.25
#: A row is noisy if its repeats' ratios are more than this many times apart.
RATIO_SPREAD_NOISY = 1.5

_CLIENT_BOUND_NOTE = (
    f"client-bound: the load client was busy more than {CLIENT_BOUND:.0%} of its "
    "core in at least one repeat, so it may have set the pace; read the rate "
    "and the ratio as a floor. If the reference row is client-bound, the "
    "other rows' ratios are overstated instead."
)

_NOISY_NOTE = (
    "noisy: do not read much into this row as it stands. Either a repeat's "
    "client busy share was outside 0 to 100% (it is shown clamped), or the "
    "busy-polling client was not running for more than "
    f"{PREEMPTED_NOISY:.0%} of a repeat because something else had its core, "
    "or the repeats disagree (client busy shares more than "
    f"{BUSY_SPREAD_NOISY * 100:.0f} points apart, or ratios more than "
    f"{RATIO_SPREAD_NOISY:g} times apart). Run it again on a quieter machine."
)


def clamp_share(share: float) -> float:
    """``share`` within 0.0 and 1.0; 0.0 for NaN.

    >>> clamp_share(-0.21), clamp_share(0.5), clamp_share(1.25)
    (0.0, 0.5, 1.0)
    """
    if not share > 0.0:
        return 0.0
    return min(share, 1.0)


def noise(
    busy: Sequence[float], preempted: Sequence[float | None], ratios: Sequence[float]
) -> tuple[str, ...]:
    """Why the repeats of one row are not to be trusted, if they are not.

    ``busy`` holds each repeat's client busy share as measured, ``preempted``
    its share of the window not running (`None`: not busy-polling), and
    ``ratios`` the values its repeats should agree on; any may be empty.
    The bounds are `PREEMPTED_NOISY`, `BUSY_SPREAD_NOISY` and
    `RATIO_SPREAD_NOISY`.

    >>> noise([], [0.0, 0.3], [1.0, 1.1]), noise([], [], [1.0, 2.0])
    (("client's core shared",), ('repeats disagree',))
    """
    noise = []
    if any(not -_SHARE_MARGIN <= share <= 1 + _SHARE_MARGIN for share in busy):
        noise.append("busy share out of range")
    if any(share is not None and share > PREEMPTED_NOISY for share in preempted):
        noise.append("client's core shared")
    shares = [clamp_share(share) for share in busy]
    spread = len(shares) > 1 and max(shares) - min(shares) > BUSY_SPREAD_NOISY
    positive = [ratio for ratio in ratios if ratio > 0]
    apart = len(positive) > 1 and max(positive) > RATIO_SPREAD_NOISY * min(positive)
    if spread or apart:
        noise.append("repeats disagree")
    return tuple(noise)


def size_label(size: int) -> str:
    """``64 B``, ``1 KiB``, ``16 KiB``."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def point_label(size: int, pipeline: int = 1) -> str:
    """A message: ``1 KiB``, or pipelined, ``16 × 64 B lines``.

    >>> point_label(1024), point_label(1024, 16)
    ('1 KiB', '16 × 64 B lines')
    """
    if pipeline <= 1:
        return size_label(size)
    return f"{pipeline} × {size_label(size // pipeline)} lines"


def _line_point_label(size: int, pipeline: int) -> str:
    """``64 B lines``, or ``16 × 64 B lines per write``."""
    if pipeline <= 1:
        return f"{size_label(size)} lines"
    return f"{point_label(size, pipeline)} per write"


def _median(values: Iterable[float]) -> float:
    return statistics.median(values)


def median_or_none(values: Sequence[float | None]) -> float | None:
    """The median, or `None` if there are no values or any is missing.

    >>> median_or_none([3.0, 1.0, 2.0]), median_or_none([1.0, None])
    (2.0, None)
    """
    if not values or any(value is None for value in values):
        return None
    return _median(value for value in values if value is not None)


class _OfServer(Protocol):
    @property
    def server(self) -> str: ...


_Of = TypeVar("_Of", bound=_OfServer)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientLoad:
    """How busy the load client was over the repeats of a row."""

    #: The client's busy share of its core, clamped to 0.0 to 1.0: median,
    #: and the highest repeat.
    client_busy: float
    client_busy_max: float
    #: Why the row's repeats are not to be trusted as they stand (a repeat's
    #: share out of range, the client's core shared, the repeats
    #: disagreeing); empty if nothing looked wrong.
    noise: tuple[str, ...] = ()

    @property
    def client_bound(self) -> bool:
        return self.client_busy_max > CLIENT_BOUND

    @property
    def noisy(self) -> bool:
        return bool(self.noise)

    def to_json(self) -> dict[str, object]:
        return {
            **dataclasses.asdict(self),
            "client_bound": self.client_bound,
            "noisy": self.noisy,
        }

    def note(self, client_bound_mark: str = "", noisy_mark: str = "") -> str:
        """The note column: ``client-bound``, then ``noisy: ...``, or nothing.

        Each mark follows its word, pointing to a footnote.
        """
        notes = [f"client-bound{client_bound_mark}"] if self.client_bound else []
        if self.noise:
            notes.append(f"noisy{noisy_mark}: {', '.join(self.noise)}")
        return "; ".join(notes)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Row(ClientLoad):
    """One server at one message size and connection count, over the repeats."""

    server: str
    ours: bool
    size: int
    connections: int
    #: Lines per message when pipelined; 1 otherwise.
    pipeline: int = 1
    #: A line server (ours or a peer).
    lines: bool = False
    repeats: int
    #: Median over repeats of rate / the reference's rate in that repeat;
    #: `None` where the reference has no run to compare with.
    ratio: float | None
    ratios: tuple[float, ...]
    #: Median over repeats of the reference's server CPU time per round trip
    #: / this server's: efficiency, still meaningful when the client set
    #: the pace. `None` where either has no CPU figure.
    cpu_ratio: float | None
    rate: float
    mib_per_s: float
    p50_us: float
    p99_us: float
    server_cpu_per_rt_us: float | None
    # client_busy, client_busy_max and client_bound: from ClientLoad.

    @property
    def lines_per_s(self) -> float:
        """Lines echoed per second: round trips times `pipeline`."""
        return self.rate * self.pipeline

    @property
    def server_cpu_per_line_us(self) -> float | None:
        """Server CPU time per line, in µs: per round trip over `pipeline`."""
        if self.server_cpu_per_rt_us is None:
            return None
        return self.server_cpu_per_rt_us / self.pipeline

    def to_json(self) -> dict[str, object]:
        return {
            **super().to_json(),
            "lines_per_s": self.lines_per_s,
            "server_cpu_per_line_us": self.server_cpu_per_line_us,
        }


@dataclasses.dataclass(frozen=True)
class LineRow:
    """A line server's `Row`, and how it compares with `.LINE_REFERENCE`."""

    row: Row
    #: The `.LINE_REFERENCE` it is compared with: on the same loop, or on
    #: asyncio's for a peer with a loop of its own.
    yardstick: str
    #: Median over repeats of rate / the yardstick's rate in that repeat
    #: (higher is better); `None` where the yardstick has no run to compare.
    yardstick_ratio: float | None
    yardstick_ratios: tuple[float, ...]

    def to_json(self) -> dict[str, object]:
        return {
            **self.row.to_json(),
            "yardstick": self.yardstick,
            "yardstick_ratio": self.yardstick_ratio,
            "yardstick_ratios": self.yardstick_ratios,
        }


@dataclasses.dataclass(frozen=True)
class IdleRow:
    """One server's memory per idle connection, next to the reference's."""

    result: IdleResult
    ours: bool
    #: bytes per connection / the reference's; lower is better.
    ratio: float | None


@dataclasses.dataclass(frozen=True)
class FairnessRow:
    """One server's probe latency under a flood, over the repeats."""

    server: str
    ours: bool
    #: The server this one is compared with.
    yardstick: str
    connections: int
    repeats: int
    #: Median over repeats of p99 / the yardstick's p99 in that repeat
    #: (lower is better); `None` where the yardstick has no run to compare.
    ratio: float | None
    ratios: tuple[float, ...]
    p50_ms: float
    p99_ms: float
    probes: float
    flood_mib_per_s: float

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BulkRow(ClientLoad):
    """One server's single-connection throughput, over the repeats."""

    server: str
    ours: bool
    repeats: int
    #: Median over repeats of MiB/s / the reference's MiB/s in that repeat;
    #: `None` where the reference has no run to compare with.
    ratio: float | None
    ratios: tuple[float, ...]
    mib_per_s: float
    server_cpu_per_mib_us: float | None
    server_busy: float | None
    # client_busy, client_busy_max and client_bound: from ClientLoad.


def machine(cpus: Sequence[int]) -> dict[str, object]:
    """What the numbers were measured on: CPU, cores, versions."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        uvloop: str | None = importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        uvloop = None
    return {
        "cpu_model": model or platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "usable_cpus": list(cpus),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "tornado": tornado.version,
        "uvloop": uvloop,
        "tornado_echo": __version__,
    }


@dataclasses.dataclass
class Report:
    """The results of one benchmark, complete or not."""

    #: Every server measured, in the order rows list them.
    servers: list[ServerConfig]
    settings: dict[str, object]
    machine: dict[str, object]
    #: The malloc-related variables the servers ran with.
    malloc_env: dict[str, str]
    runs: list[RunResult] = dataclasses.field(default_factory=list)
    idle: list[IdleResult] = dataclasses.field(default_factory=list)
    fairness: list[FairnessResult] = dataclasses.field(default_factory=list)
    bulk: list[BulkResult] = dataclasses.field(default_factory=list)
    stuck: list[StuckResult] = dataclasses.field(default_factory=list)
    #: Server name -> exit status of each of its processes when stopped.
    exit_status: dict[str, list[int | None]] = dataclasses.field(default_factory=dict)
    #: Why the benchmark stopped early (one line), and what explains it.
    stopped: str | None = None
    stopped_detail: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    duration: float = 0.0

    def _config(self, name: str) -> ServerConfig | None:
        for config in self.servers:
            if config.name == name:
                return config
        return None

    def _order(self, name: str) -> int:
        names = [config.name for config in self.servers]
        return names.index(name) if name in names else len(names)

    def points(self) -> list[tuple[int, int, int]]:
        """The (size, connections, pipeline) points measured, in the order first run."""
        return list(
            dict.fromkeys(
                (run.size, run.connections, run.pipeline) for run in self.runs
            )
        )

    def rows(self) -> list[Row]:
        """One `Row` per server and point, by point, then in server order."""
        reference = {
            (run.size, run.connections, run.pipeline, run.repeat): run
            for run in self.runs
            if run.server == REFERENCE
        }
        groups: dict[tuple[int, int, int, str], list[RunResult]] = {}
        for run in self.runs:
            group = (run.size, run.connections, run.pipeline, run.server)
            groups.setdefault(group, []).append(run)
        order = {point: i for i, point in enumerate(self.points())}
        rows = []
        for (size, connections, pipeline, server), runs in sorted(
            groups.items(),
            key=lambda item: (order[item[0][:3]], self._order(item[0][3])),
        ):
            pairs = [
                (run, reference[key])
                for run in runs
                if (key := (size, connections, pipeline, run.repeat)) in reference
            ]
            ratios = tuple(run.rate / ref.rate for run, ref in pairs)
            cpu_ratios = tuple(
                ref.server_cpu_per_rt_us / run.server_cpu_per_rt_us
                for run, ref in pairs
                if run.server_cpu_per_rt_us and ref.server_cpu_per_rt_us
            )
            per_rt = [r.server_cpu_per_rt_us for r in runs]
            config = self._config(server)
            rows.append(
                Row(
                    server=server,
                    ours=config is not None and config.ours,
                    size=size,
                    connections=connections,
                    pipeline=pipeline,
                    lines=config is not None and config.lines,
                    repeats=len(runs),
                    ratio=_median(ratios) if ratios else None,
                    ratios=ratios,
                    cpu_ratio=_median(cpu_ratios) if cpu_ratios else None,
                    rate=_median(r.rate for r in runs),
                    mib_per_s=_median(r.mib_per_s for r in runs),
                    p50_us=_median(r.p50_us for r in runs),
                    p99_us=_median(r.p99_us for r in runs),
                    server_cpu_per_rt_us=median_or_none(per_rt),
                    client_busy=_median(clamp_share(r.client_cpu) for r in runs),
                    client_busy_max=max(clamp_share(r.client_cpu) for r in runs),
                    noise=noise(
                        [r.client_cpu for r in runs],
                        [r.client_preempted for r in runs],
                        ratios,
                    ),
                )
            )
        return rows

    def line_rows(self) -> list[LineRow]:
        """A `LineRow` for each line server's `Row`, in the same order."""
        rates: dict[tuple[str, int, int, int], dict[int, float]] = {}
        for run in self.runs:
            key = (run.server, run.size, run.connections, run.pipeline)
            rates.setdefault(key, {})[run.repeat] = run.rate
        rows = []
        for row in self.rows():
            config = self._config(row.server)
            if config is None or not config.lines:
                continue
            yardstick = line_yardstick(config).name
            mine = rates[(row.server, row.size, row.connections, row.pipeline)]
            theirs = rates.get((yardstick, row.size, row.connections, row.pipeline), {})
            ratios = tuple(
                rate / theirs[repeat]
                for repeat, rate in mine.items()
                if theirs.get(repeat, 0.0) > 0
            )
            rows.append(
                LineRow(row, yardstick, _median(ratios) if ratios else None, ratios)
            )
        return rows

    def idle_rows(self) -> list[IdleRow]:
        """One `IdleRow` per idle result, in server order."""
        reference = next((r for r in self.idle if r.server == REFERENCE), None)
        rows = []
        for result in sorted(self.idle, key=lambda r: self._order(r.server)):
            ratio = None
            if reference is not None and reference.bytes_per_connection > 0:
                ratio = result.bytes_per_connection / reference.bytes_per_connection
            config = self._config(result.server)
            rows.append(IdleRow(result, config is not None and config.ours, ratio))
        return rows

    def _ours(self, name: str) -> bool:
        config = self._config(name)
        return config is not None and config.ours

    def _by_server(self, results: Iterable[_Of]) -> list[tuple[str, list[_Of]]]:
        """``results`` grouped by server, in server order."""
        groups: dict[str, list[_Of]] = {}
        for result in results:
            groups.setdefault(result.server, []).append(result)
        return sorted(groups.items(), key=lambda item: self._order(item[0]))

    def fairness_rows(self) -> list[FairnessRow]:
        """One `FairnessRow` per server, in server order."""
        p99 = {(r.server, r.repeat): r.p99_ms for r in self.fairness}
        rows = []
        for server, runs in self._by_server(self.fairness):
            yardstick = runs[0].yardstick
            ratios = tuple(
                run.p99_ms / p99[key]
                for run in runs
                if p99.get(key := (yardstick, run.repeat), 0.0) > 0
            )
            rows.append(
                FairnessRow(
                    server=server,
                    ours=self._ours(server),
                    yardstick=yardstick,
                    connections=runs[0].connections,
                    repeats=len(runs),
                    ratio=_median(ratios) if ratios else None,
                    ratios=ratios,
                    p50_ms=_median(r.p50_ms for r in runs),
                    p99_ms=_median(r.p99_ms for r in runs),
                    probes=_median(r.probes for r in runs),
                    flood_mib_per_s=_median(r.flood_mib_per_s for r in runs),
                )
            )
        return rows

    def bulk_rows(self) -> list[BulkRow]:
        """One `BulkRow` per server, in server order."""
        reference = {r.repeat: r.mib_per_s for r in self.bulk if r.server == REFERENCE}
        rows = []
        for server, runs in self._by_server(self.bulk):
            ratios = tuple(
                run.mib_per_s / reference[run.repeat]
                for run in runs
                if reference.get(run.repeat, 0.0) > 0
            )
            per_mib = [r.server_cpu_per_mib_us for r in runs]
            busy = [r.server_busy for r in runs]
            rows.append(
                BulkRow(
                    server=server,
                    ours=self._ours(server),
                    repeats=len(runs),
                    ratio=_median(ratios) if ratios else None,
                    ratios=ratios,
                    mib_per_s=_median(r.mib_per_s for r in runs),
                    server_cpu_per_mib_us=median_or_none(per_mib),
                    server_busy=median_or_none(busy),
                    client_busy=_median(clamp_share(r.client_cpu) for r in runs),
                    client_busy_max=max(clamp_share(r.client_cpu) for r in runs),
                    # The bulk client sleeps while it waits: no preemption
                    # to tell from its CPU time.
                    noise=noise([r.client_cpu for r in runs], [], ratios),
                )
            )
        return rows

    def stuck_results(self) -> list[StuckResult]:
        """The stuck workload's results, in server order."""
        return sorted(self.stuck, key=lambda r: self._order(r.server))

    def answered(self) -> dict[str, bool]:
        """Server name -> whether it completed a run or a measurement."""
        measured: list[Iterable[_OfServer]] = [
            self.runs,
            self.idle,
            self.fairness,
            self.bulk,
            self.stuck,
        ]
        done = {r.server for results in measured for r in results}
        names = [c.name for c in self.servers]
        names += [r.server for r in self.idle if r.server not in names]
        return {name: name in done for name in names}

    def to_json(self) -> dict[str, object]:
        """Everything, for ``results.json``: machine, settings, rows and raw runs."""
        answered = self.answered()
        return {
            "complete": self.stopped is None,
            "stopped": self.stopped,
            "stopped_detail": self.stopped_detail,
            "duration_s": self.duration,
            "reference": REFERENCE,
            "settings": self.settings,
            "machine": self.machine,
            "malloc_env": self.malloc_env,
            "notes": self.notes,
            "servers": [
                {
                    **config.to_json(),
                    "answered": answered.get(config.name, False),
                    "exit_status": self.exit_status.get(config.name, []),
                }
                for config in self.servers
            ],
            "summary": [row.to_json() for row in self.rows()],
            "lines": {
                "reference": LINE_REFERENCE,
                "summary": [row.to_json() for row in self.line_rows()],
            },
            "idle": [
                {**row.result.to_json(), "ratio": row.ratio} for row in self.idle_rows()
            ],
            "runs": [run.to_json() for run in self.runs],
            "fairness": {
                "summary": [row.to_json() for row in self.fairness_rows()],
                "runs": [run.to_json() for run in self.fairness],
            },
            "bulk": {
                "summary": [row.to_json() for row in self.bulk_rows()],
                "runs": [run.to_json() for run in self.bulk],
            },
            "stuck": [result.to_json() for result in self.stuck_results()],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Report:
        """The report `to_json` wrote, read back from ``results.json``.

        Everything the tables and the chart are made of comes back: the
        servers, settings, machine and every raw result (the summaries are
        computed again). Results of earlier versions load too, without what
        they did not measure. Raises `ValueError`, in one sentence, for
        anything else.
        """
        try:
            entries = list(data["servers"])
            fairness = data.get("fairness", {})
            bulk = data.get("bulk", {})
            return cls(
                servers=[_server_config(entry) for entry in entries],
                settings=dict(data["settings"]),
                machine=dict(data["machine"]),
                malloc_env=dict(data.get("malloc_env", {})),
                runs=[RunResult(**result_fields(RunResult, r)) for r in data["runs"]],
                idle=[
                    IdleResult(**result_fields(IdleResult, r))
                    for r in data.get("idle", [])
                ],
                fairness=[
                    FairnessResult(**result_fields(FairnessResult, r))
                    for r in fairness.get("runs", [])
                ],
                bulk=[
                    BulkResult(**result_fields(BulkResult, r))
                    for r in bulk.get("runs", [])
                ],
                stuck=[
                    StuckResult(**result_fields(StuckResult, r))
                    for r in data.get("stuck", [])
                ],
                exit_status={
                    entry["name"]: list(entry.get("exit_status", []))
                    for entry in entries
                },
                stopped=data.get("stopped"),
                stopped_detail=list(data.get("stopped_detail", [])),
                notes=list(data.get("notes", [])),
                duration=float(data.get("duration_s", 0.0)),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"not the results.json of a benchmark run ({type(exc).__name__}: "
                f"{exc}); give one that python -m tornado_echo.bench wrote"
            ) from None

    def caption(self) -> str:
        """The machine and the versions, in one line."""
        m = self.machine
        cpus = m.get("usable_cpus")
        return (
            f"{m.get('cpu_model') or 'unknown CPU'}, "
            f"{len(cpus) if isinstance(cpus, list) else '?'} CPUs; "
            f"Python {m.get('python')}, Tornado {m.get('tornado')}, "
            f"uvloop {m.get('uvloop') or 'not installed'}"
        )

    def settings_line(self) -> str:
        """How the runs were made, in one line."""
        s = self.settings
        malloc = (
            " ".join(f"{k}={v}" for k, v in sorted(self.malloc_env.items()))
            or "glibc defaults"
        )
        return (
            f"{s.get('repeat')} repeat(s), {s.get('warmup')} s warm-up + "
            f"{s.get('duration')} s per run; {s.get('pinning')}; server "
            f"malloc: {malloc}"
        )

    def to_markdown(self) -> str:
        """The tables for a README: ratio first, one table per point."""
        out = ["# Echo benchmark", ""]
        if self.stopped is not None:
            out += [f"**Incomplete:** {self.stopped}", ""]
        out += [
            (
                f"Round trips per second as a multiple of `{REFERENCE}` on "
                "asyncio's loop (the median over repeats of each repeat's own "
                "ratio; higher is better), then medians of the raw numbers. "
                "The second column compares efficiency instead: the reference's "
                "server CPU time per round trip divided by this server's, also "
                "a median of per-repeat ratios; it stays meaningful when the "
                "load client, not the server, set the pace. "
                "Every echoed byte was verified. **Bold**: tornado_echo's own "
                "servers."
            ),
            "",
            f"{self.caption()}. {self.settings_line()}.",
            "",
        ]
        rows = self.rows()
        flagged = noisy = False
        for size, connections, pipeline in self.points():
            if pipeline > 1:
                continue  # in the line-protocol section, with lines/s
            out += [f"## {size_label(size)} × {connections} connections", ""]
            out += [
                (
                    f"| × {REFERENCE} | CPU/rt × | server | round trips/s | MiB/s "
                    "| p50 µs | p99 µs | server CPU µs/rt | client busy | note |"
                ),
                "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
            ]
            for row in rows:
                if (row.size, row.connections, row.pipeline) != (size, connections, 1):
                    continue
                flagged |= row.client_bound
                noisy |= row.noisy
                name = f"**{row.server}**" if row.ours else row.server
                out.append(
                    f"| {format_ratio(row.ratio)} | {format_ratio(row.cpu_ratio)} "
                    f"| {name} | {row.rate:,.0f} | {row.mib_per_s:,.1f} "
                    f"| {format_us(row.p50_us)} | {format_us(row.p99_us)} "
                    f"| {format_us(row.server_cpu_per_rt_us)} | {row.client_busy:.0%} "
                    f"| {row.note('¹')} |"
                )
            out.append("")
        if flagged:
            out += [f"¹ {_CLIENT_BOUND_NOTE}", ""]
        if noisy:
            out += [_NOISY_NOTE, ""]
        out += self._lines_markdown()
        out += self._idle_markdown()
        out += self._fairness_markdown()
        out += self._bulk_markdown()
        out += self._stuck_markdown()
        if self.notes:
            out += [*(f"- {note}" for note in self.notes), ""]
        return "\n".join(out)

    def to_text(self) -> str:
        """The same tables in plain columns, for a terminal."""
        out = [f"{self.caption()}", f"{self.settings_line()}"]
        if self.stopped is not None:
            out.append(f"INCOMPLETE: {self.stopped}")
        rows = self.rows()
        flagged = noisy = False
        head = (
            f"× {REFERENCE}", "CPU/rt ×", "server", "rt/s", "MiB/s",
            "p50 µs", "p99 µs", "srv µs/rt", "client", "",
        )  # fmt: skip
        for size, connections, pipeline in self.points():
            if pipeline > 1:
                continue  # in the line-protocol section, with lines/s
            cells: list[tuple[str, ...]] = [head]
            for row in rows:
                if (row.size, row.connections, row.pipeline) != (size, connections, 1):
                    continue
                flagged |= row.client_bound
                noisy |= row.noisy
                cells.append(
                    (
                        format_ratio(row.ratio),
                        format_ratio(row.cpu_ratio),
                        f"{row.server}{' *' if row.ours else ''}",
                        f"{row.rate:,.0f}",
                        f"{row.mib_per_s:,.1f}",
                        format_us(row.p50_us),
                        format_us(row.p99_us),
                        format_us(row.server_cpu_per_rt_us),
                        f"{row.client_busy:.0%}",
                        row.note(),
                    )
                )
            out += ["", f"{size_label(size)} × {connections} connections"]
            out += _columns(cells, left={2, 9})
        if flagged:
            out += ["", _CLIENT_BOUND_NOTE]
        if noisy:
            out += ["", _NOISY_NOTE]
        out += self._lines_text()
        out += self._idle_text()
        out += self._fairness_text()
        out += self._bulk_text()
        out += self._stuck_text()
        out += ["", "* tornado_echo's own servers"]
        out += [f"note: {note}" for note in self.notes]
        return "\n".join(out)

    def _name(self, server: str, markdown: bool) -> str:
        """``server``, marked as one of ours: bold, or a star in text."""
        if not self._ours(server):
            return server
        return f"**{server}**" if markdown else f"{server} *"

    def _line_points(self) -> list[tuple[tuple[int, int, int], list[LineRow]]]:
        """The line rows by point, in the order the points were first run."""
        by_point: dict[tuple[int, int, int], list[LineRow]] = {}
        for line in self.line_rows():
            row = line.row
            by_point.setdefault((row.size, row.connections, row.pipeline), []).append(
                line
            )
        return [
            (point, by_point[point]) for point in self.points() if point in by_point
        ]

    def _lines_markdown(self) -> list[str]:
        points = self._line_points()
        if not points:
            return []
        out = [
            "## Line protocols",
            "",
            (
                "Every line server: ours, and the line echo each peer's "
                f"documentation shows (`{LINE_REFERENCE}`: asyncio streams' "
                "`readline`; `twisted-linereceiver`: Twisted's `LineReceiver` on "
                "its epoll reactor; `anyio-asyncio`, `anyio-trio`: AnyIO's "
                "`receive_until` on asyncio and on Trio; `gevent`: a "
                "`StreamServer` reading `makefile().readline()`), each echoing "
                "every line with its newline. First its round trips per second "
                f"as a multiple of `{REFERENCE}`'s, as above; then as a multiple "
                f"of `{LINE_REFERENCE}`'s on the same loop (on asyncio's for a "
                "peer that brings its own), both the median over repeats of "
                "each repeat's own ratio, higher is better; then medians of the "
                "lines echoed per second, of the p99 round trip, and of the "
                "server's CPU time per line (lower is better; it stays "
                "meaningful when the load client set the pace). A pipelined "
                "write carries several lines at once, and the client waits for "
                "the echo of all of them before the next. Every echoed byte "
                "was verified. **Bold**: tornado_echo's own servers."
            ),
            "",
        ]
        flagged = noisy = False
        for (size, connections, pipeline), lines in points:
            out += [
                f"### {_line_point_label(size, pipeline)} × {connections} connections",
                "",
            ]
            pipelined = pipeline > 1
            out += [
                (
                    f"| × {REFERENCE} | × {LINE_REFERENCE} | server | lines/s "
                    + ("| round trips/s " if pipelined else "")
                    + "| p99 µs | server CPU µs/line | client busy | note |"
                ),
                "|---:|---:|---|---:|"
                + ("---:|" if pipelined else "")
                + "---:|---:|---:|---|",
            ]
            for line in lines:
                row = line.row
                flagged |= row.client_bound
                noisy |= row.noisy
                rate = f"| {row.rate:,.0f} " if pipelined else ""
                out.append(
                    f"| {format_ratio(row.ratio)} | {format_ratio(line.yardstick_ratio)} "
                    f"| {self._name(row.server, True)} | {row.lines_per_s:,.0f} "
                    f"{rate}| {format_us(row.p99_us)} "
                    f"| {format_us(row.server_cpu_per_line_us)} "
                    f"| {row.client_busy:.0%} | {row.note('³')} |"
                )
            out.append("")
        if flagged:
            out += [f"³ {_CLIENT_BOUND_NOTE}", ""]
        if noisy:
            out += [_NOISY_NOTE, ""]
        return out

    def _lines_text(self) -> list[str]:
        points = self._line_points()
        if not points:
            return []
        out = [
            "",
            (
                f"line protocols: × {REFERENCE}, × {LINE_REFERENCE} on the same "
                "loop (higher is better), and server CPU time per line"
            ),
        ]
        noisy = False
        for (size, connections, pipeline), lines in points:
            pipelined = pipeline > 1
            cells: list[tuple[str, ...]] = [
                (
                    f"× {REFERENCE}", f"× {LINE_REFERENCE}", "server", "lines/s",
                    *(("rt/s",) if pipelined else ()),
                    "p99 µs", "srv µs/line", "client", "",
                )
            ]  # fmt: skip
            for line in lines:
                row = line.row
                noisy |= row.noisy
                cells.append(
                    (
                        format_ratio(row.ratio),
                        format_ratio(line.yardstick_ratio),
                        self._name(row.server, False),
                        f"{row.lines_per_s:,.0f}",
                        *((f"{row.rate:,.0f}",) if pipelined else ()),
                        format_us(row.p99_us),
                        format_us(row.server_cpu_per_line_us),
                        f"{row.client_busy:.0%}",
                        row.note(),
                    )
                )
            label = _line_point_label(size, pipeline)
            out += ["", f"{label} × {connections} connections"]
            out += _columns(cells, left={2, len(cells[0]) - 1})
        if noisy:
            out += ["", _NOISY_NOTE]
        return out

    def _idle_markdown(self) -> list[str]:
        idle = self.idle_rows()
        if not idle:
            return []
        held = sorted({row.result.connections for row in idle})
        out = [
            (
                "## Memory per idle connection "
                f"({' / '.join(f'{n:,}' for n in held)} connections)"
            ),
            "",
            (
                "Growth of the server's resident memory from one warm-up "
                "connection to all connections open and each echoed once, "
                f"per connection; as a multiple of `{REFERENCE}`'s (lower is "
                "better)."
            ),
            "",
            (
                f"| × {REFERENCE} | server | bytes/connection | RSS before MiB "
                "| RSS after MiB | sample echoed |"
            ),
            "|---:|---|---:|---:|---:|---:|",
        ]
        for row in idle:
            r = row.result
            out.append(
                f"| {format_ratio(row.ratio)} | {self._name(r.server, True)} "
                f"| {r.bytes_per_connection:,.0f} | {_mib(r.rss_before)} "
                f"| {_mib(r.rss_after)} | {r.sample_echoed}/{r.sample} |"
            )
        return [*out, ""]

    def _fairness_markdown(self) -> list[str]:
        rows = self.fairness_rows()
        if not rows:
            return []
        floods = " / ".join(sorted({f"{row.connections}" for row in rows}))
        seconds = _median(r.probe_elapsed for r in self.fairness)
        out = [
            f"## A light client under a flood ({floods} connections)",
            "",
            (
                f"While {floods} connections keep the server's pipes full (each "
                "writes 64 KiB chunks, of 64-byte lines for line servers, as fast "
                "as the server takes them, and discards the echo), a light client "
                "sends a 64-byte line, waits for its echo, checks it byte for "
                "byte, pauses 5 ms and sends the next, for "
                f"{seconds:.1f} s after the flood's head start. Flood and probe "
                "are separate processes on the client's CPU, the probe at a "
                "higher priority where that is allowed, so its wakeups do not "
                "wait for the flood. "
                "First the probe's p99 round trip as a multiple of its "
                "yardstick's in the same repeat (the median over repeats; lower "
                "is better): `compat`'s, whose level-triggered poller gives each "
                "busy connection one read per turn of the loop, or `compat "
                "--lines`' for line servers. Then medians of the probe's p50 and "
                "p99, its round trips, and the MiB/s echoed to the flood (not "
                "checked)."
            ),
            "",
            (
                "| p99 × yardstick | yardstick | server | p50 ms | p99 ms | round trips "
                "| flood MiB/s |"
            ),
            "|---:|---|---|---:|---:|---:|---:|",
        ]
        for row in rows:
            out.append(
                f"| {format_ratio(row.ratio)} | {row.yardstick} "
                f"| {self._name(row.server, True)} | {row.p50_ms:.2f} "
                f"| {row.p99_ms:.2f} | {row.probes:,.0f} "
                f"| {row.flood_mib_per_s:,.0f} |"
            )
        return [*out, ""]

    def _bulk_markdown(self) -> list[str]:
        rows = self.bulk_rows()
        if not rows:
            return []
        seconds = _median(r.elapsed for r in self.bulk)
        out = [
            "## Bulk throughput on one connection",
            "",
            (
                "One connection writes 64 KiB chunks as fast as the server takes "
                "them while it reads the echo back and checks every byte; after "
                f"a warm-up, the MiB/s echoed over {seconds:.1f} s as a multiple "
                f"of `{REFERENCE}`'s in the same repeat (the median over repeats; "
                "higher is better), then medians of the MiB/s, of the server's "
                "CPU time per echoed MiB (lower is better; it stays meaningful "
                "when the client set the pace) and of how busy each side was."
            ),
            "",
            (
                f"| × {REFERENCE} | server | MiB/s | server CPU µs/MiB | server busy "
                "| client busy | note |"
            ),
            "|---:|---|---:|---:|---:|---:|---|",
        ]
        for row in rows:
            out.append(
                f"| {format_ratio(row.ratio)} | {self._name(row.server, True)} "
                f"| {row.mib_per_s:,.0f} | {format_us(row.server_cpu_per_mib_us)} "
                f"| {_share(row.server_busy)} | {row.client_busy:.0%} "
                f"| {row.note('²')} |"
            )
        if any(row.client_bound for row in rows):
            out += ["", f"² {_CLIENT_BOUND_NOTE}"]
        if any(row.noisy for row in rows):
            out += ["", _NOISY_NOTE]
        return [*out, ""]

    def _stuck_markdown(self) -> list[str]:
        results = self.stuck_results()
        if not results:
            return []
        clients = " / ".join(sorted({f"{r.clients}" for r in results}))
        out = [
            (
                f"## Clients that never read ({clients} clients × "
                f"{size_label(STUCK_BYTES)})"
            ),
            "",
            (
                f"A fresh server, once idle, gets {clients} connections with 32 "
                f"KiB kernel buffers that each send {size_label(STUCK_BYTES)} "
                "(of 1 KiB lines) as fast as the server takes it, and never read "
                "the echo. Once the server is idle again, the growth of its "
                "resident memory is divided by the clients; then they all close, "
                "and its RSS is watched for up to 10 s to come back within 1.25× "
                "of the start; a new connection must then still get its echo. "
                "Only the process's memory is counted: what the kernel's socket "
                "buffers hold (on loopback, up to several MiB a connection) is "
                "not, so a server that writes whatever it reads, as "
                f"`{REFERENCE}`'s does, may show next to nothing here while the "
                "kernel holds the burst. A server that stops reading while a "
                "write waits holds about a read's worth per client; the point "
                "is what it keeps, and whether it gives it back."
            ),
            "",
            (
                "| server | bytes/client | taken MiB/client | RSS start MiB "
                "| RSS held MiB | RSS after MiB | memory back |"
            ),
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in results:
            out.append(
                f"| {self._name(r.server, True)} | {r.bytes_per_client:,.0f} "
                f"| {r.sent_bytes / r.clients / 2**20:.2f} | {_mib(r.rss_start)} "
                f"| {_mib(r.rss_held)} | {_mib(r.rss_after)} | {_back(r)} |"
            )
        return [*out, ""]

    def _idle_text(self) -> list[str]:
        idle = self.idle_rows()
        if not idle:
            return []
        cells: list[tuple[str, ...]] = [
            (f"× {REFERENCE}", "server", "B/conn", "RSS before", "RSS after")
        ]
        cells += [
            (
                format_ratio(row.ratio),
                self._name(row.result.server, False),
                f"{row.result.bytes_per_connection:,.0f}",
                f"{_mib(row.result.rss_before)} MiB",
                f"{_mib(row.result.rss_after)} MiB",
            )
            for row in idle
        ]
        held = ", ".join(sorted({f"{r.result.connections:,}" for r in idle}))
        return [
            "",
            f"memory per idle connection ({held} connections)",
            *_columns(cells, left={1}),
        ]

    def _fairness_text(self) -> list[str]:
        rows = self.fairness_rows()
        if not rows:
            return []
        cells: list[tuple[str, ...]] = [
            ("p99 ×", "yardstick", "server", "p50 ms", "p99 ms", "rts", "flood MiB/s")
        ]
        cells += [
            (
                format_ratio(row.ratio),
                row.yardstick,
                self._name(row.server, False),
                f"{row.p50_ms:.2f}",
                f"{row.p99_ms:.2f}",
                f"{row.probes:,.0f}",
                f"{row.flood_mib_per_s:,.0f}",
            )
            for row in rows
        ]
        floods = ", ".join(sorted({f"{row.connections}" for row in rows}))
        return [
            "",
            (
                f"a light client's round trips under a flood of {floods} connections "
                "(p99 × its yardstick's; lower is better)"
            ),
            *_columns(cells, left={1, 2}),
        ]

    def _bulk_text(self) -> list[str]:
        rows = self.bulk_rows()
        if not rows:
            return []
        cells: list[tuple[str, ...]] = [
            (f"× {REFERENCE}", "server", "MiB/s", "srv µs/MiB", "server", "client", "")
        ]
        cells += [
            (
                format_ratio(row.ratio),
                self._name(row.server, False),
                f"{row.mib_per_s:,.0f}",
                format_us(row.server_cpu_per_mib_us),
                _share(row.server_busy),
                f"{row.client_busy:.0%}",
                row.note(),
            )
            for row in rows
        ]
        out = ["", "bulk throughput on one connection", *_columns(cells, left={1, 6})]
        if any(row.noisy for row in rows):
            out += ["", _NOISY_NOTE]
        return out

    def _stuck_text(self) -> list[str]:
        results = self.stuck_results()
        if not results:
            return []
        cells: list[tuple[str, ...]] = [
            ("server", "B/client", "RSS start", "RSS held", "RSS after", "back")
        ]
        cells += [
            (
                self._name(r.server, False),
                f"{r.bytes_per_client:,.0f}",
                f"{_mib(r.rss_start)} MiB",
                f"{_mib(r.rss_held)} MiB",
                f"{_mib(r.rss_after)} MiB",
                _back(r),
            )
            for r in results
        ]
        clients = ", ".join(sorted({f"{r.clients}" for r in results}))
        return [
            "",
            f"clients that never read ({clients} clients × {size_label(STUCK_BYTES)})",
            *_columns(cells, left={0, 5}),
        ]


def _server_config(entry: Mapping[str, Any]) -> ServerConfig:
    """The `.ServerConfig` a ``servers`` entry of ``results.json`` describes."""
    kind, loop = entry["kind"], entry["loop"]
    for name in LOOPS:
        if loop == name:
            try:
                return ServerConfig(kind_named(kind), name)
            except KeyError:
                break
    raise ValueError(
        f"results.json names a server this version does not know: {kind!r} on {loop!r}"
    )


def format_ratio(value: float | None) -> str:
    """A ratio as the tables show it: ``1.25×``, or ``n/a``."""
    return "n/a" if value is None else f"{value:.2f}×"


def _mib(value: int) -> str:
    return f"{value / 2**20:,.1f}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _back(result: StuckResult) -> str:
    """When the memory came back, or that it did not."""
    if result.back_seconds is None:
        return "not in 10 s"
    return f"in {result.back_seconds:.1f} s"


def format_us(value: float | None) -> str:
    """Microseconds as the tables show them: ``1,234``, ``12.3``, or ``n/a``."""
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _columns(cells: Sequence[Sequence[str]], left: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return [
        "  ".join(
            text.ljust(width) if i in left else text.rjust(width)
            for i, (text, width) in enumerate(zip(row, widths))
        ).rstrip()
        for row in cells
    ]


def malloc_settings(env: Mapping[str, str]) -> dict[str, str]:
    """The variables in ``env`` that change how glibc's malloc behaves."""
    return {
        key: value
        for key, value in env.items()
        if key.startswith("MALLOC_") or key == "GLIBC_TUNABLES"
    }
