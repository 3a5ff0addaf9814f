"""UDP echo: the sans-IO policy on a fake clock, the server on real loopback sockets.

The server runs on the test's own loop, so clients are non-blocking sockets
that wait for replies through the loop, and every wait is bounded by
``asyncio.timeout``. A missing reply is shown without sleeping:
a sentinel datagram sent afterwards on the same path is answered in order,
so once its reply is in, any reply to the earlier datagram would be too.
"""

from __future__ import annotations

import asyncio
import doctest
import errno
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from unittest import mock

import pytest
import pytest_asyncio
from tornado.ioloop import IOLoop
from tornado.testing import ExpectLog

from tornado_echo import udp
from tornado_echo.listen import ListenError
from tornado_echo.udp import (
    REFUSED_PORTS,
    UdpEchoPolicy,
    UdpEchoServer,
    UdpLimits,
    UdpStats,
    Verdict,
    _is_loopback,
    bind_udp,
)

# Every wait on the network is bounded by this.
TIMEOUT = 2.0


def _can_bind(host: str) -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


HAVE_IPV6 = _can_bind("::1")
needs_ipv6 = pytest.mark.skipif(
    not HAVE_IPV6, reason="cannot bind ::1: IPv6 is disabled on this host"
)


# --- the policy, on a fake clock ------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"max_datagram": 0},
        {"rate": 0},
        {"rate": -1.0},
        {"rate": float("inf")},
        {"rate": float("nan")},
        {"burst": 0},
        {"max_sources": 0},
    ],
)
def test_limits_refuse_values_that_would_switch_a_protection_off(
    changes: dict[str, Any],
) -> None:
    with pytest.raises(ValueError, match=next(iter(changes))):
        UdpLimits(**changes)


def test_bucket_gives_a_burst_then_refills_at_rate() -> None:
    # Times and rate are exact in binary, so no rounding blurs the edges.
    policy = UdpEchoPolicy(UdpLimits(rate=4.0, burst=5))
    verdicts = [policy.check("192.0.2.1", 4000, 10, now=100.0) for _ in range(6)]
    assert verdicts == [Verdict.REPLY] * 5 + [Verdict.RATE_LIMITED]
    # 0.125 s at 4/s is half a token: still nothing.
    assert policy.check("192.0.2.1", 4000, 10, now=100.125) is Verdict.RATE_LIMITED
    # 0.25 s after the burst: exactly one token, so one reply.
    assert policy.check("192.0.2.1", 4000, 10, now=100.25) is Verdict.REPLY
    assert policy.check("192.0.2.1", 4000, 10, now=100.25) is Verdict.RATE_LIMITED
    # 0.75 s later: three more.
    verdicts = [policy.check("192.0.2.1", 4000, 10, now=101.0) for _ in range(4)]
    assert verdicts == [Verdict.REPLY] * 3 + [Verdict.RATE_LIMITED]


def test_bucket_never_holds_more_than_burst_after_a_quiet_spell() -> None:
    policy = UdpEchoPolicy(UdpLimits(rate=10.0, burst=5))
    for _ in range(5):
        policy.check("192.0.2.1", 4000, 10, now=0.0)
    verdicts = [policy.check("192.0.2.1", 4000, 10, now=3600.0) for _ in range(6)]
    assert verdicts == [Verdict.REPLY] * 5 + [Verdict.RATE_LIMITED]


def test_a_clock_going_backwards_adds_no_tokens() -> None:
    policy = UdpEchoPolicy(UdpLimits(rate=4.0, burst=1))
    assert policy.check("192.0.2.1", 4000, 10, now=50.0) is Verdict.REPLY
    assert policy.check("192.0.2.1", 4000, 10, now=10.0) is Verdict.RATE_LIMITED
    # Refilling counts from 50, the latest time seen, not from 10.
    assert policy.check("192.0.2.1", 4000, 10, now=50.125) is Verdict.RATE_LIMITED
    assert policy.check("192.0.2.1", 4000, 10, now=50.25) is Verdict.REPLY


def test_each_source_host_has_its_own_bucket() -> None:
    policy = UdpEchoPolicy(UdpLimits(rate=1.0, burst=2))
    for _ in range(2):
        assert policy.check("192.0.2.1", 4000, 10, now=0.0) is Verdict.REPLY
    assert policy.check("192.0.2.1", 4000, 10, now=0.0) is Verdict.RATE_LIMITED
    assert policy.check("192.0.2.2", 4000, 10, now=0.0) is Verdict.REPLY
    assert policy.check("2001:db8::1", 4000, 10, now=0.0) is Verdict.REPLY


def test_ports_of_one_host_share_its_bucket() -> None:
    # A reflection attack forges the victim's address with any port:
    # limiting per host and port would not protect the victim.
    policy = UdpEchoPolicy(UdpLimits(rate=1.0, burst=2))
    assert policy.check("192.0.2.1", 4000, 10, now=0.0) is Verdict.REPLY
    assert policy.check("192.0.2.1", 4001, 10, now=0.0) is Verdict.REPLY
    assert policy.check("192.0.2.1", 4002, 10, now=0.0) is Verdict.RATE_LIMITED


def test_an_ipv4_mapped_source_shares_the_ipv4_bucket() -> None:
    policy = UdpEchoPolicy(UdpLimits(rate=1.0, burst=1))
    assert policy.check("192.0.2.1", 4000, 10, now=0.0) is Verdict.REPLY
    assert policy.check("::ffff:192.0.2.1", 4000, 10, now=0.0) is (Verdict.RATE_LIMITED)


def test_the_least_recently_seen_source_is_forgotten_first() -> None:
    policy = UdpEchoPolicy(UdpLimits(rate=1.0, burst=1, max_sources=3))
    assert policy.check("a", 4000, 10, now=0.0) is Verdict.REPLY  # spends a's token
    policy.check("b", 4000, 10, now=0.0)
    policy.check("c", 4000, 10, now=0.0)
    # Seen again (and still limited): a is now the most recent, b the least.
    assert policy.check("a", 4000, 10, now=0.0) is Verdict.RATE_LIMITED
    policy.check("d", 4000, 10, now=0.0)  # a fourth source: b goes
    assert policy.tracked_sources == 3
    # Insertion order would have dropped a, which would get a fresh burst.
    assert policy.check("a", 4000, 10, now=0.0) is Verdict.RATE_LIMITED
    # b was forgotten, so it starts again with a full bucket.
    assert policy.check("b", 4000, 10, now=0.0) is Verdict.REPLY


def test_tracked_sources_never_exceed_max_sources_under_a_forged_flood() -> None:
    policy = UdpEchoPolicy(UdpLimits(max_sources=100))
    for i in range(5000):
        policy.check(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 4000, 10, i)
        assert policy.tracked_sources <= 100
    assert policy.tracked_sources == 100


@pytest.mark.parametrize("port", [0, 7, 13, 19, 37])
def test_refused_source_ports_get_no_reply_and_cost_no_token(port: int) -> None:
    assert port in REFUSED_PORTS
    policy = UdpEchoPolicy(UdpLimits(burst=1))
    assert policy.check("192.0.2.1", port, 10, now=0.0) is Verdict.REFUSED_PORT
    assert policy.tracked_sources == 0
    assert policy.check("192.0.2.1", 4000, 10, now=0.0) is Verdict.REPLY


def test_ordinary_source_ports_are_answered() -> None:
    policy = UdpEchoPolicy()
    for port in (1, 8, 53, 123, 1024, 65535):
        assert policy.check("192.0.2.1", port, 10, now=0.0) is Verdict.REPLY


def test_a_datagram_above_max_datagram_is_too_large_and_costs_no_token() -> None:
    policy = UdpEchoPolicy(UdpLimits(max_datagram=100, burst=1))
    assert policy.check("192.0.2.1", 4000, 101, now=0.0) is Verdict.TOO_LARGE
    assert policy.tracked_sources == 0
    assert policy.check("192.0.2.1", 4000, 100, now=0.0) is Verdict.REPLY


def test_default_max_datagram_fits_one_ethernet_frame_over_ipv4() -> None:
    assert UdpLimits().max_datagram == 1500 - 20 - 8


def test_dropped_counts_each_verdict() -> None:
    policy = UdpEchoPolicy(UdpLimits(max_datagram=10, burst=1))
    policy.check("192.0.2.1", 4000, 5, now=0.0)
    policy.check("192.0.2.1", 4000, 5, now=0.0)
    policy.check("192.0.2.1", 4000, 5, now=0.0)
    policy.check("192.0.2.1", 4000, 11, now=0.0)
    policy.check("192.0.2.1", 19, 5, now=0.0)
    assert policy.dropped == {
        Verdict.TOO_LARGE: 1,
        Verdict.REFUSED_PORT: 1,
        Verdict.RATE_LIMITED: 2,
    }


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(udp).failed == 0


@pytest.mark.parametrize(
    ("sockaddr", "loopback"),
    [
        (("127.0.0.1", 7), True),
        (("127.0.0.2", 7), True),
        (("::1", 7, 0, 0), True),
        (("::ffff:127.0.0.1", 7, 0, 0), True),
        (("0.0.0.0", 7), False),
        (("::", 7, 0, 0), False),
        (("192.0.2.1", 7), False),
        (("fe80::1%eth0", 7, 0, 2), False),
        (("::ffff:192.0.2.1", 7, 0, 0), False),
        (("not an address", 7), False),
    ],
)
def test_is_loopback_only_for_addresses_no_other_host_can_reach(
    sockaddr: tuple[Any, ...], loopback: bool
) -> None:
    assert _is_loopback(sockaddr) is loopback


# --- the server, on real loopback sockets ----------------------------------

StartServer = Callable[..., UdpEchoServer]
MakeClient = Callable[..., socket.socket]


@pytest_asyncio.fixture
async def start() -> AsyncIterator[StartServer]:
    """``start(limits, hosts)``: a server on one free port of every host."""
    servers: list[UdpEchoServer] = []

    def start(
        limits: UdpLimits | None = None, hosts: tuple[str, ...] = ("127.0.0.1",)
    ) -> UdpEchoServer:
        server = UdpEchoServer(limits=limits)
        servers.append(server)
        server.add_sockets(bind_udp(0, hosts))
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def client() -> Iterator[MakeClient]:
    """``client(host, port=0)``: a bound, non-blocking UDP socket."""
    sockets: list[socket.socket] = []

    def make(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sockets.append(sock)
        sock.setblocking(False)
        sock.bind((host, port))
        return sock

    yield make
    for sock in sockets:
        sock.close()


def port_of(server: UdpEchoServer) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


async def send(sock: socket.socket, data: bytes, address: tuple[str, int]) -> None:
    # A non-blocking UDP send on loopback does not wait; the await is there
    # so the call reads like the receive it pairs with.
    sock.sendto(data, address)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def receive(sock: socket.socket) -> tuple[bytes, Any]:
    """The next datagram on ``sock``, within `TIMEOUT`.

    Built on ``add_reader`` rather than ``loop.sock_recvfrom``, which uvloop
    lacks, so the tests run on either loop.
    """
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(TIMEOUT):
        while True:
            try:
                return sock.recvfrom(65536)
            except BlockingIOError:
                pass
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(sock, _wake, readable)
            try:
                await readable
            finally:
                loop.remove_reader(sock)


def waiting(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued on ``sock``, without waiting."""
    found = []
    while True:
        try:
            found.append(sock.recv(65536))
        except BlockingIOError:
            return found


async def settled(server: UdpEchoServer) -> UdpStats:
    """The stats once the server has read everything sent to it."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            before = server.stats
            await asyncio.sleep(0.05)
            if server.stats == before:
                return before


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)])
async def test_echoes_each_datagram_exactly_and_only_to_its_sender(
    start: StartServer, client: MakeClient, host: str
) -> None:
    server = start(hosts=(host,))
    address = (host, port_of(server))
    sender, bystander = client(host), client(host)
    for payload in (b"ping", b"", bytes(range(256)), b"x" * 1472):
        await send(sender, payload, address)
        data, source = await receive(sender)
        assert data == payload
        assert source[:2] == address
    assert waiting(bystander) == []
    assert server.stats == UdpStats(received=4, replied=4)


async def test_a_datagram_of_max_plus_one_bytes_gets_no_reply_not_a_truncated_one(
    start: StartServer, client: MakeClient
) -> None:
    server = start(UdpLimits(max_datagram=100))
    address = ("127.0.0.1", port_of(server))
    sender = client()
    for size in (101, 9000):
        await send(sender, b"y" * size, address)
        await send(sender, b"sentinel", address)
        assert (await receive(sender))[0] == b"sentinel"
    await send(sender, b"z" * 100, address)
    assert (await receive(sender))[0] == b"z" * 100
    assert waiting(sender) == []
    assert server.stats == UdpStats(received=5, replied=3, too_large=2)


async def test_no_reply_to_a_datagram_from_source_port_7(
    start: StartServer, client: MakeClient
) -> None:
    server = start()
    address = ("127.0.0.1", port_of(server))
    try:
        reflector = client("127.0.0.1", 7)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EADDRINUSE):
            pytest.skip(f"cannot bind 127.0.0.1:7 to send from it: {exc.strerror}")
        raise
    await send(reflector, b"from an echo service", address)
    sender = client()
    await send(sender, b"sentinel", address)
    assert (await receive(sender))[0] == b"sentinel"
    assert waiting(reflector) == []
    assert server.stats == UdpStats(received=2, replied=1, refused_port=1)


@pytest.mark.parametrize(
    ("other_host", "server_hosts"),
    [
        # The other host is ::1, on the server's second socket: the tests use
        # no loopback address but 127.0.0.1 and ::1.
        pytest.param("::1", ("127.0.0.1", "::1"), marks=needs_ipv6),
    ],
)
async def test_a_flood_from_one_host_is_cut_to_burst_plus_rate_while_another_is_answered(
    start: StartServer,
    client: MakeClient,
    other_host: str,
    server_hosts: tuple[str, ...],
) -> None:
    limits = UdpLimits(rate=20.0, burst=10)
    server = start(limits, server_hosts)
    port = port_of(server)
    flooder, other = client("127.0.0.1"), client(other_host)
    flood_target, other_target = ("127.0.0.1", port), (server_hosts[-1], port)

    async def other_is_answered(payload: bytes) -> None:
        await send(other, payload, other_target)
        assert (await receive(other))[0] == payload

    started = time.monotonic()
    sent = 1000
    for i in range(sent):
        await send(flooder, b"%d" % i, flood_target)
        if i % 50 == 49:
            await asyncio.sleep(0)  # let the server read before buffers fill
        if i == sent // 2:
            await other_is_answered(b"mid-flood")
    await other_is_answered(b"after the flood")
    stats = await settled(server)
    flood_replies = waiting(flooder)
    elapsed = time.monotonic() - started

    assert set(flood_replies) <= {b"%d" % i for i in range(sent)}
    assert limits.burst <= len(flood_replies) <= limits.burst + limits.rate * elapsed
    assert stats.rate_limited > 0
    assert stats.replied == len(flood_replies) + 2
    assert stats.received == stats.replied + stats.rate_limited
    assert (stats.too_large, stats.refused_port, stats.send_failed) == (0, 0, 0)

    # After a quiet spell the flooder is answered again, at `rate`.
    await asyncio.sleep(0.25)
    for i in range(10):
        await send(flooder, b"again %d" % i, flood_target)
    await settled(server)
    refilled = waiting(flooder)
    elapsed = time.monotonic() - started
    assert len(refilled) >= int(limits.rate * 0.25) - 1
    total = len(flood_replies) + len(refilled)
    assert total <= limits.burst + limits.rate * elapsed


async def test_stats_count_every_datagram_once(
    start: StartServer, client: MakeClient
) -> None:
    server = start(UdpLimits(max_datagram=10, burst=2))
    address = ("127.0.0.1", port_of(server))
    sender = client()
    for payload in (b"1", b"too large!!", b"2", b"3", b"4"):
        await send(sender, payload, address)
    stats = await settled(server)
    assert [data for data in waiting(sender)] == [b"1", b"2"]
    assert stats == UdpStats(received=5, replied=2, too_large=1, rate_limited=2)
    assert "5 received, 2 replied" in stats.summary()


async def test_one_event_reads_at_most_datagrams_per_event(
    client: MakeClient,
) -> None:
    server = UdpEchoServer(datagrams_per_event=2)
    server.add_sockets(bind_udp(0, ["127.0.0.1"]))
    try:
        (sock,) = server.sockets
        sender = client()
        for i in range(5):  # no await between: all five wait in the kernel
            sender.sendto(b"%d" % i, sock.getsockname())
        # Called directly, as the loop would on one readiness event.
        server._on_readable(sock, IOLoop.READ)
        assert server.stats.received == 2
        stats = await settled(server)  # the loop calls it for the rest
        assert stats == UdpStats(received=5, replied=5)
        assert waiting(sender) == [b"0", b"1", b"2", b"3", b"4"]
    finally:
        server.stop()


class _FailingSocket(socket.socket):
    """A UDP socket whose ``sendto`` raises ``error`` while it is set."""

    error: BaseException | None = None

    def sendto(self, data: Any, *args: Any) -> int:
        if self.error is not None:
            raise self.error
        return super().sendto(data, *args)


async def test_a_failed_send_drops_that_reply_and_serving_goes_on(
    client: MakeClient,
) -> None:
    sock = _FailingSocket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    server = UdpEchoServer()
    server.add_socket(sock)
    try:
        address = sock.getsockname()
        sender = client()
        sock.error = BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        with ExpectLog(
            "tornado_echo.udp",
            r"UDP echo: no reply to 127\.0\.0\.1:\d+: .*temporarily unavailable",
            level=logging.DEBUG,
        ):
            await send(sender, b"lost", address)
            stats = await settled(server)
        assert stats == UdpStats(received=1, send_failed=1)
        sock.error = None
        await send(sender, b"answered", address)
        assert (await receive(sender))[0] == b"answered"
        assert server.sockets == [sock]
    finally:
        server.stop()


async def test_an_unexpected_error_is_logged_once_and_stops_only_that_socket(
    start: StartServer, client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server = start()
    (sock,) = server.sockets
    address = sock.getsockname()
    sender = client()
    with (
        mock.patch.object(
            server.policy, "check", side_effect=ValueError("policy bug")
        ) as check,
        ExpectLog(
            "tornado.application",
            r"Uncaught exception in UDP echo on 127\.0\.0\.1:\d+; "
            "it stops answering there",
        ),
    ):
        for _ in range(3):
            await send(sender, b"trigger", address)
        async with asyncio.timeout(TIMEOUT):
            while server.sockets:
                await asyncio.sleep(0.01)
    assert check.call_count == 1  # no spinning, no error per datagram
    assert sock.fileno() == -1
    assert not any(record.name == "asyncio" for record in caplog.records)


async def test_stop_removes_handlers_and_closes_sockets(start: StartServer) -> None:
    server = start(hosts=("127.0.0.1",))
    sockets = server.sockets
    fds = [sock.fileno() for sock in sockets]
    port = port_of(server)
    server.stop()
    # BaseAsyncIOLoop.handlers: the fds Tornado still has a handler for.
    handlers = IOLoop.current().handlers  # type: ignore[attr-defined]
    assert not set(fds) & set(handlers)
    assert [sock.fileno() for sock in sockets] == [-1]
    assert server.sockets == []
    server.stop()  # a second call does nothing
    for sock in bind_udp(port, ["127.0.0.1"]):  # the port is free
        sock.close()


async def test_a_socket_not_on_loopback_logs_a_reflection_warning(
    client: MakeClient,
) -> None:
    # No public address is bound: the predicate is tested above, and here it
    # is made to answer "not loopback" for a loopback socket.
    server = UdpEchoServer()
    try:
        with (
            mock.patch.object(udp, "_is_loopback", return_value=False),
            ExpectLog(
                "tornado_echo.udp",
                r"UDP echo on 127\.0\.0\.1:\d+ answers anyone who can reach it; "
                "RFC 862 UDP echo can be abused for reflection",
                level=logging.WARNING,
            ),
        ):
            server.add_sockets(bind_udp(0, ["127.0.0.1"]))
    finally:
        server.stop()


async def test_listen_defaults_to_loopback_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = UdpEchoServer()
    try:
        with caplog.at_level(logging.WARNING, logger="tornado_echo.udp"):
            server.listen(0)
        assert [sock.getsockname()[0] for sock in server.sockets] == ["127.0.0.1"]
        assert caplog.records == []
    finally:
        server.stop()


async def test_add_sockets_refuses_a_tcp_socket_and_adds_none() -> None:
    server = UdpEchoServer()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as good,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
    ):
        good.bind(("127.0.0.1", 0))
        with pytest.raises(ValueError, match="not a UDP socket"):
            server.add_sockets([good, tcp])
        assert server.sockets == []


# --- binding ------------------------------------------------------------------


def test_bind_udp_with_port_0_uses_one_port_on_every_host() -> None:
    hosts = ["127.0.0.1"] + (["::1"] if HAVE_IPV6 else [])
    sockets = bind_udp(0, hosts)
    try:
        assert [sock.getsockname()[0] for sock in sockets] == hosts
        assert len({sock.getsockname()[1] for sock in sockets}) == 1
        for sock in sockets:
            assert sock.type == socket.SOCK_DGRAM
            assert sock.gettimeout() == 0.0  # non-blocking
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
    finally:
        for sock in sockets:
            sock.close()


@needs_ipv6
def test_bind_udp_refuses_a_bound_port_and_closes_what_it_bound() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(ListenError) as failure:
            bind_udp(port, ["::1", "127.0.0.1"])
        assert failure.value.errno == errno.EADDRINUSE
        assert failure.value.strerror == (
            f"cannot listen for UDP on 127.0.0.1:{port}: Address already in use"
        )
    # The ::1 socket bound first was closed: the address is free.
    for sock in bind_udp(port, ["::1"]):
        sock.close()


def test_bind_udp_names_a_host_it_cannot_use_in_one_sentence() -> None:
    with pytest.raises(ListenError) as failure:
        bind_udp(7, ["a..b"])
    assert str(failure.value.strerror).startswith("cannot listen for UDP on a..b:7: ")
