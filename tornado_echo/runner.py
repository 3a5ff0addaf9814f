"""`run` and `serve`: start a server, log where it listens, drain on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    Protocol,
    TypedDict,
    TypeVar,
    cast,
)

from tornado.ioloop import PeriodicCallback

from tornado_echo import systemd
from tornado_echo.echo import ByteEcho, ProtocolFactory
from tornado_echo.errors import Error
from tornado_echo.lifecycle import ShutdownResult
from tornado_echo.limits import Limits
from tornado_echo.listen import (
    DEFAULT_UNIX_MODE,
    ListenError,
    bind,
    describe,
    listening,
)
from tornado_echo.loops import LoopName, run_with
from tornado_echo.stats import ServerStats

if TYPE_CHECKING:
    from tornado_echo.proxy_protocol import ProxyProtocol

__all__ = [
    "IMPLS",
    "Impl",
    "ListenError",
    "ServeOptions",
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


class Listener(Protocol):
    """Anything that serves on listening sockets, like a `.TCPServer`."""

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None: ...

    def stop(self) -> None: ...


class Server(Listener, Protocol):
    """What `serve` needs of a server: `.EchoServer` and `.RawEchoServer` fit."""

    limits: Limits
    log_connections: bool

    @property
    def proxy_protocol(self) -> ProxyProtocol | None: ...

    @proxy_protocol.setter
    def proxy_protocol(self, value: ProxyProtocol | bool | None) -> None: ...

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
    or factory and call this there.
    """
    if isinstance(spec, type) or not hasattr(spec, "add_sockets"):
        return cast(Callable[[], _L], spec)()
    return cast(_L, spec)


class WorkersFailedError(Error, RuntimeError):
    """With several processes, a worker failed to stop cleanly, or kept crashing."""


def make_server(
    impl: Impl = "stream",
    protocol: ProtocolFactory = ByteEcho,
    *,
    limits: Limits | None = None,
    ssl_options: ssl.SSLContext | None = None,
) -> Server:
    """A new echo server of the named implementation (call inside a loop).

    ``protocol`` is what it echoes (`.ByteEcho` or `.LineEcho`), whichever
    implementation runs it. TLS needs the ``"stream"`` implementation.
    """
    if impl == "stream":
        from tornado_echo.server import EchoServer

        return EchoServer(protocol=protocol, limits=limits, ssl_options=ssl_options)
    if impl == "compat":
        if ssl_options is not None:
            raise ValueError("TLS needs the stream implementation, not compat")
        from tornado_echo.compat import RawEchoServer

        return RawEchoServer(protocol=protocol, limits=limits)
    raise ValueError(f"impl must be one of {', '.join(IMPLS)}, not {impl!r}")


class ServeOptions(TypedDict, total=False):
    """The keyword arguments `serve` and `run` share (see `serve`)."""

    impl: Impl
    server: ServerSpec | None
    shutdown_timeout: float
    limits: Limits | None
    ssl_options: ssl.SSLContext | None
    proxy_protocol: ProxyProtocol | bool
    log_connections: bool
    unix: str | None
    unix_mode: int
    udp: bool
    stats_interval: float


Host = str | None


def _hosts(host: Host | Sequence[str]) -> list[str | None]:
    if host is None or isinstance(host, str):
        return [host]
    return list(host) or [None]


async def serve(
    port: int | None = 10000,
    host: Host | Sequence[str] = "127.0.0.1",
    *,
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
    sockets: Sequence[socket.socket] | None = None,
    ready: Callable[[Sequence[Any]], None] | None = None,
    handle_signals: bool = True,
    announce: bool = True,
) -> ShutdownResult:
    """Serve until SIGINT or SIGTERM (or cancellation), then shut down gracefully.

    The coroutine form of `run`, for applications that own their event loop.
    ``server`` is a server instance, or a class or factory called with no
    arguments inside the running loop; without it, ``impl`` picks the echo
    implementation (``"stream"`` for `.EchoServer`, ``"compat"`` for
    `.RawEchoServer`).

    Where it listens: ``port`` on ``host``, which may be a list of hosts
    (``""`` or ``"::"`` means every interface, IPv4 and IPv6); ``port`` 0
    picks a free port and ``None`` means no TCP. ``unix`` adds a unix domain
    socket with file mode ``unix_mode``; a stale socket file is replaced,
    anything else at that path is an error, and the file is removed on exit.
    ``udp`` also serves RFC 862 UDP echo on the TCP port (`.UdpEchoServer`,
    with its rate limits). ``sockets`` (already listening, e.g. from systemd;
    UDP ones are served as UDP echo) replaces all of that.
    The ``listening on`` log lines and ``ready``, called with the bound
    addresses, show the real ones. Raises `.ListenError` if an address
    cannot be bound.

    ``limits`` (a `.Limits`) and ``ssl_options`` (an `ssl.SSLContext`, see
    `.server_context`) are applied to the server, and so are
    ``proxy_protocol`` (``True`` or a `.ProxyProtocol`: every connection
    starts with a PROXY protocol header, and the server sees the client's
    real address) and ``log_connections`` (one INFO line per connection at
    open and close). ``stats_interval`` > 0 logs
    the server's `.ServerStats` that often.

    On SIGINT or SIGTERM it stops accepting, lets connections finish for up
    to ``shutdown_timeout`` seconds, closes the rest, logs a summary with
    the stats, and returns the `.ShutdownResult`. A second SIGINT closes
    every connection at once. Under systemd (``NOTIFY_SOCKET``), it sends
    ``READY=1`` once listening and ``STOPPING=1`` when it starts to drain.

    ::

        import asyncio
        import tornado_echo

        asyncio.run(tornado_echo.serve(port=10000))

    .. versionadded:: 0.1.0

    .. versionchanged:: 0.3.0
       Several hosts, ``unix``, ``sockets``, ``limits``, ``ssl_options``,
       ``stats_interval``; a second SIGINT closes every connection.
    """
    if shutdown_timeout < 0:
        raise ValueError(f"shutdown_timeout must be >= 0, not {shutdown_timeout!r}")
    if stats_interval < 0:
        raise ValueError(f"stats_interval must be >= 0, not {stats_interval!r}")
    with contextlib.ExitStack() as stack:
        if sockets is None:
            sockets = stack.enter_context(
                listening(port, _hosts(host), unix, unix_mode, udp)
            )
        srv = (
            make_server(impl, limits=limits, ssl_options=ssl_options)
            if server is None
            else instantiate(server)
        )
        if server is not None:
            if limits is not None:
                srv.limits = limits
            if ssl_options is not None:
                if not hasattr(srv, "ssl_options"):
                    raise ValueError(f"{type(srv).__name__} does not support TLS")
                srv.ssl_options = ssl_options
        if proxy_protocol:
            srv.proxy_protocol = proxy_protocol
        if log_connections:
            srv.log_connections = True
        return await _serve(
            srv,
            list(sockets),
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
    bound = [s.getsockname() for s in sockets]
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if not stopping.is_set():
            received.append(sig)
            stopping.set()
        elif sig == signal.SIGINT:
            count = srv.close_all()
            log.info("second interrupt: closed %d connection(s) at once", count)

    installed: list[signal.Signals] = []
    if handle_signals:
        for sig in stop_signals():
            try:
                loop.add_signal_handler(sig, on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                # Not the main thread, or a platform without it: the caller
                # stops us by cancelling instead.
                continue
            installed.append(sig)
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
            ready(bound)
        await stopping.wait()
        srv.stop()
        systemd.notify("STOPPING=1")
        how = ""
        if received:
            how = f" on {received[0].name}"
            if received[0] == signal.SIGHUP:
                how += ", as on SIGTERM"
        log.info("shutting down%s (up to %gs to drain)", how, shutdown_timeout)
    finally:
        if reporter is not None:
            reporter.stop()
        if udp_server is not None:
            udp_server.stop()
            log.info("stopped UDP echo: %s", udp_server.stats.summary())
        try:
            result = await srv.shutdown(shutdown_timeout)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
        log.info("stopped: %s", srv.stats.summary())
    return result


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that make a server drain and exit.

    SIGINT, SIGTERM and SIGHUP: a closed terminal or a script's ``kill
    -HUP`` must not kill the server without a drain (there is no
    configuration to reload). SIGHUP is left alone when it is ignored, as
    under ``nohup``.
    """
    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        return (signal.SIGINT, signal.SIGTERM)
    return (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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
    ``listening on HOST:PORT`` at INFO. A signal stops accepting, drains open
    connections for up to ``shutdown_timeout`` seconds, closes the rest, and
    returns normally. Pass ``server`` (an instance, or a class to create
    inside the loop) to run your own subclass::

        import tornado_echo

        if __name__ == "__main__":
            tornado_echo.run(port=10000)

    The other keyword arguments are `serve`'s. In addition:

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
       ``loop``, ``processes``, systemd socket activation, and `serve`'s
       new options.
    """
    options: ServeOptions = {
        "impl": impl,
        "server": server,
        "shutdown_timeout": shutdown_timeout,
        "limits": limits,
        "ssl_options": ssl_options,
        "proxy_protocol": proxy_protocol,
        "log_connections": log_connections,
        "unix": unix,
        "unix_mode": unix_mode,
        "udp": udp,
        "stats_interval": stats_interval,
    }
    activated = systemd.listen_fds()
    for name, sock in activated:
        log.info("using systemd socket %r: %s", name, describe(sock))
    inherited = [sock for _, sock in activated] or None
    if processes == 1:
        return run_with(loop, serve(port, host, sockets=inherited, **options))

    from tornado_echo.processes import resolve_count, supervise

    count = resolve_count(processes)
    if (
        server is not None
        and hasattr(server, "add_sockets")
        and not isinstance(server, type)
    ):
        raise ValueError("with several processes, pass a server class, not an instance")
    with contextlib.ExitStack() as stack:
        if inherited is None:
            inherited = stack.enter_context(
                listening(
                    port,
                    _hosts(host),
                    unix,
                    unix_mode,
                    udp,
                )
            )
        for sock in inherited:
            log.info("listening on %s", describe(sock))
        results_r, results_w = os.pipe()
        stack.callback(os.close, results_r)
        child_options: dict[str, Any] = dict(options)
        for name in ("unix", "unix_mode", "udp"):  # bound here, once
            child_options.pop(name, None)

        def worker(index: int) -> int:
            os.close(results_r)
            result = run_with(
                loop,
                serve(port, host, sockets=inherited, announce=False, **child_options),
            )
            # One short write, atomic on a pipe: the parent adds them up.
            os.write(results_w, f"{result.drained} {result.closed}\n".encode())
            return 0

        try:
            status = supervise(
                count,
                worker,
                stop_timeout=shutdown_timeout + _WORKER_STOP_GRACE,
                on_ready=functools.partial(_notify, "READY=1"),
                on_stopping=functools.partial(_notify, "STOPPING=1"),
            )
        finally:
            os.close(results_w)
        drained = closed = 0
        with os.fdopen(os.dup(results_r), "rb") as results:
            for line in results.read().split(b"\n"):
                if line.strip():
                    d, c = line.split()
                    drained, closed = drained + int(d), closed + int(c)
    if status != 0:
        raise WorkersFailedError("a worker did not stop cleanly (see the log above)")
    return ShutdownResult(drained=drained, closed=closed)


def _notify(state: str) -> None:
    systemd.notify(state)


# How long past its own drain deadline a worker may take before the parent
# kills it: time to close connections and flush its last log lines.
_WORKER_STOP_GRACE = 5.0
