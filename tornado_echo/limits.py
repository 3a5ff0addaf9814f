"""`Limits`: how many connections a server holds, and how long they may stall.

Every limit has a safe default, and ``0`` switches a timeout off:

========================  ====================  ==============================
limit                     default               at the limit
========================  ====================  ==============================
max_connections           open-file limit - 32  stop accepting; clients wait
                                                in the listen backlog until a
                                                slot frees
max_connections_per_host  off                   close the host's new
                                                connections (an IPv6 host
                                                counts by its /64)
idle_timeout              300 s                 close a connection with no
                                                traffic either way that long
write_timeout             60 s                  close a connection whose peer
                                                took none of our pending data
                                                that long
handshake_timeout         10 s                  close a TLS connection whose
                                                handshake has not finished
========================  ====================  ==============================

Every accepted socket counts against ``max_connections`` from the moment it
is accepted: one waiting for its PROXY header or in its TLS handshake too.
``max_connections_per_host`` counts by the client's real address (from the
PROXY header, when there is one); leave it off behind a balancer that does
not send one, since every connection then comes from the balancer.

The timeouts cost nothing per read or write: a periodic sweep (an eighth of
the shortest timeout, at most once a second) compares each connection's
byte counters with what it saw last time, so a connection is closed between
one and one and a quarter timeouts after its last progress (as long as
nothing blocks the event loop).
"""

from __future__ import annotations

import dataclasses
import math
import resource

#: File descriptors kept out of the default ``max_connections``, for the
#: listeners, logs and whatever else the process opens (HAProxy derives its
#: default maxconn from the open-file limit the same way).
FD_RESERVE = 32

# The sweep runs this many times per shortest timeout, but at most once a
# second. A close comes up to two intervals late: one before the sweep sees
# the last progress, and one because another timeout need not be a whole
# number of intervals. Eight keeps that within a quarter of any timeout.
_SWEEPS_PER_TIMEOUT = 8
_MAX_SWEEP_INTERVAL = 1.0

# An unlimited RLIMIT_NOFILE still has to give a finite default.
_UNLIMITED_DEFAULT = 1 << 20


def default_max_connections() -> int:
    """The open-file limit minus `FD_RESERVE`, so accept rarely hits EMFILE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _UNLIMITED_DEFAULT
    return max(1, soft - FD_RESERVE)


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Connection limits and timeouts for one server (see the module table).

    ``max_connections`` of ``None`` means the default, computed when the
    server starts listening. Timeouts are seconds; ``0`` means never.

    >>> Limits(max_connections=1000, idle_timeout=30)
    Limits(max_connections=1000, max_connections_per_host=None, \
idle_timeout=30, write_timeout=60.0, handshake_timeout=10.0)

    .. versionadded:: 0.3.0

    .. versionchanged:: 0.3.0
       ``max_connections_per_host``.
    """

    max_connections: int | None = None
    max_connections_per_host: int | None = None
    idle_timeout: float = 300.0
    write_timeout: float = 60.0
    handshake_timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_connections_per_host"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be at least 1, not {value!r}")
        for name in ("idle_timeout", "write_timeout", "handshake_timeout"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):  # also rejects nan
                raise ValueError(f"{name} must be 0 or more seconds, not {value!r}")

    def connection_cap(self) -> int:
        """``max_connections``, or its default if it is ``None``."""
        if self.max_connections is None:
            return default_max_connections()
        return self.max_connections

    def sweep_interval(self) -> float | None:
        """Seconds between timeout sweeps; ``None`` if both timeouts are off.

        >>> Limits(idle_timeout=2).sweep_interval()  # an eighth of the shortest
        0.25
        >>> Limits().sweep_interval()  # but at most once a second
        1.0
        >>> Limits(idle_timeout=0, write_timeout=0).sweep_interval() is None
        True
        """
        timeouts = [t for t in (self.idle_timeout, self.write_timeout) if t > 0]
        if not timeouts:
            return None
        return min(min(timeouts) / _SWEEPS_PER_TIMEOUT, _MAX_SWEEP_INTERVAL)
