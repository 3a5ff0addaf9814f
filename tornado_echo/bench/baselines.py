"""The servers tornado_echo is measured against, written the usual way.

Each is the plain, idiomatic echo a competent user would write with that
tool, so that a ratio to it means something:

``asyncio-protocol``
    an `asyncio.Protocol` whose ``data_received`` calls
    ``transport.write``: the cheapest echo asyncio offers, and the
    reference every ratio in the report is taken against;
``asyncio-streams``
    ``await reader.read()`` then ``writer.write()`` and
    ``await writer.drain()``;
``tornado-naive``
    a `.TCPServer` with ``await stream.read_bytes(65536, partial=True)`` then
    ``await stream.write()``;
``lineserver``
    not a peer but our own `.LineServer`, as a user would subclass it to
    echo lines, so the cost of the ``handle_line`` hook is measured too.

``python -m tornado_echo.bench.baselines KIND [--port N] [--loop L]`` serves
one of them on 127.0.0.1, logs ``listening on 127.0.0.1:PORT`` like
``tornado-echo`` does, and exits on SIGTERM or SIGINT.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from tornado.iostream import IOStream, StreamClosedError
from tornado.netutil import bind_sockets
from tornado.tcpserver import TCPServer

from tornado_echo.lineserver import LineConnection, LineServer
from tornado_echo.loops import LOOPS, run_with

HOST = "127.0.0.1"


class EchoProtocol(asyncio.Protocol):
    """The asyncio `~asyncio.Protocol` echo."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close once what was written is flushed


async def _streams_echo(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class NaiveTornadoEcho(TCPServer):
    """The `.TCPServer` echo as Tornado's documentation would suggest."""

    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        stream.set_nodelay(True)
        try:
            while True:
                data = await stream.read_bytes(65536, partial=True)
                await stream.write(data)
        except StreamClosedError:
            pass
        finally:
            stream.close()


class LineEchoServer(LineServer):
    """Our `.LineServer`, echoing each line and the unterminated tail."""

    async def handle_line(self, conn: LineConnection, line: bytes) -> bytes:
        return line

    async def handle_eof(self, conn: LineConnection, tail: bytes) -> None:
        if tail:
            await conn.write(tail)


async def _listen(kind: str, port: int) -> tuple[Callable[[], Awaitable[None]], int]:
    """Start ``kind`` on ``port``; returns its closer and the bound port."""
    loop = asyncio.get_running_loop()
    if kind in ("asyncio-protocol", "asyncio-streams"):
        if kind == "asyncio-protocol":
            server = await loop.create_server(EchoProtocol, HOST, port)
        else:
            server = await asyncio.start_server(_streams_echo, HOST, port)

        async def close_asyncio() -> None:
            server.close()

        return close_asyncio, server.sockets[0].getsockname()[1]
    tornado_server = NaiveTornadoEcho() if kind == "tornado-naive" else LineEchoServer()
    [sock] = bind_sockets(port, HOST)
    tornado_server.add_socket(sock)

    async def close_tornado() -> None:
        tornado_server.stop()

    return close_tornado, sock.getsockname()[1]


KINDS = ("asyncio-protocol", "asyncio-streams", "tornado-naive", "lineserver")


async def _serve(kind: str, port: int) -> None:
    close, bound = await _listen(kind, port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    print(f"listening on {HOST}:{bound}", file=sys.stderr, flush=True)
    await stopping.wait()
    await close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tornado_echo.bench.baselines")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    args = parser.parse_args(argv)
    run_with(args.loop, _serve(args.kind, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
