"""TLS for the stream servers: a server context with modern defaults, and a
stream that counts its bytes, fails handshakes quietly and ends cleanly.

`server_context` is what ``tornado-echo --certfile ... --keyfile ...``
builds; pass its result as ``ssl_options`` to `.EchoServer` or
`.LineServer` (or as ``ssl_options`` to `.run`).

A failed handshake is ordinary network weather: a port scanner, a client
with the wrong CA, or someone typing plain text at the TLS port. Tornado's
`.SSLIOStream` logs each one as a WARNING; `TLSStream` keeps that line out
of the log, and the server logs one DEBUG line instead.

A TLS connection ends with ``close_notify`` alerts, each side's "I am done
sending". Tornado's stream closes the socket without one, which a client
that checks (as Python's ``ssl`` does with ``suppress_ragged_eofs=False``)
reports as a truncation. `TLSStream` sends ours whenever it ends a session
that is still sound. The client's ``close_notify`` is its end of input:
under TLS 1.3, where each direction closes on its own, the server may still
answer it (the unterminated tail of ``--lines``, `.LineServer.handle_eof`),
as after a TCP half-close; TLS 1.2 requires an immediate ``close_notify``
back, so there the close is final.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any

from tornado.iostream import IOStream, SSLIOStream
from tornado.log import gen_log

from tornado_echo._halfclose import HalfClosingStream
from tornado_echo.errors import Error


class TLSConfigError(Error, ValueError):
    """The certificate, key or CA file cannot be used (one readable sentence)."""


def server_context(
    certfile: str, keyfile: str | None = None, ca_certs: str | None = None
) -> ssl.SSLContext:
    """An `ssl.SSLContext` for a TLS server, with Python's modern defaults.

    ``ssl.create_default_context(Purpose.CLIENT_AUTH)`` gives TLS 1.2 or
    later and the default secure ciphers; we add the certificate chain
    (``keyfile`` may be omitted if ``certfile`` holds the key too). With
    ``ca_certs``, clients must present a certificate signed by one of those
    CAs. Raises `TLSConfigError` with one sentence naming the bad file::

        import tornado_echo
        from tornado_echo.tls import server_context

        tornado_echo.run(port=10443, ssl_options=server_context("cert.pem", "key.pem"))

    .. versionadded:: 0.3.0
    """
    # load_cert_chain's FileNotFoundError does not say which file is missing.
    for path in (certfile, keyfile, ca_certs):
        if path is not None and not os.path.isfile(path):
            raise TLSConfigError(f"no such file: {path}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as exc:
        files = certfile if keyfile is None else f"{certfile} and {keyfile}"
        raise TLSConfigError(
            f"cannot load the certificate and key from {files}: {_reason(exc)}"
        ) from None
    if ca_certs is not None:
        try:
            context.load_verify_locations(cafile=ca_certs)
        except (ssl.SSLError, OSError) as exc:
            reason = (
                "no PEM certificates in it"
                if isinstance(exc, ssl.SSLError)
                else _reason(exc)
            )
            raise TLSConfigError(
                f"cannot load CA certificates from {ca_certs}: {reason}"
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if "MISMATCH" in reason:
            return "the private key does not match the certificate"
        # OpenSSL's "PEM lib" says only that parsing failed; the causes a
        # user can fix are these.
        return (
            "not a PEM certificate chain and private key (is the key in another file?)"
        )
    return getattr(exc, "strerror", None) or str(exc)


class _OurHandshakes(logging.Filter):
    """Drops Tornado's WARNING for a failed handshake on one of our streams.

    A port scan or a plain-text client fails the handshake: our server logs
    that at DEBUG, from the stream's ``error``. The filter recognises the
    record by its message and the descriptor it names (Tornado's
    ``"SSL Error on %s %s: %s"``, fd first), so the warnings of any other
    TLS stream in the process are untouched, and no private method of
    Tornado's is overridden.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fds: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (
            isinstance(args, tuple)
            and args
            and args[0] in self.fds
            and str(record.msg).startswith("SSL Error on")
        )


_OURS = _OurHandshakes()
gen_log.addFilter(_OURS)


class TLSStream(HalfClosingStream, SSLIOStream):
    """The `.SSLIOStream` our servers use.

    It counts bytes; a failed handshake closes it without a WARNING (the
    error is the stream's ``error``, for the server to log at DEBUG); it
    sends ``close_notify`` when it ends a sound session; and under TLS 1.3
    it keeps writing after the peer's ``close_notify``, as
    the plain stream does after a FIN.

    .. versionadded:: 0.3.0
    """

    __slots__ = ("_tls_fd",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tls_fd = self.socket.fileno()
        _OURS.fds.add(self._tls_fd)

    def read_from_fd(self, buf: bytearray | memoryview) -> int | None:
        count = super().read_from_fd(buf)
        # 0 is the peer's close_notify: the socket is wrapped with ragged
        # EOFs reported as errors, so a bare FIN never gets here.
        if count == 0 and self.socket.version() == "TLSv1.3":
            self.peer_closed = True
        return count

    def _write_side_class(self) -> type[IOStream]:
        return TLSStream

    def _end_writing(self) -> None:
        self._send_close_notify()
        super()._end_writing()

    def close_fd(self) -> None:
        # Before the socket is closed, or handed to the write side (which
        # adds it again): a later socket may get the same number.
        _OURS.fds.discard(self._tls_fd)
        if not self.peer_closed and self.error is None:
            self._send_close_notify()
        super().close_fd()

    def _send_close_notify(self) -> None:
        sock = self.socket
        # version() is None until the handshake is done: nothing to end.
        if sock is None or sock.version() is None:
            return
        try:
            # Sends close_notify, then fails for want of the peer's reply
            # (the socket is non-blocking); we need not wait for it.
            sock.unwrap()
        except (OSError, ValueError):
            pass  # not sent (reset, or the buffer full): we close anyway
