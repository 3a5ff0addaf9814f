"""The two ways the benchmark loads a server.

`closed_loop`
    runs `tornado_echo.bench.client` against a running server: a closed loop
    of echo round trips over a number of connections, every byte checked;
    returns a `RunResult`.
`idle`
    holds many connections open to a server that has just started, and
    reports how much its resident memory grew per connection; returns an
    `IdleResult`.

Both bound every wait, raise `.BenchFailure` when a server misbehaves
(with its last stderr lines), and `TimeLimitReached` when the benchmark's
deadline, a `time.monotonic` value, passes first.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import dataclasses
import json
import random
import resource
import socket
import subprocess
import time
from typing import Any

from tornado_echo.bench.client import HOST, ClientResult
from tornado_echo.bench.servers import BenchFailure, ServerProcess, python_argv

__all__ = [
    "IdleResult",
    "RunResult",
    "TimeLimitReached",
    "clamp_idle_connections",
    "closed_loop",
    "idle",
]

# The client bounds its own waits (5 s per connect, 10 s for a stall or for
# the last replies); this is for a client that hangs regardless.
_CLIENT_GRACE = 30.0

# Every socket operation of the idle workload; loopback answers in µs.
_IO_TIMEOUT = 10.0

# File descriptors the benchmark and each server need besides the idle
# connections: pipes, listening sockets, the interpreter's own files.
_FD_MARGIN = 200

_CLIENT_STDERR_TAIL = 20


class TimeLimitReached(Exception):
    """The benchmark's time limit passed before the work finished."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunResult(ClientResult):
    """One closed-loop run: what the client measured, and against what."""

    server: str
    repeat: int


@dataclasses.dataclass(frozen=True)
class IdleResult:
    """How a server's memory grew while holding ``connections`` idle connections."""

    server: str
    #: Connections asked for, and held (fewer if the open-file limit clamped).
    requested: int
    connections: int
    rss_before: int
    rss_after: int
    #: Random held connections that were checked to still echo, and passed.
    sample: int
    sample_echoed: int
    #: Seconds it took to open, and get an echo on, every connection.
    open_seconds: float

    @property
    def bytes_per_connection(self) -> float:
        return (self.rss_after - self.rss_before) / self.connections

    def to_json(self) -> dict[str, object]:
        return {
            **dataclasses.asdict(self),
            "bytes_per_connection": self.bytes_per_connection,
        }


def closed_loop(
    server: ServerProcess,
    *,
    repeat: int,
    size: int,
    connections: int,
    warmup: float,
    duration: float,
    client_cpu: int | None,
    spin: bool = True,
    deadline: float | None = None,
) -> RunResult:
    """One run of the load client against ``server``, which must be ready."""
    assert server.port is not None, "the server is not ready"
    argv = python_argv(
        "-m", "tornado_echo.bench.client",
        "--port", str(server.port),
        "--connections", str(connections),
        "--size", str(size),
        "--warmup", repr(warmup),
        "--duration", repr(duration),
        "--server-pid", str(server.pid),
    )  # fmt: skip
    if client_cpu is not None:
        argv += ["--cpu", str(client_cpu)]
    if not spin:
        argv.append("--no-spin")
    if server.config.lines:
        argv.append("--lines")
    what = f"{server.name}, {size} B × {connections} connections"
    timeout, limited = _bounded(warmup + duration + _CLIENT_GRACE, deadline)
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        if limited:
            raise TimeLimitReached(what) from None
        server.check_alive()
        raise server.failure(
            f"{what}: the client did not finish within {timeout:g} s"
        ) from None
    result = _parse_client_output(proc.stdout)
    if result is None:
        server.check_alive()
        raise BenchFailure(
            f"{what}: the client exited with status {proc.returncode} without a result",
            proc.stderr.splitlines()[-_CLIENT_STDERR_TAIL:],
        )
    if "error" in result:
        # The client's reason first; whether the server died is in the detail.
        raise server.failure(f"{what}: {result['error']}")
    server.check_alive()
    try:
        run = RunResult(
            server=server.name, repeat=repeat, **ClientResult.fields_from_json(result)
        )
    except KeyError as exc:
        raise BenchFailure(f"{what}: the client's result is malformed: {exc}") from None
    # The client refuses such a run itself; a result is only as good as
    # this check, so it is made again where the result is kept.
    if run.verified_bytes != run.sent_bytes or run.sent_bytes <= 0:
        raise BenchFailure(
            f"{what}: sent {run.sent_bytes:,} bytes but verified {run.verified_bytes:,}"
        )
    if run.round_trips <= 0:
        raise BenchFailure(f"{what}: no round trip was measured")
    return run


def _parse_client_output(stdout: str) -> dict[str, Any] | None:
    lines = stdout.strip().splitlines()
    if not lines:
        return None
    try:
        value = json.loads(lines[-1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _bounded(own: float, deadline: float | None) -> tuple[float, bool]:
    """The timeout for a step: its ``own`` bound, or less if ``deadline`` is nearer.

    The flag says whether the deadline is the nearer one.
    """
    if deadline is None:
        return own, False
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeLimitReached("no time left")
    return (left, True) if left < own else (own, False)


def clamp_idle_connections(requested: int) -> tuple[int, str | None]:
    """``requested``, or fewer if the open-file limit cannot take that many.

    Returns the count and, if it was clamped, a sentence that says so.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or requested + _FD_MARGIN <= soft:
        return requested, None
    allowed = max(soft - _FD_MARGIN, 1)
    return allowed, (
        f"idle: {requested:,} connections do not fit the open-file limit of "
        f"{soft:,} (with {_FD_MARGIN} to spare); holding {allowed:,}"
    )


def _message(index: int) -> bytes:
    # Unique per connection, and a whole line, so no reply can pass for
    # another connection's.
    return b"idle %010d\n" % index


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=_IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _expect(sock: socket.socket, message: bytes) -> None:
    got = bytearray()
    while len(got) < len(message):
        chunk = sock.recv(len(message) - len(got))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        got += chunk
    if got != message:
        raise ConnectionError(f"sent {message!r} but {bytes(got)!r} came back")


def idle(
    server: ServerProcess,
    connections: int,
    *,
    requested: int | None = None,
    batch: int = 100,
    sample: int = 100,
    deadline: float | None = None,
    seed: int = 0,
) -> IdleResult:
    """Hold ``connections`` connections to a freshly started ``server``.

    Measures the server's RSS after one warm-up connection, then again with
    all of them open, each having echoed once (so the server accepted and
    served it, rather than the kernel merely completing the handshake);
    then checks that ``sample`` random ones still echo, and closes them all.
    Connections open ``batch`` at a time, no more than the listen backlog
    (asyncio's 100; Tornado's 128) so no SYN is dropped and retried a
    second later.
    """
    assert server.port is not None, "the server is not ready"
    port = server.port
    what = f"{server.name}, idle"
    socks: list[socket.socket] = []
    stage = "the warm-up connection"
    try:
        try:
            warm = _connect(port)
            socks.append(warm)
            warm.sendall(_message(0))
            _expect(warm, _message(0))
            warm.close()
            socks.clear()
            # Let the server be done with the warm-up connection first.
            time.sleep(0.2)
            rss_before = server.rss()
            started = time.monotonic()
            while len(socks) < connections:
                _bounded(_IO_TIMEOUT, deadline)  # raises once time is up
                first = len(socks)
                stage = f"connections {first + 1:,} to {connections:,}"
                for _ in range(min(batch, connections - first)):
                    socks.append(_connect(port))
                for index in range(first, len(socks)):
                    socks[index].sendall(_message(index))
                for index in range(first, len(socks)):
                    _expect(socks[index], _message(index))
            open_seconds = time.monotonic() - started
            rss_after = server.rss()
            stage = "the sample of held connections"
            rng = random.Random(seed)
            chosen = rng.sample(range(connections), min(sample, connections))
            for index in chosen:
                socks[index].sendall(_message(index))
            echoed = 0
            for index in chosen:
                _expect(socks[index], _message(index))
                echoed += 1
        except OSError as exc:  # timeouts and ConnectionError too
            server.check_alive()
            raise server.failure(f"{what}: {stage}: {exc}") from None
    finally:
        for sock in socks:
            sock.close()
    server.check_alive()
    return IdleResult(
        server=server.name,
        requested=connections if requested is None else requested,
        connections=connections,
        rss_before=rss_before,
        rss_after=rss_after,
        sample=len(chosen),
        sample_echoed=echoed,
        open_seconds=open_seconds,
    )
