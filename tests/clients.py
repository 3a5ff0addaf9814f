"""Small loopback clients for the tests, every wait bounded."""

from __future__ import annotations

import asyncio
import socket
import struct

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
