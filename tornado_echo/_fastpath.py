"""A faster read path for `.HalfCloseIOStream`, on `.BaseIOStream` internals.

Everything here depends on private details of Tornado's ``iostream.py``
(``_read_future``, ``_read_buffer``, ``_read_buffer_size``, ``_closed``,
``_state``, ``_add_io_state``, ``_handle_events``, ``_write_buffer``,
``_write_futures`` and ``_StreamBuffer``), so it is kept to this one
module, used only on the Tornado versions it was checked against
(`CHECKED_VERSIONS`), and can be switched off with the environment
variable ``TORNADO_ECHO_FASTPATH=0``. Elsewhere `stream_class` returns the
plain `.HalfCloseIOStream`, which uses only documented hooks; the test
suite runs on both.

What it changes, for a `~.HalfCloseIOStream.read_chunk` (or
``read_bytes(n, partial=True)``) with nothing buffered, an echo's every read:

* the bytes come from one ``socket.recv(n)``, with no temporary 64 KiB
  ``bytearray``, no copy into the stream's buffer and no copy out of it;
* if the socket is empty, the read is completed straight from the READ
  event, without Tornado's read loop, which would first ``recv`` into a
  fresh buffer and then search it for the pending read's position.

Any other read (a delimiter, a fixed size, data already buffered) goes
through Tornado unchanged.

It also keeps an idle connection small: a stream's write buffer and its
queue of write futures (two ``deque`` objects, about 1.5 KB together) are
created only when a write cannot be handed to the kernel at once; until
then both are shared, always-empty stand-ins.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Awaitable
from typing import Any

import tornado
from tornado.concurrent import Future
from tornado.ioloop import IOLoop
from tornado.iostream import _StreamBuffer

from tornado_echo._halfclose import HalfCloseIOStream

#: The Tornado (major, minor) versions whose internals this module was read
#: against and tested on.
CHECKED_VERSIONS = frozenset({(6, 5), (6, 6)})

#: Set to ``0`` to force the public-API path.
ENV_VAR = "TORNADO_ECHO_FASTPATH"


# Shared by every stream that has never had to queue a write. Tornado only
# reads them, or clears them when the stream closes, until it appends in
# write(), and `FastPathIOStream._write_later` swaps in real ones first.
_NO_WRITES = _StreamBuffer()
_NO_WRITE_FUTURES: collections.deque[tuple[int, Future[None]]] = collections.deque()


class FastPathIOStream(HalfCloseIOStream):
    """`.HalfCloseIOStream` with partial reads served by ``recv`` directly."""

    __slots__ = ("_pending_read",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The size of the partial read waiting for a READ event, or 0.
        self._pending_read = 0
        self._write_buffer = _NO_WRITES
        self._write_futures = _NO_WRITE_FUTURES

    def _write_later(self, data: bytes | memoryview) -> Future[None]:
        if self._write_futures is _NO_WRITE_FUTURES:
            self._write_buffer = _StreamBuffer()
            self._write_futures = collections.deque()
        return super()._write_later(data)

    def read_bytes(self, num_bytes: int, partial: bool = False) -> Awaitable[bytes]:
        if partial:
            return self.read_chunk(num_bytes)
        return super().read_bytes(num_bytes, partial)

    def read_chunk(
        self, max_bytes: int, *, after_others: bool = False
    ) -> Awaitable[bytes]:
        # No buffer of our own: recv() straight into a new bytes object.
        if (
            max_bytes < 1
            or self._read_buffer_size
            or self._read_future is not None
            or self._closed
        ):
            return super().read_bytes(max_bytes, partial=True)
        future: Future[bytes] = Future()
        self._read_future = future
        if self._drained or after_others:
            # The last recv emptied the socket (see HalfCloseIOStream), or
            # others go first: straight to waiting for READ.
            self._drained = False
            error = self._unreported_error()
            if error is not None:
                self.close(exc_info=error)  # fails the future with it
                return future
        elif self._receive(max_bytes):
            return future
        if not self._closed:
            self._pending_read = max_bytes
            state = self._state
            if state is None or not state & IOLoop.READ:
                self._add_io_state(IOLoop.READ)
        return future

    def _handle_events(self, fd: Any, events: int) -> None:
        size = self._pending_read
        if size and events & IOLoop.READ and not self._closed:
            self._pending_read = 0
            if not self._receive(size) and not self._closed:
                self._pending_read = size  # a spurious wakeup
            events &= ~IOLoop.READ
            if not events:
                return
        super()._handle_events(fd, events)

    def _receive(self, size: int) -> bool:
        """``recv`` for the pending read; True once it is resolved or failed."""
        try:
            data = self.socket.recv(size)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            # Tornado's own treatment: the pending read fails with
            # StreamClosedError(real_error=exc); resets are not logged.
            self.close(exc_info=exc)
            return True
        if not data:
            self.peer_closed = True
            self.close()
            return True
        count = len(data)
        self._drained = count < size
        self._answered = False
        self.bytes_in += count
        future = self._read_future
        self._read_future = None
        assert future is not None
        if future.cancelled():
            # Abandoned (a timeout): keep the bytes for the next read, as
            # Tornado's own buffer would.
            self._read_buffer += data
            self._read_buffer_size += len(data)
        else:
            future.set_result(data)
        return True


def fast_path_enabled() -> bool:
    """True if this Tornado was checked and the fast path is not switched off."""
    if os.environ.get(ENV_VAR, "1") == "0":
        return False
    return tornado.version_info[:2] in CHECKED_VERSIONS


def stream_class() -> type[HalfCloseIOStream]:
    """The stream class our servers use: the fast path where it is safe."""
    return FastPathIOStream if fast_path_enabled() else HalfCloseIOStream
