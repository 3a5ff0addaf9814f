"""Turning runs into results: ratios, medians, and the three outputs.

`Report` collects every `.RunResult` and `.IdleResult` of a benchmark. For
each message size, connection count and repeat, each server's round trips
per second are divided by those of `.REFERENCE` (asyncio's Protocol echo
on asyncio's loop) **in the same repeat**, and a `Row` reports the median
of those ratios over the repeats: a slow moment of the machine then
weighs on both sides of a ratio rather than on one server's numbers. The
other columns are medians over the repeats too.

A row whose client was busy more than `CLIENT_BOUND` of its core in any
repeat is flagged ``client-bound``: the client, not the server, may have
set the pace, so its rate is a floor.

Outputs: `Report.to_json` (everything, raw runs included),
`Report.to_markdown` (for the README) and `Report.to_text` (for a
terminal).

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

import tornado

from tornado_echo import __version__
from tornado_echo.bench.servers import REFERENCE, ServerConfig
from tornado_echo.bench.workloads import IdleResult, RunResult

__all__ = [
    "CLIENT_BOUND",
    "IdleRow",
    "Report",
    "Row",
    "machine",
    "malloc_settings",
    "size_label",
]

#: Above this busy share of its core, the client may be what limits a run.
CLIENT_BOUND = 0.9

_CLIENT_BOUND_NOTE = (
    f"client-bound: the load client was busy more than {CLIENT_BOUND:.0%} of its "
    "core in at least one repeat, so it may have set the pace; read the rate "
    "and the ratio as a floor. If the reference row is client-bound, the "
    "other rows' ratios are overstated instead."
)


def size_label(size: int) -> str:
    """``64 B``, ``1 KiB``, ``16 KiB``."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def _median(values: Iterable[float]) -> float:
    return statistics.median(values)


@dataclasses.dataclass(frozen=True)
class Row:
    """One server at one message size and connection count, over the repeats."""

    server: str
    ours: bool
    size: int
    connections: int
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
    #: The client's busy share of its core: median, and the highest repeat.
    client_busy: float
    client_busy_max: float

    @property
    def client_bound(self) -> bool:
        return self.client_busy_max > CLIENT_BOUND

    def to_json(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "client_bound": self.client_bound}


@dataclasses.dataclass(frozen=True)
class IdleRow:
    """One server's memory per idle connection, next to the reference's."""

    result: IdleResult
    ours: bool
    #: bytes per connection / the reference's; lower is better.
    ratio: float | None


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

    #: The closed-loop servers, in the order rows list them.
    servers: list[ServerConfig]
    settings: dict[str, object]
    machine: dict[str, object]
    #: The malloc-related variables the servers ran with.
    malloc_env: dict[str, str]
    runs: list[RunResult] = dataclasses.field(default_factory=list)
    idle: list[IdleResult] = dataclasses.field(default_factory=list)
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

    def points(self) -> list[tuple[int, int]]:
        """The (size, connections) pairs measured, in the order first run."""
        return list(dict.fromkeys((run.size, run.connections) for run in self.runs))

    def rows(self) -> list[Row]:
        """One `Row` per server and point, by point, then in server order."""
        reference = {
            (run.size, run.connections, run.repeat): run
            for run in self.runs
            if run.server == REFERENCE
        }
        groups: dict[tuple[int, int, str], list[RunResult]] = {}
        for run in self.runs:
            groups.setdefault((run.size, run.connections, run.server), []).append(run)
        order = {point: i for i, point in enumerate(self.points())}
        rows = []
        for (size, connections, server), runs in sorted(
            groups.items(),
            key=lambda item: (order[item[0][:2]], self._order(item[0][2])),
        ):
            pairs = [
                (run, reference[key])
                for run in runs
                if (key := (size, connections, run.repeat)) in reference
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
                    repeats=len(runs),
                    ratio=_median(ratios) if ratios else None,
                    ratios=ratios,
                    cpu_ratio=_median(cpu_ratios) if cpu_ratios else None,
                    rate=_median(r.rate for r in runs),
                    mib_per_s=_median(r.mib_per_s for r in runs),
                    p50_us=_median(r.p50_us for r in runs),
                    p99_us=_median(r.p99_us for r in runs),
                    server_cpu_per_rt_us=(
                        None
                        if None in per_rt
                        else _median(v for v in per_rt if v is not None)
                    ),
                    client_busy=_median(r.client_cpu for r in runs),
                    client_busy_max=max(r.client_cpu for r in runs),
                )
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

    def answered(self) -> dict[str, bool]:
        """Server name -> whether it completed a run or an idle measurement."""
        done = {r.server for r in self.runs} | {r.server for r in self.idle}
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
            "idle": [
                {**row.result.to_json(), "ratio": row.ratio} for row in self.idle_rows()
            ],
            "runs": [run.to_json() for run in self.runs],
        }

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
        flagged = False
        for size, connections in self.points():
            out += [f"## {size_label(size)} × {connections} connections", ""]
            out += [
                (
                    f"| × {REFERENCE} | CPU/rt × | server | round trips/s | MiB/s "
                    "| p50 µs | p99 µs | server CPU µs/rt | client busy | note |"
                ),
                "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
            ]
            for row in rows:
                if (row.size, row.connections) != (size, connections):
                    continue
                flagged |= row.client_bound
                name = f"**{row.server}**" if row.ours else row.server
                out.append(
                    f"| {_ratio(row.ratio)} | {_ratio(row.cpu_ratio)} | {name} "
                    f"| {row.rate:,.0f} "
                    f"| {row.mib_per_s:,.1f} | {_us(row.p50_us)} | {_us(row.p99_us)} "
                    f"| {_us(row.server_cpu_per_rt_us)} | {row.client_busy:.0%} "
                    f"| {'client-bound¹' if row.client_bound else ''} |"
                )
            out.append("")
        if flagged:
            out += [f"¹ {_CLIENT_BOUND_NOTE}", ""]
        idle = self.idle_rows()
        if idle:
            held = sorted({row.result.connections for row in idle})
            out += [
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
            for idle_row in idle:
                r = idle_row.result
                name = f"**{r.server}**" if idle_row.ours else r.server
                out.append(
                    f"| {_ratio(idle_row.ratio)} | {name} "
                    f"| {r.bytes_per_connection:,.0f} | {r.rss_before / 2**20:,.1f} "
                    f"| {r.rss_after / 2**20:,.1f} | {r.sample_echoed}/{r.sample} |"
                )
            out.append("")
        if self.notes:
            out += [*(f"- {note}" for note in self.notes), ""]
        return "\n".join(out)

    def to_text(self) -> str:
        """The same tables in plain columns, for a terminal."""
        out = [f"{self.caption()}", f"{self.settings_line()}"]
        if self.stopped is not None:
            out.append(f"INCOMPLETE: {self.stopped}")
        rows = self.rows()
        flagged = False
        head = (
            f"× {REFERENCE}", "CPU/rt ×", "server", "rt/s", "MiB/s",
            "p50 µs", "p99 µs", "srv µs/rt", "client", "",
        )  # fmt: skip
        for size, connections in self.points():
            cells: list[tuple[str, ...]] = [head]
            for row in rows:
                if (row.size, row.connections) != (size, connections):
                    continue
                flagged |= row.client_bound
                cells.append(
                    (
                        _ratio(row.ratio),
                        _ratio(row.cpu_ratio),
                        f"{row.server}{' *' if row.ours else ''}",
                        f"{row.rate:,.0f}",
                        f"{row.mib_per_s:,.1f}",
                        _us(row.p50_us),
                        _us(row.p99_us),
                        _us(row.server_cpu_per_rt_us),
                        f"{row.client_busy:.0%}",
                        "client-bound" if row.client_bound else "",
                    )
                )
            out += ["", f"{size_label(size)} × {connections} connections"]
            out += _columns(cells, left={2, 9})
        if flagged:
            out += ["", _CLIENT_BOUND_NOTE]
        idle = self.idle_rows()
        if idle:
            idle_cells: list[tuple[str, ...]] = [
                (f"× {REFERENCE}", "server", "B/conn", "RSS before", "RSS after")
            ]
            idle_cells += [
                (
                    _ratio(row.ratio),
                    f"{row.result.server}{' *' if row.ours else ''}",
                    f"{row.result.bytes_per_connection:,.0f}",
                    f"{row.result.rss_before / 2**20:,.1f} MiB",
                    f"{row.result.rss_after / 2**20:,.1f} MiB",
                )
                for row in idle
            ]
            held = ", ".join(sorted({f"{r.result.connections:,}" for r in idle}))
            out += ["", f"memory per idle connection ({held} connections)"]
            out += _columns(idle_cells, left={1})
        out += ["", "* tornado_echo's own servers"]
        out += [f"note: {note}" for note in self.notes]
        return "\n".join(out)


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def _us(value: float | None) -> str:
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
