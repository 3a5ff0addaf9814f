"""A client process that keeps a server's pipes full, for fairness tests.

``python tests/_flood.py PORT CONNECTIONS SECONDS [--lines]`` opens that many
connections to 127.0.0.1:PORT; each sends 64 KiB chunks (of 64-byte lines
with ``--lines``) as fast as the server takes them and reads everything
back. It stops after SECONDS, or when its stdin closes.
"""

from __future__ import annotations

import asyncio
import sys

CHUNK = 65536


class _Flood(asyncio.Protocol):
    def __init__(self, chunk: bytes) -> None:
        self.chunk = chunk
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=4 * CHUNK)
        self.pump()

    def pump(self) -> None:
        if self.paused or self.transport.is_closing():
            return
        self.transport.write(self.chunk)
        asyncio.get_running_loop().call_soon(self.pump)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.pump()

    def data_received(self, data: bytes) -> None:
        pass


async def main(port: int, connections: int, seconds: float, lines: bool) -> None:
    loop = asyncio.get_running_loop()
    chunk = (b"x" * 63 + b"\n") * (CHUNK // 64) if lines else bytes(CHUNK)
    for _ in range(connections):
        await loop.create_connection(lambda: _Flood(chunk), "127.0.0.1", port)
    print("flooding", flush=True)
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    await asyncio.wait([stdin_closed], timeout=seconds)


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]),
            int(sys.argv[2]),
            float(sys.argv[3]),
            "--lines" in sys.argv,
        )
    )
    # Not a clean close: the connections are simply dropped.
    sys.stdout.flush()
