"""Standard `TCPServer` usage keeps working: listen, stop, unix sockets, TLS."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from pathlib import Path

import pytest
from clients import HOST, TIMEOUT, connect, wait_closed_by_server
from conftest import IMPLS
from tornado.netutil import bind_sockets, bind_unix_socket
from tornado.testing import ExpectLog, bind_unused_port

from tornado_echo.server import EchoServer


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


@pytest.fixture
def certificate() -> tuple[str, str]:
    """A self-signed test certificate for 127.0.0.1, valid until 2126.

    Checked in, like Tornado's own test certificate, so the tests need no
    ``openssl`` command; it protects nothing.
    """
    folder = Path(__file__).parent / "tls"
    return str(folder / "cert.pem"), str(folder / "key.pem")


async def test_ssl_options_give_a_tls_echo(certificate: tuple[str, str]) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=cert)
    server = EchoServer(ssl_options=server_ctx)
    sock, port = bind_unused_port()
    server.add_sockets([sock])
    try:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection(HOST, port, ssl=client_ctx)
            payload = os.urandom(300_000)
            writer.write(payload)
            assert await reader.readexactly(len(payload)) == payload
            writer.close()
    finally:
        await server.shutdown(timeout=0)


async def test_plain_echo_still_works_after_a_failed_tls_handshake(
    certificate: tuple[str, str],
) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server = EchoServer(ssl_options=server_ctx)
    sock, port = bind_unused_port()
    server.add_sockets([sock])
    try:
        # A plaintext client talking to the TLS port: its connection fails,
        # nothing else does.
        with ExpectLog("tornado.general", "SSL Error", level=logging.WARNING):
            reader, writer = await connect(port)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            async with asyncio.timeout(TIMEOUT):
                assert await wait_closed_by_server(reader) == b""
            writer.close()
        async with asyncio.timeout(TIMEOUT):
            client_ctx = ssl.create_default_context(cafile=cert)
            r2, w2 = await asyncio.open_connection(HOST, port, ssl=client_ctx)
            w2.write(b"fine")
            assert await r2.readexactly(4) == b"fine"
            w2.close()
    finally:
        await server.shutdown(timeout=0)
