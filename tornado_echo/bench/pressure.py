"""The pressure clients: floods, a light probe, and one bulk stream.

They load a server in ways the closed loop (`tornado_echo.bench.client`)
does not:

``flood``
    connections that keep the server's pipes full: each writes 64 KiB
    chunks (of 64-byte lines with ``--lines``) as fast as the server takes
    them, and reads and discards whatever comes back. It says ``flooding``
    once every connection is open, counts the echoed bytes from a
    ``measure`` line on stdin until stdin closes, then prints its result.
``probe``
    one light connection that sends a 64-byte line, waits for its echo,
    checks it byte for byte, pauses 5 ms and sends the next; it says
    ``measuring`` after its warm-up and records each round trip's latency.
``fairness``
    a flood and a probe, each in a process of its own: how long a light
    request waits while busy connections have the server's loop.
``bulk``
    one connection that streams 64 KiB chunks as fast as possible while
    reading the echo back, every byte checked; the echoed MiB/s and the
    server's CPU time.

Run by the benchmark as ``python -m tornado_echo.bench.pressure MODE ...``;
each mode prints one JSON object as its last line on stdout,
``{"error": ...}`` if the run cannot be trusted. Starting these, and the
results' types, are in `tornado_echo.bench.workloads`.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import cast

from tornado_echo.bench.client import (
    HOST,
    BenchError,
    default_loop,
    percentile,
    server_cpu,
    sleep_watching,
)
from tornado_echo.bench.servers import python_argv
from tornado_echo.loops import LOOPS, run_with

__all__ = [
    "CHUNK",
    "LINE_CHUNK",
    "PROBE_LINE",
    "bulk",
    "fairness",
    "flood",
    "main",
    "probe",
]

#: What the flood and the bulk stream write at a time.
CHUNK = 65536

#: The flood's chunk for line servers: 1,024 lines of 64 bytes.
LINE_CHUNK = (b"x" * 63 + b"\n") * (CHUNK // 64)

#: The probe's request, and so the reply it expects.
PROBE_LINE = b"p" * 63 + b"\n"

# The probe's pause between round trips: light, not idle.
_PAUSE = 0.005

# A writer tops its transport's buffer up to the low mark each loop turn,
# with at most this many chunks; above the high mark it pauses. On one
# connection a chunk a turn left the server waiting for the client.
_LOW_WATER = 2 * CHUNK
_HIGH_WATER = 4 * CHUNK
_WRITES_PER_TURN = 8

# What one read may take: as much as asyncio reads at a time.
_READ_SIZE = 4 * CHUNK

# A connect, a reply, the last replies and the answer to our FIN, or a
# stall; a healthy server on loopback needs microseconds.
_IO_TIMEOUT = 10.0

# A child's interpreter start, on a CPU the flood keeps busy.
_START_TIMEOUT = 15.0


# -- writers -----------------------------------------------------------------


class _Writer(asyncio.BufferedProtocol):
    """Writes ``chunk`` as fast as the server takes it; counts what comes back.

    Reads are served between the turns that write.
    """

    def __init__(self, chunk: bytes) -> None:
        self._chunk = chunk
        self._paused = False
        self._scheduled = False
        self._transport: asyncio.Transport | None = None
        self.sending = True
        self.sent = 0
        self.received = 0
        self.last_read = time.monotonic()
        self.failure: str | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def transport(self) -> asyncio.Transport:
        assert self._transport is not None, "not connected"
        return self._transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=_HIGH_WATER)
        self._pump()

    def _pump(self) -> None:
        self._scheduled = False
        transport = self.transport
        if self._paused or not self.sending or transport.is_closing():
            return
        # Keep a couple of chunks waiting, so the socket never runs dry
        # between turns; a bounded number per turn, so reads go on.
        for _ in range(_WRITES_PER_TURN):
            transport.write(self._chunk)
            self.sent += len(self._chunk)
            if self._paused or transport.get_write_buffer_size() >= _LOW_WATER:
                break
        if not self._paused:
            self._schedule()

    def _schedule(self) -> None:
        # Once: a resume before the scheduled pump ran must not start a
        # second chain of pumps.
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._schedule()

    def fail(self, message: str) -> None:
        if self.failure is None:
            self.failure = message
        self.sending = False

    def eof_received(self) -> bool:
        if self.received < self.sent:
            self.fail("the server closed the connection before echoing everything")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.sending:
            self.fail(f"connection lost: {exc}")
        if not self.closed.done():
            self.closed.set_result(None)


class _Discard(_Writer):
    """A flood connection: the echo lands in a shared buffer, and is not read."""

    def __init__(self, chunk: bytes, sink: memoryview) -> None:
        super().__init__(chunk)
        self._sink = sink

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._sink

    def buffer_updated(self, nbytes: int) -> None:
        self.received += nbytes


class _Checked(_Writer):
    """The bulk connection: every byte of the echo is compared with what was sent.

    The stream sent is ``chunk`` over and over, so the echo is too: reads
    land in a buffer of a few chunks at the offset the stream has reached,
    and are compared with the same bytes of ``chunk`` repeated.
    """

    def __init__(self, chunk: bytes) -> None:
        super().__init__(chunk)
        self._expected = chunk * (_READ_SIZE // len(chunk))
        self._buffer = bytearray(len(self._expected))
        self._view = memoryview(self._buffer)
        self.drained: asyncio.Future[None] | None = None

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self.received % len(self._buffer) :]

    def buffer_updated(self, nbytes: int) -> None:
        start = self.received % len(self._buffer)
        # startswith at an offset is one memcmp, with no copy (comparing
        # memoryviews goes item by item, slicing copies).
        if not self._expected.startswith(self._view[start : start + nbytes], start):
            self.fail("the echo came back with other bytes than were sent")
        self.received += nbytes
        self.last_read = time.monotonic()
        if self.received > self.sent:
            self.fail("more bytes came back than were sent")
        drained = self.drained
        if drained is not None and self.received >= self.sent and not drained.done():
            drained.set_result(None)


async def _open(factory: Callable[[], _Writer], port: int) -> _Writer:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(_IO_TIMEOUT):
            _, conn = await loop.create_connection(factory, HOST, port)
    except (OSError, TimeoutError) as exc:
        raise BenchError(f"cannot connect to {HOST}:{port}: {exc}") from None
    return conn


# -- flood -------------------------------------------------------------------


async def _stdin() -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    return reader, transport


async def flood(
    port: int, *, connections: int, lines: bool = False, max_seconds: float = 60.0
) -> dict[str, object]:
    """Flood ``127.0.0.1:port`` until stdin closes; raises `.BenchError`.

    Counts the bytes that came back between the ``measure`` line on stdin
    and its end, which must come within ``max_seconds`` of the start.
    """
    if connections < 1:
        raise ValueError("connections must be >= 1")
    loop = asyncio.get_running_loop()
    chunk = LINE_CHUNK if lines else random.Random(0).randbytes(CHUNK)
    # The echo is not checked, so every connection may read into one buffer.
    sink = memoryview(bytearray(_READ_SIZE))
    conns: list[_Writer] = []
    pipe: asyncio.BaseTransport | None = None
    try:
        for _ in range(connections):
            conns.append(await _open(lambda: _Discard(chunk, sink), port))
        stdin, pipe = await _stdin()
        print("flooding", flush=True)
        try:
            async with asyncio.timeout(max_seconds):
                if await stdin.readline() != b"measure\n":
                    raise BenchError("stdin closed before the measure line")
                before, started = sum(c.received for c in conns), loop.time()
                await stdin.read()
                after, elapsed = sum(c.received for c in conns), loop.time() - started
        except TimeoutError:
            raise BenchError(f"not told to stop within {max_seconds:g} s") from None
        for conn in conns:
            if conn.failure is not None:
                raise BenchError(conn.failure)
    finally:
        for conn in conns:
            conn.sending = False
            conn.transport.abort()
        if pipe is not None:
            pipe.close()
    if after <= before:
        raise BenchError("no echo came back to the flood while it was measured")
    return {
        "connections": connections,
        "flood_bytes": after - before,
        "flood_elapsed": elapsed,
    }


# -- probe -------------------------------------------------------------------


def _round_trip(sock: socket.socket, reply: bytearray) -> int:
    """One probe line there and back; its latency in ns."""
    view = memoryview(reply)
    started = time.perf_counter_ns()
    try:
        sock.sendall(PROBE_LINE)
        got = 0
        while got < len(reply):
            nbytes = sock.recv_into(view[got:])
            if not nbytes:
                raise BenchError("the server closed the probe's connection")
            got += nbytes
    except TimeoutError:
        raise BenchError(
            f"no probe reply for {_IO_TIMEOUT:g} s; is the server stuck?"
        ) from None
    latency = time.perf_counter_ns() - started
    if reply != PROBE_LINE:
        raise BenchError("a probe's reply came back with other bytes than were sent")
    return latency


def probe(port: int, *, warmup: float, duration: float) -> dict[str, object]:
    """Round trips of `PROBE_LINE` for ``warmup`` + ``duration`` seconds.

    Blocking calls: nothing costs less for one connection, and no event
    loop adds to the latency. Raises `.BenchError`, or `OSError` (a timeout
    too) from the socket.
    """
    # The flood shares this CPU: at a higher priority a woken probe runs at
    # once rather than after the flood's time slice, so what it measures
    # is the server's delay, not the client CPU's. Unprivileged, the call
    # fails and the probe runs at the flood's priority.
    with contextlib.suppress(OSError):
        os.nice(-10)
    reply = bytearray(len(PROBE_LINE))
    latencies: list[int] = []
    with socket.create_connection((HOST, port), timeout=_IO_TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        warm, end = 0, time.monotonic() + warmup
        while not warm or time.monotonic() < end:
            _round_trip(sock, reply)
            warm += 1
            time.sleep(_PAUSE)
        print("measuring", flush=True)
        started = time.monotonic()
        while (now := time.monotonic()) - started < duration:
            latencies.append(_round_trip(sock, reply))
            time.sleep(_PAUSE)
        # Nothing more may come: the server closes in answer to our FIN.
        sock.shutdown(socket.SHUT_WR)
        try:
            extra = sock.recv(len(PROBE_LINE))
        except TimeoutError:
            raise BenchError(
                f"the server did not close within {_IO_TIMEOUT:g} s of our FIN"
            ) from None
        if extra:
            raise BenchError(f"the server sent {len(extra)} byte(s) nobody asked for")
    latencies.sort()
    # Every reply was compared with what was sent, or the probe failed.
    verified = (warm + len(latencies)) * len(PROBE_LINE)
    return {
        "probes": len(latencies),
        "p50_ms": percentile(latencies, 50) / 1e6,
        "p99_ms": percentile(latencies, 99) / 1e6,
        "probe_elapsed": now - started,
        "probe_sent_bytes": verified,
        "probe_verified_bytes": verified,
    }


# -- fairness: a flood and a probe -------------------------------------------


class _Child:
    """A flood or a probe process, read line by line, every wait bounded."""

    def __init__(self, mode: str, proc: asyncio.subprocess.Process) -> None:
        self.mode = mode
        self._proc = proc

    @classmethod
    async def start(cls, mode: str, *args: str, stdin: bool = False) -> _Child:
        proc = await asyncio.create_subprocess_exec(
            *python_argv("-m", "tornado_echo.bench.pressure", mode, *args),
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(mode, proc)

    async def expect(self, word: str, timeout: float) -> None:
        """Wait for the line ``word``; raises the error printed instead."""
        assert self._proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                line = await self._proc.stdout.readline()
        except TimeoutError:
            raise BenchError(
                f"the {self.mode} said nothing for {timeout:g} s"
            ) from None
        if line.strip() != word.encode():
            self._parse(line, f"instead of {word!r}")

    def tell(self, line: str | None) -> None:
        """Write ``line`` to the child's stdin, or close it (`None`)."""
        assert self._proc.stdin is not None
        if line is None:
            self._proc.stdin.close()
        else:
            self._proc.stdin.write(line.encode() + b"\n")

    async def result(self, timeout: float) -> dict[str, object]:
        """The JSON object the child prints last, as it exits."""
        assert self._proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                out = await self._proc.stdout.read()
                await self._proc.wait()
        except TimeoutError:
            raise BenchError(
                f"the {self.mode} did not finish in {timeout:g} s"
            ) from None
        lines = out.splitlines()
        return self._parse(lines[-1] if lines else b"", "as its result")

    def _parse(self, line: bytes, where: str) -> dict[str, object]:
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if isinstance(value, dict) and "error" in value:
            raise BenchError(f"{self.mode}: {value['error']}")
        if isinstance(value, dict):
            return value
        status = self._proc.returncode
        raise BenchError(
            f"the {self.mode} printed {line[:80]!r} {where}"
            + ("" if status is None else f" and exited with status {status}")
        )

    async def stop(self) -> None:
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()


async def fairness(
    port: int,
    *,
    connections: int,
    warmup: float,
    duration: float,
    lines: bool = False,
    cpu: int | None = None,
) -> dict[str, object]:
    """A probe's round trips while a flood of ``connections`` runs; both results.

    The flood starts first and has the probe's ``warmup`` to get going;
    it counts its echo over the probe's measured ``duration``. Both run in
    processes of their own (on ``cpu``), so neither waits for the other's
    event loop. Raises `.BenchError`.
    """
    common = ["--port", str(port), *(["--cpu", str(cpu)] if cpu is not None else [])]
    children: list[_Child] = []
    try:
        flooder = await _Child.start(
            "flood", *common, "--connections", str(connections),
            "--max-seconds", repr(_START_TIMEOUT + warmup + duration + _IO_TIMEOUT),
            *(["--lines"] if lines else []), stdin=True,
        )  # fmt: skip
        children.append(flooder)
        await flooder.expect("flooding", _START_TIMEOUT)
        prober = await _Child.start(
            "probe", *common, "--warmup", repr(warmup), "--duration", repr(duration)
        )
        children.append(prober)
        await prober.expect("measuring", _START_TIMEOUT + warmup)
        flooder.tell("measure")
        probed = await prober.result(duration + _IO_TIMEOUT)
        flooder.tell(None)
        flooded = await flooder.result(_IO_TIMEOUT)
    finally:
        for child in children:
            await child.stop()
    return {**flooded, **probed, "lines": lines}


# -- bulk --------------------------------------------------------------------


async def _watch(conn: _Writer, seconds: float) -> None:
    """Sleep ``seconds``, failing early if the run failed or stalled."""
    await sleep_watching(
        seconds,
        lambda: None if conn.failure is None else BenchError(conn.failure),
        lambda: conn.last_read,
        _IO_TIMEOUT,
    )


async def _finish(conn: _Checked) -> None:
    """Stop sending, take the rest of the echo, then FIN and await the close."""
    conn.drained = asyncio.get_running_loop().create_future()
    conn.sending = False
    if conn.received >= conn.sent:
        conn.drained.set_result(None)
    try:
        async with asyncio.timeout(_IO_TIMEOUT):
            await conn.drained
            conn.transport.write_eof()
            await conn.closed
    except TimeoutError:
        conn.fail(
            f"the server did not echo the rest and close within {_IO_TIMEOUT:g} s"
        )


async def bulk(
    port: int, *, warmup: float, duration: float, server_pid: int | None = None
) -> dict[str, object]:
    """Stream to ``127.0.0.1:port`` and check the echo; raises `.BenchError`."""
    if warmup < 0 or duration <= 0:
        raise ValueError("warmup must be >= 0, duration > 0")
    loop = asyncio.get_running_loop()
    chunk = random.Random(0).randbytes(CHUNK)
    conn = cast(_Checked, await _open(lambda: _Checked(chunk), port))
    try:
        await _watch(conn, warmup)
        server0 = server_cpu(server_pid)
        got0, cpu0, t0 = conn.received, time.process_time(), loop.time()
        await _watch(conn, duration)
        t1, cpu1, got1 = loop.time(), time.process_time(), conn.received
        server1 = server_cpu(server_pid)
        await _finish(conn)
    finally:
        conn.transport.abort()
    if conn.failure is not None:
        raise BenchError(conn.failure)
    if conn.received != conn.sent or got1 <= got0:
        raise BenchError(f"sent {conn.sent:,} bytes but {conn.received:,} came back")
    return {
        "echoed_bytes": got1 - got0,
        "elapsed": t1 - t0,
        "server_cpu": None if server0 is None or server1 is None else server1 - server0,
        "client_cpu": (cpu1 - cpu0) / (t1 - t0),
        "sent_bytes": conn.sent,
        "verified_bytes": conn.received,
    }


# -- command line ------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tornado_echo.bench.pressure",
        description="Pressure on a server at 127.0.0.1:PORT; prints the result "
        "as JSON.",
    )
    modes = parser.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--port", type=int, required=True)
    common.add_argument("--cpu", type=int, help="pin this process to this CPU")
    timed = argparse.ArgumentParser(add_help=False)
    timed.add_argument("--warmup", type=float, default=0.5)
    timed.add_argument("--duration", type=float, default=3.0)
    looped = argparse.ArgumentParser(add_help=False)
    looped.add_argument("--loop", choices=LOOPS, default=default_loop())
    for mode, parents, text in (
        ("fairness", [common, timed], "a probe's latency under a flood"),
        ("flood", [common, looped], "keep the pipes full until stdin closes"),
        ("probe", [common, timed], "light round trips of one line"),
        ("bulk", [common, timed, looped], "one connection's throughput"),
    ):
        sub = modes.add_parser(mode, parents=parents, help=text, description=text)
        if mode in ("fairness", "flood"):
            sub.add_argument("--connections", type=int, default=16)
            sub.add_argument("--lines", action="store_true", help="64-byte lines")
        if mode == "flood":
            sub.add_argument("--max-seconds", type=float, default=60.0)
        if mode == "bulk":
            sub.add_argument("--server-pid", type=int)
    return parser


def _run(args: argparse.Namespace) -> dict[str, object]:
    if args.mode == "probe":
        return probe(args.port, warmup=args.warmup, duration=args.duration)
    if args.mode == "fairness":
        return run_with(
            "asyncio",
            fairness(
                args.port,
                connections=args.connections,
                warmup=args.warmup,
                duration=args.duration,
                lines=args.lines,
                cpu=args.cpu,
            ),
        )
    if args.mode == "flood":
        return run_with(
            args.loop,
            flood(
                args.port,
                connections=args.connections,
                lines=args.lines,
                max_seconds=args.max_seconds,
            ),
        )
    return run_with(
        args.loop,
        bulk(
            args.port,
            warmup=args.warmup,
            duration=args.duration,
            server_pid=args.server_pid,
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:
        result = _run(args)
    except (BenchError, OSError) as exc:  # a socket's timeout too
        print(json.dumps({"error": str(exc) or type(exc).__name__}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
