"""Small loopback clients for the tests, every wait bounded."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from typing import Self

HOST = "127.0.0.1"
# Generous enough for 32 MiB on a loaded 2-core CI box, small enough that a
# hang fails the test quickly.
TIMEOUT = 30.0


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with asyncio.timeout(TIMEOUT):
        return await asyncio.open_connection(HOST, port)


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(TIMEOUT):
        return await reader.read()


async def roundtrip(port: int, data: bytes, chunk: int = 65536) -> bytes:
    """Send ``data`` while reading concurrently, half-close, read until EOF.

    Returns everything the server sent before closing.
    """
    reader, writer = await connect(port)

    async def send() -> None:
        for i in range(0, len(data), chunk):
            writer.write(data[i : i + chunk])
            await writer.drain()
        writer.write_eof()

    try:
        async with asyncio.timeout(TIMEOUT):
            sender = asyncio.create_task(send())
            received = await reader.read()
            await sender
        return received
    finally:
        writer.close()


def abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed client would."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def wait_closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Read until the server closes; a reset counts as closed.

    Returns what arrived before the close (b"" after a reset).
    """
    try:
        return await read_to_eof(reader)
    except ConnectionResetError:
        return b""


class Flood:
    """A client in its own thread that keeps the server's pipe full.

    It sends ``payload`` over and over while reading the replies, for at
    most ``seconds`` or until stopped, so the event loop under test has
    work ready on every iteration.
    """

    def __init__(self, port: int, payload: bytes, seconds: float = 5.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
        self.payload = payload
        self.seconds = seconds
        self.stopping = threading.Event()
        self.received = 0
        self.threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._receive, daemon=True),
        ]

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.sock.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(TIMEOUT)
        self.sock.close()

    @property
    def sending(self) -> bool:
        return self.threads[0].is_alive()

    def _send(self) -> None:
        deadline = time.monotonic() + self.seconds
        with contextlib.suppress(OSError):
            while not self.stopping.is_set() and time.monotonic() < deadline:
                self.sock.sendall(self.payload)

    def _receive(self) -> None:
        with contextlib.suppress(OSError):
            while not self.stopping.is_set():
                data = self.sock.recv(1 << 20)
                if not data:
                    return
                self.received += len(data)


async def loop_delays_under_flood(port: int, payload: bytes) -> list[float]:
    """How long ``sleep(0.01)`` takes on this loop while a client floods ``port``.

    Measured once the flood is in full swing, and only while it still is.
    """
    loop = asyncio.get_running_loop()
    delays = []
    with Flood(port, payload) as flood:
        async with asyncio.timeout(TIMEOUT):
            while flood.received < 1 << 20:
                await asyncio.sleep(0.01)
        for _ in range(20):
            start = loop.time()
            await asyncio.sleep(0.01)
            delays.append(loop.time() - start)
        assert flood.sending, "the flood ended before the loop got a turn"
    return delays
