"""Giving memory back to the system once a burst of clients has left.

A client that sends but never reads makes its connection hold one read
chunk until the client goes, and a few hundred of them make the heap grow
by tens of megabytes. When they leave, Python frees those buffers, but
glibc's malloc keeps the pages: it returns memory on its own only from the
top of the heap, and the small objects of the connections that remain sit
in between. So the resident size of a server that survived such a burst
would stay where the burst left it.

`MemoryReleaser` asks glibc, once a second, how much of its heap is free
(``mallinfo2``, a walk of the free lists that costs microseconds), and
calls ``malloc_trim(0)``, which hands every free page back, only when that
is at least `MIN_FREE` and a quarter of the heap: a server whose buffers
come and go at a steady rate keeps reusing its free memory, and trimming
it would only turn every reuse into page faults. On a C library without
these functions (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from tornado.ioloop import PeriodicCallback

#: Free heap below this is left alone.
MIN_FREE = 8 << 20

_CHECK_INTERVAL_MS = 1000


class _MallInfo2(ctypes.Structure):
    # glibc's struct mallinfo2 (2.33 and later): ten size_t fields.
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


class MemoryReleaser:
    """Trims the C heap when a large part of it has been freed."""

    def __init__(self) -> None:
        self._timer: PeriodicCallback | None = None
        #: Times memory was handed back.
        self.trims = 0

    def start(self) -> None:
        """Start checking, on the current loop (idempotent)."""
        if _LIBC is None or self._timer is not None:
            return
        self._timer = PeriodicCallback(self._check, _CHECK_INTERVAL_MS)
        self._timer.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def _check(self) -> None:
        self.check()

    def check(self) -> bool:
        """Trim now if enough of the heap is free; True if it did."""
        if _LIBC is None:
            return False
        info = _LIBC.mallinfo2()
        if info.fordblks < max(MIN_FREE, info.arena // 4):
            return False
        _LIBC.malloc_trim(0)
        self.trims += 1
        return True
