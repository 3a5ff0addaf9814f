"""`run` and `serve`: start a server, log where it listens, drain on a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable, Sequence
from typing import Literal, Protocol, TypeVar, cast

from tornado.netutil import bind_sockets

from tornado_echo.echo import ByteEcho, ProtocolFactory
from tornado_echo.lifecycle import ShutdownResult
from tornado_echo.logs import format_address
from tornado_echo.loops import LoopName, run_with

log = logging.getLogger("tornado_echo")

Impl = Literal["stream", "compat"]
IMPLS: tuple[Impl, ...] = ("stream", "compat")


class Listener(Protocol):
    """Anything that serves on listening sockets, like a `.TCPServer`."""

    def add_sockets(self, sockets: list[socket.socket]) -> None: ...

    def stop(self) -> None: ...


class Server(Listener, Protocol):
    """What `serve` needs of a server: `.EchoServer` and `.RawEchoServer` fit."""

    async def shutdown(self, timeout: float = ...) -> ShutdownResult: ...


_L = TypeVar("_L", bound=Listener)

ServerSpec = Server | Callable[[], Server]


def instantiate(spec: _L | Callable[[], _L]) -> _L:
    """``spec`` itself if it is a server; otherwise call it to make one.

    Servers must be created inside the running loop, so APIs take a class
    or factory and call this there.
    """
    if isinstance(spec, type) or not hasattr(spec, "add_sockets"):
        return cast(Callable[[], _L], spec)()
    return cast(_L, spec)


class ListenError(OSError):
    """The server could not bind its address (port in use, unknown host, ...)."""


def make_server(impl: Impl = "stream", protocol: ProtocolFactory = ByteEcho) -> Server:
    """A new echo server of the named implementation (call inside a loop).

    ``protocol`` is what it echoes (`.ByteEcho` or `.LineEcho`), whichever
    implementation runs it.
    """
    if impl == "stream":
        from tornado_echo.server import EchoServer

        return EchoServer(protocol=protocol)
    if impl == "compat":
        from tornado_echo.compat import RawEchoServer

        return RawEchoServer(protocol=protocol)
    raise ValueError(f"impl must be one of {', '.join(IMPLS)}, not {impl!r}")


def bind(port: int, host: str | None) -> list[socket.socket]:
    """`.bind_sockets`, with failures turned into one readable `ListenError`."""
    try:
        return bind_sockets(port, host or None)
    except (OSError, UnicodeError) as exc:
        # UnicodeError: getaddrinfo's IDNA encoding rejects names like "a..b".
        where = format_address((host or "*", port))
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        errno = getattr(exc, "errno", None)
        raise ListenError(errno, f"cannot listen on {where}: {reason}") from exc


async def serve(
    port: int = 10000,
    host: str | None = "127.0.0.1",
    *,
    impl: Impl = "stream",
    server: ServerSpec | None = None,
    shutdown_timeout: float = 10.0,
    ready: Callable[[Sequence[tuple[str, int]]], None] | None = None,
    handle_signals: bool = True,
) -> ShutdownResult:
    """Serve until SIGINT or SIGTERM (or cancellation), then shut down gracefully.

    The coroutine form of `run`, for applications that own their event loop.
    ``server`` is a server instance, or a class or factory called with no
    arguments inside the running loop; without it, ``impl`` picks the echo
    implementation (``"stream"`` for `.EchoServer`, ``"compat"`` for
    `.RawEchoServer`). ``port`` 0 picks a free port; the ``listening on``
    log line and ``ready``, called with the bound ``(host, port)`` pairs,
    show the real one.

    On a signal it stops accepting, lets connections finish for up to
    ``shutdown_timeout`` seconds, closes the rest, and returns the
    `.ShutdownResult`. Raises `ListenError` if the address cannot be bound.

    ::

        import asyncio
        import tornado_echo

        asyncio.run(tornado_echo.serve(port=10000))

    .. versionadded:: 0.1.0
    """
    if shutdown_timeout < 0:
        raise ValueError(f"shutdown_timeout must be >= 0, not {shutdown_timeout!r}")
    srv = make_server(impl) if server is None else instantiate(server)
    sockets = bind(port, host)
    srv.add_sockets(sockets)
    bound = [(s.getsockname()[0], s.getsockname()[1]) for s in sockets]

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if handle_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stopping.set)
            except (NotImplementedError, RuntimeError, ValueError):
                # Not the main thread, or a platform without it: the caller
                # stops us by cancelling instead.
                continue
            installed.append(sig)
    # Announced only now, so a signal sent on seeing this line drains.
    for addr in bound:
        log.info("listening on %s", format_address(addr))
    try:
        if ready is not None:
            ready(bound)
        await stopping.wait()
        srv.stop()
        log.info("shutting down (up to %gs to drain)", shutdown_timeout)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        result = await srv.shutdown(shutdown_timeout)
        log.info(
            "stopped: %d connection(s) drained, %d closed",
            result.drained,
            result.closed,
        )
    return result


def run(
    port: int = 10000,
    host: str | None = "127.0.0.1",
    *,
    impl: Impl = "stream",
    server: ServerSpec | None = None,
    shutdown_timeout: float = 10.0,
    loop: LoopName = "asyncio",
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

    ``loop="uvloop"`` runs on uvloop (``pip install 'tornado_echo[uvloop]'``);
    `.LoopUnavailableError` says so if it is not installed.

    .. versionadded:: 0.1.0

    .. versionchanged:: 0.3.0
       The ``loop`` argument.
    """
    return run_with(
        loop,
        serve(
            port,
            host,
            impl=impl,
            server=server,
            shutdown_timeout=shutdown_timeout,
        ),
    )
