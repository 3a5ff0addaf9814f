"""The load client: a closed loop of echo round trips, every byte checked.

Each of ``connections`` connections sends a ``size``-byte message, waits for
the whole echo, compares it with what it sent, and sends the next one (a
pipelined message is ``pipeline`` lines in one write, and its echo is all
of them). The messages are random and differ per connection and per round
trip (eight rotate), so a reply that is stale, shifted, truncated or meant
for another connection fails the run instead of counting. After ``warmup``
seconds the client measures for ``duration`` seconds; then it stops
sending, waits for the replies in flight, half-closes every connection and
requires the server to close in turn without sending a byte more.

It is written to cost as little as a Python client can: an asyncio
`~asyncio.BufferedProtocol` (no allocation per reply; the reply lands in a
preallocated buffer and is compared with one ``memcmp``) on uvloop when it
is installed. It runs in its own process, pinned to its own core, and
reports how busy it was, so a result where the client, not the server, was
the limit can be flagged, and how long it was not running although it
busy-polls, so a result measured while something else had its core can be.

Run by the benchmark as ``python -m tornado_echo.bench.client``; it prints
one JSON object (`ClientResult`) on stdout.

What any closed-loop load client needs beyond its protocol is public, and
`tornado_echo.bench.kv_client` is built on it too: the run's shared state
and phases (`RunState`), a connection's plumbing (`ClientConnection`), the
busy-polling that measures the client's load (`Spinner`), and printing
the result (`print_result`).

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import json
import os
import random
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

from tornado_echo.loops import LOOPS, LoopName, run_with

__all__ = [
    "HOST",
    "BenchError",
    "ClientConnection",
    "ClientResult",
    "JSONResult",
    "RunState",
    "Spinner",
    "TurnMark",
    "Window",
    "build_parser",
    "busy_share",
    "client_parser",
    "closed_loop",
    "default_loop",
    "main",
    "percentile",
    "print_result",
    "process_cpu_seconds",
    "server_cpu",
    "sleep_watching",
]

#: The only address the benchmark ever talks to.
HOST = "127.0.0.1"

# Messages each connection rotates through: enough that a repeated or
# reordered reply cannot match by chance, few enough to stay in cache.
_ROTATION = 8

_CONNECT_TIMEOUT = 5.0

# After the window, replies in flight and the server's answer to our FIN
# must arrive within this long; a healthy server needs microseconds.
_FINISH_TIMEOUT = 10.0

# A run fails once no reply arrived for this long.
_STALL_TIMEOUT = 10.0


class BenchError(Exception):
    """The run cannot be trusted; the message says why."""


@dataclasses.dataclass(frozen=True)
class ClientResult:
    """What one closed-loop run measured and verified."""

    connections: int
    size: int
    loop: str
    #: Round trips completed inside the measurement window.
    round_trips: int
    elapsed: float
    p50_us: float
    p99_us: float
    #: How busy the client was over the window, from 0.0 to 1.0. Busy-polling,
    #: the share of the loop's time spent on turns that handled a reply (the
    #: rest found nothing to do); otherwise its CPU time as a share of one core.
    client_cpu: float
    #: The server's CPU seconds over the window, if its pid was given.
    server_cpu: float | None
    #: Bytes sent and bytes that came back identical, over the whole run.
    sent_bytes: int
    verified_bytes: int
    #: The share of the window a busy-polling client was not running: another
    #: process had its core, so ``client_cpu`` says less about the server.
    #: `None` when the client slept between replies (not running is then how
    #: it waits), and in results older than the field.
    client_preempted: float | None = None
    #: Lines in each message when pipelined (each of ``size / pipeline``
    #: bytes, all written at once, and all their echoes awaited); 1 otherwise.
    pipeline: int = 1

    @property
    def rate(self) -> float:
        """Round trips per second."""
        return self.round_trips / self.elapsed

    @property
    def mib_per_s(self) -> float:
        """Echoed payload per second, one direction."""
        return self.round_trips * self.size / self.elapsed / (1 << 20)

    @property
    def server_cpu_per_rt_us(self) -> float | None:
        """Server CPU time per round trip, in µs."""
        if self.server_cpu is None or not self.round_trips:
            return None
        return self.server_cpu / self.round_trips * 1e6

    @property
    def lines_per_s(self) -> float:
        """Lines echoed per second: round trips times `pipeline`."""
        return self.rate * self.pipeline

    def to_json(self) -> dict[str, object]:
        """Every field and the derived rates, ready for `json.dumps`."""
        return {
            **dataclasses.asdict(self),
            "rate": self.rate,
            "mib_per_s": self.mib_per_s,
            "server_cpu_per_rt_us": self.server_cpu_per_rt_us,
            "lines_per_s": self.lines_per_s,
        }

    @classmethod
    def fields_from_json(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """The constructor arguments found in `to_json`'s output.

        Raises `KeyError` if one without a default is missing.
        """
        return {
            field.name: data[field.name]
            for field in dataclasses.fields(cls)
            # Fields with a default came later; older results lack them.
            if field.name in data or field.default is dataclasses.MISSING
        }


def process_cpu_seconds(pid: int) -> float:
    """CPU time used so far by every thread of process ``pid``.

    Read from ``schedstat`` (nanoseconds) rather than ``stat`` (clock ticks
    of 10 ms, too coarse for a one-second window).
    """
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass  # a thread that just exited
    except (OSError, ValueError):
        # No schedstat (CONFIG_SCHEDSTATS off): utime + stime in ticks.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")
    return total / 1e9


class RunState:
    """What the connections of one closed-loop run share, and how it runs.

    `drive` runs it: connects every `ClientConnection`, has each send its
    first request, warms up (`warm_up`), measures for a while, then stops
    sending, collects the replies in flight, half-closes every connection
    and requires the server to close in turn. Each connection counts a
    request in `sent` and a verified reply in `replies` (and, while
    `measuring`, in `measured` and `latencies`); `fail` records the first
    reason the run cannot be trusted and stops sending.

    A load client subclasses it for counts of its own protocol, or to warm
    up differently. It must be created with the loop running.
    """

    def __init__(self, connections: int) -> None:
        self.connections = connections
        #: False once the window is over, or the run failed.
        self.sending = True
        #: True during the measured window.
        self.measuring = False
        #: Requests sent over the whole run.
        self.sent = 0
        #: Replies verified over the whole run; `Spinner` watches it.
        self.replies = 0
        #: Replies verified inside the window.
        self.measured = 0
        #: Their round trips, in nanoseconds.
        self.latencies: list[int] = []
        #: The `time.monotonic` of the last reply, to tell a stalled server.
        self.last_reply = time.monotonic()
        #: Why the run cannot be trusted, once it cannot (`fail`).
        self.failure: BenchError | None = None
        # Connections with nothing in flight once sending stopped.
        self._idle = 0
        self._all_idle: asyncio.Future[None] = (
            asyncio.get_running_loop().create_future()
        )

    def fail(self, message: str) -> None:
        """Record ``message`` as the failure, unless there is one; stop sending."""
        if self.failure is None:
            self.failure = BenchError(message)
        self.sending = False

    def connection_idle(self) -> None:
        """A connection has nothing in flight, and sends nothing more."""
        self._idle += 1
        if self._idle == self.connections and not self._all_idle.done():
            self._all_idle.set_result(None)

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``; raise the run's failure, or `BenchError` on a stall."""
        await sleep_watching(
            seconds, lambda: self.failure, lambda: self.last_reply, _STALL_TIMEOUT
        )

    async def warm_up(self, seconds: float) -> None:
        """The unmeasured start, once every connection has sent a request.

        The default sleeps ``seconds`` (`sleep`).
        """
        await self.sleep(seconds)

    async def drive(
        self,
        conns: Sequence[ClientConnection],
        port: int,
        *,
        warmup: float,
        duration: float,
        server_pid: int | None = None,
        spin: bool = True,
    ) -> Window:
        """Run ``conns`` against ``127.0.0.1:port``, measuring for ``duration`` s.

        Busy-polls (`Spinner`) unless ``spin`` is false; reads the CPU time
        of process ``server_pid`` over the window. Raises `BenchError` if
        the run failed, a request went unanswered or no reply came inside
        the window; the connections are closed in any case.
        """
        spinner = None
        try:
            for conn in conns:
                await conn.connect(port)
            if spin:
                spinner = Spinner(asyncio.get_running_loop(), self)
            for conn in conns:
                conn.send_next()
            await self.warm_up(warmup)
            window = await self._measure(duration, server_pid, spinner)
            await self._finish(conns)
        finally:
            if spinner is not None:
                spinner.stop()
            for conn in conns:
                conn.abort()
        if self.failure is not None:
            raise self.failure
        if self.replies != self.sent:
            raise BenchError(
                f"sent {self.sent:,} requests but {self.replies:,} replies"
            )
        if not self.measured:
            raise BenchError("no reply came inside the measurement window")
        return window

    async def _measure(
        self, duration: float, server_pid: int | None, spinner: Spinner | None
    ) -> Window:
        loop = asyncio.get_running_loop()
        self.measured, self.latencies, self.measuring = 0, [], True
        # The server's CPU is read outside the window, so that reading /proc
        # is not part of the client's own CPU time and wall time below.
        server0 = server_cpu(server_pid)
        cpu0, t0 = time.process_time(), loop.time()
        turns0 = None if spinner is None else spinner.mark()
        await self.sleep(duration)
        turns1 = None if spinner is None else spinner.mark()
        t1, cpu1 = loop.time(), time.process_time()
        server1 = server_cpu(server_pid)
        self.measuring = False
        self.latencies.sort()
        busy = None
        if turns0 is not None and turns1 is not None:
            busy = busy_share(turns0, turns1)
        return Window(
            loop=type(loop).__module__.split(".")[0],
            elapsed=t1 - t0,
            p50_us=percentile(self.latencies, 50) / 1000,
            p99_us=percentile(self.latencies, 99) / 1000,
            cpu_share=(cpu1 - cpu0) / (t1 - t0),
            busy=busy,
            server_cpu=None
            if server0 is None or server1 is None
            else server1 - server0,
        )

    async def _finish(self, conns: Sequence[ClientConnection]) -> None:
        """Stop sending, collect replies in flight, then FIN and await the close."""
        self.sending = False
        for conn in conns:
            conn.stop()
        try:
            async with asyncio.timeout(_FINISH_TIMEOUT):
                await self._all_idle
                for conn in conns:
                    conn.transport.write_eof()
                await asyncio.gather(*(conn.closed for conn in conns))
        except TimeoutError:
            self.fail(
                f"the server did not finish the last replies and close within "
                f"{_FINISH_TIMEOUT:g} s of our FIN"
            )


@dataclasses.dataclass(frozen=True)
class Window:
    """What a client saw over its measured window (`RunState.drive`)."""

    #: The event loop's module: ``asyncio`` or ``uvloop``.
    loop: str
    #: Seconds, on the loop's clock.
    elapsed: float
    #: The measured round trips' median and 99th percentile, in µs.
    p50_us: float
    p99_us: float
    #: The client's CPU time as a share of ``elapsed``.
    cpu_share: float
    #: The busy-polling client's `busy_share`; `None` if it did not busy-poll.
    busy: float | None
    #: The server's CPU seconds, if its pid was given.
    server_cpu: float | None

    def result_fields(self) -> dict[str, Any]:
        """The fields every client's result takes from the window, by name."""
        return {
            "loop": self.loop,
            "elapsed": self.elapsed,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "server_cpu": self.server_cpu,
        }

    @property
    def client_busy(self) -> float:
        """How busy the client was: `busy`, or if it slept, `cpu_share`."""
        return self.cpu_share if self.busy is None else self.busy

    @property
    def preempted(self) -> float:
        """The share of the window a busy-polling client was not running."""
        return max(1.0 - self.cpu_share, 0.0)


class ClientConnection(asyncio.BaseProtocol):
    """One connection of a closed loop, less its protocol.

    A load client's connection subclasses it and asyncio's
    `~asyncio.Protocol` or `~asyncio.BufferedProtocol`: its `send_next`
    sends a request with `send`, and once the reply is verified it calls
    `replied`, which sends the next request, or goes idle once its ``run``
    stops sending. `in_flight` is true in between; `closed` is done once
    the connection is.
    """

    def __init__(self, run: RunState) -> None:
        # Not documented as an attribute: its name would make every `.run`
        # in the docs ambiguous.
        self.run = run
        #: True from `send` until the reply is verified.
        self.in_flight = False
        #: When the request in flight was sent, in `time.perf_counter_ns`.
        self.sent_at = 0
        self._transport: asyncio.Transport | None = None
        #: Done once the connection is closed.
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def connect(self, port: int) -> None:
        """Connect to ``127.0.0.1:port``; `BenchError` if that fails or takes 5 s."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT):
                await loop.create_connection(lambda: self, HOST, port)
        except (OSError, TimeoutError) as exc:
            raise BenchError(f"cannot connect to {HOST}:{port}: {exc}") from None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    @property
    def transport(self) -> asyncio.Transport:
        assert self._transport is not None, "not connected"
        return self._transport

    def send_next(self) -> None:
        """Send the next request (with `send`): the hook every client implements."""
        raise NotImplementedError

    def send(self, request: bytes) -> None:
        """Write ``request``, which is now in flight."""
        self.in_flight = True
        self.sent_at = time.perf_counter_ns()
        self.run.sent += 1
        # Not through the `transport` property: this is the client's hot path.
        assert self._transport is not None, "not connected"
        self._transport.write(request)

    def replied(self, now: int) -> None:
        """The reply in flight is verified, as of ``now`` (`time.perf_counter_ns`).

        Counts it, then sends the next request, or goes idle if the run
        stopped sending.
        """
        self.in_flight = False
        run = self.run
        run.replies += 1
        run.last_reply = time.monotonic()
        if run.measuring:
            run.measured += 1
            run.latencies.append(now - self.sent_at)
        if run.sending:
            self.send_next()
        else:
            run.connection_idle()

    def stop(self) -> None:
        """Called once sending stops: idle now if nothing is in flight."""
        if not self.in_flight:
            self.run.connection_idle()

    def abort(self) -> None:
        """Close the connection at once, if it was made."""
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.run.sending:
            self.run.fail(f"connection lost: {exc}")
        if not self.closed.done():
            self.closed.set_result(None)


class _EchoConnection(ClientConnection, asyncio.BufferedProtocol):
    """One connection of the closed loop."""

    def __init__(self, run: RunState, messages: list[bytes]) -> None:
        super().__init__(run)
        self._messages = messages
        self._next = 0
        self._expected = messages[0]
        self._size = len(messages[0])
        self._buffer = bytearray(self._size)
        self._view = memoryview(self._buffer)
        self._got = 0

    def send_next(self) -> None:
        message = self._messages[self._next]
        self._next = (self._next + 1) % _ROTATION
        self._expected = message
        self.send(message)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.in_flight:
            return self._view[self._got :]
        # Nothing is owed to us: whatever arrives is wrong, so take it in
        # order to report it.
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        if not self.in_flight:
            self.run.fail(f"the server sent {nbytes} byte(s) nobody asked for")
            return
        got = self._got + nbytes
        if got < self._size:
            self._got = got
            return
        self._got = 0
        if self._buffer != self._expected:
            self.in_flight = False
            self.run.fail("a reply came back with other bytes than were sent")
            return
        self.replied(time.perf_counter_ns())

    def eof_received(self) -> bool:
        if self.in_flight:
            self.run.fail("the server closed the connection in the middle of a reply")
        return False


def _messages(size: int, seed: int, lines: bool, pipeline: int = 1) -> list[bytes]:
    """The messages one connection rotates through.

    Random bytes; or, with ``lines``, ``pipeline`` lines of ``size /
    pipeline`` bytes each, with no newline but the one that ends each line.

    >>> [m.count(b"\\n") for m in _messages(64, 0, lines=True, pipeline=16)][:2]
    [16, 16]
    """
    rng = random.Random(seed)
    if not lines:
        return [rng.randbytes(size) for _ in range(_ROTATION)]
    length = size // pipeline
    return [
        b"".join(
            rng.randbytes(length - 1).replace(b"\n", b" ") + b"\n"
            for _ in range(pipeline)
        )
        for _ in range(_ROTATION)
    ]


async def closed_loop(
    port: int,
    *,
    connections: int,
    size: int,
    warmup: float,
    duration: float,
    server_pid: int | None = None,
    spin: bool = True,
    lines: bool = False,
    pipeline: int = 1,
) -> ClientResult:
    """One closed-loop run against ``127.0.0.1:port``; raises `BenchError`.

    With ``pipeline`` above 1, each message is that many lines (so
    ``lines`` is implied), and ``size`` must be a multiple of it.
    """
    if connections < 1 or size < 1 or warmup < 0 or duration <= 0:
        raise ValueError("connections and size must be >= 1, duration > 0")
    if pipeline < 1 or size % pipeline:
        raise ValueError("size must be a multiple of pipeline, which must be >= 1")
    lines = lines or pipeline > 1
    run = RunState(connections)
    conns = [
        _EchoConnection(run, _messages(size, seed, lines, pipeline))
        for seed in range(connections)
    ]
    window = await run.drive(
        conns, port, warmup=warmup, duration=duration, server_pid=server_pid, spin=spin
    )
    return ClientResult(
        connections=connections,
        size=size,
        round_trips=run.measured,
        client_cpu=window.client_busy,
        # Every message is ``size`` bytes, and a reply counts once all came back.
        sent_bytes=run.sent * size,
        verified_bytes=run.replies * size,
        client_preempted=window.preempted if spin else None,
        pipeline=pipeline,
        **window.result_fields(),
    )


@dataclasses.dataclass(frozen=True)
class TurnMark:
    """Where a busy-polling loop stood at a turn: the clock, and its idle time.

    Both are read from `time.perf_counter` at the same moments, the
    boundaries between the loop's turns.
    """

    #: When the last turn began.
    at: float
    #: Seconds spent so far on turns that found no reply to handle.
    idle: float


def busy_share(start: TurnMark, end: TurnMark) -> float:
    """The share of the time from ``start`` to ``end`` spent on busy turns.

    Idle and elapsed time come from one clock and one set of turn
    boundaries, so the idle part cannot exceed the whole: the share is
    within 0.0 and 1.0 whatever else ran on the client's core. It is not
    clamped here, so that the report can see it if that ever fails.

    >>> busy_share(TurnMark(at=10.0, idle=2.0), TurnMark(at=11.0, idle=2.25))
    0.75
    """
    elapsed = end.at - start.at
    if elapsed <= 0:
        return 0.0  # not one turn ended in the window: it handled nothing
    return 1.0 - (end.idle - start.idle) / elapsed


class Spinner:
    """Keeps the client's loop polling instead of sleeping, and sees how idle it is.

    A zero-timeout poll means the server never has to wake a sleeping
    client: on a virtual machine such a cross-core wakeup costs tens of µs
    of the sender's CPU time, more than a whole round trip in Python, and
    would hide the differences between servers. It also makes the client's
    CPU use 100% by construction, so its load is measured instead as the
    share of the loop's time spent on turns that found replies to handle
    (a turn in which ``run``'s `~RunState.replies` grew).

    Both that time and the whole are wall-clock time between the same turn
    boundaries (`mark`). The idle time used to be subtracted from the
    process's CPU time instead: whenever another process had the client's
    core, the idle turns' wall time (which includes the time the client was
    not running) exceeded the CPU time, and the load came out negative. A
    CPU clock read per turn would be consistent too, but it is a system
    call, about 1 µs a turn: up to a tenth of what a round trip costs the
    client.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, run: RunState) -> None:
        self._loop = loop
        self._run = run
        self._running = True
        self._seen = 0
        self._last = time.perf_counter()
        self._idle = 0.0
        loop.call_soon(self._spin)

    def _spin(self) -> None:
        now = time.perf_counter()
        replies = self._run.replies
        if replies == self._seen:
            self._idle += now - self._last
        self._seen = replies
        self._last = now
        if self._running:
            self._loop.call_soon(self._spin)

    def mark(self) -> TurnMark:
        """The idle time up to the last turn boundary, and when that was.

        Not the time now: the turn in progress is not counted yet, and a
        window measured from now would not match the idle time counted.
        """
        return TurnMark(at=self._last, idle=self._idle)

    def stop(self) -> None:
        self._running = False


def server_cpu(pid: int | None) -> float | None:
    """The CPU seconds of process ``pid`` so far; `None` for no pid."""
    return None if pid is None else process_cpu_seconds(pid)


async def sleep_watching(
    seconds: float,
    failure: Callable[[], BaseException | None],
    last_progress: Callable[[], float],
    stall_timeout: float,
) -> None:
    """Sleep ``seconds``, failing early if the run failed or stalled.

    ``failure()`` is the run's error, if any, raised at once;
    ``last_progress()`` the `time.monotonic` of the last reply.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        await asyncio.sleep(min(left, 0.1))
        if (error := failure()) is not None:
            raise error
        if time.monotonic() - last_progress() > stall_timeout:
            raise BenchError(f"no reply for {stall_timeout:g} s; is the server stuck?")


def percentile(ordered: Sequence[int], percent: float) -> float:
    """The ``percent`` percentile of ``ordered`` (sorted), by nearest rank.

    Nearest rank: always a latency that was actually measured; 0.0 for none.
    """
    if not ordered:
        return 0.0
    rank = max(-(-len(ordered) * percent // 100), 1)
    return float(ordered[int(rank) - 1])


def default_loop() -> LoopName:
    """uvloop when installed (the faster client), else asyncio's loop."""
    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


def client_parser(
    prog: str, description: str, *, warmup: float, duration: float
) -> argparse.ArgumentParser:
    """A load client's command line, with the options every client takes.

    ``--port``, ``--connections``, ``--warmup`` and ``--duration`` (whose
    defaults are given), ``--server-pid`` and ``--loop``: `print_result`
    passes them on.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--warmup", type=float, default=warmup)
    parser.add_argument("--duration", type=float, default=duration)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--loop", choices=LOOPS, default=default_loop())
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = client_parser(
        "python -m tornado_echo.bench.client",
        "One closed-loop echo run against 127.0.0.1:PORT; prints the result as JSON.",
        warmup=0.5,
        duration=2.0,
    )
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--cpu", type=int, help="pin this process to this CPU")
    parser.add_argument("--no-spin", dest="spin", action="store_false")
    parser.add_argument("--lines", action="store_true", help="each message is a line")
    parser.add_argument(
        "--pipeline",
        type=int,
        default=1,
        metavar="N",
        help="each message is N lines of SIZE/N bytes, written at once (implies "
        "--lines)",
    )
    return parser


class JSONResult(Protocol):
    """A client's result: `print_result` prints its ``to_json()``."""

    def to_json(self) -> dict[str, object]: ...


def print_result(
    args: argparse.Namespace,
    closed_loop: Callable[..., Coroutine[Any, Any, JSONResult]],
    **options: Any,
) -> int:
    """Run ``closed_loop`` as ``args`` say; print its result as one line of JSON.

    ``args`` holds the options of `client_parser`, and ``options`` the
    client's own. Returns the exit status: 0, or 1 for a `BenchError`,
    printed as ``{"error": ...}``.
    """
    run = closed_loop(
        args.port,
        connections=args.connections,
        warmup=args.warmup,
        duration=args.duration,
        server_pid=args.server_pid,
        **options,
    )
    try:
        result = run_with(args.loop, run)
    except BenchError as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    print(json.dumps(result.to_json()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.pipeline < 1 or args.size % args.pipeline:
        parser.error("--size must be a multiple of --pipeline, which must be >= 1")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    return print_result(
        args,
        closed_loop,
        size=args.size,
        spin=args.spin,
        lines=args.lines,
        pipeline=args.pipeline,
    )


if __name__ == "__main__":
    sys.exit(main())
