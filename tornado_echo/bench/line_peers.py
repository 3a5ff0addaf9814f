"""The line-protocol peers: each framework's own line echo, as its docs show it.

Each is the loop a user of that framework would write to echo lines, so that
our line servers are measured against what people would otherwise run. All
of them echo each complete line with its ``\\n``, close the connection on a
line longer than 64 KiB (`.LineServer`'s default policy; AnyIO's cap is
soft, and a longer line that arrives in one read passes), and, when the
client half-closes, echo any unterminated tail and then close, as the
benchmark's ``lineserver`` does:

``asyncio-readline``
    `asyncio.start_server` with ``limit=65536``; ``await reader.readline()``,
    ``writer.write(line)``, ``await writer.drain()``. The line echo asyncio
    users write, and the yardstick of the report's line-protocol table.
``twisted-linereceiver``
    Twisted's ``LineReceiver`` on its epoll reactor, ``MAX_LENGTH = 65536``,
    ``lineReceived`` calling ``sendLine``. It implements
    ``IHalfCloseableProtocol``: without it, Twisted treats the client's FIN
    as the end of the connection and drops replies still to be written.
``anyio-asyncio``, ``anyio-trio``
    ``anyio.create_tcp_listener`` serving a handler that reads with
    ``BufferedByteReceiveStream.receive_until(b"\\n", 65536)`` and answers
    with ``send``, on AnyIO's asyncio backend or on Trio.
``gevent``
    gevent's ``StreamServer``, reading ``sock.makefile("rb").readline(65537)``
    (a line, its delimiter, and no more) and answering with ``sendall``.

Where the framework leaves Nagle's algorithm on (Twisted, gevent), the peer
turns it off, as asyncio, Trio and our own servers do: otherwise the second
of two replies written separately waits for the client's delayed ACK, and
the benchmark would measure that timer instead of the server.

Each framework is imported only by the function that serves it, so one
that is not installed does not keep the others from running
(``pip install 'tornado_echo[bench]'`` installs them all).

``python -m tornado_echo.bench.line_peers KIND [--port N] [--loop L]``
serves one of them on 127.0.0.1, prints ``listening on 127.0.0.1:PORT`` on
stderr, as `tornado_echo.bench.baselines` does, and exits on SIGTERM or
SIGINT. ``--loop`` applies to ``asyncio-readline`` and ``anyio-asyncio``;
the others run on the loop their framework brings.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tornado_echo.loops import LOOPS, LoopName, loop_factory, run_with

HOST = "127.0.0.1"

#: The longest line each peer takes, not counting the delimiter: 64 KiB,
#: `.LineServer`'s default ``max_line_length``, so every line server in the
#: benchmark holds at most the same per connection.
MAX_LINE = 65536

#: The peers, as ``python -m tornado_echo.bench.line_peers`` names them.
KINDS = (
    "asyncio-readline",
    "twisted-linereceiver",
    "anyio-asyncio",
    "anyio-trio",
    "gevent",
)

#: The peers that run on an event loop of their own, and which: ``--loop``
#: does not apply to them.
OWN_LOOPS: Mapping[str, str] = {
    "twisted-linereceiver": "Twisted's epoll reactor",
    "anyio-trio": "Trio",
    "gevent": "gevent's hub",
}


def _announce(port: int) -> None:
    print(f"listening on {HOST}:{port}", file=sys.stderr, flush=True)


# -- asyncio streams -------------------------------------------------------------


async def _readline_echo(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        # At EOF readline() returns the unterminated tail, then b"".
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
    except ValueError:
        pass  # a line over the limit: close, as LineServer does
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _serve_asyncio_readline(port: int) -> None:
    server = await asyncio.start_server(_readline_echo, HOST, port, limit=MAX_LINE)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    _announce(server.sockets[0].getsockname()[1])
    await stopping.wait()
    server.close()


def _asyncio_readline(port: int, loop: LoopName) -> None:
    run_with(loop, _serve_asyncio_readline(port))


# -- Twisted ---------------------------------------------------------------------


def _twisted_linereceiver(port: int, loop: LoopName) -> None:
    # Twisted's types hold little for mypy (zope interfaces, untyped
    # methods), and it may not be installed where mypy runs: hence the
    # ignores, each of which may be unused.
    # The reactor must be chosen before anything imports the default one.
    from twisted.internet import epollreactor  # type: ignore[import-not-found, unused-ignore]

    epollreactor.install()  # type: ignore[no-untyped-call, unused-ignore]
    from twisted.internet import reactor  # type: ignore[import-not-found, unused-ignore]
    from twisted.internet.interfaces import (  # type: ignore[import-not-found, unused-ignore]
        IHalfCloseableProtocol,
    )
    from twisted.internet.protocol import (  # type: ignore[import-not-found, unused-ignore]
        Factory,
    )
    from twisted.protocols.basic import (  # type: ignore[import-not-found, unused-ignore]
        LineReceiver,
    )
    from zope.interface import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
        implementer,
    )

    @implementer(IHalfCloseableProtocol)
    class LineEcho(LineReceiver):  # type: ignore[misc, unused-ignore]
        delimiter = b"\n"
        MAX_LENGTH = MAX_LINE

        def connectionMade(self) -> None:
            transport: Any = self.transport
            transport.setTcpNoDelay(True)

        def lineReceived(self, line: bytes) -> None:
            self.sendLine(line)  # type: ignore[no-untyped-call, unused-ignore]

        def readConnectionLost(self) -> None:
            transport: Any = self.transport
            tail = self.clearLineBuffer()  # type: ignore[no-untyped-call, unused-ignore]
            if tail:
                transport.write(tail)
            transport.loseConnection()

        def writeConnectionLost(self) -> None:
            pass  # TCP never reports this half of a close

    tcp: Any = reactor
    listening = tcp.listenTCP(port, Factory.forProtocol(LineEcho), interface=HOST)
    tcp.callWhenRunning(_announce, listening.getHost().port)
    # run() stops the reactor cleanly on SIGINT and SIGTERM.
    tcp.run()


# -- AnyIO -----------------------------------------------------------------------


def _anyio(port: int, backend: str, loop: LoopName) -> None:
    # AnyIO may not be installed where mypy runs: hence the ignores.
    import anyio  # type: ignore[import-not-found, unused-ignore]
    from anyio.abc import (  # type: ignore[import-not-found, unused-ignore]
        SocketAttribute,
        SocketStream,
    )
    from anyio.streams.buffered import (  # type: ignore[import-not-found, unused-ignore]
        BufferedByteReceiveStream,
    )

    async def echo_lines(client: SocketStream) -> None:
        async with client:
            buffered = BufferedByteReceiveStream(client)
            try:
                while True:
                    line = await buffered.receive_until(b"\n", MAX_LINE)
                    await client.send(line + b"\n")
            except anyio.IncompleteRead:
                if tail := buffered.buffer:
                    await client.send(tail)
            except anyio.DelimiterNotFound:
                pass  # a line over the limit: close, as LineServer does
            # An error escaping a handler would end listener.serve() and
            # with it every connection.
            except (anyio.BrokenResourceError, ConnectionError):
                pass

    async def serve() -> None:
        listener = await anyio.create_tcp_listener(local_host=HOST, local_port=port)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as group:
                group.start_soon(listener.serve, echo_lines)
                _announce(listener.extra(SocketAttribute.local_port))
                async for _ in signals:
                    group.cancel_scope.cancel()
                    break

    options: dict[str, object] = {}
    if backend == "asyncio" and (factory := loop_factory(loop)) is not None:
        options["loop_factory"] = factory
    anyio.run(serve, backend=backend, backend_options=options)


def _anyio_asyncio(port: int, loop: LoopName) -> None:
    _anyio(port, "asyncio", loop)


def _anyio_trio(port: int, loop: LoopName) -> None:
    _anyio(port, "trio", loop)


# -- gevent ----------------------------------------------------------------------


def _gevent(port: int, loop: LoopName) -> None:
    # gevent has no type hints, and may not be installed: hence the ignores.
    import gevent  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from gevent.event import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
        Event,
    )
    from gevent.server import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
        StreamServer,
    )

    def echo_lines(sock: Any, address: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            with sock.makefile("rb") as lines:
                # At EOF readline() returns the unterminated tail, then b"".
                while line := lines.readline(MAX_LINE + 1):
                    if len(line) > MAX_LINE and not line.endswith(b"\n"):
                        return  # a line over the limit: close, as LineServer does
                    sock.sendall(line)
        except ConnectionError:
            pass
        # The server closes the socket once this returns.

    stopping = Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(sig, stopping.set)
    server = StreamServer((HOST, port), echo_lines)
    server.start()
    _announce(server.address[1])
    stopping.wait()
    server.stop(timeout=1)


_SERVE: Mapping[str, Callable[[int, LoopName], None]] = {
    "asyncio-readline": _asyncio_readline,
    "twisted-linereceiver": _twisted_linereceiver,
    "anyio-asyncio": _anyio_asyncio,
    "anyio-trio": _anyio_trio,
    "gevent": _gevent,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the peer named on the command line until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m tornado_echo.bench.line_peers")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    args = parser.parse_args(argv)
    if args.kind in OWN_LOOPS and args.loop != "asyncio":
        parser.error(
            f"{args.kind} runs on {OWN_LOOPS[args.kind]}; --loop does not apply to it"
        )
    _SERVE[args.kind](args.port, args.loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
