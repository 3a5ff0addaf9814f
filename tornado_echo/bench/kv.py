"""A real protocol as a workload: examples/kv_server.py against memcached.

``python -m tornado_echo.bench.kv`` starts a real ``memcached -t 1`` and
``examples/kv_server.py`` (memcached's text protocol on `.LineServer`) and
sends each the same load (`tornado_echo.bench.kv_client`): 10 connections,
each a closed loop of one request at a time, 90% ``get`` and 10% ``set``
over 1,000 keys with values of 32 to 100 bytes, every key stored before the
warm-up. Every reply is compared byte for byte with what the server must
answer, and the first that differs fails the run with one line showing
both: a rate is only reported for a server that answered everything right.

**A ratio to memcached, in the same repeat.** Absolute rates say more about
the machine than about the server; kv_server's rate divided by memcached's,
measured moments apart, says how close a Python implementation on
tornado_echo comes to the C original. Each repeat (3 by default) runs both,
in alternating order, so that a slow moment of the machine weighs on both
sides of a ratio; the report gives the median of the per-repeat ratios, and
medians of the raw numbers.

**Why one thread.** kv_server is one event loop on one core. memcached
with one worker thread (``-t 1``) is the same shape, and on the same core
(its listener and maintenance threads share it), so the ratio compares the
two implementations of the protocol rather than memcached's ability to use
more cores.

**CPU per request.** The servers' CPU time over the measured window, read
from ``/proc/PID/task/*/schedstat`` (every thread, memcached's background
ones included) as the echo benchmark reads it, divided by the requests
answered in it. It stays meaningful when the load client, not the server,
set the pace; the client reports how busy it was, and a run where it was
above `~tornado_echo.bench.report.CLIENT_BOUND` is flagged.

**Pinning.** Both servers run on the first usable CPU and the client on
the second. Each process is started with this process's affinity set to
its CPU (`~tornado_echo.bench.servers.pinned`), so it inherits the CPU
before its first instruction: memcached starts its threads at once, and
pinning it from outside once it runs would catch only its main thread.

::

    python -m tornado_echo.bench.kv                  # about 10 seconds
    python -m tornado_echo.bench.kv --smoke          # one short repeat; CI
    python -m tornado_echo.bench.kv --connections 50 --set-ratio 0.5

It prints a Markdown table, writes ``kv.json`` (every run, the settings and
the machine) and ``kv.md`` to ``--out`` (``bench-results/``), and exits 1
if a reply was wrong, a server stopped answering or the client failed.
Without memcached it says so in one line and exits 0, measuring nothing.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tornado_echo.bench.cli import given_fields, number, out_dir
from tornado_echo.bench.client import HOST
from tornado_echo.bench.kv_client import MAX_VALUE, MIN_VALUE, KVClientResult
from tornado_echo.bench.report import (
    CLIENT_BOUND,
    PREEMPTED_NOISY,
    RATIO_SPREAD_NOISY,
    ClientLoad,
    clamp_share,
    format_ratio,
    format_us,
    machine,
    malloc_settings,
    median_or_none,
    noise,
)
from tornado_echo.bench.servers import (
    BenchFailure,
    BenchServer,
    malloc_env,
    pinned,
    python_argv,
)
from tornado_echo.bench.workloads import result_fields, run_client

__all__ = [
    "KV_SERVER",
    "MEMCACHED",
    "MEMCACHED_ARGS",
    "SKIP_MESSAGE",
    "SMOKE",
    "KVRow",
    "KVRun",
    "Settings",
    "build_parser",
    "main",
    "memcached_argv",
    "memcached_version",
    "summarize",
    "to_markdown",
]

#: memcached's name in reports and in the JSON.
MEMCACHED = "memcached"
#: The example's name in reports and in the JSON.
KV_SERVER = "kv_server"

#: What the benchmark says, and all it does, where memcached is missing.
SKIP_MESSAGE = (
    "bench kv: memcached is not installed (apt-get install memcached); skipping"
)

#: memcached's options besides the port: one worker thread (see the module
#: docstring), loopback only, no UDP.
MEMCACHED_ARGS = ("-t", "1", "-l", HOST, "-U", "0")

# The example, where this module runs from a checkout; from an installed
# package, examples/kv_server.py of the working directory.
_CHECKOUT_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kv_server.py"

# A port taken between choosing it and memcached binding it: try another.
_PORT_TRIES = 3

# The client's own bounds (a connect, storing the keys, a stall, the last
# replies) are 10 s each; this is for a client that hangs regardless.
_CLIENT_GRACE = 40.0


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one benchmark measures, and how long."""

    #: Connections, each with one request in flight.
    connections: int = 10
    #: The key space, ``k0`` up; each connection owns its share.
    keys: int = 1000
    #: The share of requests that are sets; the rest are gets.
    set_ratio: float = 0.1
    #: Seconds before, and of, each measured run.
    warmup: float = 0.3
    duration: float = 1.0
    #: Runs of each server, interleaved.
    repeat: int = 3


#: ``--smoke``: one short repeat, enough to prove that everything answers.
SMOKE = Settings(warmup=0.1, duration=0.2, repeat=1)


@dataclasses.dataclass(frozen=True)
class KVRun:
    """One client run against one server in one repeat."""

    server: str
    repeat: int
    result: KVClientResult

    def to_json(self) -> dict[str, object]:
        return {"server": self.server, "repeat": self.repeat, **self.result.to_json()}


@dataclasses.dataclass(frozen=True, kw_only=True)
class KVRow(ClientLoad):
    """One server over the repeats: medians, and ratios to memcached.

    Flagged client-bound or noisy (`~.ClientLoad`) with the echo report's
    bounds.
    """

    server: str
    repeats: int
    #: Median over repeats of this server's rate / memcached's in that repeat.
    ratio: float | None
    #: Median over repeats of memcached's CPU time per request / this
    #: server's: efficiency, meaningful even when the client set the pace.
    cpu_ratio: float | None
    rate: float
    cpu_per_request_us: float | None
    p50_us: float
    p99_us: float
    #: The largest share of a repeat the busy-polling client was not running.
    client_preempted_max: float


def summarize(runs: Sequence[KVRun]) -> list[KVRow]:
    """A `KVRow` per server (memcached first), each ratio taken per repeat."""
    base = {run.repeat: run.result for run in runs if run.server == MEMCACHED}
    names = [MEMCACHED] if base else []
    names += sorted({run.server for run in runs} - {MEMCACHED})
    rows = []
    for name in names:
        mine = [run for run in runs if run.server == name]
        ratios: list[float | None] = []
        cpu_ratios: list[float | None] = []
        for run in mine:
            other = base.get(run.repeat)
            ratios.append(None if other is None else run.result.rate / other.rate)
            cpu, base_cpu = (
                run.result.server_cpu_per_request_us,
                None if other is None else other.server_cpu_per_request_us,
            )
            cpu_ratios.append(None if not cpu or base_cpu is None else base_cpu / cpu)
        busy = [clamp_share(run.result.client_busy) for run in mine]
        preempted = [run.result.client_preempted for run in mine]
        agree = (
            [run.result.rate for run in mine]
            if name == MEMCACHED
            else [ratio for ratio in ratios if ratio is not None]
        )
        rows.append(
            KVRow(
                server=name,
                repeats=len(mine),
                ratio=median_or_none(ratios),
                cpu_ratio=median_or_none(cpu_ratios),
                rate=statistics.median(run.result.rate for run in mine),
                cpu_per_request_us=median_or_none(
                    [run.result.server_cpu_per_request_us for run in mine]
                ),
                p50_us=statistics.median(run.result.p50_us for run in mine),
                p99_us=statistics.median(run.result.p99_us for run in mine),
                client_busy=statistics.median(busy),
                client_busy_max=max(busy),
                client_preempted_max=max(preempted),
                # What the footnote names; the busy shares are not compared.
                noise=noise((), preempted, agree),
            )
        )
    return rows


_CLIENT_BOUND_NOTE = (
    f"¹ client-bound: the load client was busy more than {CLIENT_BOUND:.0%} of "
    "its core in at least one repeat, so it may have set the pace; read that "
    "row's rate as a floor (its CPU per request still holds). If memcached's "
    "row is client-bound, kv_server's ratio is overstated instead."
)

_NOISY_NOTE = (
    f"² noisy: the busy-polling client was not running for more than "
    f"{PREEMPTED_NOISY:.0%} of a repeat (something else had its core), or the "
    f"repeats' ratios (memcached: rates) are more than {RATIO_SPREAD_NOISY:g} times "
    "apart. Run it again on a quieter machine."
)


def to_markdown(
    rows: Sequence[KVRow], settings: Settings, context: Mapping[str, Any]
) -> str:
    """The report: what was measured, on what, and the table.

    ``context`` holds the ``machine`` dict and the ``pinning`` sentence.
    """
    about = context["machine"]
    versions = [
        f"Python {about.get('python')}",
        f"Tornado {about.get('tornado')}",
        *([f"uvloop {about['uvloop']}"] if about.get("uvloop") else []),
        f"memcached {about.get('memcached') or '(version unknown)'}",
    ]
    share = round(settings.set_ratio * 100)
    intro = (
        "Requests per second as a multiple of `memcached -t 1`'s in the same "
        "repeat (the median over repeats of each repeat's own ratio; higher is "
        "better), then medians of the raw numbers. `CPU/req ×` compares "
        "efficiency instead: memcached's server CPU time per request divided by "
        "this server's, also a median of per-repeat ratios. Every reply was "
        "checked byte for byte. **Bold**: tornado_echo's."
    )
    setup = (
        f"{about.get('cpu_model') or 'unknown CPU'}, {about.get('cpu_count')} "
        f"CPUs; {', '.join(versions)}. {settings.connections} connections, "
        f"{100 - share}% get / {share}% set over {settings.keys:,} keys "
        f"({MIN_VALUE}-{MAX_VALUE} B values, all stored first); "
        f"{settings.repeat} repeat(s), {settings.warmup:g} s warm-up + "
        f"{settings.duration:g} s per run; {context['pinning']}."
    )
    header = (
        "| × memcached | CPU/req × | server | requests/s | server CPU µs/req "
        "| p50 µs | p99 µs | client busy | note |"
    )
    lines = [
        "# memcached protocol: examples/kv_server.py against memcached -t 1",
        "",
        intro,
        "",
        setup,
        "",
        header,
        "|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        name = f"**{row.server}**" if row.server == KV_SERVER else row.server
        lines.append(
            f"| {format_ratio(row.ratio)} | {format_ratio(row.cpu_ratio)} | {name} "
            f"| {row.rate:,.0f} | {format_us(row.cpu_per_request_us)} "
            f"| {format_us(row.p50_us)} | {format_us(row.p99_us)} "
            f"| {row.client_busy:.0%} | {row.note('¹', '²')} |"
        )
    if any(row.client_bound for row in rows):
        lines += ["", _CLIENT_BOUND_NOTE]
    if any(row.noise for row in rows):
        lines += ["", _NOISY_NOTE]
    return "\n".join(lines) + "\n"


# -- processes ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def memcached_argv(path: str, port: int) -> list[str]:
    """memcached's command line: `MEMCACHED_ARGS` on ``port``."""
    argv = [path, *MEMCACHED_ARGS, "-p", str(port)]
    if os.geteuid() == 0:  # memcached refuses to run as root without -u
        argv += ["-u", pwd.getpwuid(0).pw_name]
    return argv


def _start_memcached(path: str, cpu: int | None, env: Mapping[str, str]) -> BenchServer:
    """A fresh memcached on a free port, listening; another port if one was taken."""
    tries = 1
    while True:
        port = _free_port()
        server = BenchServer(
            MEMCACHED, memcached_argv(path, port), port=port, cpu=cpu, env=env
        )
        server.start()
        try:
            server.wait_ready()
            return server
        except BenchFailure:
            # Exited at once: the port may have been taken since it was chosen.
            again = server.returncode() is not None and tries < _PORT_TRIES
            server.stop()
            if not again:
                raise
        except BaseException:
            server.stop()
            raise
        tries += 1


def memcached_version(path: str) -> str | None:
    """The version ``memcached -V`` reports, or `None`."""
    try:
        proc = subprocess.run(
            [path, "-V"], capture_output=True, text=True, timeout=5.0, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = proc.stdout.split()
    return words[-1] if proc.returncode == 0 and words else None


# -- running ------------------------------------------------------------------


def _run_client(server: BenchServer, settings: Settings, repeat: int) -> KVRun:
    """One run of the load client against ``server``; raises `.BenchFailure`."""
    assert server.port is not None
    what = f"{server.name}, repeat {repeat + 1}"
    argv = python_argv(
        "-m", "tornado_echo.bench.kv_client",
        "--port", str(server.port),
        "--server-pid", str(server.pid),
        "--connections", str(settings.connections),
        "--keys", str(settings.keys),
        "--set-ratio", repr(settings.set_ratio),
        "--warmup", repr(settings.warmup),
        "--duration", repr(settings.duration),
        # Values differ from one run to the next, so a stale one is caught.
        "--nonce", str(repeat),
    )  # fmt: skip
    timeout = settings.warmup + settings.duration + _CLIENT_GRACE
    # A wrong reply is said in one line; a dead server's last words help.
    data = run_client(server, argv, what, timeout, server_detail=False)
    try:
        result = KVClientResult(**result_fields(KVClientResult, data))
    except KeyError as exc:
        raise BenchFailure(f"{what}: the client's result lacks {exc}") from None
    if result.verified != result.sent or result.requests <= 0:
        raise BenchFailure(
            f"{what}: sent {result.sent:,} requests but verified {result.verified:,}"
        )
    return KVRun(server.name, repeat, result)


def _progress(run: KVRun, settings: Settings) -> str:
    """The line said once ``run`` is done."""
    result = run.result
    return (
        f"{run.server}, repeat {run.repeat + 1}/{settings.repeat}: "
        f"{result.rate:,.0f} requests/s, "
        f"{format_us(result.server_cpu_per_request_us)} µs CPU/request, "
        f"client busy {clamp_share(result.client_busy):.0%}"
        + (
            f", not running {result.client_preempted:.0%}"
            if result.client_preempted > PREEMPTED_NOISY
            else ""
        )
    )


def _measure(
    settings: Settings,
    memcached: str,
    script: Path,
    cpus: tuple[int | None, int | None],
    env: Mapping[str, str],
    said: Callable[[str], None],
) -> tuple[list[KVRun], dict[str, dict[str, object]]]:
    """Every run, and each server's command line and exit status."""
    server_cpu, client_cpu = cpus
    runs: list[KVRun] = []
    with contextlib.ExitStack() as stack:
        kv = BenchServer(
            KV_SERVER, python_argv(str(script), "--port", "0"), cpu=server_cpu, env=env
        )
        stack.callback(kv.stop)
        kv.start()  # its interpreter start overlaps memcached's start
        servers = {MEMCACHED: _start_memcached(memcached, server_cpu, env)}
        stack.callback(servers[MEMCACHED].stop)
        kv.wait_ready()
        servers[KV_SERVER] = kv
        names = [MEMCACHED, KV_SERVER]
        with pinned(client_cpu):
            for repeat in range(settings.repeat):
                # Alternating, so neither is always the one measured first.
                for name in names if repeat % 2 == 0 else names[::-1]:
                    run = _run_client(servers[name], settings, repeat)
                    runs.append(run)
                    said(_progress(run, settings))
    about: dict[str, dict[str, object]] = {
        name: {"argv": server.argv, "exit_status": server.returncode()}
        for name, server in servers.items()
    }
    return runs, about


# -- the command --------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m tornado_echo.bench.kv",
        description="examples/kv_server.py against a real memcached -t 1: the "
        "same closed loop of gets and sets, every reply checked, reported as "
        "a ratio to memcached with each server's CPU time per request.",
    )
    parser.add_argument(
        "--connections",
        type=number(int, 1),
        metavar="N",
        help=f"connections, each one request at a time "
        f"(default: {defaults.connections})",
    )
    parser.add_argument(
        "--set-ratio",
        type=number(float, 0.0, 1.0),
        metavar="SHARE",
        help=f"the share of requests that are sets, the rest gets "
        f"(default: {defaults.set_ratio:g})",
    )
    parser.add_argument(
        "--keys",
        type=number(int, 1),
        metavar="N",
        help=f"the key space, at least one key per connection "
        f"(default: {defaults.keys})",
    )
    parser.add_argument(
        "--warmup",
        type=number(float, 0.0, 3600.0),
        metavar="SECONDS",
        help=f"unmeasured time before each run (default: {defaults.warmup:g})",
    )
    parser.add_argument(
        "--duration",
        type=number(float, 0.0, 3600.0),
        metavar="SECONDS",
        help=f"measured time of each run (default: {defaults.duration:g})",
    )
    parser.add_argument(
        "--repeat",
        type=number(int, 1),
        metavar="N",
        help=f"runs of each server, interleaved (default: {defaults.repeat})",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"one repeat of {SMOKE.warmup:g} s + {SMOKE.duration:g} s, for CI; "
        "the options above still apply",
    )
    parser.add_argument(
        "--kv-server",
        type=Path,
        metavar="SCRIPT",
        help="the server to compare with memcached (default: examples/kv_server.py "
        "of this checkout, or of the working directory)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        metavar="DIR",
        help="where kv.json and kv.md go (default: bench-results)",
    )
    return parser


def _settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Settings:
    preset = SMOKE if args.smoke else Settings()
    settings = dataclasses.replace(preset, **given_fields(args, Settings))
    if settings.duration <= 0:
        parser.error("argument --duration: must be more than 0")
    if settings.keys < settings.connections:
        parser.error(
            f"--keys ({settings.keys}) must be at least --connections "
            f"({settings.connections}): each connection owns its keys"
        )
    return settings


def _script(parser: argparse.ArgumentParser, given: Path | None) -> Path:
    if given is not None:
        if not given.is_file():
            parser.error(f"argument --kv-server: no such file: {given}")
        return given
    for candidate in (_CHECKOUT_EXAMPLE, Path("examples") / "kv_server.py"):
        if candidate.is_file():
            return candidate
    parser.error(
        "examples/kv_server.py was not found: run from a checkout of "
        "tornado_echo, or pass its path with --kv-server"
    )


def _said(line: str) -> None:
    print(f"bench kv: {line}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (2 for a usage error)."""
    started = time.monotonic()
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = _settings(parser, args)
    script = _script(parser, args.kv_server)
    memcached = shutil.which("memcached")
    if memcached is None:
        print(SKIP_MESSAGE, file=sys.stderr)
        return 0
    out = out_dir(parser, args.out)

    usable = tuple(sorted(os.sched_getaffinity(0)))
    notes: list[str] = []
    cpus: tuple[int | None, int | None] = (None, None)
    if len(usable) >= 2:
        cpus = (usable[0], usable[1])
        pinning = f"servers on CPU {usable[0]}, client on CPU {usable[1]}"
    else:
        pinning = "not pinned: only one CPU"
        notes.append("only one CPU is usable: client and servers shared it")
    about = {**machine(usable), "memcached": memcached_version(memcached)}
    if about.get("uvloop") is None:
        notes.append("uvloop is not installed: the client ran on asyncio's loop")
    env = malloc_env()
    record: dict[str, Any] = {
        "benchmark": "kv",
        "settings": {
            **dataclasses.asdict(settings),
            "smoke": args.smoke,
            "kv_server": str(script),
            "pinning": pinning,
            "server_cpu": cpus[0],
            "client_cpu": cpus[1],
            "order": "per repeat, memcached then kv_server, reversed every other",
        },
        "machine": about,
        # The echo benchmark's malloc tuning, for both servers alike.
        "malloc_env": malloc_settings(env),
        "notes": notes,
    }
    for note in notes:
        _said(note)
    try:
        runs, servers = _measure(settings, memcached, script, cpus, env, _said)
    except BenchFailure as exc:
        _said(str(exc))
        for line in exc.detail:
            _said(f"  {line}")
        record.update(complete=False, failure=str(exc), detail=list(exc.detail))
        _write(out, record, None)
        return 1
    for name, server in servers.items():
        if server["exit_status"] != 0:
            notes.append(f"{name} exited with status {server['exit_status']}")
    rows = summarize(runs)
    markdown = to_markdown(rows, settings, record["settings"] | {"machine": about})
    record.update(
        complete=True,
        failure=None,
        duration=time.monotonic() - started,
        servers=servers,
        runs=[run.to_json() for run in runs],
        summary=[row.to_json() for row in rows],
    )
    _write(out, record, markdown)
    print(markdown, end="")
    _said(f"took {record['duration']:.0f} s; wrote kv.json, kv.md in {out}/")
    return 0


def _write(out: Path, record: Mapping[str, Any], markdown: str | None) -> None:
    (out / "kv.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    table = out / "kv.md"
    if markdown is not None:
        table.write_text(markdown, encoding="utf-8")
    elif table.exists():
        # An earlier run's table beside this failure would mislead.
        table.unlink()


if __name__ == "__main__":
    sys.exit(main())
