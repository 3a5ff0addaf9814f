"""The timeout sweep: close connections that made no progress for too long.

One `PeriodicCallback` per server, not a timer per connection: every
``Limits.sweep_interval()`` it looks at each connection's byte counters.
Quiet time is counted in sweeps, not read off the clock: sweeps run on a
fixed schedule, and a clock reading taken a millisecond early would
otherwise postpone a close by a whole interval. A connection with data of
ours it does not take (``writing()``) stalls after ``write_timeout``; any
other quiet one is idle after ``idle_timeout``.
"""

from __future__ import annotations

import math

from tornado.ioloop import PeriodicCallback

from tornado_echo._logs import conn_log, format_address
from tornado_echo._tracking import ConnectionTracker
from tornado_echo.limits import Limits

__all__ = ["TimeoutSweep"]


class TimeoutSweep:
    """Applies a `.Limits`' idle and write timeouts to a tracker's connections."""

    def __init__(self, tracker: ConnectionTracker) -> None:
        self._tracker = tracker
        self._timer: PeriodicCallback | None = None
        self._limits = Limits()
        # Sweeps in a row without progress after which a connection is idle,
        # or stalled; 0 for a timeout that is off.
        self._idle_sweeps = 0
        self._stall_sweeps = 0
        #: Connections closed for each reason so far.
        self.idle_timeouts = 0
        self.write_timeouts = 0

    def start(self, limits: Limits) -> None:
        """Sweep for ``limits``' timeouts (again, if it was running)."""
        self.stop()
        self._limits = limits
        interval = limits.sweep_interval()
        if interval is None:
            return
        self._idle_sweeps = _sweeps(limits.idle_timeout, interval)
        self._stall_sweeps = _sweeps(limits.write_timeout, interval)
        self._timer = PeriodicCallback(self._sweep, interval * 1000)
        self._timer.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def _sweep(self) -> None:
        idle = self._idle_sweeps
        stall = self._stall_sweeps
        for conn, record in self._tracker.records():
            quiet = record.quiet(conn)
            if not quiet:
                continue
            if stall and quiet >= stall and conn.writing():
                self.write_timeouts += 1
                conn_log.info(
                    "%s: took none of our pending data for %gs; closing",
                    format_address(conn.address),
                    self._limits.write_timeout,
                )
                conn.close()
            elif idle and quiet >= idle:
                self.idle_timeouts += 1
                conn_log.info(
                    "%s: idle for %gs; closing",
                    format_address(conn.address),
                    self._limits.idle_timeout,
                )
                conn.close()


def _sweeps(timeout: float, interval: float) -> int:
    """How many quiet sweeps make ``timeout``; 0 if it is off."""
    if not timeout:
        return 0
    # The epsilon keeps 2.0 / 0.25 from rounding up to 9 sweeps.
    return max(1, math.ceil(timeout / interval - 1e-9))
