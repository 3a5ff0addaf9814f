"""`HalfCloseIOStream`: an `.IOStream` that can still write after the peer's FIN.

`.IOStream` has no half-close: when ``recv`` returns 0 it closes the whole
socket, so nothing can be written after the client's FIN. A line protocol
often has something left to say then: a reply to the unterminated tail, or
the tail itself when echoing. `BaseIOStream` documents ``read_from_fd`` and
``close_fd`` as the methods a subclass provides; this one uses them to notice
the FIN and to keep the socket open when that is why the stream closed.
Later writes go through a fresh `.IOStream` on the same socket.
`~HalfClosingStream.end` closes both, and `~HalfClosingStream.finish` ends
a conversation without losing what the peer has yet to read.
`HalfClosingStream` holds this part, which `.TLSStream` shares.

The same two documented hooks, plus `~HalfCloseIOStream.write`, also take
the two costs off an echo's hot path that need no knowledge of Tornado's
internals:

* after a read that returned less than was asked for, the socket is empty,
  so the next read does not call ``recv`` just to get ``EAGAIN`` (and an
  exception): it waits for the READ event, which a level-triggered poller
  delivers as soon as data arrives;
* a write with nothing queued before it goes straight to ``send``, and if
  the kernel took it all, the returned `.Future` is already resolved,
  without Tornado's write buffer and bookkeeping.

``tornado_echo._fastpath`` goes further on the Tornado versions it was
checked against.
"""

from __future__ import annotations

import asyncio
import socket
from asyncio import Future
from collections.abc import Awaitable, Callable
from typing import Any

from tornado.iostream import IOStream, StreamClosedError

from tornado_echo._fairness import next_turn
from tornado_echo._logs import is_peer_gone
from tornado_echo._readiness import pending_error

__all__ = [
    "ChunkReader",
    "CountingIOStream",
    "HalfCloseIOStream",
    "HalfClosingStream",
    "chunk_reader",
]

# The first buffer of `HalfCloseIOStream.read_chunk`: small, because a
# waiting read holds it for as long as the client stays silent.
_FIRST_CHUNK = 2048


class CountingIOStream(IOStream):
    """An `.IOStream` that counts the bytes it moves through its socket.

    The counters feed the server's `.ServerStats` and its idle and write
    timeouts: two integer additions per ``recv`` or ``send``.

    .. versionadded:: 0.3.0
    """

    __slots__ = (
        "address",
        "bytes_in",
        "bytes_out",
        "proxy_header",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The peer's address, as the server was given it (set by the server).
        self.address: Any = None
        #: The connection's PROXY protocol header (a `.ProxyHeader`, with its
        #: TLVs), when the server reads one; else None.
        self.proxy_header: Any = None
        #: Bytes received from the peer so far.
        self.bytes_in = 0
        #: Bytes sent to the peer so far.
        self.bytes_out = 0

    def read_from_fd(self, buf: bytearray | memoryview) -> int | None:
        count = super().read_from_fd(buf)
        if count:
            self.bytes_in += count
        return count

    def write_to_fd(self, data: memoryview) -> int:
        sent = super().write_to_fd(data)
        self.bytes_out += sent
        return sent

    def close(self, exc_info: Any = False) -> None:
        super().close(exc_info)
        error = self.error
        if error is not None and is_peer_gone(error):
            # The stream keeps its error, and the error's traceback keeps
            # the frames that raised it, which keep the stream: a cycle
            # that only a full collection frees, with the socket and the
            # buffers in it. A reset's traceback is never logged.
            error.__traceback__ = None
            error.__context__ = error.__cause__ = None


class HalfClosingStream(CountingIOStream):
    """The half-close machinery that `HalfCloseIOStream` and `.TLSStream` share.

    After a read fails with a clean `.StreamClosedError` because the peer
    ended its side (FIN, or a TLS 1.3 ``close_notify``), `peer_closed` is
    true and `write` still works: the socket is kept for a fresh stream of
    ``_write_side_class``. `end` closes that too, and `finish` ends a
    conversation without losing what the peer has yet to read.
    """

    __slots__ = ("_ended", "_write_side", "peer_closed")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: True once the peer has half-closed (sent FIN); writes still work.
        self.peer_closed = False
        self._write_side: IOStream | None = None
        self._ended = False

    def _write_side_class(self) -> type[IOStream]:
        """The stream class that writes after the peer's end of input."""
        return IOStream

    def _end_writing(self) -> None:
        """Tell the peer that we are done sending."""
        self.socket.shutdown(socket.SHUT_WR)

    def close_fd(self) -> None:
        if self.peer_closed and self.error is None and not self._ended:
            # Only our direction is left; the stream removed its IOLoop
            # handler before calling us, so a new stream may take the socket.
            self._write_side = self._write_side_class()(self.socket)
            self.socket = None  # type: ignore[assignment]
        else:
            super().close_fd()

    def _write_after_eof(self, data: bytes | memoryview) -> Future[None]:
        assert self._write_side is not None
        # Counted when queued: the write side counts nothing of its own.
        self.bytes_out += len(data)
        return self._write_side.write(data)

    def write(self, data: bytes | memoryview) -> Future[None]:
        """Send ``data``, as `.IOStream.write` does, even after the peer's end."""
        if self._write_side is not None:
            return self._write_after_eof(data)
        return super().write(data)

    async def finish(self, linger: float) -> None:
        """End the conversation without losing what the peer has yet to read.

        Closing a socket that still has unread input makes the kernel send
        a reset, which throws away whatever the peer has not read yet. So
        when the peer has not half-closed: send our end (FIN) after the
        queued data, then read and drop its input until it closes too, for
        at most ``linger`` seconds. Then close, the write side included.
        """
        if not self.closed() and not self.peer_closed:
            try:
                self._end_writing()
                async with asyncio.timeout(linger):
                    while True:
                        await self.read_bytes(self.read_chunk_size, partial=True)
            except (OSError, StreamClosedError, TimeoutError):
                pass  # closed by the peer (the goal), reset, or out of time
        # An abandoned read leaves the stream unusable: close in every case.
        self.end()

    def end(self) -> None:
        """Close for good: the stream, and the write side kept after the peer's end.

        The one way a conversation ends, after the last write (`finish`
        calls it): idempotent.
        """
        if not self.closed():
            self._ended = True  # close_fd must not keep the socket now
            super().close()
        write_side, self._write_side = self._write_side, None
        if write_side is not None:
            write_side.close()

    def close(self, exc_info: Any = False) -> None:
        """Close the stream, as `.IOStream.close` does.

        Tornado itself calls this at the peer's end of input, and then the
        socket is kept for writing (`peer_closed`). Called on a stream that
        is closed already (by the timeout sweep, say), it is `end`.
        """
        if self.closed():
            self.end()
            return
        super().close(exc_info)


class HalfCloseIOStream(HalfClosingStream):
    """An `.IOStream` that keeps its socket writable after the peer half-closes.

    After a read fails with a clean `.StreamClosedError` because the peer
    sent FIN, `~HalfClosingStream.peer_closed` is true and `write` still
    works. `~HalfClosingStream.close`, or `~HalfClosingStream.finish`,
    releases the socket. A reset or a local close before the
    FIN closes the socket as usual.

    .. versionadded:: 0.2.0
    """

    # Slots, not instance attributes: `.IOStream` already sets 27, and a
    # few more would push its instance dict past the 30 keys a shared-key
    # dict holds, costing about 1.5 KB per connection.
    __slots__ = ("_after_others", "_answered", "_chunk_buffer", "_drained", "_written")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The last recv returned less than asked: the kernel had no more.
        self._drained = False
        # See read_chunk(after_others=True).
        self._after_others = False
        # A send went through since the last recv that returned data; see
        # `_unreported_error`.
        self._answered = False
        self._chunk_buffer: bytearray | None = None
        self._written: Future[None] | None = None

    def read_chunk(
        self, max_bytes: int, *, after_others: bool = False
    ) -> Awaitable[bytes]:
        """Read what has arrived: at least one byte, at most ``max_bytes``.

        The same as ``read_bytes(max_bytes, partial=True)``, without the
        fresh, zero-filled ``read_chunk_size`` buffer `.IOStream` allocates
        for every ``recv`` (two per short read): the bytes are read into a
        buffer this stream keeps, which starts small and doubles, up to
        ``max_bytes``, whenever a read fills it.

        With ``after_others``, the read waits for the poller's READ event
        even if bytes are there already, so that every other ready
        connection is served first (``tornado_echo._fairness``).

        .. versionadded:: 0.3.0
        """
        return self._read_chunk(max_bytes, after_others)

    async def _read_chunk(self, max_bytes: int, after_others: bool) -> bytes:
        buf = self._chunk_buffer
        if buf is None or len(buf) > max_bytes:
            buf = self._chunk_buffer = bytearray(min(_FIRST_CHUNK, max_bytes))
        # Not a local: the future keeps the error it fails with, whose
        # traceback would keep this frame, and so the future: a cycle.
        count = await self._read_into(buf, after_others)
        with memoryview(buf) as view:
            data = view[:count].tobytes()
        if count == len(buf) < max_bytes:
            self._chunk_buffer = bytearray(min(2 * count, max_bytes))
        return data

    def _read_into(self, buf: bytearray, after_others: bool) -> Awaitable[int]:
        # The flag covers only the inline attempt, made inside this call.
        self._after_others = after_others
        try:
            return self.read_into(buf, partial=True)
        finally:
            self._after_others = False

    def read_from_fd(self, buf: bytearray | memoryview) -> int | None:
        if not self.reading() and self.writing():
            # Tornado reads ahead, a chunk into a buffer of its own, when
            # READ fires with no read pending. Not while a write waits: the
            # awaited write is the backpressure, and a client that does not
            # read would cost a second chunk. Tornado then drops READ
            # interest until a read is asked for, so nothing spins.
            return None
        if self._drained or self._after_others:
            # This recv would fail with EAGAIN (or others go first). Skip
            # it: the stream then waits for READ, which arrives at once if
            # data is there.
            self._drained = False
            error = self._unreported_error()
            if error is not None:
                self.close(exc_info=error)
            return None
        count = super().read_from_fd(buf)
        if count == 0:
            self.peer_closed = True
        elif count is not None:
            self._drained = count < len(buf)
            self._answered = False
        return count

    def _unreported_error(self) -> OSError | None:
        """An error that no READ event may ever report, before one is awaited.

        uvloop stops polling a socket after an error event
        (``tornado_echo._readiness``), so a reset that arrived with the last
        bytes read would never be seen. A send since that read would have
        failed on it, so the socket is asked only when the read went
        unanswered (a partial line, say).
        """
        if self._answered:
            return None
        # Not get_fd_error(): it returns an error even when there is none.
        return pending_error(self.socket)

    def write(self, data: bytes | memoryview) -> Future[None]:
        """Send ``data``, as `.IOStream.write` does, even after the peer's FIN.

        With nothing queued before it, the data goes straight to ``send``;
        if the kernel takes it all, the returned `.Future` is already done.
        """
        if self._write_side is not None:
            return self._write_after_eof(data)
        if data and not self.writing() and not self.closed():
            if isinstance(data, memoryview):
                data = data.cast("B")  # so that len() counts bytes
            try:
                sent = self.socket.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = -1
            if sent < 0:
                # Let the stream see the error itself, and close and log
                # exactly as it always does (outside the except block, so
                # that its error does not chain ours, and its frames).
                return self._write_later(data)
            # Even EAGAIN says that no error is pending.
            self._answered = True
            self.bytes_out += sent
            if sent == len(data):
                done = self._written
                if done is None:
                    # One finished future, handed out for every write the
                    # kernel takes whole: a done future can be awaited any
                    # number of times, and a fresh one per reply is the most
                    # an echo allocates.
                    done = self._written = Future()
                    done.set_result(None)
                return done
            data = memoryview(data)[sent:]
        return self._write_later(data)

    def _write_later(self, data: bytes | memoryview) -> Future[None]:
        """Queue ``data`` in the stream's write buffer, as `.IOStream` does."""
        return IOStream.write(self, data)


#: ``read(max_bytes, after_others)``: see `chunk_reader`.
ChunkReader = Callable[[int, bool], Awaitable[bytes]]


def chunk_reader(stream: IOStream) -> ChunkReader:
    """``read(max_bytes, after_others)`` for ``stream``.

    `HalfCloseIOStream.read_chunk` if it has it. Else (a TLS stream)
    ``read_bytes(max_bytes, partial=True)``, after `.next_turn` if
    ``after_others``: OpenSSL's own buffer may hold the bytes, so the read
    cannot be left to the poller.
    """
    if isinstance(stream, HalfCloseIOStream):
        read_chunk = stream.read_chunk

        def read_plain(max_bytes: int, after_others: bool) -> Awaitable[bytes]:
            return read_chunk(max_bytes, after_others=after_others)

        return read_plain

    async def read_tls(max_bytes: int, after_others: bool) -> bytes:
        if after_others:
            await next_turn()
        return await stream.read_bytes(max_bytes, partial=True)

    return read_tls
