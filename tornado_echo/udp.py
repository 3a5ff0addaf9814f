"""RFC 862 echo over UDP, safe by default against reflection.

UDP echo answers every datagram with the same datagram, sent to its source
address. Nothing proves that address: anyone can forge it. An attacker who
sends datagrams "from" a victim makes the server send its replies to the
victim, hiding where the traffic comes from; with the source port of
another reflector's echo (7) or chargen (19) service, two servers answer
each other forever (CERT CA-1996-01). So most systems leave UDP echo off,
and this server defends itself:

====================================  ========================================
threat                                protection
====================================  ========================================
reply loops between reflectors        datagrams from source ports 7, 13, 19
                                      and 37 (services that answer anything)
                                      and from port 0 get no reply
                                      (`REFUSED_PORTS`)
one victim flooded with replies       a token bucket per source host, not
                                      per host and port (the victim's address
                                      is what is forged): ``rate`` replies a
                                      second after a ``burst``
amplification                         a reply is the request, never larger;
                                      datagrams above ``max_datagram`` bytes
                                      are dropped, never truncated
memory exhaustion by forged sources   at most ``max_sources`` buckets; the
                                      least recently seen source is
                                      forgotten
exposure                              `UdpEchoServer.listen` binds to
                                      127.0.0.1 unless told otherwise, and
                                      every socket not on a loopback address
                                      logs a WARNING
one busy socket starving the loop     at most ``datagrams_per_event``
                                      datagrams per readiness event
====================================  ========================================

Forgetting a source gives it a fresh burst when it returns, so an attacker
who also forges ``max_sources`` other addresses between two datagrams from
its victim earns the victim another burst; the other replies it causes are
spread over those addresses, and none is larger than what it sent. Per
host means per address: forging many addresses of one network (an IPv6
/64, say) earns a burst for each, so the limit protects a host, not its
whole network.

The module has two layers. `UdpEchoPolicy` decides, without sockets, a loop
or a clock: the caller passes the time in. `UdpEchoServer` is the driver, in
`.RawEchoServer`'s raw `.IOLoop` style: ``add_handler`` on each socket,
``recvfrom`` until ``EAGAIN``, ask the policy, ``sendto`` the sender.

Inside a running event loop::

    import asyncio
    from tornado_echo.udp import UdpEchoServer, UdpLimits

    async def main():
        server = UdpEchoServer(limits=UdpLimits(rate=50, burst=100))
        server.listen(10007)  # 127.0.0.1 unless an address is given
        await asyncio.sleep(3600)
        server.stop()
        print(server.stats.summary())

    asyncio.run(main())

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import ipaddress
import logging
import math
import socket
from collections.abc import Iterable
from typing import Any

from tornado.ioloop import IOLoop
from tornado.log import app_log

from tornado_echo._logs import format_address

# Bound in tornado_echo.listen, with TCP and unix sockets; importable from
# here as before.
from tornado_echo.listen import bind_udp

#: Logger for the exposure warning and for replies that could not be sent.
log = logging.getLogger("tornado_echo.udp")

#: Source ports refused: echo (7), daytime (13), chargen (19), time (37) — a
#: reply to another reflector would start a loop — and 0, which no real
#: client sends from.
REFUSED_PORTS = frozenset({0, 7, 13, 19, 37})

# How recvfrom reports an IPv4 peer on a dual-stack IPv6 socket; such a peer
# must share its bucket with the same address seen on an IPv4 socket.
_MAPPED_PREFIX = "::ffff:"


@dataclasses.dataclass(frozen=True, slots=True)
class UdpLimits:
    """What a UDP echo server answers, and how often (see the module table).

    >>> UdpLimits(rate=10, burst=20)
    UdpLimits(max_datagram=1472, rate=10, burst=20, max_sources=10000)

    .. versionadded:: 0.3.0
    """

    #: The largest payload answered, in bytes. 1472 is the largest that fits
    #: one 1500-byte Ethernet frame over IPv4 (minus 20 IP and 8 UDP header
    #: bytes), so no reply is ever fragmented; bigger ones are dropped.
    max_datagram: int = 1472
    #: Replies per second to one source host, once its burst is spent.
    rate: float = 100.0
    #: Replies one source host may have at once after a quiet spell.
    burst: int = 200
    #: Source hosts tracked at once; beyond, the least recently seen is
    #: forgotten, so memory stays bounded under a flood of forged sources.
    max_sources: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_datagram", "burst", "max_sources"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int of at least 1, not {value!r}")
        if not (self.rate > 0 and math.isfinite(self.rate)):  # also rejects nan
            raise ValueError(
                f"rate must be more than 0 datagrams a second, not {self.rate!r}"
            )


class Verdict(enum.Enum):
    """What `UdpEchoPolicy.check` decided for one datagram."""

    REPLY = "reply"
    TOO_LARGE = "too large"
    REFUSED_PORT = "refused port"
    RATE_LIMITED = "rate limited"


class _Bucket:
    __slots__ = ("last", "tokens")

    def __init__(self, tokens: float, last: float) -> None:
        self.tokens = tokens
        self.last = last


class UdpEchoPolicy:
    """Decides whether a datagram is answered: sans-IO, the time passed in.

    The checks run in the order of the `Verdict` members: a datagram too
    large or from a refused port is dropped before it touches a bucket, so
    it costs its source no token and no tracking. `dropped` counts the
    datagrams dropped, per verdict.

    >>> policy = UdpEchoPolicy(UdpLimits(rate=1, burst=2))
    >>> [policy.check("192.0.2.1", 5353, 10, now=0.0).name for _ in range(3)]
    ['REPLY', 'REPLY', 'RATE_LIMITED']
    >>> policy.check("192.0.2.1", 5353, 10, now=1.0).name  # one token later
    'REPLY'
    >>> policy.check("192.0.2.1", 19, 10, now=9.0).name
    'REFUSED_PORT'
    >>> policy.dropped[Verdict.RATE_LIMITED]
    1

    .. versionadded:: 0.3.0
    """

    def __init__(self, limits: UdpLimits = UdpLimits()) -> None:
        self.limits = limits
        #: Datagrams dropped so far, per verdict (every verdict but REPLY).
        self.dropped: dict[Verdict, int] = {
            verdict: 0 for verdict in Verdict if verdict is not Verdict.REPLY
        }
        self._buckets: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()

    @property
    def tracked_sources(self) -> int:
        """How many source hosts have a bucket now (at most ``max_sources``)."""
        return len(self._buckets)

    def check(self, host: str, port: int, size: int, now: float) -> Verdict:
        """The verdict for a datagram of ``size`` bytes from ``host:port``.

        ``now`` is a monotonic time in seconds; a clock that goes backwards
        adds no tokens.
        """
        if size > self.limits.max_datagram:
            verdict = Verdict.TOO_LARGE
        elif port in REFUSED_PORTS:
            verdict = Verdict.REFUSED_PORT
        elif self._take_token(host, now):
            return Verdict.REPLY
        else:
            verdict = Verdict.RATE_LIMITED
        self.dropped[verdict] += 1
        return verdict

    def _take_token(self, host: str, now: float) -> bool:
        if host.startswith(_MAPPED_PREFIX) and "." in host:
            host = host[len(_MAPPED_PREFIX) :]
        limits, buckets = self.limits, self._buckets
        bucket = buckets.get(host)
        if bucket is None:
            if len(buckets) >= limits.max_sources:
                buckets.popitem(last=False)
            bucket = buckets[host] = _Bucket(limits.burst, now)
        else:
            buckets.move_to_end(host)
            elapsed = now - bucket.last
            if elapsed > 0:
                bucket.tokens = min(limits.burst, bucket.tokens + elapsed * limits.rate)
                bucket.last = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True
        return False


@dataclasses.dataclass(frozen=True, slots=True)
class UdpStats:
    """A snapshot of one `UdpEchoServer`'s counters, from its creation on.

    Every datagram received ends in exactly one of the other counters:
    ``received == replied + too_large + refused_port + rate_limited +
    send_failed``. ``send_failed`` counts replies the kernel refused (a full
    send buffer, an ICMP error left by an earlier reply, ...); UDP is best
    effort, so they are dropped.

    >>> UdpStats(received=5, replied=3, rate_limited=2).summary()
    'datagrams 5 received, 3 replied; dropped 0 too large, 0 from refused \
ports, 2 rate-limited, 0 failed to send'

    .. versionadded:: 0.3.0
    """

    received: int = 0
    replied: int = 0
    too_large: int = 0
    refused_port: int = 0
    rate_limited: int = 0
    send_failed: int = 0

    def summary(self) -> str:
        """The counters as one log line."""
        return (
            f"datagrams {self.received} received, {self.replied} replied; "
            f"dropped {self.too_large} too large, {self.refused_port} from "
            f"refused ports, {self.rate_limited} rate-limited, "
            f"{self.send_failed} failed to send"
        )


class UdpEchoServer:
    """A UDP echo server on raw `.IOLoop` fd handlers, guarded by a policy.

    Each datagram that `UdpEchoPolicy` lets through is sent back, unchanged,
    to the address it came from; any other is dropped silently (no reply is
    the only safe answer to a forged source). ``datagrams_per_event`` bounds
    the work one readiness event does, so a flooded socket cannot starve
    the rest of the loop.

    .. versionadded:: 0.3.0
    """

    def __init__(
        self, *, limits: UdpLimits | None = None, datagrams_per_event: int = 64
    ) -> None:
        if limits is not None and not isinstance(limits, UdpLimits):
            raise TypeError(f"limits must be a UdpLimits, not {type(limits).__name__}")
        if datagrams_per_event < 1:
            raise ValueError(
                f"datagrams_per_event must be at least 1, not {datagrams_per_event!r}"
            )
        self.policy = UdpEchoPolicy(limits or UdpLimits())
        self.datagrams_per_event = datagrams_per_event
        # One byte more than the largest answered datagram: a datagram that
        # fills it was bigger (the kernel dropped the rest), so it is refused
        # rather than answered truncated. One buffer serves every socket, as
        # each reply is sent before the next recvfrom.
        self._buffer = memoryview(bytearray(self.policy.limits.max_datagram + 1))
        self._sockets: list[socket.socket] = []
        self._io_loop: IOLoop | None = None
        self._received = 0
        self._replied = 0
        self._send_failed = 0

    @property
    def limits(self) -> UdpLimits:
        """The `UdpLimits` in force."""
        return self.policy.limits

    @property
    def sockets(self) -> list[socket.socket]:
        """The sockets being served, in the order they were added."""
        return list(self._sockets)

    @property
    def stats(self) -> UdpStats:
        """A snapshot of the counters (see `UdpStats`)."""
        dropped = self.policy.dropped
        return UdpStats(
            received=self._received,
            replied=self._replied,
            too_large=dropped[Verdict.TOO_LARGE],
            refused_port=dropped[Verdict.REFUSED_PORT],
            rate_limited=dropped[Verdict.RATE_LIMITED],
            send_failed=self._send_failed,
        )

    def listen(self, port: int, address: str | None = "127.0.0.1") -> None:
        """Bind ``port`` on ``address`` and start answering.

        Unlike the TCP servers, the default is the IPv4 loopback address;
        ``None`` or ``""`` means every interface, IPv4 and IPv6. Raises
        `.ListenError` if the address cannot be bound.
        """
        self.add_sockets(bind_udp(port, [address]))

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        """Start answering on already-bound UDP sockets (inside the running loop).

        Logs one WARNING for each socket not bound to a loopback address.
        Raises `ValueError`, adding none of them, if one is not an IPv4 or
        IPv6 datagram socket.
        """
        sockets = list(sockets)
        for sock in sockets:
            if sock.type != socket.SOCK_DGRAM or sock.family not in (
                socket.AF_INET,
                socket.AF_INET6,
            ):
                raise ValueError(f"not a UDP socket: {sock!r}")
        self._io_loop = IOLoop.current()
        for sock in sockets:
            sock.setblocking(False)
            address = sock.getsockname()
            if not _is_loopback(address):
                log.warning(
                    "UDP echo on %s answers anyone who can reach it; "
                    "RFC 862 UDP echo can be abused for reflection",
                    format_address(address),
                )
            self._io_loop.add_handler(sock, self._on_readable, IOLoop.READ)
            self._sockets.append(sock)

    def add_socket(self, sock: socket.socket) -> None:
        """Singular version of `add_sockets`."""
        self.add_sockets([sock])

    def stop(self) -> None:
        """Stop answering and close the sockets. Calling it again does nothing."""
        for sock in list(self._sockets):
            self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        # Removed before closing: afterwards fileno() is -1 and the removal
        # would silently miss, leaving a handler for a dead fd.
        assert self._io_loop is not None
        self._io_loop.remove_handler(sock)
        sock.close()
        self._sockets.remove(sock)

    def _on_readable(self, sock: socket.socket, events: int) -> None:
        # Nothing may escape: on the asyncio IOLoop an exception here is
        # merely logged and the handler stays registered, called again and
        # again. Network errors are handled inside; anything else is a bug,
        # and this socket stops serving rather than failing per datagram.
        try:
            self._serve(sock)
        except Exception:  # noqa: BLE001 - see above
            where = format_address(sock.getsockname())
            app_log.error(
                "Uncaught exception in UDP echo on %s; it stops answering there",
                where,
                exc_info=True,
            )
            self._close(sock)

    def _serve(self, sock: socket.socket) -> None:
        assert self._io_loop is not None
        buffer, check = self._buffer, self.policy.check
        now = self._io_loop.time()  # one clock read per event is precise enough
        for _ in range(self.datagrams_per_event):
            try:
                size, address = sock.recvfrom_into(buffer)
            except BlockingIOError:
                return
            except OSError as exc:
                # An error queued on the socket, such as an ICMP error an
                # earlier reply provoked (Linux queues those on unconnected
                # sockets only with IP_RECVERR): it is reported once, and
                # the datagrams behind it can still be read.
                log.debug(
                    "UDP echo on %s: receive failed: %s",
                    format_address(sock.getsockname()),
                    exc,
                )
                continue
            self._received += 1
            if check(address[0], address[1], size, now) is not Verdict.REPLY:
                continue
            try:
                sock.sendto(buffer[:size], address)
            except OSError as exc:
                # A full send buffer (EAGAIN), no route, a queued ICMP error:
                # UDP is best effort, so the reply is dropped.
                self._send_failed += 1
                log.debug("UDP echo: no reply to %s: %s", format_address(address), exc)
            else:
                self._replied += 1


def _is_loopback(sockaddr: tuple[Any, ...]) -> bool:
    """True if a socket bound to ``sockaddr`` can only be reached from this host."""
    host = str(sockaddr[0]).partition("%")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback
