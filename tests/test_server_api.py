"""Standard `TCPServer` usage keeps working: listen, stop, unix sockets.

TLS (``ssl_options``) is tested in ``test_tls.py``.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from clients import HOST, TIMEOUT, connect
from conftest import IMPLS
from tornado.netutil import bind_sockets, bind_unix_socket
from tornado.testing import bind_unused_port

from tornado_echo.listen import bind, bind_udp


def _free_port() -> int:
    sock, port = bind_unused_port()
    sock.close()
    return port


async def test_listen_then_stop_keeps_open_connections(impl: str) -> None:
    server = IMPLS[impl]()
    port = _free_port()
    server.listen(port, HOST)
    try:
        reader, writer = await connect(port)
        writer.write(b"a")
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readexactly(1) == b"a"
        server.stop()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(HOST, port)
        # stop() only closes listeners, exactly like TCPServer.stop().
        writer.write(b"b")
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readexactly(1) == b"b"
        writer.close()
    finally:
        await server.shutdown(timeout=0)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    "family",
    [
        "unix",
        pytest.param(
            "ipv6",
            marks=pytest.mark.skipif(
                not _ipv6_loopback(), reason="no IPv6 loopback on this machine"
            ),
        ),
    ],
)
async def test_other_address_families(impl: str, family: str, tmp_path: Path) -> None:
    server = IMPLS[impl]()
    try:
        async with asyncio.timeout(TIMEOUT):
            if family == "unix":
                path = str(tmp_path / "echo.sock")
                server.add_sockets([bind_unix_socket(path)])
                reader, writer = await asyncio.open_unix_connection(path)
            else:
                sockets = bind_sockets(0, "::1")
                server.add_sockets(sockets)
                port = sockets[0].getsockname()[1]
                reader, writer = await asyncio.open_connection("::1", port)
            writer.write(b"over " + family.encode())
            writer.write_eof()
            assert await reader.read() == b"over " + family.encode()
            writer.close()
    finally:
        await server.shutdown(timeout=0)


@pytest.mark.parametrize("port", [-1, 65536, 70000])
def test_binding_refuses_a_port_getaddrinfo_would_wrap(port: int) -> None:
    # getaddrinfo takes the port modulo 65536: 70000 would be 4464.
    with pytest.raises(ValueError, match="port must be 0 to 65535"):
        bind(port, HOST)
    with pytest.raises(ValueError, match="port must be 0 to 65535"):
        bind_udp(port, [HOST])
