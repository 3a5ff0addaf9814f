"""`Limits`: how many connections a server holds, and how long they may stall.

Every limit has a safe default, and ``0`` switches a timeout off:

==================  ====================  ====================================
limit               default               at the limit
==================  ====================  ====================================
max_connections     open-file limit - 32  stop accepting; clients wait in the
                                          listen backlog until a slot frees
idle_timeout        300 s                 close a connection with no traffic
                                          either way for that long
write_timeout       60 s                  close a connection whose peer took
                                          none of our pending data that long
handshake_timeout   10 s                  close a TLS connection whose
                                          handshake has not finished
==================  ====================  ====================================

The timeouts cost nothing per read or write: a periodic sweep (at most once
a second) compares each connection's byte counters with what it saw last
time, so a connection is closed between one and about one and a quarter
timeouts after its last progress.
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
# second: precision of a quarter timeout, and no cost worth measuring.
_SWEEPS_PER_TIMEOUT = 4
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
    Limits(max_connections=1000, idle_timeout=30, write_timeout=60.0, \
handshake_timeout=10.0)

    .. versionadded:: 0.3.0
    """

    max_connections: int | None = None
    idle_timeout: float = 300.0
    write_timeout: float = 60.0
    handshake_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError(
                f"max_connections must be at least 1, not {self.max_connections!r}"
            )
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

        >>> Limits(idle_timeout=2).sweep_interval()  # a quarter of the shortest
        0.5
        >>> Limits().sweep_interval()  # but at most once a second
        1.0
        >>> Limits(idle_timeout=0, write_timeout=0).sweep_interval() is None
        True
        """
        timeouts = [t for t in (self.idle_timeout, self.write_timeout) if t > 0]
        if not timeouts:
            return None
        return min(min(timeouts) / _SWEEPS_PER_TIMEOUT, _MAX_SWEEP_INTERVAL)
