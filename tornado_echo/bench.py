"""Benchmark the echo servers' hot path: read, then write the same bytes back.

``python -m tornado_echo.bench`` starts ``tornado-echo`` in a subprocess on a
free loopback port (once per implementation, and once more with ``--lines``),
drives it from clients in this process on one asyncio event loop, stops it
with SIGTERM, and prints a table. The workloads:

``throughput``
    ``--clients`` connections (default 4) each send their share of
    ``--total-mib`` MiB (default 64) while reading the echo concurrently.
    Reports MiB/s of echoed data, from the first byte sent to the last byte
    received.
``pingpong``
    One connection sends a 64-byte message and waits for its echo,
    ``--round-trips`` times (default 20,000). Reports round trips per second
    and the p50 and p99 round-trip latency in µs.
``lines``
    Against ``tornado-echo --lines``, so for ``--impl stream`` only: one
    connection pipelines ``--line-count`` 40-byte lines (default 200,000) and
    reads every echo. Reports lines per second.

Every run checks what came back (the exact byte count and a CRC-32 of the
stream, or each reply for ping-pong): a server that echoes wrong data fails
the benchmark instead of scoring. Each workload runs ``--repeat`` times
(default 3); the table shows the best run and the median. Every network wait
is bounded: a run fails if no data moves for 10 seconds, and ``--time-limit``
(default 120 seconds) stops the whole benchmark, which then prints the runs
that finished and says that it stopped.

Clients and server share the machine, so the numbers compare implementations
and commits on one host; they are not capacities. To compare the two
drivers' round-trip latency over five runs each::

    python -m tornado_echo.bench --workload pingpong --repeat 5

``--json`` prints the results, with what each run verified, as JSON.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import socket
import statistics
import struct
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

import tornado

from tornado_echo import __version__

_T = TypeVar("_T")
_Number = TypeVar("_Number", int, float)

_HOST = "127.0.0.1"  # the only address the benchmark talks to

IMPLS = ("stream", "compat")
WORKLOADS = ("throughput", "pingpong", "lines")

# A run fails once no data has moved for this long: far longer than any
# healthy round trip, short enough that a stuck server is reported rather
# than waited on until the time limit.
_STALL_TIMEOUT = 10.0

# Starting the server is an interpreter start plus importing Tornado, with
# room for a slow CI machine.
_START_TIMEOUT = 10.0

# After SIGTERM the server only has to drain connections we already closed.
_STOP_TIMEOUT = 5.0

_CONNECT_TIMEOUT = 5.0

# Bytes per send in the streaming workloads: the server's own read chunk
# size, so neither side's chunking flatters the other.
_SEND_CHUNK_SIZE = 65536

# A few server chunks, so one wakeup takes everything that arrived while the
# client was busy.
_RECV_BUFFER_SIZE = 4 * _SEND_CHUNK_SIZE

_MESSAGE_SIZE = 64
_LINE_LENGTH = 40  # including the b"\n"
_MIB = 1024 * 1024

# How often the stall guard looks at a run's progress.
_WATCH_INTERVAL = 0.25

# Server stderr lines kept to explain a failure. The pipe is read to the end
# regardless, so a chatty server never blocks on a full pipe.
_STDERR_TAIL = 20

_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


class _BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


@dataclasses.dataclass(frozen=True)
class _Metric:
    """One number a workload reports per run."""

    name: str
    unit: str
    higher_is_better: bool = True


@dataclasses.dataclass(frozen=True)
class _RunResult:
    """One run's numbers, by `_Metric` name, and what it verified."""

    values: dict[str, float]
    verified: dict[str, int]


class _Progress:
    """Counts data moved during a run, for the stall guard."""

    __slots__ = ("moved",)

    def __init__(self) -> None:
        self.moved = 0


@dataclasses.dataclass(frozen=True)
class _Payload:
    """What one connection sends, in the pieces it sends them."""

    pieces: list[memoryview]
    size: int
    crc32: int

    @classmethod
    def of(cls, pieces: list[memoryview]) -> _Payload:
        crc = 0
        for piece in pieces:
            crc = zlib.crc32(piece, crc)
        return cls(pieces, sum(len(p) for p in pieces), crc)


class _Workload(abc.ABC):
    """One way of loading the server: `run` is timed, `prepare` is not."""

    name: str
    metrics: tuple[_Metric, ...]
    #: Runs against ``tornado-echo --lines`` (``--impl stream`` only).
    needs_lines = False

    def prepare(self) -> None:
        """Build the payloads; called once, before any server starts."""

    @abc.abstractmethod
    async def run(self, port: int, progress: _Progress) -> _RunResult:
        """One timed, verified run against the server on ``port``."""

    @abc.abstractmethod
    def settings(self) -> dict[str, int]:
        """The sizes this workload runs with."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The sizes in a few words, for the table's heading."""


class _Throughput(_Workload):
    name = "throughput"
    metrics = (_Metric("throughput", "MiB/s"),)

    def __init__(self, clients: int, total_bytes: int) -> None:
        self.clients = clients
        self.total_bytes = total_bytes
        self._payloads: list[_Payload] = []

    def prepare(self) -> None:
        # Random bytes, so corrupted or misplaced data fails the CRC (short
        # of whole blocks swapped, which look alike); one block repeated, so
        # memory does not grow with --total-mib.
        block = memoryview(os.urandom(_SEND_CHUNK_SIZE))
        share, extra = divmod(self.total_bytes, self.clients)
        by_size: dict[int, _Payload] = {}
        for i in range(self.clients):
            size = share + 1 if i < extra else share
            if size not in by_size:
                full, rest = divmod(size, _SEND_CHUNK_SIZE)
                pieces = [block] * full + ([block[:rest]] if rest else [])
                by_size[size] = _Payload.of(pieces)
            self._payloads.append(by_size[size])

    async def run(self, port: int, progress: _Progress) -> _RunResult:
        socks: list[socket.socket] = []
        try:
            for _ in self._payloads:
                socks.append(await _connect(port))
            start = time.perf_counter()
            done = await _gather(
                _echo(sock, payload, progress)
                for sock, payload in zip(socks, self._payloads)
            )
            elapsed = max(done) - start
        finally:
            for sock in socks:
                sock.close()
        return _RunResult(
            {"throughput": self.total_bytes / _MIB / elapsed},
            {"bytes": self.total_bytes, "clients": self.clients},
        )

    def settings(self) -> dict[str, int]:
        return {"clients": self.clients, "total_bytes": self.total_bytes}

    def describe(self) -> str:
        return f"{self.clients} clients sharing {self.total_bytes / _MIB:g} MiB"


class _PingPong(_Workload):
    name = "pingpong"
    metrics = (
        _Metric("round_trips", "round trips/s"),
        _Metric("p50", "µs", higher_is_better=False),
        _Metric("p99", "µs", higher_is_better=False),
    )

    def __init__(self, round_trips: int) -> None:
        self.round_trips = round_trips

    async def run(self, port: int, progress: _Progress) -> _RunResult:
        loop = asyncio.get_running_loop()
        clock = time.perf_counter_ns
        count = self.round_trips
        message = bytearray(os.urandom(_MESSAGE_SIZE))
        reply = bytearray(_MESSAGE_SIZE)
        view = memoryview(reply)
        latencies = [0] * count
        sock = await _connect(port)
        try:
            start = clock()
            for i in range(count):
                # A new sequence number each time, so a stale or repeated
                # reply cannot pass for this one.
                struct.pack_into("<Q", message, 0, i)
                sent = clock()
                await loop.sock_sendall(sock, message)
                got = 0
                while got < _MESSAGE_SIZE:
                    n = await loop.sock_recv_into(sock, view[got:])
                    if not n:
                        raise _BenchError(
                            f"the server closed the connection after {i} round trips"
                        )
                    got += n
                latencies[i] = clock() - sent
                if reply != message:
                    raise _BenchError(f"round trip {i} came back with other bytes")
                progress.moved += 1
            elapsed = (clock() - start) / 1e9
        finally:
            sock.close()
        latencies.sort()
        return _RunResult(
            {
                "round_trips": count / elapsed,
                "p50": _percentile(latencies, 50) / 1000,
                "p99": _percentile(latencies, 99) / 1000,
            },
            {"round_trips": count, "bytes": count * _MESSAGE_SIZE},
        )

    def settings(self) -> dict[str, int]:
        return {"round_trips": self.round_trips, "message_size": _MESSAGE_SIZE}

    def describe(self) -> str:
        return f"{self.round_trips:,} round trips of {_MESSAGE_SIZE} B"


class _Lines(_Workload):
    name = "lines"
    metrics = (_Metric("lines", "lines/s"),)
    needs_lines = True

    def __init__(self, line_count: int) -> None:
        self.line_count = line_count
        self._payload = _Payload([], 0, 0)

    def prepare(self) -> None:
        filler = b"the quick brown fox jumps over the lazy dog"[: _LINE_LENGTH - 10]
        # Numbered, so a dropped, repeated or reordered line fails the CRC.
        blob = memoryview(
            b"".join(b"%08d %s\n" % (i, filler) for i in range(self.line_count))
        )
        self._payload = _Payload.of(
            [
                blob[i : i + _SEND_CHUNK_SIZE]
                for i in range(0, len(blob), _SEND_CHUNK_SIZE)
            ]
        )

    async def run(self, port: int, progress: _Progress) -> _RunResult:
        sock = await _connect(port)
        try:
            start = time.perf_counter()
            elapsed = await _echo(sock, self._payload, progress) - start
        finally:
            sock.close()
        return _RunResult(
            {"lines": self.line_count / elapsed},
            {"lines": self.line_count, "bytes": self._payload.size},
        )

    def settings(self) -> dict[str, int]:
        return {"line_count": self.line_count, "line_length": _LINE_LENGTH}

    def describe(self) -> str:
        return f"{self.line_count:,} lines of {_LINE_LENGTH} B"


def _percentile(ordered: Sequence[int], percent: float) -> int:
    # Nearest rank: always a latency that was actually measured.
    rank = max(math.ceil(percent / 100 * len(ordered)), 1)
    return ordered[rank - 1]


async def _connect(port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        # Like the server: a 64-byte ping must not wait for Nagle.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.wait_for(loop.sock_connect(sock, (_HOST, port)), _CONNECT_TIMEOUT)
    except TimeoutError:
        sock.close()
        raise _BenchError(
            f"could not connect to {_HOST}:{port} within {_CONNECT_TIMEOUT:g} s"
        ) from None
    except OSError as exc:
        sock.close()
        raise _BenchError(f"could not connect to {_HOST}:{port}: {exc}") from None
    except BaseException:
        sock.close()
        raise
    return sock


async def _reap(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has finished, whatever it raises."""
    if not task.done():
        task.cancel()
        await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as lost


async def _gather(coros: Iterable[Coroutine[Any, Any, _T]]) -> list[_T]:
    """Like `asyncio.gather`, but the first failure also cancels the rest."""
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            await _reap(task)


async def _send(sock: socket.socket, payload: _Payload) -> None:
    loop = asyncio.get_running_loop()
    for piece in payload.pieces:
        await loop.sock_sendall(sock, piece)
    # The server closes once it has echoed everything before our FIN, so
    # reading to EOF also proves that nothing extra comes back.
    sock.shutdown(socket.SHUT_WR)


async def _echo(sock: socket.socket, payload: _Payload, progress: _Progress) -> float:
    """Send ``payload`` while reading the echo; returns when it was all back.

    Raises `_BenchError` unless exactly ``payload`` came back.
    """
    loop = asyncio.get_running_loop()
    sender = asyncio.ensure_future(_send(sock, payload))
    buffer = bytearray(_RECV_BUFFER_SIZE)
    view = memoryview(buffer)
    received = crc = 0
    done_at: float | None = None
    try:
        while n := await loop.sock_recv_into(sock, buffer):
            crc = zlib.crc32(view[:n], crc)
            received += n
            progress.moved += n
            if done_at is None and received >= payload.size:
                done_at = time.perf_counter()
        await sender
    finally:
        await _reap(sender)
    if done_at is None or received != payload.size:
        raise _BenchError(f"sent {payload.size:,} bytes but {received:,} came back")
    if crc != payload.crc32:
        raise _BenchError(
            f"the {received:,} bytes that came back differ from those sent"
        )
    return done_at


async def _guarded(coro: Coroutine[Any, Any, _T], progress: _Progress, what: str) -> _T:
    """Await ``coro``, failing it once no data has moved for `_STALL_TIMEOUT`.

    One watcher per run rather than a timeout on each socket wait: a timer
    around each of ping-pong's 40,000 waits would cost a noticeable share of
    the round trip being measured.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    try:
        seen, last_move = progress.moved, loop.time()
        while True:
            done, _ = await asyncio.wait([task], timeout=_WATCH_INTERVAL)
            if done:
                try:
                    return task.result()
                except (_BenchError, OSError) as exc:
                    raise _BenchError(f"{what}: {exc}") from None
            if progress.moved != seen:
                seen, last_move = progress.moved, loop.time()
            elif loop.time() - last_move >= _STALL_TIMEOUT:
                raise _BenchError(
                    f"{what}: no data moved for {_STALL_TIMEOUT:g} s; "
                    "is the server stuck?"
                )
    finally:
        await _reap(task)


class _ServerProcess:
    """``tornado-echo`` in a subprocess, listening on a free loopback port."""

    def __init__(self, impl: str, lines: bool) -> None:
        self.name = f"tornado-echo --impl {impl}{' --lines' if lines else ''}"
        self.argv = [
            sys.executable,
            "-m",
            "tornado_echo",
            "--port",
            "0",
            "--impl",
            impl,
            *(["--lines"] if lines else []),
            "--log-level",
            "info",
        ]
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        self._port: asyncio.Future[int | None] | None = None

    async def start(self) -> int:
        """Start the server; returns its port once it says it is listening."""
        self._port = asyncio.get_running_loop().create_future()
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self._proc.stderr is not None
        self._reader = asyncio.create_task(self._read_stderr(self._proc.stderr))
        try:
            # shield: a timeout must not cancel the future the reader sets.
            port = await asyncio.wait_for(asyncio.shield(self._port), _START_TIMEOUT)
        except TimeoutError:
            raise _BenchError(
                f"{self.name} did not say it was listening within {_START_TIMEOUT:g} s"
            ) from None
        if port is None:
            raise _BenchError(f"{self.name} exited before listening")
        return port

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        assert self._port is not None
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            self._stderr.append(line)
            match = _LISTENING.search(line)
            if match and not self._port.done():
                self._port.set_result(int(match.group(1)))
        if not self._port.done():
            self._port.set_result(None)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after `_STOP_TIMEOUT`; idempotent."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT)
                except TimeoutError:
                    _note(
                        f"{self.name} ignored SIGTERM for {_STOP_TIMEOUT:g} s; killed"
                    )
                    proc.kill()
                    await proc.wait()
        finally:
            if proc.returncode is None:
                # Cancelled while waiting: never leave the server behind.
                proc.kill()
            if self._reader is not None:
                # The pipe reaches EOF when the server exits, so this is quick.
                await asyncio.wait([self._reader], timeout=1.0)
                await _reap(self._reader)

    def explain(self, exc: _BenchError) -> _BenchError:
        """``exc``, plus the server's last words if it did not exit cleanly.

        Call after `stop`: only then is a crashed server surely reaped.
        """
        status = None if self._proc is None else self._proc.returncode
        if status == 0:
            return exc
        tail = "".join(f"\n  {line}" for line in self._stderr)
        return _BenchError(
            f"{exc}\n{self.name} exited with status {status}; its last output:{tail}"
        )


@contextlib.asynccontextmanager
async def _serving(impl: str, lines: bool) -> AsyncIterator[int]:
    """Run a server for the body; yields its port."""
    server = _ServerProcess(impl, lines)
    try:
        yield await server.start()
    except _BenchError as exc:
        await server.stop()
        raise server.explain(exc) from None
    finally:
        await server.stop()


@dataclasses.dataclass
class _Row:
    """One metric of one workload on one implementation, over its runs."""

    impl: str
    workload: _Workload
    metric: _Metric
    runs: list[float] = dataclasses.field(default_factory=list)
    verified: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def best(self) -> float:
        return max(self.runs) if self.metric.higher_is_better else min(self.runs)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def label(self) -> str:
        if self.metric is self.workload.metrics[0]:
            return self.workload.name
        return f"{self.workload.name} {self.metric.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "impl": self.impl,
            "workload": self.workload.name,
            "metric": self.metric.name,
            "unit": self.metric.unit,
            "higher_is_better": self.metric.higher_is_better,
            "best": self.best,
            "median": self.median,
            "runs": self.runs,
            "verified": self.verified,
        }


@dataclasses.dataclass
class _Report:
    """Everything measured so far, and why the benchmark stopped if it did."""

    impls: list[str]
    workloads: list[_Workload]
    repeat: int
    time_limit: float
    rows: list[_Row] = dataclasses.field(default_factory=list)
    stopped: str | None = None

    def measured(self) -> list[_Row]:
        """Rows with a run, by workload, metric, impl, to compare side by side."""
        return sorted(
            (row for row in self.rows if row.runs),
            key=lambda row: (
                self.workloads.index(row.workload),
                row.workload.metrics.index(row.metric),
                self.impls.index(row.impl),
            ),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "complete": self.stopped is None,
            "stopped": self.stopped,
            "versions": {
                "python": sys.version.split()[0],
                "tornado": tornado.version,
                "tornado_echo": __version__,
            },
            "settings": {
                "impls": self.impls,
                "repeat": self.repeat,
                "time_limit": self.time_limit,
                "workloads": {w.name: w.settings() for w in self.workloads},
            },
            "results": [row.to_json() for row in self.measured()],
        }

    def table(self) -> str:
        sizes = "; ".join(w.describe() for w in self.workloads)
        cells = [("impl", "workload", "best", "median", "unit")]
        cells += [
            (r.impl, r.label, _number(r.best), _number(r.median), r.metric.unit)
            for r in self.measured()
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(5)]
        lines = [f"# {sizes}; best and median of {self.repeat} run(s)"]
        for row in cells:
            impl, label, best, median, unit = (
                text.rjust(width) if i in (2, 3) else text.ljust(width)
                for i, (text, width) in enumerate(zip(row, widths))
            )
            lines.append(f"{impl}  {label}  {best}  {median}  {unit}".rstrip())
        return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _note(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


async def _run_all(report: _Report) -> None:
    for impl in report.impls:
        for lines in (False, True):
            workloads = [w for w in report.workloads if w.needs_lines == lines]
            if not workloads or (lines and impl != "stream"):
                continue
            async with _serving(impl, lines) as port:
                for workload in workloads:
                    await _measure(report, impl, workload, port)


async def _measure(report: _Report, impl: str, workload: _Workload, port: int) -> None:
    rows = [_Row(impl, workload, metric) for metric in workload.metrics]
    report.rows += rows
    what = f"{impl} {workload.name}"
    for i in range(report.repeat):
        progress = _Progress()
        result = await _guarded(workload.run(port, progress), progress, what)
        for row in rows:
            row.runs.append(result.values[row.metric.name])
            row.verified = result.verified
        _note(
            f"{what} run {i + 1}/{report.repeat}: "
            f"{_number(rows[0].runs[-1])} {rows[0].metric.unit}"
        )


async def _bench(report: _Report, deadline: float) -> None:
    # ``deadline`` is on the monotonic clock, as the event loop's is.
    limit = asyncio.timeout(deadline - time.monotonic())
    try:
        async with limit:
            await _run_all(report)
    except TimeoutError:
        if not limit.expired():
            raise
        report.stopped = (
            f"the time limit of {report.time_limit:g} s was reached; "
            "the runs that finished are shown"
        )
    except _BenchError as exc:
        report.stopped = str(exc)


def _bounded(
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tornado_echo.bench",
        description="Benchmark tornado-echo on loopback: throughput, ping-pong "
        "latency and pipelined lines, with every echo verified.",
    )
    parser.add_argument(
        "--impl",
        choices=(*IMPLS, "both"),
        default="both",
        help="server implementation to measure (default: %(default)s)",
    )
    parser.add_argument(
        "--workload",
        choices=(*WORKLOADS, "all"),
        default="all",
        help="lines runs for --impl stream only (default: %(default)s)",
    )
    parser.add_argument(
        "--repeat",
        type=_bounded(int, 1, 100),
        default=3,
        metavar="R",
        help="runs per workload; the best and the median are shown "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--time-limit",
        type=_bounded(float, 1.0, 86400.0),
        default=120.0,
        metavar="SECONDS",
        help="stop the whole benchmark after this long and show the runs that "
        "finished (default: %(default)g)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of a table"
    )
    sizes = parser.add_argument_group("sizes")
    sizes.add_argument(
        "--clients",
        type=_bounded(int, 1, 256),
        default=4,
        metavar="N",
        help="throughput: concurrent connections (default: %(default)s)",
    )
    sizes.add_argument(
        "--total-mib",
        type=_bounded(int, 1, 65536),
        default=64,
        metavar="MIB",
        help="throughput: MiB sent, split across the clients (default: %(default)s)",
    )
    sizes.add_argument(
        "--round-trips",
        type=_bounded(int, 1, 10_000_000),
        default=20_000,
        metavar="K",
        help=f"pingpong: {_MESSAGE_SIZE}-byte round trips (default: %(default)s)",
    )
    sizes.add_argument(
        "--line-count",
        type=_bounded(int, 1, 10_000_000),
        default=200_000,
        metavar="L",
        help=f"lines: {_LINE_LENGTH}-byte lines pipelined (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the process exit status."""
    deadline = time.monotonic()
    parser = build_parser()
    args = parser.parse_args(argv)
    deadline += args.time_limit
    impls = list(IMPLS) if args.impl == "both" else [args.impl]
    names = list(WORKLOADS) if args.workload == "all" else [args.workload]
    if "stream" not in impls and "lines" in names:
        if args.workload == "lines":
            parser.error("the lines workload needs --impl stream or both")
        names.remove("lines")
    workloads: dict[str, _Workload] = {
        "throughput": _Throughput(args.clients, args.total_mib * _MIB),
        "pingpong": _PingPong(args.round_trips),
        "lines": _Lines(args.line_count),
    }
    report = _Report(impls, [workloads[n] for n in names], args.repeat, args.time_limit)
    for workload in report.workloads:
        workload.prepare()
    try:
        asyncio.run(_bench(report, deadline))
    except KeyboardInterrupt:
        report.stopped = "interrupted"
    print(json.dumps(report.to_json(), indent=2) if args.json else report.table())
    if report.stopped is not None:
        _note(f"stopped early: {report.stopped}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
