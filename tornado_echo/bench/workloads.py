"""The ways the benchmark loads a server.

`closed_loop`
    runs `tornado_echo.bench.client` against a running server: a closed loop
    of echo round trips over a number of connections, every byte checked,
    each message one line or, pipelined, several; returns a `RunResult`.
`idle`
    holds many connections open to a server that has just started, and
    reports how much its resident memory grew per connection (each
    connection echoes one line, so line servers are measured too); returns
    an `IdleResult`.
`fairness`
    runs `tornado_echo.bench.pressure`'s flood and probe against a running
    server: a light client's round trips while busy connections keep the
    server's pipes full; returns a `FairnessResult`.
`bulk`
    runs its bulk stream: one connection's throughput, and the server's CPU
    time per MiB; returns a `BulkResult`.
`stuck`
    sends a server that has just started more than it can echo on clients
    that never read, and reports what it held and whether it gave the
    memory back once they left; returns a `StuckResult`.

All bound every wait, raise `.BenchFailure` when a server misbehaves
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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from tornado_echo.bench.client import HOST, ClientResult, process_cpu_seconds
from tornado_echo.bench.servers import (
    BenchFailure,
    BenchServer,
    ServerConfig,
    ServerProcess,
    python_argv,
)

__all__ = [
    "FAIRNESS_YARDSTICK",
    "LINE_FAIRNESS_YARDSTICK",
    "STUCK_BYTES",
    "STUCK_PAYLOAD",
    "BulkResult",
    "FairnessResult",
    "IdleResult",
    "RunResult",
    "StuckResult",
    "TimeLimitReached",
    "bulk",
    "clamp_idle_connections",
    "closed_loop",
    "fairness",
    "fairness_yardstick",
    "idle",
    "result_fields",
    "run_client",
    "stuck",
]

#: Fairness is measured against compat: its level-triggered poller gives
#: each busy connection one read per turn of the loop, as fair as one
#: event loop gets. Line servers are measured against compat's line echo.
FAIRNESS_YARDSTICK = "compat"
#: The yardstick of line servers' fairness.
LINE_FAIRNESS_YARDSTICK = "compat --lines"

#: What each client that never reads sends: more than every kernel buffer
#: on the way takes, so a server that reads on must hold the rest.
STUCK_BYTES = 1 << 20

#: What it is sent in: 64 KiB of 1 KiB lines, which byte servers echo as
#: bytes (a line server's work per line would make 64-byte lines slow to
#: send, and the memory held is the same).
STUCK_PAYLOAD = (b"x" * 1023 + b"\n") * 64

# The client bounds its own waits (5 s per connect, 10 s for a stall or for
# the last replies); this is for a client that hangs regardless.
_CLIENT_GRACE = 30.0

# Every socket operation of the idle workload; loopback answers in µs.
_IO_TIMEOUT = 10.0

# File descriptors the benchmark and each server need besides the idle
# connections: pipes, listening sockets, the interpreter's own files.
_FD_MARGIN = 200

_CLIENT_STDERR_TAIL = 20

# The stuck workload: a server is idle once it used less than this share of
# a CPU for a few polls in a row, and must be within this long; once the
# clients leave its memory must be back within this multiple of the start,
# and is watched for this long.
_IDLE_SHARE = 0.01
_IDLE_POLL = 0.1
_IDLE_POLLS = 3
_IDLE_TIMEOUT = 10.0
_RSS_BACK = 1.25
_RSS_BACK_TIMEOUT = 10.0

# The stuck clients' kernel buffers: small, so they fill fast.
_STUCK_SOCKET_BUFFER = 32 * 1024

# Sending stops once no socket took a byte for this long: every buffer on
# the way is full and the server has stopped reading, as it should.
_STUCK_QUIET = 0.5
_STUCK_SEND_TIMEOUT = 30.0

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_Result = TypeVar("_Result", bound="DataclassInstance")


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


@dataclasses.dataclass(frozen=True)
class FairnessResult:
    """A light probe's round trips while a flood kept the server busy."""

    server: str
    repeat: int
    #: The server whose p99 this one's is compared with (`fairness_yardstick`).
    yardstick: str
    #: Connections that kept the server's pipes full.
    connections: int
    #: The probe's round trips in the window, and their latency.
    probes: int
    p50_ms: float
    p99_ms: float
    probe_elapsed: float
    #: Bytes the probe sent and that came back identical, warm-up included.
    probe_sent_bytes: int
    probe_verified_bytes: int
    #: Bytes echoed to the flood over the probe's window (not checked).
    flood_bytes: int
    flood_elapsed: float

    @property
    def flood_mib_per_s(self) -> float:
        return self.flood_bytes / self.flood_elapsed / (1 << 20)

    def to_json(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "flood_mib_per_s": self.flood_mib_per_s}


@dataclasses.dataclass(frozen=True)
class BulkResult:
    """One connection streaming to the server as fast as it echoes."""

    server: str
    repeat: int
    #: Bytes echoed over the measured window, and its length.
    echoed_bytes: int
    elapsed: float
    #: The server's CPU seconds over the window, if its pid was given.
    server_cpu: float | None
    #: The client's CPU time over the window, as a share of one core.
    client_cpu: float
    #: Bytes sent and bytes that came back identical, over the whole run.
    sent_bytes: int
    verified_bytes: int

    @property
    def mib_per_s(self) -> float:
        return self.echoed_bytes / self.elapsed / (1 << 20)

    @property
    def server_cpu_per_mib_us(self) -> float | None:
        """Server CPU time per echoed MiB, in µs."""
        if self.server_cpu is None or not self.echoed_bytes:
            return None
        return self.server_cpu / (self.echoed_bytes / (1 << 20)) * 1e6

    @property
    def server_busy(self) -> float | None:
        """The server's CPU time as a share of one core."""
        return None if self.server_cpu is None else self.server_cpu / self.elapsed

    def to_json(self) -> dict[str, object]:
        return {
            **dataclasses.asdict(self),
            "mib_per_s": self.mib_per_s,
            "server_cpu_per_mib_us": self.server_cpu_per_mib_us,
            "server_busy": self.server_busy,
        }


@dataclasses.dataclass(frozen=True)
class StuckResult:
    """What a server held for clients that never read, and what it gave back."""

    server: str
    clients: int
    #: Bytes the clients got the server to take, all of them together.
    sent_bytes: int
    #: RSS once idle before the clients came, once idle with all of them
    #: stuck, and when last read after they left.
    rss_start: int
    rss_held: int
    rss_after: int
    #: Seconds from their leaving until the RSS was within 1.25 times the
    #: start; `None` if it was not within 10 s.
    back_seconds: float | None

    @property
    def bytes_per_client(self) -> float:
        return (self.rss_held - self.rss_start) / self.clients

    def to_json(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "bytes_per_client": self.bytes_per_client}


def fairness_yardstick(config: ServerConfig) -> str:
    """The server a fairness result of ``config`` is compared with."""
    return LINE_FAIRNESS_YARDSTICK if config.lines else FAIRNESS_YARDSTICK


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
    pipeline: int = 1,
) -> RunResult:
    """One run of the load client against ``server``, which must be ready.

    With ``pipeline`` above 1, each message of ``size`` bytes is that many
    lines, written at once, whose echoes are all awaited.
    """
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
    if pipeline > 1:
        argv += ["--pipeline", str(pipeline)]
        what = (
            f"{server.name}, {pipeline} lines of {size // pipeline} B per write × "
            f"{connections} connections"
        )
    else:
        what = f"{server.name}, {size} B × {connections} connections"
    result = run_client(server, argv, what, warmup + duration + _CLIENT_GRACE, deadline)
    run = _from_json(RunResult, result, what, server=server.name, repeat=repeat)
    _check_verified(what, run.sent_bytes, run.verified_bytes)
    if run.round_trips <= 0:
        raise BenchFailure(f"{what}: no round trip was measured")
    return run


def _check_verified(what: str, sent: int, verified: int) -> None:
    # The client refuses such a run itself; a result is only as good as
    # this check, so it is made again where the result is kept.
    if verified != sent or sent <= 0:
        raise BenchFailure(f"{what}: sent {sent:,} bytes but verified {verified:,}")


def run_client(
    server: BenchServer,
    argv: list[str],
    what: str,
    own_timeout: float,
    deadline: float | None = None,
    *,
    server_detail: bool = True,
) -> dict[str, Any]:
    """Run a client process against ``server``; returns the JSON it printed.

    Raises `TimeLimitReached`, or `.BenchFailure` with the client's reason,
    whose detail is the server's last stderr lines; with ``server_detail``
    false, only if the server has exited (a client's reason is then all
    there is to say).
    """
    timeout, limited = _bounded(own_timeout, deadline)
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
        raise _failure(
            server,
            f"{what}: the client did not finish within {timeout:g} s",
            server_detail,
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
        raise _failure(server, f"{what}: {result['error']}", server_detail)
    server.check_alive()
    return result


def _failure(server: BenchServer, reason: str, server_detail: bool) -> BenchFailure:
    if server_detail or server.returncode() is not None:
        return server.failure(reason)
    return BenchFailure(reason)


def result_fields(cls: type[Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments of the result class ``cls`` found in ``data``.

    ``data`` is what a client printed, or a result's own ``to_json()`` (the
    derived values it adds are left out). A field with a default may be
    missing, as in results written before it was added; `KeyError` names
    another that is.
    """
    return {
        field.name: data[field.name]
        for field in dataclasses.fields(cls)
        if field.name in data or field.default is dataclasses.MISSING
    }


def _from_json(
    cls: type[_Result], data: Mapping[str, Any], what: str, **known: object
) -> _Result:
    """A ``cls`` from ``known`` and the rest of its fields from a client's JSON."""
    try:
        values = result_fields(cls, {**data, **known})
    except KeyError as exc:
        raise BenchFailure(f"{what}: the client's result is malformed: {exc}") from None
    return cls(**values)


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


# -- pressure: fairness and bulk ------------------------------------------------


def _pressure_argv(mode: str, server: ServerProcess, *args: str) -> list[str]:
    assert server.port is not None, "the server is not ready"
    return python_argv(
        "-m", "tornado_echo.bench.pressure", mode, "--port", str(server.port), *args
    )


def fairness(
    server: ServerProcess,
    *,
    repeat: int,
    connections: int,
    warmup: float,
    duration: float,
    client_cpu: int | None,
    deadline: float | None = None,
) -> FairnessResult:
    """A light probe's round trips to ``server`` while ``connections`` flood it.

    The flood and the probe run in processes of their own on ``client_cpu``;
    ``server`` must be ready.
    """
    argv = _pressure_argv(
        "fairness", server,
        "--connections", str(connections),
        "--warmup", repr(warmup),
        "--duration", repr(duration),
    )  # fmt: skip
    if client_cpu is not None:
        argv += ["--cpu", str(client_cpu)]
    if server.config.lines:
        argv.append("--lines")
    what = f"{server.name}, fairness under {connections} floods"
    # Three interpreter starts, two of them on a CPU the flood keeps busy.
    own_timeout = warmup + duration + 2 * _CLIENT_GRACE
    result = run_client(server, argv, what, own_timeout, deadline)
    run = _from_json(
        FairnessResult, result, what,
        server=server.name, repeat=repeat,
        yardstick=fairness_yardstick(server.config),
    )  # fmt: skip
    _check_verified(
        f"{what}: the probe", run.probe_sent_bytes, run.probe_verified_bytes
    )
    if run.probes <= 0 or run.flood_bytes <= 0:
        raise BenchFailure(f"{what}: no probe round trip or no flood was measured")
    return run


def bulk(
    server: ServerProcess,
    *,
    repeat: int,
    warmup: float,
    duration: float,
    client_cpu: int | None,
    deadline: float | None = None,
) -> BulkResult:
    """One connection streaming to ``server``, which must be ready."""
    argv = _pressure_argv(
        "bulk", server,
        "--warmup", repr(warmup),
        "--duration", repr(duration),
        "--server-pid", str(server.pid),
    )  # fmt: skip
    if client_cpu is not None:
        argv += ["--cpu", str(client_cpu)]
    what = f"{server.name}, bulk"
    result = run_client(server, argv, what, warmup + duration + _CLIENT_GRACE, deadline)
    run = _from_json(BulkResult, result, what, server=server.name, repeat=repeat)
    _check_verified(what, run.sent_bytes, run.verified_bytes)
    if run.echoed_bytes <= 0:
        raise BenchFailure(f"{what}: nothing was echoed while measuring")
    return run


# -- clients that never read --------------------------------------------------


def _wait_idle(server: ServerProcess, what: str, deadline: float | None) -> None:
    """Wait until ``server`` has used next to no CPU for a few polls in a row."""
    end = time.monotonic() + _IDLE_TIMEOUT
    last, quiet = process_cpu_seconds(server.pid), 0
    while quiet < _IDLE_POLLS:
        _bounded(_IDLE_TIMEOUT, deadline)  # raises once time is up
        if time.monotonic() > end:
            server.check_alive()
            raise server.failure(
                f"{what}: the server stayed busy for {_IDLE_TIMEOUT:g} s"
            )
        time.sleep(_IDLE_POLL)
        now = process_cpu_seconds(server.pid)
        quiet = quiet + 1 if now - last < _IDLE_SHARE * _IDLE_POLL else 0
        last = now


def _small_buffers_connection(port: int) -> socket.socket:
    """A non-blocking client socket with small kernel buffers, which fill fast."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, _STUCK_SOCKET_BUFFER)
        sock.settimeout(_IO_TIMEOUT)
        sock.connect((HOST, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _send_burst(socks: list[socket.socket], deadline: float | None) -> int:
    """Send `STUCK_BYTES` on every socket, as fast as the server takes them.

    Stops early once nothing was taken for a while: every buffer on the way
    is full, and the server has stopped reading, as it should. Returns the
    bytes sent.
    """
    payload = memoryview(STUCK_PAYLOAD)
    left = dict.fromkeys(socks, STUCK_BYTES)
    end = time.monotonic() + _STUCK_SEND_TIMEOUT
    quiet_since: float | None = None
    while left and time.monotonic() < end:
        _bounded(_STUCK_SEND_TIMEOUT, deadline)
        moved = 0
        for sock in list(left):
            # Each stream goes on where it stopped: lines stay whole.
            offset = (STUCK_BYTES - left[sock]) % len(payload)
            try:
                sent = sock.send(payload[offset : offset + left[sock]])
            except BlockingIOError:
                continue
            moved += sent
            left[sock] -= sent
            if not left[sock]:
                del left[sock]
        now = time.monotonic()
        if moved:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= _STUCK_QUIET:
            break
        if not moved:
            time.sleep(0.01)
    return len(socks) * STUCK_BYTES - sum(left.values())


def _wait_rss_back(
    server: ServerProcess, limit: float, deadline: float | None
) -> tuple[int, float | None]:
    """Poll the RSS until it is at most ``limit``; it and the seconds waited.

    The seconds are `None` if it was not back within `_RSS_BACK_TIMEOUT`.
    """
    started = time.monotonic()
    while True:
        rss = server.rss()
        waited = time.monotonic() - started
        if rss <= limit:
            return rss, waited
        if waited >= _RSS_BACK_TIMEOUT:
            return rss, None
        _bounded(_RSS_BACK_TIMEOUT, deadline)
        time.sleep(0.1)


def stuck(
    server: ServerProcess, clients: int, *, deadline: float | None = None
) -> StuckResult:
    """Clients of a freshly started ``server`` that send and never read.

    Reads the server's RSS once it is idle; opens ``clients`` connections
    with 32 KiB kernel buffers and sends `STUCK_BYTES` of `STUCK_PAYLOAD`
    on each, as fast as the server takes it; reads the RSS again once the
    server is idle; closes them all and watches the RSS for up to 10 s to
    come back within 1.25 times the start. A new connection must then
    still get its echo.
    """
    assert server.port is not None, "the server is not ready"
    what = f"{server.name}, {clients} clients that never read"
    socks: list[socket.socket] = []
    stage = "waiting for the server to be idle"
    try:
        try:
            _wait_idle(server, what, deadline)
            rss_start = server.rss()
            stage = "connecting"
            for _ in range(clients):
                socks.append(_small_buffers_connection(server.port))
            stage = "sending"
            sent = _send_burst(socks, deadline)
            stage = "waiting for the server to be idle with them"
            _wait_idle(server, what, deadline)
            rss_held = server.rss()
        finally:
            for sock in socks:
                sock.close()
        stage = "waiting for the memory to come back"
        rss_after, back = _wait_rss_back(server, _RSS_BACK * rss_start, deadline)
        stage = "a new connection after they left"
        with _connect(server.port) as sock:
            sock.sendall(_message(0))
            _expect(sock, _message(0))
    except OSError as exc:  # timeouts and ConnectionError too
        server.check_alive()
        raise server.failure(f"{what}: {stage}: {exc}") from None
    server.check_alive()
    return StuckResult(
        server=server.name,
        clients=clients,
        sent_bytes=sent,
        rss_start=rss_start,
        rss_held=rss_held,
        rss_after=rss_after,
        back_seconds=back,
    )
