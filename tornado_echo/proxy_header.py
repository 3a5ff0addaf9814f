r"""A sans-IO PROXY protocol parser: the header's bytes in, the client's address out.

A load balancer that speaks the `PROXY protocol
<https://github.com/haproxy/haproxy/blob/master/doc/proxy-protocol.txt>`_ (HAProxy's
``send-proxy`` and ``send-proxy-v2``, most cloud network balancers) starts
each connection with a header naming the client it relays, in a text (v1) or
a binary (v2) form. `ProxyHeaderParser` reads either form from whatever bytes
the caller hands it and never does any I/O, so the same object serves a
socket, a stream or a test fixture, however the input is split.

`ProxyHeaderParser.receive` takes only the header's own bytes and says how
many it took; everything after the header belongs to the application. A
driver can therefore peek at the socket (``MSG_PEEK``), feed what it saw and
then ``recv`` exactly the count returned, leaving the rest (a TLS
handshake, say) in the socket untouched:

>>> parser = ProxyHeaderParser()
>>> data = b"PROXY TCP4 203.0.113.7 198.51.100.1 4242 443\r\nGET / HTTP/1.1\r\n"
>>> parser.receive(data)
46
>>> header = parser.header
>>> header.family, header.source, header.destination
('TCP4', ('203.0.113.7', 4242), ('198.51.100.1', 443))
>>> data[46:]
b'GET / HTTP/1.1\r\n'
>>> v2 = ProxyHeaderParser()
>>> v2.receive(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x12")
16
>>> v2.receive(b"\xcb\x00\x71\x07\xc6\x33\x64\x01\x10\x92\x01\xbb")
12
>>> v2.receive(b"\x02\x00\x03abc")
6
>>> v2.header.source, v2.header.authority
(('203.0.113.7', 4242), 'abc')

Bytes that cannot begin a valid header raise `ProxyHeaderError` at once
(``GET /`` fails on its first byte), so a client that does not speak the
protocol is turned away without waiting for a timeout. While a header is
incomplete the parser holds at most `V1_MAX_LENGTH` bytes of a v1 line, or
16 bytes plus ``max_v2_payload`` of a v2 header.

Which peers may send a header at all is the caller's business: the
protocol lets whoever sends it claim any address.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

from tornado_echo._crc32c import crc32c
from tornado_echo.errors import Error

__all__ = [
    "V1_MAX_LENGTH",
    "V2_MAX_PAYLOAD",
    "ProxyHeader",
    "ProxyHeaderError",
    "ProxyHeaderParser",
]

#: v1: the longest header, CRLF included, is 107 bytes (the spec's own bound,
#: for ``PROXY UNKNOWN`` followed by two full IPv6 addresses and two ports).
V1_MAX_LENGTH: Final = 107

#: v2: the 16-byte fixed part is followed by at most this many bytes of
#: addresses and TLVs. The length field allows 65535, but the spec expects
#: the whole header to fit in one segment, and the most HAProxy sends (unix
#: addresses, ALPN, SNI, a 128-byte unique ID, the SSL TLV with its short
#: strings and a checksum) stays near 1.2 KiB. 2 KiB leaves room for a few
#: custom TLVs (AWS adds one) while keeping what a stalled or hostile peer
#: can make us hold small; raise ``max_v2_payload`` for larger ones.
V2_MAX_PAYLOAD: Final = 2048

_V1_PREFIX: Final = b"PROXY "
_V1_PROTOCOLS: Final = (b"TCP4", b"TCP6", b"UNKNOWN")
# "PROXY ", the longest protocol name and the space or CR after it: the
# part of a line checked as it arrives.
_V1_CHECKED_EARLY: Final = len(_V1_PREFIX) + 8
_V1_TEXT: Final = bytes(range(0x20, 0x7F)) + b"\r\n"
_V1_PORT: Final = re.compile(r"0|[1-9][0-9]{0,4}")

_V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED: Final = 16
_V2_LOCAL: Final = 0x0
_V2_PROXY: Final = 0x1
_V2_UNSPEC: Final = 0x0  # transport protocol
_V2_DGRAM: Final = 0x2
_AF_UNSPEC: Final = 0x0
_AF_INET: Final = 0x1
_AF_UNIX: Final = 0x3
# Address family nibble -> (name, size of the address block).
_V2_FAMILIES: Final = {
    _AF_UNSPEC: ("AF_UNSPEC", 0),
    _AF_INET: ("AF_INET", 12),
    0x2: ("AF_INET6", 36),
    _AF_UNIX: ("AF_UNIX", 216),
}
_UNIX_PATH: Final = 108

_PP2_TYPE_ALPN: Final = 0x01
_PP2_TYPE_AUTHORITY: Final = 0x02
_PP2_TYPE_CRC32C: Final = 0x03
_PP2_TYPE_UNIQUE_ID: Final = 0x05
_PP2_TYPE_SSL: Final = 0x20
_PP2_CLIENT_SSL: Final = 0x01


class ProxyHeaderError(Error, ValueError):
    """The bytes are not a valid PROXY header; the message says why.

    .. versionadded:: 0.3.0
    """


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed PROXY header.

    ``local`` means the header names no client: a v2 ``LOCAL`` command (the
    balancer's own health check), a v1 ``PROXY UNKNOWN`` line, or a v2
    ``PROXY`` command for an unspecified family or transport. The caller
    should then use the connection's real endpoints; ``family`` is
    ``"UNSPEC"`` and both addresses are None.

    Otherwise ``family`` is ``"TCP4"`` or ``"TCP6"``, with ``(host, port)``
    addresses (the host in its compressed form, as `ipaddress` prints it),
    or ``"UNIX"`` (v2 only), with paths: an abstract socket name is shown
    as ``"@name"``, an unnamed socket as ``""``. Paths are decoded as UTF-8
    with ``surrogateescape``, like `os.fsdecode` on Linux.

    ``tlvs`` holds a v2 header's type-length-value fields in order, raw,
    unknown types included.

    .. versionadded:: 0.3.0
    """

    version: int
    local: bool
    family: str
    source: tuple[str, int] | str | None
    destination: tuple[str, int] | str | None
    tlvs: tuple[tuple[int, bytes], ...] = ()

    def tlv(self, kind: int) -> bytes | None:
        """The value of the first TLV of type ``kind``, or None."""
        for tlv_kind, value in self.tlvs:
            if tlv_kind == kind:
                return value
        return None

    @property
    def alpn(self) -> bytes | None:
        """The application protocol the client negotiated (``b"h2"``), if sent."""
        return self.tlv(_PP2_TYPE_ALPN)

    @property
    def authority(self) -> str | None:
        """The host name the client asked for (TLS SNI), if sent.

        Decoded as UTF-8; invalid bytes become U+FFFD rather than an error,
        as the name is informative only.
        """
        value = self.tlv(_PP2_TYPE_AUTHORITY)
        return None if value is None else value.decode("utf-8", "replace")

    @property
    def unique_id(self) -> bytes | None:
        """The balancer's opaque ID for this connection, if sent."""
        return self.tlv(_PP2_TYPE_UNIQUE_ID)

    @property
    def ssl(self) -> bool:
        """True if the client reached the balancer over SSL/TLS."""
        value = self.tlv(_PP2_TYPE_SSL)
        return bool(value and value[0] & _PP2_CLIENT_SSL)


class ProxyHeaderParser:
    r"""Reads one PROXY header, v1 or v2, from bytes fed to `receive`.

    It takes exactly the header's bytes and never one more. Once the header
    is complete, `header` holds it and `receive` takes nothing; once
    `receive` has raised `ProxyHeaderError`, it raises it again on every
    call. ``max_v2_payload`` (0 to 65535) caps the v2 length field; see
    `V2_MAX_PAYLOAD`.

    >>> parser = ProxyHeaderParser()
    >>> parser.receive(b"PROXY TCP6 2001:db8::7 ")  # incomplete: all taken
    23
    >>> parser.done, parser.buffered
    (False, 23)
    >>> parser.receive(b"2001:db8::1 4242 443\r\nHELLO")
    22
    >>> parser.header.source
    ('2001:db8::7', 4242)
    >>> ProxyHeaderParser().receive(b"HELLO")
    Traceback (most recent call last):
      ...
    tornado_echo.proxy_header.ProxyHeaderError: not a PROXY protocol header (it starts with b'HELLO')

    .. versionadded:: 0.3.0
    """

    __slots__ = ("_buf", "_error", "_header", "_max_v2_payload", "_total", "_version")

    def __init__(self, *, max_v2_payload: int = V2_MAX_PAYLOAD) -> None:
        if (
            not isinstance(max_v2_payload, int)
            or isinstance(max_v2_payload, bool)
            or not 0 <= max_v2_payload <= 0xFFFF
        ):
            raise ValueError(
                f"max_v2_payload must be an int from 0 to 65535, not {max_v2_payload!r}"
            )
        self._max_v2_payload = max_v2_payload
        # The header's bytes taken so far; released once it is parsed.
        self._buf = bytearray()
        self._version = 0  # decided by the first byte
        self._total = 0  # v2: the whole header's length, once its fixed part is in
        self._header: ProxyHeader | None = None
        self._error: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_v2_payload={self._max_v2_payload!r})"

    @property
    def max_v2_payload(self) -> int:
        """The most v2 address and TLV bytes accepted after the fixed 16."""
        return self._max_v2_payload

    @property
    def header(self) -> ProxyHeader | None:
        """The parsed header once complete, else None."""
        return self._header

    @property
    def done(self) -> bool:
        """True once the whole header has been received and parsed."""
        return self._header is not None

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete header the parser holds.

        Never more than `V1_MAX_LENGTH` or 16 + `max_v2_payload`; 0 once the
        header is complete or has failed.
        """
        return len(self._buf)

    def receive(self, data: bytes | bytearray | memoryview) -> int:
        """Takes header bytes from the start of ``data``; returns how many.

        Bytes after the header's end are never taken, so the caller can hand
        them to the application (or leave them in the socket). While the
        header is incomplete every byte given is taken, so a caller that
        peeks never sees the same bytes twice. Raises `ProxyHeaderError` as
        soon as the bytes seen cannot start a valid header: a wrong first
        byte at once, a v1 line with no CRLF at its 107th byte, a v2 length
        above ``max_v2_payload`` once the 16 fixed bytes are in. ``b""``
        takes nothing; the end of input is for the caller to act on.
        """
        if self._header is not None:
            return 0
        if self._error is not None:
            raise ProxyHeaderError(self._error)
        if not data:
            return 0
        try:
            if self._version == 0:
                self._version = self._sniff(data)
            if self._version == 1:
                return self._receive_v1(data)
            return self._receive_v2(data)
        except ProxyHeaderError as exc:
            self._error = str(exc)
            self._buf = bytearray()
            raise

    def _sniff(self, data: bytes | bytearray | memoryview) -> int:
        first = data[0]
        if first == _V1_PREFIX[0]:
            return 1
        if first == _V2_SIGNATURE[0]:
            return 2
        raise _not_proxy(bytes(data[:8]))

    # -- v1 -------------------------------------------------------------------

    def _receive_v1(self, data: bytes | bytearray | memoryview) -> int:
        buf = self._buf
        have = len(buf)
        window = bytes(data[: V1_MAX_LENGTH - have])
        end = window.find(b"\n")
        part = window if end < 0 else window[: end + 1]
        if have < _V1_CHECKED_EARLY:
            # Fails fast on anything but "PROXY " and a known protocol,
            # rather than at the end of a line that may never come.
            seen = bytes(buf) + part
            n = min(len(seen), len(_V1_PREFIX))
            if seen[:n] != _V1_PREFIX[:n]:
                raise _not_proxy(seen)
            _check_v1_protocol(seen[len(_V1_PREFIX) :])
        bad = part.translate(None, _V1_TEXT)
        if bad:
            raise ProxyHeaderError(
                f"PROXY v1 header holds {bad[:1]!r}, which is not printable US-ASCII"
            )
        # Seen one chunk at a time, the line's only CR must be followed by
        # its LF, and its LF preceded by that CR. A CR ending this chunk may
        # still get its LF from the next; the previous chunk's last byte is
        # looked at again for the same reason.
        tail = bytes(buf[-1:]) + part
        if tail.endswith(b"\r"):
            tail = tail[:-1]
        stray = tail.replace(b"\r\n", b"")
        if b"\r" in stray or b"\n" in stray:
            raise ProxyHeaderError(
                "PROXY v1 header has a CR or LF on its own; it must end with CRLF"
            )
        if end < 0:
            if have + len(part) >= V1_MAX_LENGTH:
                raise ProxyHeaderError(
                    f"PROXY v1 header longer than {V1_MAX_LENGTH} bytes"
                )
            buf += part
            return len(part)
        line = bytes(buf) + part
        self._buf = bytearray()
        self._header = _parse_v1(line[:-2].decode("ascii"))
        return len(part)

    # -- v2 -------------------------------------------------------------------

    def _receive_v2(self, data: bytes | bytearray | memoryview) -> int:
        buf = self._buf
        taken = 0
        if len(buf) < _V2_FIXED:
            fixed = data[: _V2_FIXED - len(buf)]
            buf += fixed
            taken = len(fixed)
            # At most 16 bytes, so checking them all again costs nothing.
            self._total = _check_v2_fixed(bytes(buf), self._max_v2_payload)
            if len(buf) < _V2_FIXED:
                return taken
        rest = data[taken : taken + self._total - len(buf)]
        buf += rest
        taken += len(rest)
        if len(buf) == self._total:
            header = bytes(buf)
            self._buf = bytearray()
            self._header = _parse_v2(header)
        return taken


def _not_proxy(seen: bytes) -> ProxyHeaderError:
    return ProxyHeaderError(
        f"not a PROXY protocol header (it starts with {seen[:8]!r})"
    )


def _check_v1_protocol(field: bytes) -> None:
    name = field.split(b" ", 1)[0].split(b"\r", 1)[0]
    if len(name) < len(field):  # the whole protocol name is in
        if name in _V1_PROTOCOLS:
            return
    elif any(protocol.startswith(name) for protocol in _V1_PROTOCOLS):
        return
    raise _v1_bad_protocol(name)


def _v1_bad_protocol(name: bytes) -> ProxyHeaderError:
    return ProxyHeaderError(
        f"PROXY v1 header names protocol {name[:8].decode('ascii', 'replace')!r}, "
        "not TCP4, TCP6 or UNKNOWN"
    )


def _check_v2_fixed(fixed: bytes, max_payload: int) -> int:
    """Checks up to 16 bytes of a v2 header; returns its length once known."""
    n = min(len(fixed), len(_V2_SIGNATURE))
    if fixed[:n] != _V2_SIGNATURE[:n]:
        raise _not_proxy(fixed)
    if len(fixed) <= 12:
        return 0
    version, command = fixed[12] >> 4, fixed[12] & 0xF
    if version != 2:
        raise ProxyHeaderError(
            f"PROXY v2 header has version {version}; only 2 is defined"
        )
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderError(
            f"PROXY v2 header has command {command:#x}; "
            "only LOCAL (0x0) and PROXY (0x1) are defined"
        )
    if len(fixed) <= 13:
        return 0
    family, protocol = fixed[13] >> 4, fixed[13] & 0xF
    if family not in _V2_FAMILIES:
        raise ProxyHeaderError(
            f"PROXY v2 header has address family {family:#x}; "
            "only 0x0 to 0x3 are defined"
        )
    if protocol > _V2_DGRAM:
        raise ProxyHeaderError(
            f"PROXY v2 header has transport protocol {protocol:#x}; "
            "only 0x0 to 0x2 are defined"
        )
    # LOCAL ignores the family, so a DGRAM one is merely odd.
    if command == _V2_PROXY and protocol == _V2_DGRAM:
        raise ProxyHeaderError(
            "PROXY v2 header is for a datagram connection; "
            "only stream (TCP/unix) connections are supported"
        )
    if len(fixed) < _V2_FIXED:
        return 0
    length = int.from_bytes(fixed[14:16], "big")
    if length > max_payload:
        raise ProxyHeaderError(
            f"PROXY v2 header announces {length} bytes of addresses and TLVs, "
            f"more than the limit of {max_payload}"
        )
    name, size = _V2_FAMILIES[family]
    # LOCAL's addresses are skipped, whatever their size.
    if command == _V2_PROXY and length < size:
        raise ProxyHeaderError(
            f"PROXY v2 address block too short for {name} ({length} bytes, not {size})"
        )
    return _V2_FIXED + length


def _parse_v1(text: str) -> ProxyHeader:
    # `text` is the printable ASCII line without its CRLF, starting "PROXY ".
    if text == "PROXY UNKNOWN" or text.startswith("PROXY UNKNOWN "):
        # The spec has the receiver ignore whatever follows UNKNOWN.
        return ProxyHeader(1, True, "UNSPEC", None, None)
    fields = text.split(" ")
    family = fields[1]
    assert family in ("TCP4", "TCP6")  # checked as the line arrived
    if "" in fields:
        raise ProxyHeaderError(
            "PROXY v1 header fields must be separated by single spaces"
        )
    if len(fields) != 6:
        raise ProxyHeaderError(
            f"PROXY v1 {family} header has {len(fields)} fields, not 6 "
            "(PROXY, protocol, two addresses, two ports)"
        )
    _, _, src, dst, sport, dport = fields
    return ProxyHeader(
        1,
        False,
        family,
        (_v1_address(family, "source", src), _v1_port("source", sport)),
        (_v1_address(family, "destination", dst), _v1_port("destination", dport)),
    )


def _v1_address(family: str, role: str, text: str) -> str:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    try:
        if family == "TCP4":
            # Rejects leading zeros, as the spec does ("octal confusion").
            ip = ipaddress.IPv4Address(text)
        elif "%" in text:
            # A scope ID ("fe80::1%eth0") means nothing on the receiver.
            raise ValueError(text)
        else:
            ip = ipaddress.IPv6Address(text)
    except ValueError:
        version = "IPv4" if family == "TCP4" else "IPv6"
        raise ProxyHeaderError(
            f"PROXY v1 {family} header's {role} address {text!r} "
            f"is not an {version} address"
        ) from None
    return str(ip)


def _v1_port(role: str, text: str) -> int:
    if _V1_PORT.fullmatch(text) is None or int(text) > 0xFFFF:
        raise ProxyHeaderError(
            f"PROXY v1 header's {role} port {text!r} is not a number "
            "from 0 to 65535 without leading zeros"
        )
    return int(text)


def _parse_v2(header: bytes) -> ProxyHeader:
    # The fixed part was checked as it arrived, and len(header) matches it.
    command = header[12] & 0xF
    family, protocol = header[13] >> 4, header[13] & 0xF
    size = _V2_FAMILIES[family][1]
    payload = header[_V2_FIXED:]
    if command == _V2_LOCAL and len(payload) < size:
        # The spec has the receiver skip LOCAL's addresses whatever the
        # family says, and senders should send none; without room for the
        # family's block there is nothing to tell addresses from TLVs, so
        # all of it is skipped.
        size = len(payload)
    tlvs = _parse_tlvs(header, _V2_FIXED + size)
    if command == _V2_LOCAL or family == _AF_UNSPEC or protocol == _V2_UNSPEC:
        # LOCAL: the balancer's own connection. UNSPEC: the spec lets the
        # receiver use the real endpoints and ignore the addresses.
        return ProxyHeader(2, True, "UNSPEC", None, None, tlvs)
    source: tuple[str, int] | str
    destination: tuple[str, int] | str
    if family == _AF_UNIX:
        name = "UNIX"
        source = _unix_path(payload[:_UNIX_PATH])
        destination = _unix_path(payload[_UNIX_PATH : 2 * _UNIX_PATH])
    else:
        name, width = ("TCP4", 4) if family == _AF_INET else ("TCP6", 16)
        ports = payload[2 * width : 2 * width + 4]
        source = (
            str(ipaddress.ip_address(payload[:width])),
            int.from_bytes(ports[:2], "big"),
        )
        destination = (
            str(ipaddress.ip_address(payload[width : 2 * width])),
            int.from_bytes(ports[2:], "big"),
        )
    return ProxyHeader(2, False, name, source, destination, tlvs)


def _unix_path(field: bytes) -> str:
    if field[:1] == b"\x00" and field.strip(b"\x00"):
        # Linux abstract names start with NUL and may hold more; only the
        # padding after them is dropped. "@name" is how ss(8) prints them.
        raw = b"@" + field[1:].rstrip(b"\x00")
    else:
        raw = field.split(b"\x00", 1)[0]
    return raw.decode("utf-8", "surrogateescape")


def _parse_tlvs(header: bytes, start: int) -> tuple[tuple[int, bytes], ...]:
    tlvs = []
    checksum_at = -1
    end = len(header)
    position = start
    while position < end:
        if end - position < 3:
            raise ProxyHeaderError(
                "PROXY v2 header ends inside a TLV's 3-byte type and length"
            )
        kind = header[position]
        length = int.from_bytes(header[position + 1 : position + 3], "big")
        position += 3
        if position + length > end:
            raise ProxyHeaderError(
                f"PROXY v2 TLV of type {kind:#04x} runs past the end of the header"
            )
        value = header[position : position + length]
        if kind == _PP2_TYPE_CRC32C:
            if length != 4:
                raise ProxyHeaderError(
                    f"PROXY v2 CRC32C TLV holds {length} bytes, not 4"
                )
            if checksum_at >= 0:
                # Each checksum would have to cover the other's value.
                raise ProxyHeaderError("PROXY v2 header holds two CRC32C TLVs")
            checksum_at = position
        elif kind == _PP2_TYPE_SSL and length < 5:
            raise ProxyHeaderError(
                f"PROXY v2 SSL TLV holds {length} bytes, "
                "fewer than its client and verify fields"
            )
        tlvs.append((kind, value))
        position += length
    if checksum_at >= 0:
        expected = int.from_bytes(header[checksum_at : checksum_at + 4], "big")
        zeroed = header[:checksum_at] + bytes(4) + header[checksum_at + 4 :]
        if crc32c(zeroed) != expected:
            raise ProxyHeaderError("PROXY v2 header fails its CRC32C check")
    return tuple(tlvs)
