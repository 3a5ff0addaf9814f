"""Serving behind a load balancer: read the PROXY protocol header first.

Behind HAProxy, a cloud network load balancer or a Kubernetes Service, a
server sees the balancer's address, not the client's, unless the balancer
prepends a PROXY protocol header (v1 text or v2 binary) to each connection.
With `ProxyProtocol` switched on, every accepted socket first goes through a
`HeaderReader`: it reads exactly the header's bytes from the raw socket,
before any stream or TLS layer exists, so nothing after the header is ever
taken from the application (not even the TLS handshake that follows it). The
driver then serves the connection with the client's real address, which the
handler, `.LineConnection.peer` and every log line show.

A connection whose header is missing, malformed or late (``header_timeout``)
is closed with one INFO line. ``trusted`` lists the networks the balancer
connects from; a connection from anywhere else is refused before a byte is
read, so a client cannot forge a header to claim another address. Without
``trusted`` every source is believed, as Twisted's ``haproxy:`` endpoint
does; only do that when nothing but the balancer can reach the port.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any

from tornado.ioloop import IOLoop

from tornado_echo._logs import conn_log, format_address
from tornado_echo._readiness import raise_pending_error
from tornado_echo.proxy_header import (
    V1_MAX_LENGTH,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderParser,
)

__all__ = ["DEFAULT_HEADER_TIMEOUT", "HeaderReader", "ProxyProtocol"]

#: How long a balancer may take to send the header. It sends it at once, with
#: the connection; only a client that is not a balancer waits.
DEFAULT_HEADER_TIMEOUT = 5.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclasses.dataclass(frozen=True)
class ProxyProtocol:
    """PROXY protocol settings: which sources to trust, and for how long to wait.

    ``trusted`` holds networks in CIDR notation (``"10.0.0.0/8"``,
    ``"::1/128"``, or a single address); empty means any source. Raises
    `ValueError` with one sentence for a network that does not parse.

    >>> ProxyProtocol(trusted=("127.0.0.0/8",)).trusts(("127.0.0.1", 5000))
    True
    >>> ProxyProtocol(trusted=("10.0.0.0/8",)).trusts(("192.0.2.1", 5000))
    False

    .. versionadded:: 0.3.0
    """

    trusted: Sequence[str] = ()
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    _networks: tuple[Network, ...] = dataclasses.field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        networks = []
        for text in self.trusted:
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ValueError(
                    f"not a network in CIDR notation (like 10.0.0.0/8): {text!r}"
                ) from None
        if not self.header_timeout > 0:
            raise ValueError(
                f"header_timeout must be more than 0 seconds, not {self.header_timeout!r}"
            )
        object.__setattr__(self, "trusted", tuple(self.trusted))
        object.__setattr__(self, "_networks", tuple(networks))

    def trusts(self, address: Any) -> bool:
        """True if a connection from ``address`` may send a PROXY header."""
        if not self._networks:
            return True
        if not isinstance(address, tuple):
            return False  # a unix socket peer has no address to check
        try:
            ip = ipaddress.ip_address(address[0].split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._networks)


# The most one peek may need to see: a whole v1 line, or v2's fixed part and
# its largest accepted payload.
def _peek_size(parser: ProxyHeaderParser) -> int:
    return max(V1_MAX_LENGTH, 16 + parser.max_v2_payload)


class HeaderReader:
    """Reads one connection's PROXY header from its raw socket, then hands on.

    The socket is peeked (``MSG_PEEK``), the parser says how many of those
    bytes are the header's, and exactly those are consumed; an incomplete
    header's bytes are all the header's, so they are consumed too, and a
    level-triggered poller never spins on bytes left waiting. On success it
    calls ``on_header(reader, sock, address, header)`` with the client's
    address (or the balancer's own, for a ``LOCAL`` health check) and the
    parsed `.ProxyHeader`; on any failure it closes the socket and calls
    ``on_failure(reader)``.
    """

    __slots__ = (
        "_address",
        "_io_loop",
        "_on_failure",
        "_on_header",
        "_parser",
        "_seen",
        "_sock",
        "_timeout",
    )

    def __init__(
        self,
        sock: socket.socket,
        address: Any,
        settings: ProxyProtocol,
        on_header: Callable[[HeaderReader, socket.socket, Any, ProxyHeader], None],
        on_failure: Callable[[HeaderReader], None],
    ) -> None:
        self._sock = sock
        self._address = address
        self._on_header = on_header
        self._on_failure = on_failure
        self._parser = ProxyHeaderParser()
        self._seen = False
        self._io_loop = IOLoop.current()
        sock.setblocking(False)
        self._io_loop.add_handler(sock, self._on_readable, IOLoop.READ)
        self._timeout: object | None = self._io_loop.call_later(
            settings.header_timeout, self._fail, "no PROXY header in time"
        )

    def close(self) -> None:
        """Give up on this connection (the server is shutting down)."""
        if self._timeout is not None:
            self._io_loop.remove_timeout(self._timeout)
            self._timeout = None
            self._io_loop.remove_handler(self._sock)
        self._sock.close()

    def _on_readable(self, sock: socket.socket, events: int) -> None:
        # Nothing may escape a raw handler: asyncio would only log it and
        # leave the handler registered, spinning on a readable socket.
        try:
            self._read()
        except ProxyHeaderError as exc:
            self._fail(str(exc))
        except OSError as exc:
            # A reset is network weather, as it is once served.
            conn_log.debug(
                "%s: connection ended: %s", format_address(self._address), exc
            )
            self._fail("")

    def _read(self) -> None:
        parser = self._parser
        try:
            peeked = self._sock.recv(_peek_size(parser), socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        if not peeked:
            if not self._seen:
                # Connect and close: a port scan or a TCP health probe, not
                # worth an INFO line each.
                conn_log.debug(
                    "%s: closed before sending anything", format_address(self._address)
                )
                self._fail("")
                return
            raise ProxyHeaderError("the connection closed before a whole PROXY header")
        self._seen = True
        taken = parser.receive(peeked)
        if taken:
            self._sock.recv(taken)  # the very bytes just parsed
        header = parser.header
        if header is not None:
            self._finish(header)
        else:
            # A reset behind a partial header: uvloop reports it only once,
            # with these bytes, and then stops polling the socket.
            raise_pending_error(self._sock)

    def _finish(self, header: ProxyHeader) -> None:
        assert self._timeout is not None
        self._io_loop.remove_timeout(self._timeout)
        self._timeout = None
        self._io_loop.remove_handler(self._sock)
        address = self._address if header.local else header.source
        self._on_header(self, self._sock, address, header)

    def _fail(self, reason: str) -> None:
        if self._timeout is None:
            return
        if reason:
            conn_log.info(
                "%s: closing: %s", format_address(self._address), reason.rstrip(".")
            )
        self.close()
        self._on_failure(self)
