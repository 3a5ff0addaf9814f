"""`HalfCloseIOStream`: an `.IOStream` that can still write after the peer's FIN.

`.IOStream` has no half-close: when ``recv`` returns 0 it closes the whole
socket, so nothing can be written after the client's FIN. A line protocol
often has something left to say then: a reply to the unterminated tail, or
the tail itself when echoing. `BaseIOStream` documents ``read_from_fd`` and
``close_fd`` as the methods a subclass provides; this one uses them to notice
the FIN and to keep the socket open when that is why the stream closed.
Later writes go through a fresh `.IOStream` on the same socket, and a second
`close` releases it.
"""

from __future__ import annotations

from asyncio import Future
from typing import Any

from tornado.iostream import IOStream


class HalfCloseIOStream(IOStream):
    """An `.IOStream` that keeps its socket writable after the peer half-closes.

    After a read fails with a clean `.StreamClosedError` because the peer
    sent FIN, `peer_closed` is true and `write` still works. Call `close`
    (again) when done: that releases the socket. A reset or a local
    `close` before the FIN closes the socket as usual.

    .. versionadded:: 0.2.0
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peer_closed = False
        self._write_side: IOStream | None = None

    def read_from_fd(self, buf: bytearray | memoryview) -> int | None:
        count = super().read_from_fd(buf)
        if count == 0:
            self.peer_closed = True
        return count

    def close_fd(self) -> None:
        if self.peer_closed and self.error is None:
            # Only our direction is left; the stream removed its IOLoop
            # handler before calling us, so a new stream may take the socket.
            self._write_side = IOStream(self.socket)
            self.socket = None  # type: ignore[assignment]
        else:
            super().close_fd()

    def write(self, data: bytes | memoryview) -> Future[None]:
        if self._write_side is not None:
            return self._write_side.write(data)
        return super().write(data)

    def close(self, exc_info: Any = False) -> None:
        if self.closed() and self._write_side is not None:
            self._write_side.close()
            self._write_side = None
            return
        super().close(exc_info)
