"""Time slices: one busy connection must not monopolise the event loop.

`.IOStream` resolves a read or write inline when the socket is ready, and
awaiting a finished future does not return to the event loop, so a client
that keeps the pipe full would otherwise hold it for as long as it likes.
Each connection's loop gives the event loop a turn after a few milliseconds
of uninterrupted work.
"""

from __future__ import annotations

import asyncio
import time

# Long enough that a turn of the loop is rare next to the work (a few
# hundred requests), short enough that other clients do not notice.
_TIME_SLICE = 0.005


def time_slice_end() -> float:
    """When a connection's loop that starts now must next give way.

    The loops keep the result in a local and compare it with
    ``time.monotonic()`` on every request, then call `next_time_slice`::

        slice_end = time_slice_end()
        while ...:
            ...
            if time.monotonic() >= slice_end:
                slice_end = await next_time_slice()

    A float in the loop's frame rather than an object: nothing to allocate
    per connection, and no method call per request.
    """
    return time.monotonic() + _TIME_SLICE


async def next_time_slice() -> float:
    """Let other callbacks run; returns the end of the next slice."""
    await asyncio.sleep(0)
    return time.monotonic() + _TIME_SLICE
