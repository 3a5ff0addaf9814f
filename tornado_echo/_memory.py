"""Giving memory back to the system once a burst of clients has left.

A client that sends but never reads makes its connection hold one read
chunk until the client goes, and a few hundred of them make the heap grow
by tens of megabytes. When they leave, Python frees those buffers, but
glibc's malloc keeps the pages: it returns memory on its own only from the
top of the heap, and the small objects of the connections that remain sit
in between. So the resident size of a server that survived such a burst
would stay where the burst left it.

`MemoryReleaser` checks once a second. It reads the resident size
(``/proc/self/statm``) and what malloc has in use (``mallinfo2``, a walk
of the free lists that costs microseconds); resident growth since the last
trim that the growth in use does not explain is freed memory that is still
resident. When that is at least `MIN_FREE` and an eighth of what is in
use, it calls ``malloc_trim(0)``, which hands every free page back. A
server whose buffers come and go at a steady rate keeps reusing the same
memory, and trimming it would only turn every reuse into page faults. On a
C library without these functions (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from tornado.ioloop import PeriodicCallback

#: Resident free memory below this is left alone.
MIN_FREE = 4 << 20

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
        # Opened once: when the process runs out of descriptors, which is
        # when clients pile up, it could not be opened any more.
        self._statm: int | None = None
        # Resident size and malloc's bytes in use at the last trim (or the
        # start).
        self._rss = 0
        self._used = 0
        #: Times memory was handed back.
        self.trims = 0

    def start(self) -> None:
        """Start checking, on the current loop (idempotent)."""
        if _LIBC is None or self._timer is not None:
            return
        try:
            self._statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # no procfs: nothing to go by
        self._rss, self._used = self._resident(), _LIBC.mallinfo2().uordblks
        self._timer = PeriodicCallback(self._check, _CHECK_INTERVAL_MS)
        self._timer.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self._statm is not None:
            os.close(self._statm)
            self._statm = None

    def _resident(self) -> int:
        assert self._statm is not None
        return int(os.pread(self._statm, 128, 0).split()[1]) * _PAGE

    def _check(self) -> None:
        self.check()

    def check(self) -> bool:
        """Trim now if enough freed memory is resident; True if it did."""
        if _LIBC is None or self._statm is None:
            return False
        used = _LIBC.mallinfo2().uordblks
        resident_free = (self._resident() - self._rss) - (used - self._used)
        if resident_free < max(MIN_FREE, used // 8):
            return False
        _LIBC.malloc_trim(0)
        self._rss, self._used = self._resident(), _LIBC.mallinfo2().uordblks
        self.trims += 1
        return True


_PAGE = os.sysconf("SC_PAGE_SIZE")
