"""Who gets a connection slot: the server's cap, and one host's share of it.

`ConnectionCap` applies ``Limits.max_connections``. Every accepted socket
holds a slot from the moment it is accepted until it is closed, including
one still waiting for its PROXY header or in its TLS handshake: those hold
a file descriptor just the same. At the cap the acceptor pauses, so new
clients wait in the kernel's listen backlog instead of being accepted and
dropped.

`HostLimit` applies ``Limits.max_connections_per_host``, counted by the
client's real address (from the PROXY header, when there is one), so that
one host cannot take every slot, as nginx's ``limit_conn`` does. An IPv6
client counts by its /64 network: one host, or one customer, is usually
given a whole /64, and could otherwise pick a fresh address per connection.
A connection over the limit is closed as soon as its address is known.
"""

from __future__ import annotations

import enum
import ipaddress
from typing import Any, Final, Literal

from tornado_echo._accept import Acceptor
from tornado_echo._logs import conn_log

# An episode of "limit reached" ends, and is logged as over, only once this
# share of the cap is free again: a server hovering at its cap would
# otherwise log a pair of lines for every connection that comes and goes.
_HYSTERESIS = 0.1

_PAUSE_REASON = "limit"


class _Refused(enum.Enum):
    REFUSED = "REFUSED"


#: What `HostLimit.admit` returns for a host at its limit.
REFUSED: Final = _Refused.REFUSED


class ConnectionCap:
    """Pauses the acceptor while ``cap`` connections are open."""

    def __init__(self, acceptor: Acceptor) -> None:
        self._acceptor = acceptor
        #: The cap in force; 0 until the server starts accepting.
        self.cap = 0
        self._at_limit = False
        #: Episodes of reaching the cap so far.
        self.episodes = 0

    def update(self, open_now: int) -> None:
        """Apply the cap to ``open_now`` slots; call whenever that changes."""
        cap = self.cap
        if not cap:
            return
        if open_now >= cap:
            self._acceptor.pause(_PAUSE_REASON)
            if not self._at_limit:
                self._at_limit = True
                self.episodes += 1
                conn_log.warning(
                    "connection limit reached (%d open); new clients wait in "
                    "the listen backlog",
                    open_now,
                )
            return
        self._acceptor.resume(_PAUSE_REASON)
        if self._at_limit and open_now <= cap * (1 - _HYSTERESIS):
            self._at_limit = False
            conn_log.info("below the connection limit (%d open)", open_now)


def host_key(address: Any) -> str | None:
    """What a connection from ``address`` counts against; None for none.

    >>> host_key(("192.0.2.7", 5000))
    '192.0.2.7'
    >>> host_key(("2001:db8:1:2:3:4:5:6", 5000, 0, 0))
    '2001:db8:1:2::/64'
    >>> host_key(("::ffff:192.0.2.7", 5000, 0, 0))  # IPv4, mapped
    '192.0.2.7'
    >>> host_key("") is None  # a unix socket peer
    True
    """
    if not isinstance(address, tuple) or not address:
        return None
    try:
        ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class HostLimit:
    """Counts open connections per host and refuses those over ``limit``.

    ``limit`` None switches it off. Hosts are forgotten as soon as they have
    no connection left, so this holds no more entries than there are
    connections.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}
        # Hosts in an episode of being refused: logged once when it starts.
        self._refusing: set[str] = set()
        #: Connections refused so far.
        self.refused = 0

    def admit(self, address: Any) -> str | None | Literal[_Refused.REFUSED]:
        """Count a connection from ``address``, if the host has room.

        Returns the key to `release` when it closes, None if it is not
        counted (no limit, or no host: a unix socket), or `REFUSED` if the
        host is at its limit: then close the connection.
        """
        limit = self.limit
        if limit is None:
            return None
        key = host_key(address)
        if key is None:
            return None
        count = self._open.get(key, 0)
        if count >= limit:
            self.refused += 1
            if key not in self._refusing:
                self._refusing.add(key)
                conn_log.warning(
                    "%s: %d connections open, the limit per host; refusing "
                    "its new ones until it closes some",
                    key,
                    count,
                )
            return REFUSED
        self._open[key] = count + 1
        return key

    def release(self, key: str | None) -> None:
        """A connection counted under ``key`` closed."""
        if key is None:
            return
        count = self._open[key] - 1
        if count:
            self._open[key] = count
        else:
            del self._open[key]
        if key in self._refusing and count <= (self.limit or 0) * (1 - _HYSTERESIS):
            self._refusing.discard(key)
