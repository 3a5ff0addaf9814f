"""Serving behind a balancer: every server reads the PROXY header first and
then sees the client's real address, over real loopback sockets."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
from collections.abc import Callable
from typing import Any

import pytest
from clients import TIMEOUT, connect, wait_closed_by_server
from conftest import Start
from tornado.testing import ExpectLog

from tornado_echo import LineConnection, LineServer
from tornado_echo.proxy_protocol import ProxyProtocol

CONN_LOG = "tornado_echo.connection"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src: str = "203.0.113.7", sport: int = 4242) -> bytes:
    family = "TCP6" if ":" in src else "TCP4"
    dst = "2001:db8::1" if family == "TCP6" else "198.51.100.1"
    return f"PROXY {family} {src} {dst} {sport} 7\r\n".encode()


def v2(src: str = "203.0.113.7", sport: int = 4242, *, local: bool = False) -> bytes:
    if local:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    ip = ipaddress.ip_address(src)
    if ip.version == 4:
        block = ip.packed + ipaddress.ip_address("198.51.100.1").packed
        family = 0x11
    else:
        block = ip.packed + ipaddress.ip_address("2001:db8::1").packed
        family = 0x21
    block += struct.pack("!HH", sport, 7)
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(block)) + block


class PeerServer(LineServer):
    """Answers every line with the peer it believes it is talking to."""

    async def handle_line(self, conn: LineConnection, line: bytes) -> str:
        return conn.peer


async def talk(port: int, *chunks: bytes, expect: bytes) -> None:
    reader, writer = await connect(port)
    try:
        async with asyncio.timeout(TIMEOUT):
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(0.01)
            assert await reader.readexactly(len(expect)) == expect
    finally:
        writer.close()


@pytest.mark.parametrize("header", [v1(), v2(), v1("2001:db8::7"), v2("2001:db8::7")])
async def test_the_header_is_consumed_and_the_rest_is_the_clients(
    make: Callable[..., Any], start: Start, header: bytes
) -> None:
    server = make(proxy_protocol=True)
    port = await start(server)
    # The header and the first data in one segment: only the data comes back.
    await talk(port, header + b"first line\n", expect=b"first line\n")
    await until(lambda: server.connection_count == 0)
    assert server.stats.proxy_rejected == 0


@pytest.mark.parametrize("header", [v1(), v2()])
async def test_a_header_that_arrives_in_pieces_is_read_whole(
    make: Callable[..., Any], start: Start, header: bytes
) -> None:
    port = await start(make(proxy_protocol=True))
    pieces = [header[i : i + 5] for i in range(0, len(header), 5)]
    await talk(port, *pieces, b"after\n", expect=b"after\n")


@pytest.mark.parametrize(
    "header", [v1("198.51.100.23", 61000), v2("2001:db8::23", 61000)]
)
async def test_the_handler_and_the_logs_see_the_real_client(
    start: Start, header: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, CONN_LOG)
    server = PeerServer(proxy_protocol=True, log_connections=True)
    port = await start(server)
    real = "198.51.100.23:61000" if b"PROXY" in header else "[2001:db8::23]:61000"
    await talk(port, header + b"who am I?\n", expect=f"{real}\n".encode())
    await until(lambda: server.connection_count == 0)
    messages = [r.getMessage() for r in caplog.records if r.name == CONN_LOG]
    assert f"{real}: connected" in messages
    assert any(m.startswith(f"{real}: closed after ") for m in messages), messages


async def test_a_local_header_is_served_with_the_balancers_address(
    start: Start,
) -> None:
    port = await start(PeerServer(proxy_protocol=True))
    reader, writer = await connect(port)
    local_port = writer.get_extra_info("sockname")[1]
    writer.write(v2(local=True) + b"health?\n")
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readline() == f"127.0.0.1:{local_port}\n".encode()
    writer.close()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.0\r\n\r\n", "not a PROXY"),
        (b"PROXY TCP4 1.2.3.4\r\n", ""),
        (b"PROXY TCP4 " + b"1" * 120, "107"),
    ],
)
async def test_a_bad_header_closes_that_connection_with_one_info_line(
    make: Callable[..., Any], start: Start, data: bytes, reason: str
) -> None:
    server = make(proxy_protocol=True)
    port = await start(server)
    with ExpectLog(
        CONN_LOG, rf"127\.0\.0\.1:\d+: closing: .*{reason}", level=logging.INFO
    ):
        reader, writer = await connect(port)
        writer.write(data)
        assert await wait_closed_by_server(reader) == b""
        writer.close()
        await until(lambda: server.stats.proxy_rejected == 1)
    # Others are still served.
    await talk(port, v1() + b"fine\n", expect=b"fine\n")


async def test_a_header_that_never_comes_times_out(
    make: Callable[..., Any], start: Start
) -> None:
    server = make(proxy_protocol=ProxyProtocol(header_timeout=0.3))
    port = await start(server)
    with ExpectLog(CONN_LOG, r".*closing: no PROXY header in time", level=logging.INFO):
        reader, writer = await connect(port)
        assert await wait_closed_by_server(reader) == b""
        writer.close()
    assert server.stats.proxy_rejected == 1


async def test_connections_from_untrusted_sources_are_refused(
    make: Callable[..., Any], start: Start
) -> None:
    server = make(proxy_protocol=ProxyProtocol(trusted=("10.0.0.0/8", "192.0.2.1")))
    port = await start(server)
    with ExpectLog(
        CONN_LOG, r".*refused: not a trusted PROXY protocol source", level=logging.INFO
    ):
        reader, writer = await connect(port)
        # A forged header from an untrusted source changes nothing.
        writer.write(v1() + b"spoof\n")
        assert await wait_closed_by_server(reader) == b""
        writer.close()
    assert server.stats.proxy_rejected == 1
    assert server.stats.connections_total == 0
    trusted = make(proxy_protocol=ProxyProtocol(trusted=("127.0.0.0/8",)))
    await talk(await start(trusted), v1() + b"ok\n", expect=b"ok\n")


async def test_without_the_option_a_proxy_header_is_just_data(
    make: Callable[..., Any], start: Start
) -> None:
    port = await start(make())
    header = v1()
    await talk(port, header + b"x\n", expect=header + b"x\n")


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.01)


def test_proxy_settings_reject_bad_networks() -> None:
    with pytest.raises(ValueError, match="CIDR"):
        ProxyProtocol(trusted=("10.0.0.0/33",))
    with pytest.raises(ValueError, match="more than 0"):
        ProxyProtocol(header_timeout=0)
    settings = ProxyProtocol(trusted=("10.0.0.0/8", "::1"))
    assert settings.trusts(("10.1.2.3", 1))
    assert settings.trusts(("::1", 1, 0, 0))
    assert settings.trusts(("::ffff:10.0.0.1", 1, 0, 0))  # v4-mapped
    assert not settings.trusts(("11.0.0.1", 1))
    assert not settings.trusts("")  # a unix socket peer


class AuthorityServer(LineServer):
    """Answers with the TLS server name the balancer saw (PP2_TYPE_AUTHORITY)."""

    async def handle_line(self, conn: LineConnection, line: bytes) -> str:
        header = conn.proxy_header
        assert header is not None
        return f"{header.authority} {header.tlv(0xE0)!r}"


async def test_the_headers_tlvs_reach_the_handler(start: Start) -> None:
    port = await start(AuthorityServer(proxy_protocol=True))
    tlvs = b"\x02" + struct.pack("!H", 11) + b"example.org"  # AUTHORITY
    tlvs += b"\xe0" + struct.pack("!H", 3) + b"abc"  # a custom type, kept raw
    header = bytearray(v2())
    header[14:16] = struct.pack("!H", struct.unpack("!H", header[14:16])[0] + len(tlvs))
    await talk(port, bytes(header) + tlvs + b"?\n", expect=b"example.org b'abc'\n")


async def test_without_a_header_option_proxy_header_is_none(start: Start) -> None:
    class Peek(LineServer):
        async def handle_line(self, conn: LineConnection, line: bytes) -> str:
            return repr(conn.proxy_header)

    port = await start(Peek())
    await talk(port, b"?\n", expect=b"None\n")
