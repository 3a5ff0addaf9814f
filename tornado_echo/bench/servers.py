"""The server configurations the benchmark knows, and their processes.

A configuration (`ServerConfig`) is one kind of server (`ServerKind`) on
one event loop. Its `~ServerConfig.name` is stable and is what reports,
charts and ``--servers`` use: ``stream``, ``compat --lines`` or, on uvloop,
``asyncio-protocol (uvloop)``. The kinds:

``asyncio-protocol``, ``asyncio-streams``, ``tornado-naive``
    peers, from `tornado_echo.bench.baselines`; ``asyncio-protocol`` on
    asyncio's own loop is the `REFERENCE` every ratio is taken against;
``stream``, ``compat``
    ours: ``tornado-echo --impl stream|compat``;
``stream-public-api``
    ``--impl stream`` with ``TORNADO_ECHO_FASTPATH=0``: only documented
    `.IOStream` hooks, as on a Tornado the fast path was not checked on;
``stream --lines``, ``compat --lines``, ``lineserver``
    ours, echoing lines, so the client must send whole lines;
``asyncio-readline``, ``twisted-linereceiver``, ``anyio-asyncio``, ...
    the line-protocol peers, from `tornado_echo.bench.line_peers`;
    ``asyncio-readline``, on the same loop, is the `LINE_REFERENCE` of the
    report's line-protocol table. A peer whose framework is not installed
    (`ServerKind.requires`) is skipped, with one line that says how to
    install it (`unavailable`).

`ServerProcess` runs one configuration as ``python -m ...`` on a free
loopback port, pinned to one CPU, and always stops it; `BenchServer`, what
it is built on, does the same for any command, such as a real memcached.

**The malloc environment.** Unless told otherwise (`malloc_env` with
``glibc_defaults=True``, ``--glibc-malloc-defaults`` on the command line)
every server starts with ``MALLOC_MMAP_THRESHOLD_=1048576`` and
``MALLOC_TRIM_THRESHOLD_=16777216``. asyncio's transports ``recv`` up to
256 KiB at a time; with glibc's default 128 KiB mmap threshold each of those
buffers is a fresh ``mmap``, ``mremap`` and ``munmap`` (and with only the
mmap threshold raised, the heap grows and is trimmed back: two ``brk``
calls). On the development VM those system calls cost more than the whole
echo round trip, and made asyncio's Protocol echo, the reference, look
about 3 times slower than it is (30k against 95k round trips/s at 1 KiB
and 10 connections), which would flatter every ratio taken against it.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import importlib.util
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from tornado_echo._fastpath import ENV_VAR as FASTPATH_ENV_VAR
from tornado_echo.bench.client import HOST
from tornado_echo.bench.line_peers import OWN_LOOPS
from tornado_echo.loops import LOOPS, LoopName

__all__ = [
    "INSTALL_HINT",
    "KINDS",
    "LINE_REFERENCE",
    "MALLOC_ENV",
    "REFERENCE",
    "BenchFailure",
    "BenchServer",
    "ServerConfig",
    "ServerKind",
    "ServerProcess",
    "kind_named",
    "line_yardstick",
    "malloc_env",
    "pinned",
    "python_argv",
    "raise_nofile_limit",
    "rss_bytes",
    "start_all",
    "stop_all",
    "unavailable",
]

#: Set in every server's environment unless ``--glibc-malloc-defaults``;
#: see the module docstring for why.
MALLOC_ENV: Mapping[str, str] = {
    "MALLOC_MMAP_THRESHOLD_": "1048576",
    "MALLOC_TRIM_THRESHOLD_": "16777216",
}

# An interpreter start and a Tornado import, with room for a busy machine.
START_TIMEOUT = 10.0

# Our servers drain for up to --shutdown-timeout (10 s) after SIGTERM; by
# then the benchmark has closed every connection, so this is generous.
STOP_TIMEOUT = 15.0

_STDERR_TAIL = 20

_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


class BenchFailure(Exception):
    """A server or a run failed; the results cannot be trusted.

    ``str(exc)`` is one line; ``detail`` holds what explains it, such as the
    last lines a server wrote to stderr.
    """

    def __init__(self, reason: str, detail: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.detail = tuple(detail)


@dataclasses.dataclass(frozen=True)
class ServerKind:
    """One server program, before an event loop is chosen."""

    name: str
    #: The module run with ``python -m`` and its arguments, less ``--loop``.
    args: tuple[str, ...]
    #: Echoes lines: the client must send ``\\n``-terminated messages.
    lines: bool
    #: One of tornado_echo's own servers, not a peer.
    ours: bool
    #: Also measured on uvloop in the default run (when uvloop is installed).
    uvloop_by_default: bool
    #: Extra environment variables for the server process.
    env: tuple[tuple[str, str], ...] = ()
    #: The modules it imports beyond tornado_echo's own needs (a peer's
    #: framework); a kind with one missing is skipped (`unavailable`).
    requires: tuple[str, ...] = ()
    #: The event loop it brings, for a peer that runs on its own (Twisted's
    #: reactor, Trio, gevent's hub); `None` for those that take ``--loop``.
    own_loop: str | None = None

    @property
    def loops(self) -> tuple[LoopName, ...]:
        """The loops it can be measured on: one, for a kind with its own."""
        return ("asyncio",) if self.own_loop is not None else LOOPS


def _baseline(name: str, *, lines: bool = False, ours: bool = False) -> ServerKind:
    return ServerKind(
        name,
        ("tornado_echo.bench.baselines", name, "--port", "0"),
        lines=lines,
        ours=ours,
        uvloop_by_default=name in ("asyncio-protocol", "lineserver"),
    )


def _line_peer(name: str, *requires: str, uvloop: bool = False) -> ServerKind:
    return ServerKind(
        name,
        ("tornado_echo.bench.line_peers", name, "--port", "0"),
        lines=True,
        ours=False,
        uvloop_by_default=uvloop,
        requires=requires,
        own_loop=OWN_LOOPS.get(name),
    )


def _ours(impl: str, *, lines: bool, public_api: bool = False) -> ServerKind:
    name = f"{impl} --lines" if lines else impl
    return ServerKind(
        f"{name}-public-api" if public_api else name,
        # Not a quieter log level: the port is announced at INFO.
        ("tornado_echo", "--port", "0", "--impl", impl, "--log-level", "info")
        + (("--lines",) if lines else ()),
        lines=lines,
        ours=True,
        uvloop_by_default=not public_api and (impl == "stream" or not lines),
        # The stream path a Tornado the fast path was not checked on gets.
        env=((FASTPATH_ENV_VAR, "0"),) if public_api else (),
    )


#: Every kind of server, in the order reports list them.
KINDS: tuple[ServerKind, ...] = (
    _baseline("asyncio-protocol"),
    _baseline("asyncio-streams"),
    _baseline("tornado-naive"),
    _ours("stream", lines=False),
    _ours("stream", lines=False, public_api=True),
    _ours("compat", lines=False),
    _line_peer("asyncio-readline", uvloop=True),
    _line_peer("twisted-linereceiver", "twisted"),
    _line_peer("anyio-asyncio", "anyio"),
    _line_peer("anyio-trio", "anyio", "trio"),
    _line_peer("gevent", "gevent"),
    _ours("stream", lines=True),
    _ours("compat", lines=True),
    _baseline("lineserver", lines=True, ours=True),
)

#: The kind every ratio is taken against, on asyncio's own loop.
REFERENCE = "asyncio-protocol"

#: The kind line servers are also compared with, on the same loop: asyncio
#: streams' ``readline``, the line echo asyncio users write.
LINE_REFERENCE = "asyncio-readline"

#: How to install what a skipped peer needs.
INSTALL_HINT = "pip install 'tornado_echo[bench]'"


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """A `ServerKind` on an event loop: one row of the report."""

    kind: ServerKind
    loop: LoopName = "asyncio"

    @property
    def name(self) -> str:
        """``kind``, or ``kind (uvloop)``: stable, used as the key everywhere."""
        if self.loop == "asyncio":
            return self.kind.name
        return f"{self.kind.name} ({self.loop})"

    @property
    def lines(self) -> bool:
        return self.kind.lines

    @property
    def ours(self) -> bool:
        return self.kind.ours

    @property
    def is_reference(self) -> bool:
        return self.kind.name == REFERENCE and self.loop == "asyncio"

    def argv(self) -> list[str]:
        if self.kind.own_loop is not None:
            return python_argv("-m", *self.kind.args)
        return python_argv("-m", *self.kind.args, "--loop", self.loop)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind.name,
            # "asyncio" for a peer with a loop of its own, which event_loop names.
            "loop": self.loop,
            "event_loop": self.kind.own_loop or self.loop,
            "lines": self.lines,
            "ours": self.ours,
            "reference": self.is_reference,
            "argv": self.argv()[1:],
        }


def kind_named(name: str) -> ServerKind:
    """The `ServerKind` called ``name``; `KeyError` if there is none."""
    for kind in KINDS:
        if kind.name == name:
            return kind
    raise KeyError(name)


def line_yardstick(config: ServerConfig) -> ServerConfig:
    """The `LINE_REFERENCE` a line server ``config`` is compared with.

    The one on the same loop; a peer with a loop of its own is compared with
    the one on asyncio's.
    """
    return ServerConfig(kind_named(LINE_REFERENCE), config.loop)


def unavailable(kind: ServerKind) -> str | None:
    """Why ``kind`` cannot run here, in one phrase; `None` if it can.

    >>> unavailable(kind_named("stream")) is None
    True
    """
    missing = [name for name in kind.requires if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    verb = "is" if len(missing) == 1 else "are"
    return f"{' and '.join(missing)} {verb} not installed ({INSTALL_HINT})"


def python_argv(*args: str) -> list[str]:
    """``python [-W ...] args``: this interpreter, with this one's ``-W`` options.

    Passing the warning filters on means that a run under
    ``-W error::DeprecationWarning`` fails on a deprecated call in a server or
    the client too, not only in the benchmark process.
    """
    return [sys.executable, *(f"-W{option}" for option in sys.warnoptions), *args]


def malloc_env(glibc_defaults: bool = False) -> dict[str, str]:
    """The environment for server processes: ours plus `MALLOC_ENV`."""
    env = dict(os.environ)
    if not glibc_defaults:
        env.update(MALLOC_ENV)
    return env


def raise_nofile_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit.

    Children inherit it, so the idle workload's servers can hold as many
    connections as the benchmark opens. Returns the new soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        # Linux refuses more than fs.nr_open even when unlimited is allowed.
        try:
            hard = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            hard = max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError):
            pass  # keep the soft limit; the idle workload clamps to it
    return soft


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` (``VmRSS``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchFailure(f"no VmRSS in /proc/{pid}/status")


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Keep this thread on ``cpu`` for the body (unless `None`).

    A process started in the body inherits the CPU before its first
    instruction, so every thread it ever starts runs there too: pinning a
    process from outside once it runs would catch only the threads it has
    by then, and memcached starts its threads at once.
    """
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class BenchServer:
    """A server process on 127.0.0.1, started from any command line.

    `start` launches ``argv`` (`pinned` to ``cpu`` unless that is `None`),
    `wait_ready` waits until it listens, `stop` ends it. With ``port``
    `None` it announces its port on stderr (``listening on
    127.0.0.1:PORT``), as our servers and the peers do; otherwise it listens
    once it accepts a connection on ``port``, as memcached does. Used as a
    context manager it is started and waited for on entry and always
    stopped on exit, so no child outlives the benchmark.

    Its stderr is read on a thread: the server can never block on a full
    pipe, and the last lines are kept to explain a failure.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int | None = None,
        cpu: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.cpu = cpu
        self.env = dict(os.environ if env is None else env)
        self.port = port
        self._announces = port is None
        self._proc: subprocess.Popen[str] | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        self._ready = threading.Event()
        self._terminated = False
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._proc.pid

    def start(self) -> None:
        """Launch the process; returns at once (see `wait_ready`)."""
        if self._proc is not None:
            raise RuntimeError(f"{self.name} was already started")
        with pinned(self.cpu):
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=self.env,
                text=True,
                errors="replace",
            )
        self._reader = threading.Thread(
            target=self._read_stderr, name=f"stderr of {self.name}", daemon=True
        )
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            line = line.rstrip("\n")
            self._tail.append(line)
            if self.port is None and (match := _LISTENING.search(line)):
                self.port = int(match.group(1))
                self._ready.set()
        self._ready.set()  # EOF: it exited; wake wait_ready to say so

    def wait_ready(self, timeout: float = START_TIMEOUT) -> int:
        """Wait until it listens; returns the port.

        Raises `BenchFailure` if the server exits first, or does not listen
        (or, announcing, say so) within ``timeout`` seconds.
        """
        if self._announces:
            if not self._ready.wait(timeout):
                raise self.failure(
                    f"{self.name} did not say it was listening within {timeout:g} s"
                )
            listening = self.port is not None
        else:
            listening = self._accepts(timeout)
        if not listening:
            self._wait_exit(1.0)
            raise self.failure(f"{self.name} exited before listening")
        assert self.port is not None
        return self.port

    def _accepts(self, timeout: float) -> bool:
        """Whether it accepts a connection on `port` before it exits."""
        assert self.port is not None
        deadline = time.monotonic() + timeout
        while self.returncode() is None:
            try:
                socket.create_connection((HOST, self.port), timeout=1.0).close()
                return True
            except OSError:
                if time.monotonic() > deadline:
                    raise self.failure(
                        f"{self.name} was not listening within {timeout:g} s"
                    ) from None
                time.sleep(0.01)
        return False

    def tail(self) -> list[str]:
        """The last lines the server wrote to stderr."""
        return list(self._tail)

    def returncode(self) -> int | None:
        """The exit status, or `None` while it runs."""
        return None if self._proc is None else self._proc.poll()

    def failure(self, reason: str) -> BenchFailure:
        """A `BenchFailure` for ``reason``, with the server's last words."""
        status = self.returncode()
        head = [f"{self.name}: {' '.join(self.argv[1:])}"]
        if status is not None:
            self._wait_exit(1.0)  # let the reader collect its last lines
            head.append(f"exit status {status}")
        return BenchFailure(reason, [*head, *(f"  {line}" for line in self._tail)])

    def check_alive(self) -> None:
        """Raise `BenchFailure` if the server has exited."""
        status = self.returncode()
        if status is not None:
            raise self.failure(f"{self.name} exited with status {status}")

    def rss(self) -> int:
        """The server's resident set size, in bytes."""
        self.check_alive()
        try:
            return rss_bytes(self.pid)
        except FileNotFoundError:
            self.check_alive()
            raise

    def signal_stop(self) -> None:
        """Send SIGTERM once, if it still runs; `stop` waits for it.

        Once: a server that has handled the first one may already have
        closed its loop and with it its signal handlers, and a second would
        kill it instead of letting it finish its clean exit.
        """
        if self._terminated or self._proc is None or self._proc.poll() is not None:
            return
        self._terminated = True
        try:
            self._proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the status.

        Idempotent, and safe to call on a process that was never started.
        """
        proc = self._proc
        if proc is None:
            return None
        try:
            self.signal_stop()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._tail.append(f"(ignored SIGTERM for {timeout:g} s; killed)")
                proc.kill()
                proc.wait(5.0)
        finally:
            if proc.poll() is None:
                # Interrupted while waiting: never leave the server behind.
                proc.kill()
                proc.wait(5.0)
            self._wait_exit(1.0)
        return proc.returncode

    def _wait_exit(self, timeout: float) -> None:
        # The pipe reaches EOF once the process is gone, so this is quick.
        if self._reader is not None:
            self._reader.join(timeout)
            stderr = None if self._proc is None else self._proc.stderr
            if not self._reader.is_alive() and stderr is not None:
                stderr.close()

    def __enter__(self) -> Self:
        try:
            if self._proc is None:
                self.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ServerProcess(BenchServer):
    """One `ServerConfig` running in a subprocess on 127.0.0.1.

    A `BenchServer` that runs ``config``'s command line, with its extra
    environment, and announces its port.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        cpu: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            config.name,
            config.argv(),
            cpu=cpu,
            env={**(os.environ if env is None else env), **dict(config.kind.env)},
        )
        self.config = config


def start_all(servers: Iterable[BenchServer], timeout: float = START_TIMEOUT) -> None:
    """Start ``servers`` side by side and wait until each listens.

    Starting them together overlaps their interpreter starts. On failure,
    every one of them is stopped before `BenchFailure` propagates.
    """
    servers = list(servers)
    try:
        for server in servers:
            server.start()
        deadline = time.monotonic() + timeout
        for server in servers:
            server.wait_ready(max(deadline - time.monotonic(), 0.1))
    except BaseException:
        stop_all(servers)
        raise


def stop_all(servers: Iterable[BenchServer]) -> None:
    """SIGTERM every server at once, then wait for each (bounded)."""
    servers = list(servers)
    for server in servers:
        server.signal_stop()
    for server in servers:
        server.stop()
