"""The load client: a closed loop of echo round trips, every byte checked.

Each of ``connections`` connections sends a ``size``-byte message, waits for
the whole echo, compares it with what it sent, and sends the next one. The
messages are random and differ per connection and per round trip (eight
rotate), so a reply that is stale, shifted, truncated or meant for another
connection fails the run instead of counting. After ``warmup`` seconds the
client measures for ``duration`` seconds; then it stops sending, waits for
the replies in flight, half-closes every connection and requires the server
to close in turn without sending a byte more.

It is written to cost as little as a Python client can: an asyncio
`~asyncio.BufferedProtocol` (no allocation per reply; the reply lands in a
preallocated buffer and is compared with one ``memcmp``) on uvloop when it
is installed. It runs in its own process, pinned to its own core, and
reports how busy it was, so a result where the client, not the server, was
the limit can be flagged, and how long it was not running although it
busy-polls, so a result measured while something else had its core can be.

Run by the benchmark as ``python -m tornado_echo.bench.client``; it prints
one JSON object (`ClientResult`) on stdout.

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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from tornado_echo.loops import LOOPS, LoopName, run_with

HOST = "127.0.0.1"  # the only address the benchmark ever talks to

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

    def to_json(self) -> dict[str, object]:
        """Every field and the derived rates, ready for `json.dumps`."""
        return {
            **dataclasses.asdict(self),
            "rate": self.rate,
            "mib_per_s": self.mib_per_s,
            "server_cpu_per_rt_us": self.server_cpu_per_rt_us,
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


class _Run:
    """State shared by the connections of one run."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sending = True
        self.measuring = False
        self.count = 0
        self.replies = 0
        self.latencies: list[int] = []
        self.sent = 0
        self.verified = 0
        self.last_reply = time.monotonic()
        self.failure: BenchError | None = None
        # Connections with nothing in flight once sending stopped.
        self.idle = 0
        self.all_idle: asyncio.Future[None] | None = None
        self.all_idle_target = 0

    def fail(self, message: str) -> None:
        if self.failure is None:
            self.failure = BenchError(message)
        self.sending = False


class _EchoConnection(asyncio.BufferedProtocol):
    """One connection of the closed loop."""

    def __init__(self, run: _Run, messages: list[bytes]) -> None:
        self._run = run
        self._messages = messages
        self._next = 0
        self._expected = messages[0]
        self._size = run.size
        self._buffer = bytearray(run.size)
        self._view = memoryview(self._buffer)
        self._got = 0
        self._sent_at = 0
        self._in_flight = False
        self._transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def send_next(self) -> None:
        assert self._transport is not None
        message = self._messages[self._next]
        self._next = (self._next + 1) % _ROTATION
        self._expected = message
        self._in_flight = True
        self._sent_at = time.perf_counter_ns()
        self._run.sent += self._size
        self._transport.write(message)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._in_flight:
            return self._view[self._got :]
        # Nothing is owed to us: whatever arrives is wrong, so take it in
        # order to report it.
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        run = self._run
        if not self._in_flight:
            run.fail(f"the server sent {nbytes} byte(s) nobody asked for")
            return
        got = self._got + nbytes
        if got < self._size:
            self._got = got
            return
        self._got = 0
        self._in_flight = False
        if self._buffer != self._expected:
            run.fail("a reply came back with other bytes than were sent")
            return
        now = time.perf_counter_ns()
        run.verified += self._size
        run.replies += 1
        run.last_reply = time.monotonic()
        if run.measuring:
            run.count += 1
            run.latencies.append(now - self._sent_at)
        if run.sending:
            self.send_next()
        else:
            self._went_idle()

    def stop(self) -> None:
        """Called once sending stops: finish now if nothing is in flight."""
        if not self._in_flight:
            self._went_idle()

    def _went_idle(self) -> None:
        run = self._run
        run.idle += 1
        if run.all_idle is not None and run.idle == run.all_idle_target:
            run.all_idle.set_result(None)

    def eof_received(self) -> bool:
        if self._in_flight:
            self._run.fail("the server closed the connection in the middle of a reply")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self._run.sending:
            self._run.fail(f"connection lost: {exc}")
        if not self.closed.done():
            self.closed.set_result(None)


def _messages(size: int, seed: int, lines: bool) -> list[bytes]:
    rng = random.Random(seed)
    if not lines:
        return [rng.randbytes(size) for _ in range(_ROTATION)]
    # One line each: no newline inside, one at the end.
    return [
        rng.randbytes(size - 1).replace(b"\n", b" ") + b"\n" for _ in range(_ROTATION)
    ]


async def _connect(run: _Run, port: int, seed: int, lines: bool) -> _EchoConnection:
    loop = asyncio.get_running_loop()
    messages = _messages(run.size, seed, lines)
    try:
        async with asyncio.timeout(_CONNECT_TIMEOUT):
            _, conn = await loop.create_connection(
                lambda: _EchoConnection(run, messages), HOST, port
            )
    except (OSError, TimeoutError) as exc:
        raise BenchError(f"cannot connect to {HOST}:{port}: {exc}") from None
    return conn


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
) -> ClientResult:
    """One closed-loop run against ``127.0.0.1:port``; raises `BenchError`."""
    if connections < 1 or size < 1 or warmup < 0 or duration <= 0:
        raise ValueError("connections and size must be >= 1, duration > 0")
    loop = asyncio.get_running_loop()
    run = _Run(size)
    conns = [await _connect(run, port, seed, lines) for seed in range(connections)]
    spinner = _Spinner(loop, run) if spin else None
    try:
        for conn in conns:
            conn.send_next()
        await _sleep_watching(run, warmup)
        run.count, run.latencies, run.measuring = 0, [], True
        # The server's CPU is read outside the window, so that reading /proc
        # is not part of the client's own CPU time and wall time below.
        server0 = server_cpu(server_pid)
        cpu0, t0 = time.process_time(), loop.time()
        turns0 = None if spinner is None else spinner.mark()
        await _sleep_watching(run, duration)
        turns1 = None if spinner is None else spinner.mark()
        t1, cpu1 = loop.time(), time.process_time()
        server1 = server_cpu(server_pid)
        run.measuring = False
        await _finish(run, conns)
    finally:
        if spinner is not None:
            spinner.stop()
        for conn in conns:
            if conn._transport is not None:
                conn._transport.abort()
    if run.failure is not None:
        raise run.failure
    if run.verified != run.sent:
        raise BenchError(f"sent {run.sent:,} bytes but {run.verified:,} came back")
    if not run.count:
        raise BenchError("no round trip completed inside the measurement window")
    latencies = sorted(run.latencies)
    return ClientResult(
        connections=connections,
        size=size,
        loop=type(loop).__module__.split(".")[0],
        round_trips=run.count,
        elapsed=t1 - t0,
        p50_us=percentile(latencies, 50) / 1000,
        p99_us=percentile(latencies, 99) / 1000,
        client_cpu=(
            (cpu1 - cpu0) / (t1 - t0)
            if turns0 is None or turns1 is None
            else _busy_share(turns0, turns1)
        ),
        server_cpu=None if server0 is None or server1 is None else server1 - server0,
        sent_bytes=run.sent,
        verified_bytes=run.verified,
        client_preempted=(
            None if spinner is None else max(1.0 - (cpu1 - cpu0) / (t1 - t0), 0.0)
        ),
    )


@dataclasses.dataclass(frozen=True)
class _TurnMark:
    """Where a busy-polling loop stood at a turn: the clock, and its idle time.

    Both are read from `time.perf_counter` at the same moments, the
    boundaries between the loop's turns.
    """

    #: When the last turn began.
    at: float
    #: Seconds spent so far on turns that found no reply to handle.
    idle: float


def _busy_share(start: _TurnMark, end: _TurnMark) -> float:
    """The share of the time from ``start`` to ``end`` spent on busy turns.

    Idle and elapsed time come from one clock and one set of turn
    boundaries, so the idle part cannot exceed the whole: the share is
    within 0.0 and 1.0 whatever else ran on the client's core. It is not
    clamped here, so that the report can see it if that ever fails.

    >>> _busy_share(_TurnMark(at=10.0, idle=2.0), _TurnMark(at=11.0, idle=2.25))
    0.75
    """
    elapsed = end.at - start.at
    if elapsed <= 0:
        return 0.0  # not one turn ended in the window: it handled nothing
    return 1.0 - (end.idle - start.idle) / elapsed


class _Spinner:
    """Keeps the client's loop polling instead of sleeping, and sees how idle it is.

    A zero-timeout poll means the server never has to wake a sleeping
    client: on a virtual machine such a cross-core wakeup costs tens of µs
    of the sender's CPU time, more than a whole round trip in Python, and
    would hide the differences between servers. It also makes the client's
    CPU use 100% by construction, so its load is measured instead as the
    share of the loop's time spent on turns that found replies to handle.

    Both that time and the whole are wall-clock time between the same turn
    boundaries (`mark`). The idle time used to be subtracted from the
    process's CPU time instead: whenever another process had the client's
    core, the idle turns' wall time (which includes the time the client was
    not running) exceeded the CPU time, and the load came out negative. A
    CPU clock read per turn would be consistent too, but it is a system
    call, about 1 µs a turn: up to a tenth of what a round trip costs the
    client.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, run: _Run) -> None:
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

    def mark(self) -> _TurnMark:
        """The idle time up to the last turn boundary, and when that was.

        Not the time now: the turn in progress is not counted yet, and a
        window measured from now would not match the idle time counted.
        """
        return _TurnMark(at=self._last, idle=self._idle)

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


async def _sleep_watching(run: _Run, seconds: float) -> None:
    await sleep_watching(
        seconds, lambda: run.failure, lambda: run.last_reply, _STALL_TIMEOUT
    )


async def _finish(run: _Run, conns: list[_EchoConnection]) -> None:
    """Stop sending, collect replies in flight, then FIN and await the close."""
    loop = asyncio.get_running_loop()
    run.all_idle = loop.create_future()
    run.all_idle_target = len(conns)
    run.sending = False
    for conn in conns:
        conn.stop()
    try:
        async with asyncio.timeout(_FINISH_TIMEOUT):
            await run.all_idle
            for conn in conns:
                assert conn._transport is not None
                conn._transport.write_eof()
            await asyncio.gather(*(conn.closed for conn in conns))
    except TimeoutError:
        run.fail(
            f"the server did not finish the last replies and close within "
            f"{_FINISH_TIMEOUT:g} s of our FIN"
        )


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tornado_echo.bench.client",
        description="One closed-loop echo run against 127.0.0.1:PORT; "
        "prints the result as JSON.",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--cpu", type=int, help="pin this process to this CPU")
    parser.add_argument("--loop", choices=LOOPS, default=default_loop())
    parser.add_argument("--no-spin", dest="spin", action="store_false")
    parser.add_argument("--lines", action="store_true", help="each message is a line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:
        result = run_with(
            args.loop,
            closed_loop(
                args.port,
                connections=args.connections,
                size=args.size,
                warmup=args.warmup,
                duration=args.duration,
                server_pid=args.server_pid,
                spin=args.spin,
                lines=args.lines,
            ),
        )
    except BenchError as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    print(json.dumps(result.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
