"""Counters every server keeps, and the snapshot it hands out.

The drivers only ever add to plain integers: bytes are counted per
connection by the stream or raw connection that moves them, and folded into
the server's totals when the connection ends, so the hot path touches no
shared object, takes no lock and allocates nothing. `ServerStats` is the
frozen snapshot a server's ``stats`` builds on demand, and `ShutdownResult`
is what its ``shutdown`` did.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class ServerStats:
    """A snapshot of one server's counters, from its creation until now.

    ``connections_drained`` and ``connections_force_closed`` count what
    shutdown did: connections that finished on their own while it waited,
    and those it closed at the deadline (or at once, on a second SIGINT).
    ``limit_reached`` counts the times ``max_connections`` made the server
    stop accepting; clients wait in the listen backlog meanwhile, so the
    limit delays connections rather than refusing them. ``accept_errors``
    counts episodes of failed accepts (out of file descriptors or memory).
    ``proxy_rejected`` counts connections refused for an untrusted source or
    a missing, malformed or late PROXY protocol header, and
    ``host_limit_refused`` those closed because their host already had
    ``max_connections_per_host`` open.

    >>> ServerStats(connections_total=3, bytes_in=10, bytes_out=10).summary()
    'connections 0 open, 3 total, 0 drained, 0 force-closed; bytes 10 in, 10 out; \
lines 0, 0 too long; limit reached 0 times; accept errors 0; timeouts 0 idle, \
0 write; failed TLS handshakes 0; PROXY headers rejected 0; over the per-host \
limit 0'

    .. versionadded:: 0.3.0
    """

    connections_open: int = 0
    connections_total: int = 0
    connections_drained: int = 0
    connections_force_closed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    lines: int = 0
    lines_too_long: int = 0
    limit_reached: int = 0
    accept_errors: int = 0
    idle_timeouts: int = 0
    write_timeouts: int = 0
    handshake_failures: int = 0
    proxy_rejected: int = 0
    host_limit_refused: int = 0

    def __add__(self, other: ServerStats) -> ServerStats:
        """The counters of two servers added up, as for the workers of one service.

        >>> (ServerStats(bytes_in=2) + ServerStats(bytes_in=3)).bytes_in
        5
        """
        if not isinstance(other, ServerStats):
            return NotImplemented
        return ServerStats(
            **{
                field.name: getattr(self, field.name) + getattr(other, field.name)
                for field in dataclasses.fields(self)
            }
        )

    def summary(self) -> str:
        """The counters as one log line."""
        return (
            f"connections {self.connections_open} open, "
            f"{self.connections_total} total, {self.connections_drained} drained, "
            f"{self.connections_force_closed} force-closed; "
            f"bytes {self.bytes_in} in, {self.bytes_out} out; "
            f"lines {self.lines}, {self.lines_too_long} too long; "
            f"limit reached {self.limit_reached} times; "
            f"accept errors {self.accept_errors}; "
            f"timeouts {self.idle_timeouts} idle, {self.write_timeouts} write; "
            f"failed TLS handshakes {self.handshake_failures}; "
            f"PROXY headers rejected {self.proxy_rejected}; "
            f"over the per-host limit {self.host_limit_refused}"
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ShutdownResult:
    """What a server's ``shutdown`` did (and what `.run` and `.serve` return).

    ``drained`` connections finished on their own before the deadline;
    ``closed`` ones were still open at the deadline and were closed.
    """

    drained: int
    closed: int
