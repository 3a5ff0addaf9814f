"""From accept to admit: the one path every accepted socket takes.

A socket is accepted by the `.Acceptor`; when the server expects a PROXY
header, a `.HeaderReader` holds it (and its slot) until the header comes;
then the per-host limit admits it or closes it, and the driver's callback
builds its connection. The connection cap counts every socket on this
path: `slots` is what ``max_connections`` caps.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from tornado_echo._accept import Acceptor
from tornado_echo._admission import REFUSED, ConnectionCap, HostLimit
from tornado_echo._logs import conn_log, format_address, log_connection_error
from tornado_echo._tracking import ConnectionTracker, Slot
from tornado_echo.limits import Limits

if TYPE_CHECKING:
    from tornado_echo.proxy_header import ProxyHeader
    from tornado_echo.proxy_protocol import HeaderReader, ProxyProtocol

__all__ = ["Admitted", "Gate"]

#: The driver's callback: serve ``sock`` from ``address`` (the client's,
#: after a PROXY header), and take ``slot`` by tracking the connection.
Admitted = Callable[[socket.socket, Any, "ProxyHeader | None", Slot], None]


class Gate:
    """Accepts, reads PROXY headers, applies the cap and the per-host limit."""

    def __init__(
        self,
        admitted: Admitted,
        tracker: ConnectionTracker,
        *,
        per_event: int,
        proxy_protocol: ProxyProtocol | None,
    ) -> None:
        self._admitted = admitted
        self._tracker = tracker
        self._acceptor = Acceptor(self._accepted, per_event=per_event)
        self._cap = ConnectionCap(self._acceptor)
        self._hosts = HostLimit(None)
        #: The PROXY protocol settings, or None if no header is expected.
        self.proxy_protocol = proxy_protocol
        self._header_readers: set[HeaderReader] = set()
        #: Connections refused for a missing, bad or untrusted PROXY header.
        self.proxy_rejected = 0

    @property
    def limit_reached(self) -> int:
        """Episodes of reaching the connection cap so far."""
        return self._cap.episodes

    @property
    def host_limit_refused(self) -> int:
        return self._hosts.refused

    @property
    def accept_errors(self) -> int:
        return self._acceptor.error_episodes

    def start(self, sockets: Iterable[socket.socket], limits: Limits) -> None:
        """Accept on ``sockets``, under ``limits``' cap and per-host limit."""
        self._cap.cap = limits.connection_cap()
        self._hosts.limit = limits.max_connections_per_host
        self._acceptor.add(sockets)

    def stop(self) -> None:
        """Stop accepting, close the listeners and drop waiting headers."""
        self._acceptor.close()
        for reader in list(self._header_readers):
            reader.close()
        self._header_readers.clear()

    def slots(self) -> int:
        """Slots taken: every accepted socket not yet closed."""
        return len(self._tracker) + len(self._header_readers)

    def update(self) -> None:
        """Apply the cap again; call whenever `slots` changed."""
        self._cap.update(self.slots())

    def release(self, host: str | None) -> None:
        """A connection counted against ``host`` closed."""
        self._hosts.release(host)

    def _accepted(self, sock: socket.socket, address: Any) -> None:
        proxy = self.proxy_protocol
        if proxy is None:
            self._admit(sock, address, None)
            return
        if not proxy.trusts(address):
            self.proxy_rejected += 1
            conn_log.info(
                "%s: refused: not a trusted PROXY protocol source",
                format_address(address),
            )
            sock.close()
            return
        from tornado_echo.proxy_protocol import HeaderReader

        # It holds a slot while it waits: its socket is an fd all the same.
        self._header_readers.add(
            HeaderReader(sock, address, proxy, self._after_header, self._bad_header)
        )
        self.update()

    def _after_header(
        self,
        reader: HeaderReader,
        sock: socket.socket,
        address: Any,
        header: ProxyHeader,
    ) -> None:
        self._header_readers.discard(reader)
        try:
            self._admit(sock, address, header)
        except Exception as exc:  # noqa: BLE001 - as the acceptor does
            sock.close()
            log_connection_error(address, exc)
        self.update()

    def _bad_header(self, reader: HeaderReader) -> None:
        self._header_readers.discard(reader)
        self.proxy_rejected += 1
        self.update()

    def _admit(
        self, sock: socket.socket, address: Any, proxy_header: ProxyHeader | None
    ) -> None:
        """Serve ``sock`` if its host has room for one more connection."""
        host = self._hosts.admit(address)
        if host is REFUSED:
            sock.close()
            return
        slot = Slot(host)
        try:
            self._admitted(sock, address, proxy_header, slot)
        finally:
            if not slot.taken:  # the socket was unusable, and closed
                self._hosts.release(host)
