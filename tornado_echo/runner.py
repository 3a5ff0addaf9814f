"""`run` and `serve`: start a server, log where it listens, drain on a signal.

`serve` takes three separate things: what to serve (a server, or a class or
factory that builds one with its settings), where to listen (a
`.ListenOn`, or sockets already listening), and how to run (the drain
deadline, the stats interval, signals). `run` is the blocking form, with
keyword shortcuts for all three.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from tornado.ioloop import PeriodicCallback

from tornado_echo import systemd
from tornado_echo._logs import log_to_stderr
from tornado_echo._signals import StopSignals
from tornado_echo.echo import ByteEcho, EchoFactory
from tornado_echo.errors import Error
from tornado_echo.limits import Limits
from tornado_echo.listen import (
    DEFAULT_UNIX_MODE,
    ListenError,
    ListenOn,
    bind,
    describe,
)
from tornado_echo.loops import LoopName, run_with
from tornado_echo.stats import ServerStats, ShutdownResult

if TYPE_CHECKING:
    from tornado_echo.proxy_protocol import ProxyProtocol

__all__ = [
    "IMPLS",
    "Impl",
    "ListenError",
    "ListenOn",
    "Server",
    "WorkersFailedError",
    "bind",
    "make_server",
    "run",
    "serve",
]

log = logging.getLogger("tornado_echo")

Impl = Literal["stream", "compat"]
IMPLS: tuple[Impl, ...] = ("stream", "compat")

Host = str | None

_DEFAULT_LISTEN = ListenOn()


class Listener(Protocol):
    """Anything that serves on listening sockets, like a `.TCPServer`."""

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None: ...

    def stop(self) -> None: ...


class Server(Listener, Protocol):
    """What `serve` needs of a server: `.EchoServer` and `.RawEchoServer` fit."""

    @property
    def stats(self) -> ServerStats: ...

    def close_all(self) -> int: ...

    async def shutdown(self, timeout: float = ...) -> ShutdownResult: ...


_L = TypeVar("_L", bound=Listener)

#: What `serve` and `run` take as ``server``: a `Server`, or a class or
#: factory making one inside the running loop.
ServerSpec = Server | Callable[[], Server]

#: What the testing helpers take: any `Listener` (a plain `.TCPServer`
#: too), or a class or factory making one.
ListenerSpec = Listener | Callable[[], Listener]


def instantiate(spec: _L | Callable[[], _L]) -> _L:
    """``spec`` itself if it is a server; otherwise call it to make one.

    Servers must be created inside the running loop, so APIs take a class
    or factory and call this there. A server is not callable; a class or
    a factory is.
    """
    if callable(spec):
        return spec()
    return spec


class WorkersFailedError(Error, RuntimeError):
    """With several processes, a worker failed to stop cleanly, or kept crashing."""


def make_server(
    impl: Impl = "stream",
    echo: EchoFactory = ByteEcho,
    *,
    limits: Limits | None = None,
    ssl_options: ssl.SSLContext | None = None,
    proxy_protocol: ProxyProtocol | bool | None = None,
    log_connections: bool = False,
) -> Server:
    """A new echo server of the named implementation (call inside a loop).

    ``echo`` is what it echoes (`.ByteEcho` or `.LineEcho`), whichever
    implementation runs it. TLS needs the ``"stream"`` implementation.
    """
    if impl == "stream":
        from tornado_echo.server import EchoServer

        return EchoServer(
            echo=echo,
            limits=limits,
            ssl_options=ssl_options,
            proxy_protocol=proxy_protocol,
            log_connections=log_connections,
        )
    if impl == "compat":
        if ssl_options is not None:
            raise ValueError("TLS needs the stream implementation, not compat")
        from tornado_echo.compat import RawEchoServer

        return RawEchoServer(
            echo=echo,
            limits=limits,
            proxy_protocol=proxy_protocol,
            log_connections=log_connections,
        )
    raise ValueError(f"impl must be one of {', '.join(IMPLS)}, not {impl!r}")


def _server_spec(
    server: ServerSpec | None, impl: Impl, options: dict[str, Any]
) -> ServerSpec:
    """What `run` serves: ``server``, built with the ``options`` it was given."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, not {impl!r}")
    if server is None:
        return functools.partial(make_server, impl, **options)
    if impl != "stream":
        raise ValueError(
            "impl picks the built-in echo server: leave it out with server="
        )
    # The server's constructor takes them: nothing is set on it afterwards.
    given = {name: value for name, value in options.items() if value}
    if not given:
        return server
    if not callable(server):
        raise TypeError(
            f"pass {', '.join(sorted(given))} to the server's constructor, "
            "or pass its class to run()"
        )
    return functools.partial(server, **given)


async def serve(
    server: ServerSpec | None = None,
    listen: ListenOn | Sequence[socket.socket] = _DEFAULT_LISTEN,
    *,
    shutdown_timeout: float = 10.0,
    stats_interval: float = 0.0,
    ready: Callable[[Sequence[Any]], None] | None = None,
    handle_signals: bool = True,
    announce: bool = True,
) -> ShutdownResult:
    """Serve until SIGINT or SIGTERM (or cancellation), then shut down gracefully.

    The coroutine form of `run`, for applications that own their event loop.
    It keeps apart what to serve, where, and how to run:

    * ``server`` is a server instance, or a class or factory called with no
      arguments inside the running loop (an `.EchoServer` if omitted). Its
      settings (limits, TLS, PROXY protocol) are its constructor's.
    * ``listen`` is a `.ListenOn` (ports, hosts, a unix socket, UDP), or
      sockets that are already listening (from systemd, say; UDP ones are
      served as UDP echo by a `.UdpEchoServer`). A `.ListenOn` is bound
      here, and `.ListenError` says why if it cannot be.
    * ``stats_interval`` > 0 logs the server's `.ServerStats` that often.
      The ``listening on`` log lines (unless ``announce`` is false) and
      ``ready``, called with the bound addresses, show the real ones.

    On SIGINT, SIGTERM or SIGHUP it stops accepting, lets connections
    finish for up to ``shutdown_timeout`` seconds, closes the rest, logs a
    summary with the stats, and returns the `.ShutdownResult`. A second
    SIGINT closes every connection at once. ``handle_signals=False`` leaves
    signals alone: cancel the task to stop it. Under systemd
    (``NOTIFY_SOCKET``), it sends ``READY=1`` once listening and
    ``STOPPING=1`` when it starts to drain.

    ::

        import asyncio
        import functools
        from tornado_echo import EchoServer, LineEcho, Limits, ListenOn, serve

        server = functools.partial(
            EchoServer, echo=LineEcho, limits=Limits(idle_timeout=60)
        )
        asyncio.run(serve(server, ListenOn(port=10000)))

    .. versionadded:: 0.1.0

    .. versionchanged:: 0.3.0
       ``serve(server, listen, ...)``: where to listen is a `.ListenOn` or
       a list of sockets, and the server's settings go to its constructor;
       ``stats_interval``; a second SIGINT closes every connection.
    """
    for name, value in (
        ("shutdown_timeout", shutdown_timeout),
        ("stats_interval", stats_interval),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number >= 0, not {value!r}")
    with contextlib.ExitStack() as stack:
        if isinstance(listen, ListenOn):
            sockets = stack.enter_context(listen.bind())
        else:
            sockets = list(listen)
        srv = instantiate(server if server is not None else make_server)
        return await _serve(
            srv,
            sockets,
            shutdown_timeout=shutdown_timeout,
            stats_interval=stats_interval,
            ready=ready,
            handle_signals=handle_signals,
            announce=announce,
        )
    raise AssertionError("unreachable")  # pragma: no cover


async def _serve(
    srv: Server,
    sockets: list[socket.socket],
    *,
    shutdown_timeout: float,
    stats_interval: float,
    ready: Callable[[Sequence[Any]], None] | None,
    handle_signals: bool,
    announce: bool,
) -> ShutdownResult:
    srv.add_sockets([s for s in sockets if s.type == socket.SOCK_STREAM])
    datagram = [s for s in sockets if s.type == socket.SOCK_DGRAM]
    udp_server = None
    if datagram:
        from tornado_echo.udp import UdpEchoServer

        udp_server = UdpEchoServer()
        udp_server.add_sockets(datagram)
    signals = StopSignals(srv, handle_signals)
    reporter: PeriodicCallback | None = None
    if stats_interval > 0:
        reporter = PeriodicCallback(
            lambda: log.info("stats: %s", srv.stats.summary()), stats_interval * 1000
        )
        reporter.start()
    # Announced only now, so a signal sent on seeing this line drains.
    if announce:
        for sock in sockets:
            log.info("listening on %s", describe(sock))
    systemd.notify("READY=1")
    try:
        if ready is not None:
            ready([s.getsockname() for s in sockets])
        await signals.stopping.wait()
        srv.stop()
        systemd.notify("STOPPING=1")
        log.info(
            "shutting down%s (up to %gs to drain%s)",
            signals.how(),
            shutdown_timeout,
            signals.hint(),
        )
    finally:
        if reporter is not None:
            reporter.stop()
        if udp_server is not None:
            udp_server.stop()
            log.info("stopped UDP echo: %s", udp_server.stats.summary())
        try:
            result = await srv.shutdown(shutdown_timeout)
        finally:
            signals.remove()
        log.info("stopped: %s", srv.stats.summary())
    return result


def run(
    port: int | None = 10000,
    host: Host | Sequence[str] = "127.0.0.1",
    *,
    loop: LoopName = "asyncio",
    processes: int = 1,
    impl: Impl = "stream",
    server: ServerSpec | None = None,
    shutdown_timeout: float = 10.0,
    limits: Limits | None = None,
    ssl_options: ssl.SSLContext | None = None,
    proxy_protocol: ProxyProtocol | bool = False,
    log_connections: bool = False,
    unix: str | None = None,
    unix_mode: int = DEFAULT_UNIX_MODE,
    udp: bool = False,
    stats_interval: float = 0.0,
) -> ShutdownResult:
    """Run an echo server until SIGINT or SIGTERM; the blocking form of `serve`.

    Starts an event loop, listens on ``host:port`` and logs
    ``listening on HOST:PORT`` at INFO (to stderr, in Tornado's format, if
    the application has not configured logging). A signal stops accepting, drains open
    connections for up to ``shutdown_timeout`` seconds, closes the rest, and
    returns normally. Pass ``server`` (an instance, or a class to create
    inside the loop) to run your own subclass::

        import tornado_echo

        if __name__ == "__main__":
            tornado_echo.run(port=10000)

    Where to listen: ``port``, ``host`` (one or a list), ``unix``,
    ``unix_mode`` and ``udp``, as `.ListenOn` takes them. What to serve:
    ``impl`` picks the echo server (``"stream"`` for `.EchoServer`,
    ``"compat"`` for `.RawEchoServer`), or ``server`` is your own. Either
    is built with whichever of ``limits`` (a `.Limits`), ``ssl_options``
    (an `ssl.SSLContext`, see `.server_context`), ``proxy_protocol``
    (``True`` or a `.ProxyProtocol`) and ``log_connections`` (an INFO line
    per connection) are given, so a ``server`` class or factory must take
    them. ``shutdown_timeout`` and ``stats_interval`` are `serve`'s. Also:

    * Under systemd socket activation (``LISTEN_PID`` is this process and
      ``LISTEN_FDS`` is set), it serves on the inherited sockets instead of
      binding, and logs their ``FileDescriptorName=`` names.
    * ``processes`` > 1 binds first, then forks that many workers (0: one
      per CPU), each with its own event loop on the shared sockets, under a
      parent that restarts a worker that crashes (at most 10 times a
      minute). SIGTERM to the parent drains every worker; it returns once
      all have stopped, with their results added up, and raises
      `WorkersFailedError` if one did not stop cleanly. ``server`` must then
      be a class or factory, not an instance.
    * ``loop="uvloop"`` runs on uvloop (``pip install 'tornado_echo[uvloop]'``);
      `.LoopUnavailableError` says so if it is not installed.

    .. versionadded:: 0.1.0

    .. versionchanged:: 0.3.0
       ``loop``, ``processes``, systemd socket activation, and the server
       options, which go to the server's constructor.
    """
    _log_to_stderr_unless_configured()
    where = ListenOn(port=port, host=host, unix=unix, unix_mode=unix_mode, udp=udp)
    options = {
        "limits": limits,
        "ssl_options": ssl_options,
        "proxy_protocol": proxy_protocol,
        "log_connections": log_connections,
    }
    spec = _server_spec(server, impl, options)
    how = _RunOptions(loop, shutdown_timeout, stats_interval)
    activated = systemd.listen_fds()
    for name, sock in activated:
        log.info("using systemd socket %r: %s", name, describe(sock))
    inherited = [sock for _, sock in activated]
    if processes == 1:
        return how.serve(spec, inherited or where)
    from tornado_echo.processes import resolve_count, usable_cpus

    count = resolve_count(processes)
    cpus = usable_cpus()
    if count > cpus:
        log.warning(
            "%d worker processes on %d usable CPU(s): workers beyond one per "
            "CPU only compete for them (--processes 0 is one per CPU)",
            count,
            cpus,
        )
    if not callable(spec):
        raise TypeError("with several processes, pass a server class, not an instance")
    with contextlib.ExitStack() as stack:
        if not inherited:
            inherited = stack.enter_context(where.bind())
        return _run_workers(count, spec, inherited, how)
    raise AssertionError("unreachable")  # pragma: no cover


def _log_to_stderr_unless_configured() -> None:
    """Tornado's pretty logging at INFO, as the CLI has, if nothing is set up.

    Without it a script's ``run()`` would say nothing at all: Python's
    fallback handler shows only warnings, so the port it listens on (with
    ``port=0``, the only way to learn it) and the summary would be lost.
    An application that configured logging keeps its configuration.
    """
    if log.hasHandlers() or log.level != logging.NOTSET:
        return
    log_to_stderr(min(logging.getLogger().level, logging.INFO))


@dataclasses.dataclass(frozen=True, slots=True)
class _RunOptions:
    """How `run` runs `serve`, in this process or in each worker."""

    loop: LoopName
    shutdown_timeout: float
    stats_interval: float

    def serve(
        self,
        spec: ServerSpec,
        listen: ListenOn | Sequence[socket.socket],
        announce: bool = True,
    ) -> ShutdownResult:
        return run_with(
            self.loop,
            serve(
                spec,
                listen,
                shutdown_timeout=self.shutdown_timeout,
                stats_interval=self.stats_interval,
                announce=announce,
            ),
        )


def _run_workers(
    count: int,
    spec: ServerSpec,
    sockets: list[socket.socket],
    how: _RunOptions,
) -> ShutdownResult:
    """Fork ``count`` workers serving on ``sockets``; their results added up."""
    from tornado_echo.processes import supervise

    results_r, results_w = os.pipe()

    def worker(index: int) -> int:
        os.close(results_r)
        made: list[Server] = []

        def build() -> Server:
            made.append(instantiate(spec))
            return made[-1]

        result = how.serve(build, sockets, announce=False)
        report = {
            "drained": result.drained,
            "closed": result.closed,
            "stats": dataclasses.asdict(made[-1].stats),
        }
        # One short write (well under PIPE_BUF), atomic on a pipe: the
        # parent adds them up.
        os.write(results_w, json.dumps(report).encode() + b"\n")
        return 0

    try:
        try:
            status = supervise(
                count,
                worker,
                stop_timeout=how.shutdown_timeout + _WORKER_STOP_GRACE,
                on_ready=functools.partial(_workers_ready, sockets),
                on_stopping=functools.partial(_notify, "STOPPING=1"),
            )
        finally:
            os.close(results_w)
        with os.fdopen(os.dup(results_r), "rb") as results:
            reports = [json.loads(line) for line in results.read().splitlines()]
    finally:
        os.close(results_r)
    total = sum((ServerStats(**r["stats"]) for r in reports), ServerStats())
    # A worker stopped before its loop ran has served nothing, and no report.
    log.info("workers stopped, in all: %s", total.summary())
    if status != 0:
        raise WorkersFailedError("a worker did not stop cleanly (see the log above)")
    return ShutdownResult(
        drained=sum(r["drained"] for r in reports),
        closed=sum(r["closed"] for r in reports),
    )


def _workers_ready(sockets: list[socket.socket]) -> None:
    # Said once every worker is up, and so once supervise handles the stop
    # signals: a signal sent on seeing this line drains the workers.
    for sock in sockets:
        log.info("listening on %s", describe(sock))
    systemd.notify("READY=1")


def _notify(state: str) -> None:
    systemd.notify(state)


# How long past its own drain deadline a worker may take before the parent
# kills it: time to close connections and flush its last log lines.
_WORKER_STOP_GRACE = 5.0
