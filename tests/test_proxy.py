"""Tests for the sans-IO PROXY protocol parser in `tornado_echo.proxy_header`.

Headers are built by the reference encoders below, written from the spec
(HAProxy's doc/proxy-protocol.txt) rather than from the parser, with their
own bit-by-bit CRC-32C.
"""

from __future__ import annotations

import dataclasses
import doctest
import ipaddress
import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tornado_echo import _crc32c, proxy_header
from tornado_echo.proxy_header import (
    V1_MAX_LENGTH,
    V2_MAX_PAYLOAD,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderParser,
)

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
UNIX_PATH = 108

FAST = settings(max_examples=200, deadline=None)

# -- reference encoders ------------------------------------------------------


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) one bit at a time, as RFC 4960 appendix B has it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def endpoint(address: tuple[str, int] | str | None) -> tuple[str, int]:
    assert isinstance(address, tuple)
    return address


def encode_v1(header: ProxyHeader, unknown_tail: str = "") -> bytes:
    if header.local:
        return f"PROXY UNKNOWN{unknown_tail}\r\n".encode("ascii")
    (src, sport), (dst, dport) = endpoint(header.source), endpoint(header.destination)
    return f"PROXY {header.family} {src} {dst} {sport} {dport}\r\n".encode("ascii")


def unix_field(path: tuple[str, int] | str | None) -> bytes:
    assert isinstance(path, str)
    raw = path.encode("utf-8", "surrogateescape")
    if raw.startswith(b"@"):
        raw = b"\x00" + raw[1:]
    assert len(raw) <= UNIX_PATH
    return raw.ljust(UNIX_PATH, b"\x00")


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + len(value).to_bytes(2, "big") + value


def encode_v2(header: ProxyHeader, *, checksum: bool = False) -> bytes:
    """A v2 header; the value of a CRC32C TLV, appended or given, is computed."""
    command = 0x20 if header.local else 0x21
    if header.family == "UNSPEC":
        family, block = 0x00, b""
    elif header.family == "UNIX":
        family = 0x31
        block = unix_field(header.source) + unix_field(header.destination)
    else:
        family = 0x11 if header.family == "TCP4" else 0x21
        (src, sport), (dst, dport) = (
            endpoint(header.source),
            endpoint(header.destination),
        )
        block = (
            ipaddress.ip_address(src).packed
            + ipaddress.ip_address(dst).packed
            + sport.to_bytes(2, "big")
            + dport.to_bytes(2, "big")
        )
    tlvs = list(header.tlvs)
    if checksum:
        tlvs.append((0x03, bytes(4)))
    tlv_bytes = b""
    checksum_at = -1
    for kind, value in tlvs:
        if kind == 0x03 and checksum_at < 0:
            value = bytes(4)
            checksum_at = 16 + len(block) + len(tlv_bytes) + 3
        tlv_bytes += tlv(kind, value)
    payload = block + tlv_bytes
    data = SIGNATURE + bytes([command, family]) + len(payload).to_bytes(2, "big")
    data += payload
    if checksum_at >= 0:
        value = crc32c(data).to_bytes(4, "big")
        data = data[:checksum_at] + value + data[checksum_at + 4 :]
    return data


def v2(
    ver_cmd: int, family: int, payload: bytes = b"", length: int | None = None
) -> bytes:
    size = len(payload) if length is None else length
    return SIGNATURE + bytes([ver_cmd, family]) + size.to_bytes(2, "big") + payload


def ipv4_block(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (
        ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + sport.to_bytes(2, "big")
        + dport.to_bytes(2, "big")
    )


def parse(
    *chunks: bytes, max_v2_payload: int = V2_MAX_PAYLOAD
) -> tuple[ProxyHeader, int]:
    parser = ProxyHeaderParser(max_v2_payload=max_v2_payload)
    taken = sum(parser.receive(chunk) for chunk in chunks)
    assert parser.done and parser.header is not None
    return parser.header, taken


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def error_of(data: bytes, *, max_v2_payload: int = V2_MAX_PAYLOAD) -> str:
    parser = ProxyHeaderParser(max_v2_payload=max_v2_payload)
    with pytest.raises(ProxyHeaderError) as info:
        parser.receive(data)
    return str(info.value)


# -- v1 ----------------------------------------------------------------------


def test_v1_tcp4_is_parsed_and_the_request_after_it_is_left() -> None:
    line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    parser = ProxyHeaderParser()
    assert parser.receive(line + b"GET / HTTP/1.1\r\n") == len(line)
    assert parser.header == ProxyHeader(
        1, False, "TCP4", ("192.168.0.1", 56324), ("192.168.0.11", 443)
    )
    assert parser.done and parser.buffered == 0


def test_v1_tcp6_addresses_are_given_in_compressed_form() -> None:
    line = b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::ffff:c000:201 65535 0\r\n"
    header, taken = parse(line)
    assert taken == len(line)
    # Python 3.13 writes an IPv4-mapped address with a dotted tail; the
    # parser gives whatever form this Python's ipaddress considers canonical.
    mapped = str(ipaddress.ip_address("::ffff:c000:201"))
    assert header == ProxyHeader(1, False, "TCP6", ("2001:db8::1", 65535), (mapped, 0))


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN 1.2.3.4 whatever the sender likes\r\n",
        # The spec's worst case, exactly 107 bytes.
        b"PROXY UNKNOWN "
        + b"ffff:" * 7
        + b"ffff "
        + b"ffff:" * 7
        + b"ffff 65535 65535\r\n",
    ],
)
def test_v1_unknown_has_no_addresses(line: bytes) -> None:
    header, taken = parse(line + b"payload")
    assert taken == len(line) <= V1_MAX_LENGTH
    assert header == ProxyHeader(1, True, "UNSPEC", None, None)


def test_v1_longest_tcp_lines_are_accepted() -> None:
    v4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"
    v6 = b"PROXY TCP6 " + (b"ffff:" * 7 + b"ffff ") * 2 + b"65535 65535\r\n"
    assert (len(v4), len(v6)) == (56, 104)
    assert parse(v4)[0].source == ("255.255.255.255", 65535)
    assert parse(*bytewise(v6))[0].destination == ("ffff:" * 7 + "ffff", 65535)


def test_v1_line_of_106_bytes_waits_and_107th_without_crlf_fails() -> None:
    parser = ProxyHeaderParser()
    start = b"PROXY UNKNOWN " + b"x" * 92
    assert len(start) == V1_MAX_LENGTH - 1
    assert parser.receive(start) == len(start)
    assert parser.buffered == len(start) and not parser.done
    with pytest.raises(
        ProxyHeaderError, match="^PROXY v1 header longer than 107 bytes$"
    ):
        parser.receive(b"x")


def test_v1_cr_as_the_107th_byte_is_still_too_long() -> None:
    parser = ProxyHeaderParser()
    parser.receive(b"PROXY UNKNOWN " + b"x" * 92)
    with pytest.raises(ProxyHeaderError, match="longer than 107"):
        parser.receive(b"\r\n")


V1_ERRORS = [
    (b"GET / HTTP/1.1\r\n", "not a PROXY protocol header (it starts with b'GET / HT')"),
    (b"PROXZ", "not a PROXY protocol header (it starts with b'PROXZ')"),
    (b"PROXY\r\n", "not a PROXY protocol header (it starts with b'PROXY\\r\\n')"),
    (
        b"PROXY TCP5 1.2.3.4",
        "PROXY v1 header names protocol 'TCP5', not TCP4, TCP6 or UNKNOWN",
    ),
    (
        b"PROXY UNKNOWNX\r\n",
        "PROXY v1 header names protocol 'UNKNOWNX', not TCP4, TCP6 or UNKNOWN",
    ),
    (
        b"PROXY  TCP4 1.2.3.4",
        "PROXY v1 header names protocol '', not TCP4, TCP6 or UNKNOWN",
    ),
    (
        b"PROXY TCP4\r\n",
        (
            "PROXY v1 TCP4 header has 2 fields, not 6 "
            "(PROXY, protocol, two addresses, two ports)"
        ),
    ),
    (
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        (
            "PROXY v1 TCP4 header has 7 fields, not 6 "
            "(PROXY, protocol, two addresses, two ports)"
        ),
    ),
    (
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        "PROXY v1 header fields must be separated by single spaces",
    ),
    (
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
        "PROXY v1 header fields must be separated by single spaces",
    ),
    (
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        "PROXY v1 header has a CR or LF on its own; it must end with CRLF",
    ),
    (
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
        "PROXY v1 header has a CR or LF on its own; it must end with CRLF",
    ),
    (
        b"PROXY TCP4 1.2.3.4\r5.6.7.8",
        "PROXY v1 header has a CR or LF on its own; it must end with CRLF",
    ),
    (
        b"PROXY TCP4 1.2.3.4\x005.6.7.8",
        "PROXY v1 header holds b'\\x00', which is not printable US-ASCII",
    ),
    (
        b"PROXY UNKNOWN caf\xc3\xa9\r\n",
        "PROXY v1 header holds b'\\xc3', which is not printable US-ASCII",
    ),
    (
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        "PROXY v1 TCP4 header's source address '::1' is not an IPv4 address",
    ),
    (
        b"PROXY TCP4 1.2.3.4 5.6.7 1 2\r\n",
        "PROXY v1 TCP4 header's destination address '5.6.7' is not an IPv4 address",
    ),
    (
        # Leading zeros could be read as octal; the spec forbids them.
        b"PROXY TCP4 010.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY v1 TCP4 header's source address '010.2.3.4' is not an IPv4 address",
    ),
    (
        b"PROXY TCP6 ::1 1.2.3.4 1 2\r\n",
        "PROXY v1 TCP6 header's destination address '1.2.3.4' is not an IPv6 address",
    ),
    (
        b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
        "PROXY v1 TCP6 header's source address 'fe80::1%eth0' is not an IPv6 address",
    ),
    (
        b"PROXY TCP6 ::1 ::g 1 2\r\n",
        "PROXY v1 TCP6 header's destination address '::g' is not an IPv6 address",
    ),
]
V1_PORT_ERRORS = [
    (
        port,
        (
            f"PROXY v1 header's {role} port {port!r} is not a number "
            "from 0 to 65535 without leading zeros"
        ),
    )
    for port in ["00", "080", "+80", "-1", "65536", "99999", "123456", "8_0", "0x50"]
    for role in ["source", "destination"]
]


@pytest.mark.parametrize(("data", "message"), V1_ERRORS)
def test_v1_errors_say_why(data: bytes, message: str) -> None:
    assert error_of(data) == message


@pytest.mark.parametrize(("port", "message"), V1_PORT_ERRORS)
def test_v1_ports_are_plain_decimal(port: str, message: str) -> None:
    if "source" in message:
        line = f"PROXY TCP4 1.2.3.4 5.6.7.8 {port} 443\r\n"
    else:
        line = f"PROXY TCP4 1.2.3.4 5.6.7.8 443 {port}\r\n"
    assert error_of(line.encode()) == message


def test_v1_ports_zero_and_65535_are_accepted() -> None:
    header, _ = parse(b"PROXY TCP4 0.0.0.0 1.2.3.4 0 65535\r\n")
    assert (header.source, header.destination) == (("0.0.0.0", 0), ("1.2.3.4", 65535))


def assert_fails_at(data: bytes, fails_at: int) -> None:
    """Fed byte by byte, ``data`` is taken up to byte ``fails_at``, which fails."""
    parser = ProxyHeaderParser()
    for byte in bytewise(data[: fails_at - 1]):
        assert parser.receive(byte) == 1
    with pytest.raises(ProxyHeaderError):
        parser.receive(data[fails_at - 1 : fails_at])


@pytest.mark.parametrize(
    ("data", "fails_at"),
    [
        (b"GET / HTTP/1.1\r\n", 1),
        (b"PRI * HTTP/2.0\r\n", 3),
        (b"\x16\x03\x01\x02\x00", 1),  # a TLS ClientHello
        (b"PROXY TCP5 ", 10),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 31),
        (b"PROXY UNKNOWN\rX", 15),
        (b"PROXY TCP4 \x00", 12),
    ],
)
def test_v1_errors_come_at_the_first_byte_that_cannot_fit(
    data: bytes, fails_at: int
) -> None:
    assert_fails_at(data, fails_at)


# -- v2 ----------------------------------------------------------------------


def test_v2_tcp4() -> None:
    data = v2(0x21, 0x11, ipv4_block("203.0.113.7", "198.51.100.1", 4242, 443))
    parser = ProxyHeaderParser()
    assert parser.receive(data + b"\x16\x03\x01") == len(data) == 28
    assert parser.header == ProxyHeader(
        2, False, "TCP4", ("203.0.113.7", 4242), ("198.51.100.1", 443)
    )


def test_v2_tcp6() -> None:
    block = (
        ipaddress.IPv6Address("2001:db8::7").packed
        + ipaddress.IPv6Address("::ffff:192.0.2.1").packed
        + (65535).to_bytes(2, "big")
        + (0).to_bytes(2, "big")
    )
    header, taken = parse(v2(0x21, 0x21, block))
    assert taken == 16 + 36
    assert header == ProxyHeader(
        2,
        False,
        "TCP6",
        ("2001:db8::7", 65535),
        (str(ipaddress.IPv6Address("::ffff:192.0.2.1")), 0),
    )


@pytest.mark.parametrize(
    ("field", "path"),
    [
        (b"/run/haproxy.sock", "/run/haproxy.sock"),
        (b"\x00abstract", "@abstract"),
        (b"\x00with\x00nul", "@with\x00nul"),
        (b"", ""),  # an unnamed socket: all padding
        (b"/tmp/" + b"p" * 103, "/tmp/" + "p" * 103),  # all 108 bytes, no NUL
        (b"/tmp/\xff", "/tmp/\udcff"),  # not UTF-8: kept, as os.fsdecode would
    ],
)
def test_v2_unix_paths(field: bytes, path: str) -> None:
    block = field.ljust(UNIX_PATH, b"\x00") + b"/srv/echo.sock".ljust(
        UNIX_PATH, b"\x00"
    )
    header, taken = parse(v2(0x21, 0x31, block))
    assert taken == 16 + 216
    assert header == ProxyHeader(2, False, "UNIX", path, "/srv/echo.sock")


def test_v2_local_without_addresses() -> None:
    header, taken = parse(v2(0x20, 0x00) + b"payload")
    assert taken == 16
    assert header == ProxyHeader(2, True, "UNSPEC", None, None)


def test_v2_local_skips_its_address_block_and_reads_the_tlvs_after_it() -> None:
    block = ipv4_block("10.0.0.1", "10.0.0.2", 1, 2)
    header, taken = parse(v2(0x20, 0x11, block + tlv(0x05, b"id")))
    assert taken == 16 + 12 + 5
    assert header == ProxyHeader(2, True, "UNSPEC", None, None, ((0x05, b"id"),))


@pytest.mark.parametrize("family", [0x11, 0x21, 0x31, 0x12, 0x32, 0x10])
@pytest.mark.parametrize("length", [0, 5])
def test_v2_local_may_name_a_family_without_its_addresses(
    family: int, length: int
) -> None:
    # The spec has the receiver ignore LOCAL's family: it is all skipped.
    header, taken = parse(v2(0x20, family, b"\xee" * length))
    assert taken == 16 + length
    assert header == ProxyHeader(2, True, "UNSPEC", None, None)


@pytest.mark.parametrize(
    ("family", "block"),
    [(0x00, b""), (0x10, bytes(12)), (0x20, bytes(36)), (0x30, bytes(216))],
)
def test_v2_proxy_for_an_unspecified_family_or_transport_has_no_addresses(
    family: int, block: bytes
) -> None:
    header, taken = parse(v2(0x21, family, block + tlv(0xE0, b"x")))
    assert taken == 16 + len(block) + 4
    assert header == ProxyHeader(2, True, "UNSPEC", None, None, ((0xE0, b"x"),))


def test_v2_tlvs_are_kept_in_order_and_read_by_their_properties() -> None:
    ssl = bytes([0x01]) + bytes(4) + tlv(0x21, b"TLSv1.3") + tlv(0x22, b"client")
    tlvs = (
        (0x01, b"h2"),
        (0x02, b"example.com"),
        (0x04, b"\x00\x00"),  # NOOP: padding, kept like any other
        (0x05, b"\x01" * 128),
        (0x20, ssl),
        (0xE7, b"custom"),  # unknown: kept raw
        (0x01, b"http/1.1"),  # a second ALPN: tlv() gives the first
        (0x30, b""),
    )
    block = ipv4_block("192.0.2.1", "192.0.2.2", 1000, 2000)
    data = v2(0x21, 0x11, block + b"".join(tlv(k, v) for k, v in tlvs))
    header, _ = parse(data)
    assert header.tlvs == tlvs
    assert header.alpn == b"h2"
    assert header.authority == "example.com"
    assert header.unique_id == b"\x01" * 128
    assert header.ssl is True
    assert header.tlv(0x20) == ssl
    assert header.tlv(0xE7) == b"custom"
    assert header.tlv(0x30) == b""
    assert header.tlv(0x99) is None


def test_v2_tlv_properties_when_absent_or_odd() -> None:
    bare = ProxyHeader(2, True, "UNSPEC", None, None)
    assert (bare.alpn, bare.authority, bare.unique_id, bare.ssl) == (
        None,
        None,
        None,
        False,
    )
    no_tls = ProxyHeader(2, True, "UNSPEC", None, None, ((0x20, b"\x06" + bytes(4)),))
    assert no_tls.ssl is False  # a client certificate bit, but not SSL
    odd = ProxyHeader(2, True, "UNSPEC", None, None, ((0x02, b"caf\xff"),))
    assert odd.authority == "caf\ufffd"


def test_crc32c_matches_the_standard_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert _crc32c.crc32c(b"123456789") == 0xE3069283
    assert _crc32c.crc32c(b"") == crc32c(b"") == 0
    data = bytes(range(256)) * 3
    assert _crc32c.crc32c(data) == crc32c(data)


def test_v2_crc32c_is_verified() -> None:
    header = ProxyHeader(
        2, False, "TCP4", ("192.0.2.1", 1), ("192.0.2.2", 2), ((0x05, b"id"),)
    )
    data = encode_v2(header, checksum=True)
    parsed, taken = parse(data)
    assert taken == len(data)
    assert parsed.tlvs == ((0x05, b"id"), (0x03, data[-4:]))
    assert int.from_bytes(data[-4:], "big") == crc32c(data[:-4] + bytes(4))
    # An address, a port, a TLV's value and the checksum itself.
    for position in (17, 27, 31, len(data) - 1):
        bad = bytearray(data)
        bad[position] ^= 0x01
        with pytest.raises(
            ProxyHeaderError, match="^PROXY v2 header fails its CRC32C check$"
        ):
            ProxyHeaderParser().receive(bytes(bad))


def test_v2_crc32c_anywhere_among_the_tlvs_is_verified() -> None:
    header = ProxyHeader(
        2, True, "UNSPEC", None, None, ((0x03, bytes(4)), (0x01, b"h2"))
    )
    data = encode_v2(header)
    parsed, _ = parse(data)
    assert parsed.tlvs[0][0] == 0x03 and parsed.alpn == b"h2"


def test_v2_length_at_the_cap_is_accepted_and_the_cap_can_be_raised() -> None:
    at_cap = v2(0x20, 0x00, tlv(0xE0, bytes(V2_MAX_PAYLOAD - 3)))
    assert parse(at_cap)[1] == 16 + V2_MAX_PAYLOAD
    big = v2(
        0x21, 0x11, ipv4_block("1.2.3.4", "5.6.7.8", 1, 2) + tlv(0xE0, bytes(5000))
    )
    with pytest.raises(ProxyHeaderError, match="more than the limit of 2048"):
        ProxyHeaderParser().receive(big)
    header, taken = parse(big, max_v2_payload=65535)
    assert taken == len(big) and header.tlv(0xE0) == bytes(5000)


def sixteen(ver_cmd: int = 0x21, family: int = 0x11, length: int = 12) -> bytes:
    return v2(ver_cmd, family, length=length)


V2_ERRORS = [
    (
        SIGNATURE[:7] + b"X",
        "not a PROXY protocol header (it starts with b'\\r\\n\\r\\n\\x00\\r\\nX')",
    ),
    (b"\r\n\r\nX", "not a PROXY protocol header (it starts with b'\\r\\n\\r\\nX')"),
    (sixteen(0x11), "PROXY v2 header has version 1; only 2 is defined"),
    (sixteen(0x31), "PROXY v2 header has version 3; only 2 is defined"),
    (
        sixteen(0x22),
        "PROXY v2 header has command 0x2; only LOCAL (0x0) and PROXY (0x1) are defined",
    ),
    (
        sixteen(0x2F),
        "PROXY v2 header has command 0xf; only LOCAL (0x0) and PROXY (0x1) are defined",
    ),
    (
        sixteen(family=0x41),
        "PROXY v2 header has address family 0x4; only 0x0 to 0x3 are defined",
    ),
    (
        sixteen(0x20, family=0xF0),
        "PROXY v2 header has address family 0xf; only 0x0 to 0x3 are defined",
    ),
    (
        sixteen(family=0x13),
        "PROXY v2 header has transport protocol 0x3; only 0x0 to 0x2 are defined",
    ),
    *(
        (
            sixteen(family=family),
            (
                "PROXY v2 header is for a datagram connection; "
                "only stream (TCP/unix) connections are supported"
            ),
        )
        for family in (0x02, 0x12, 0x22, 0x32)
    ),
    (
        sixteen(length=2049),
        (
            "PROXY v2 header announces 2049 bytes of addresses and TLVs, "
            "more than the limit of 2048"
        ),
    ),
    (
        sixteen(0x20, 0x00, length=0xFFFF),
        (
            "PROXY v2 header announces 65535 bytes of addresses and TLVs, "
            "more than the limit of 2048"
        ),
    ),
    (
        sixteen(family=0x11, length=11),
        "PROXY v2 address block too short for AF_INET (11 bytes, not 12)",
    ),
    (
        sixteen(family=0x21, length=12),
        "PROXY v2 address block too short for AF_INET6 (12 bytes, not 36)",
    ),
    (
        sixteen(family=0x31, length=0),
        "PROXY v2 address block too short for AF_UNIX (0 bytes, not 216)",
    ),
    (
        sixteen(family=0x10, length=4),
        "PROXY v2 address block too short for AF_INET (4 bytes, not 12)",
    ),
    (
        v2(0x21, 0x11, bytes(12) + b"\x01\x00"),
        "PROXY v2 header ends inside a TLV's 3-byte type and length",
    ),
    (
        v2(0x21, 0x11, bytes(12) + b"\x05\x00\x03ab"),
        "PROXY v2 TLV of type 0x05 runs past the end of the header",
    ),
    (
        v2(0x20, 0x00, tlv(0x01, b"h2") + b"\xe0\xff\xff"),
        "PROXY v2 TLV of type 0xe0 runs past the end of the header",
    ),
    (
        v2(0x21, 0x11, bytes(12) + tlv(0x03, bytes(3))),
        "PROXY v2 CRC32C TLV holds 3 bytes, not 4",
    ),
    (
        v2(0x20, 0x00, tlv(0x03, bytes(4)) + tlv(0x03, bytes(4))),
        "PROXY v2 header holds two CRC32C TLVs",
    ),
    (
        v2(0x20, 0x00, tlv(0x03, b"\xde\xad\xbe\xef")),
        "PROXY v2 header fails its CRC32C check",
    ),
    (
        v2(0x21, 0x11, bytes(12) + tlv(0x20, b"\x01\x00\x00\x00")),
        "PROXY v2 SSL TLV holds 4 bytes, fewer than its client and verify fields",
    ),
]


@pytest.mark.parametrize(("data", "message"), V2_ERRORS)
def test_v2_errors_say_why(data: bytes, message: str) -> None:
    assert error_of(data) == message


@pytest.mark.parametrize(("data", "message"), V2_ERRORS)
def test_v2_errors_are_the_same_byte_by_byte(data: bytes, message: str) -> None:
    parser = ProxyHeaderParser()
    with pytest.raises(ProxyHeaderError) as info:
        for byte in bytewise(data):
            parser.receive(byte)
    if not message.startswith("not a PROXY"):  # that one quotes what it saw
        assert str(info.value) == message


@pytest.mark.parametrize(
    ("data", "fails_at"),
    [
        (SIGNATURE[:5] + b"\x01", 6),
        (sixteen(0x11), 13),
        (sixteen(0x23), 13),
        (sixteen(family=0x12), 14),
        (sixteen(family=0x51), 14),
        (sixteen(length=3000), 16),
        (sixteen(family=0x21, length=35), 16),
    ],
)
def test_v2_errors_come_at_the_first_byte_that_cannot_fit(
    data: bytes, fails_at: int
) -> None:
    assert_fails_at(data, fails_at)


def test_v2_over_the_cap_fails_before_the_payload_arrives() -> None:
    parser = ProxyHeaderParser(max_v2_payload=100)
    with pytest.raises(ProxyHeaderError, match="more than the limit of 100"):
        parser.receive(sixteen(length=101))
    assert parser.buffered == 0


# -- the parser's contract ---------------------------------------------------


def test_after_the_header_nothing_more_is_taken() -> None:
    parser = ProxyHeaderParser()
    data = encode_v2(ProxyHeader(2, True, "UNSPEC", None, None))
    assert parser.receive(data[:10]) == 10
    assert parser.receive(data[10:] + b"hello") == len(data) - 10
    assert parser.receive(b"more") == 0
    assert parser.receive(b"") == 0
    assert parser.buffered == 0


def test_a_failed_parser_keeps_failing_with_the_same_message() -> None:
    parser = ProxyHeaderParser()
    with pytest.raises(ProxyHeaderError) as first:
        parser.receive(b"PROXY TCP9")
    assert parser.buffered == 0 and not parser.done and parser.header is None
    with pytest.raises(ProxyHeaderError) as again:
        parser.receive(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
    assert str(again.value) == str(first.value)


def test_an_incomplete_header_takes_every_byte_it_is_given() -> None:
    # What a driver that peeks relies on: bytes it was not told to consume
    # are never handed to the parser again.
    for data in (
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        encode_v2(ProxyHeader(2, False, "UNIX", "/a", "@b", ((0x05, b"id"),))),
    ):
        for cut in range(1, len(data)):
            parser = ProxyHeaderParser()
            assert parser.receive(data[:cut]) == cut
            assert parser.buffered == cut and not parser.done
            assert parser.receive(data[cut:] + b"!") == len(data) - cut
            assert parser.done and parser.buffered == 0


def test_a_peeking_driver_consumes_exactly_the_header() -> None:
    header = ProxyHeader(2, False, "TCP6", ("2001:db8::1", 1), ("2001:db8::2", 2))
    socket_buffer = bytearray()
    arrivals = [encode_v2(header)[:20], encode_v2(header)[20:] + b"\x16\x03", b"\x01"]
    parser = ProxyHeaderParser()
    for arrival in arrivals:
        socket_buffer += arrival
        if not parser.done:
            taken = parser.receive(bytes(socket_buffer))  # recv(..., MSG_PEEK)
            del socket_buffer[:taken]  # recv(taken)
    assert parser.header == header
    assert socket_buffer == b"\x16\x03\x01"


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_any_bytes_like_object_is_accepted(kind: type) -> None:
    line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nrest"
    data = v2(0x21, 0x11, ipv4_block("1.2.3.4", "5.6.7.8", 1, 2)) + b"rest"
    assert ProxyHeaderParser().receive(kind(line)) == len(line) - 4
    parser = ProxyHeaderParser()
    assert (
        parser.receive(kind(data[:5])) + parser.receive(kind(data[5:])) == len(data) - 4
    )
    assert parser.header is not None and parser.header.source == ("1.2.3.4", 1)


@pytest.mark.parametrize("bad", [-1, 65536, True, 2.0, "2048"])
def test_max_v2_payload_must_fit_the_length_field(bad: object) -> None:
    with pytest.raises(
        ValueError, match="^max_v2_payload must be an int from 0 to 65535"
    ):
        ProxyHeaderParser(max_v2_payload=bad)  # type: ignore[arg-type]


def test_parser_reports_its_settings() -> None:
    parser = ProxyHeaderParser(max_v2_payload=300)
    assert parser.max_v2_payload == 300
    assert repr(parser) == "ProxyHeaderParser(max_v2_payload=300)"
    assert (parser.header, parser.done, parser.buffered) == (None, False, 0)
    assert ProxyHeaderParser().max_v2_payload == V2_MAX_PAYLOAD == 2048


def test_headers_are_frozen_values() -> None:
    a = ProxyHeader(1, False, "TCP4", ("1.2.3.4", 1), ("5.6.7.8", 2))
    assert a == parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")[0]
    assert hash(a) == hash(dataclasses.replace(a))
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.family = "TCP6"  # type: ignore[misc]


def test_byte_at_a_time_takes_linear_time() -> None:
    # Quadratic rescanning or copying would take minutes here, not a blink.
    data = v2(0x20, 0x00, tlv(0xE0, bytes(65532)))
    parser = ProxyHeaderParser(max_v2_payload=65535)
    started = time.perf_counter()
    taken = sum(parser.receive(byte) for byte in bytewise(data))
    assert taken == len(data) and parser.done
    assert time.perf_counter() - started < 5


def test_module_docstring_example_runs() -> None:
    result = doctest.testmod(proxy_header)
    assert result.attempted > 0
    assert result.failed == 0


ROUND_TRIPS = [
    ProxyHeader(1, False, "TCP4", ("127.0.0.1", 0), ("10.1.2.3", 65535)),
    ProxyHeader(1, False, "TCP6", ("::", 80), ("fe80::1", 443)),
    ProxyHeader(1, True, "UNSPEC", None, None),
]
ROUND_TRIPS_V2 = [
    ProxyHeader(2, False, "TCP4", ("127.0.0.1", 0), ("10.1.2.3", 65535)),
    ProxyHeader(2, False, "TCP6", ("::", 80), ("fe80::1", 443), ((0x01, b"h2"),)),
    ProxyHeader(2, False, "UNIX", "/run/a.sock", "@abstract"),
    ProxyHeader(2, True, "UNSPEC", None, None, ((0x04, b""), (0xF0, b"x"))),
]


@pytest.mark.parametrize("header", ROUND_TRIPS)
def test_v1_encoder_round_trips(header: ProxyHeader) -> None:
    data = encode_v1(header)
    assert parse(data) == (header, len(data))
    assert parse(*bytewise(data)) == (header, len(data))


@pytest.mark.parametrize("header", ROUND_TRIPS_V2)
@pytest.mark.parametrize("checksum", [False, True])
def test_v2_encoder_round_trips(header: ProxyHeader, checksum: bool) -> None:
    data = encode_v2(header, checksum=checksum)
    expected = header
    if checksum:
        expected = dataclasses.replace(header, tlvs=(*header.tlvs, (0x03, data[-4:])))
    assert parse(data) == (expected, len(data))
    assert parse(*bytewise(data)) == (expected, len(data))


# -- properties --------------------------------------------------------------

ports = st.integers(0, 65535)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
# A path field's bytes (no NUL, at most 108), as the str the parser gives;
# "@" alone would be an empty abstract name, which reads back as unnamed.
unix_paths = (
    st.binary(max_size=UNIX_PATH)
    .filter(lambda raw: b"\x00" not in raw and raw != b"@")
    .map(lambda raw: raw.decode("utf-8", "surrogateescape"))
)
plain_tlvs = st.tuples(
    st.integers(0, 255).filter(lambda kind: kind not in (0x03, 0x20)),
    st.binary(max_size=40),
)
ssl_tlvs = st.tuples(st.just(0x20), st.binary(min_size=5, max_size=40))
tlv_lists = st.lists(st.one_of(plain_tlvs, ssl_tlvs), max_size=6).map(tuple)


def tcp_headers(
    version: int, tlvs: st.SearchStrategy[tuple[tuple[int, bytes], ...]]
) -> st.SearchStrategy[ProxyHeader]:
    return st.one_of(
        st.builds(
            lambda s, sp, d, dp, t: ProxyHeader(
                version, False, "TCP4", (s, sp), (d, dp), t
            ),
            ipv4,
            ports,
            ipv4,
            ports,
            tlvs,
        ),
        st.builds(
            lambda s, sp, d, dp, t: ProxyHeader(
                version, False, "TCP6", (s, sp), (d, dp), t
            ),
            ipv6,
            ports,
            ipv6,
            ports,
            tlvs,
        ),
    )


v1_headers = st.one_of(
    tcp_headers(1, st.just(())), st.just(ProxyHeader(1, True, "UNSPEC", None, None))
)
v2_headers = st.one_of(
    tcp_headers(2, tlv_lists),
    st.builds(
        lambda s, d, t: ProxyHeader(2, False, "UNIX", s, d, t),
        unix_paths,
        unix_paths,
        tlv_lists,
    ),
    st.builds(lambda t: ProxyHeader(2, True, "UNSPEC", None, None, t), tlv_lists),
)


@st.composite
def encoded_headers(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    """A valid header's bytes, and the header they must parse to."""
    if draw(st.booleans()):
        header = draw(v1_headers)
        tail = draw(st.sampled_from(["", " ", " 1.2.3.4 junk"])) if header.local else ""
        return encode_v1(header, tail), header
    header = draw(v2_headers)
    checksum = draw(st.booleans())
    data = encode_v2(header, checksum=checksum)
    if checksum:
        header = dataclasses.replace(header, tlvs=(*header.tlvs, (0x03, data[-4:])))
    return data, header


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def bound(parser: ProxyHeaderParser, first: bytes) -> int:
    """The most an incomplete header may hold, by the version its first byte picks."""
    return V1_MAX_LENGTH - 1 if first == b"P" else 16 + parser.max_v2_payload - 1


Outcome = tuple[str, ProxyHeader | None, int]


def run(chunks: list[bytes], max_v2_payload: int = V2_MAX_PAYLOAD) -> Outcome:
    """Feeds ``chunks``, checking the contract after every call."""
    parser = ProxyHeaderParser(max_v2_payload=max_v2_payload)
    first = b"".join(chunks)[:1]
    total = 0
    for chunk in chunks:
        try:
            taken = parser.receive(chunk)
        except ProxyHeaderError as exc:
            assert str(exc) and "\n" not in str(exc)
            assert parser.buffered == 0 and not parser.done
            return ("error", None, total)
        assert 0 <= taken <= len(chunk)
        total += taken
        if parser.done:
            assert parser.buffered == 0
        else:
            assert taken == len(chunk)
            assert parser.buffered == total <= bound(parser, first)
    if parser.done:
        return ("header", parser.header, total)
    return ("incomplete", None, total)


@FAST
@given(encoded_headers(), st.binary(max_size=64), st.data())
def test_any_split_gives_the_same_header_and_leaves_the_payload(
    encoded: tuple[bytes, ProxyHeader], payload: bytes, data: st.DataObject
) -> None:
    header_bytes, expected = encoded
    wire = header_bytes + payload
    chunks = split_at(wire, data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    parser = ProxyHeaderParser()
    total = 0
    rest = b""
    for chunk in chunks:
        taken = parser.receive(chunk)
        assert 0 <= taken <= len(chunk)
        if not parser.done:
            assert taken == len(chunk)
        total += taken
        rest += chunk[taken:]
    assert parser.header == expected
    assert total == len(header_bytes)
    assert rest == payload


PREFIXES = [
    b"",
    b"PROXY ",
    b"PROXY TCP4 ",
    b"PROXY TCP6 ",
    b"PROXY UNKNOWN",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 ",
    SIGNATURE,
    SIGNATURE + b"\x21\x11",
    SIGNATURE + b"\x21\x11\x00\x0c",
    SIGNATURE + b"\x21\x11\x00\x14",
    SIGNATURE + b"\x21\x21\x00\x24",
    SIGNATURE + b"\x21\x31\x00\xd8",
    SIGNATURE + b"\x20\x00\x00\x08",
]
V1_PIECES = [
    b" ",
    b"\r",
    b"\n",
    b"\r\n",
    b"0",
    b"1",
    b"65535",
    b"::",
    b":1",
    b"1.2.3.4",
    b"x",
]
arbitrary_input = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda p, b: p + b, st.sampled_from(PREFIXES), st.binary(max_size=120)),
    st.builds(
        lambda p, pieces: p + b"".join(pieces),
        st.sampled_from(PREFIXES[:6]),
        st.lists(st.sampled_from(V1_PIECES), max_size=30),
    ),
)


def check_outcome(wire: bytes, outcome: Outcome) -> None:
    kind, header, taken = outcome
    if kind != "header":
        return
    assert header is not None
    if header.version == 1:
        line = wire[:taken]
        again = encode_v1(header)
        assert run([again]) == ("header", header, len(again))
        if not header.local and line.split(b" ")[2:4] == again.split(b" ")[2:4]:
            # Addresses written canonically: the rest of the line must be too.
            assert line == again
    else:
        again = encode_v2(header)
        reparsed = run([again])
        assert reparsed[0] == "header" and reparsed[1] is not None
        # Any CRC32C value was recomputed for the new bytes.
        assert [t for t in reparsed[1].tlvs if t[0] != 3] == [
            t for t in header.tlvs if t[0] != 3
        ]
        assert dataclasses.replace(reparsed[1], tlvs=()) == dataclasses.replace(
            header, tlvs=()
        )


@FAST
@given(arbitrary_input, st.sampled_from([0, 12, 216, V2_MAX_PAYLOAD]), st.data())
def test_arbitrary_bytes_give_an_error_a_header_or_a_bounded_wait(
    wire: bytes, max_v2_payload: int, data: st.DataObject
) -> None:
    whole = run([wire], max_v2_payload)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=8))
    split = run(split_at(wire, cuts), max_v2_payload)
    assert split[0] == whole[0]
    if whole[0] != "error":
        assert split == whole
    check_outcome(wire, whole)


@FAST
@given(encoded_headers(), st.data())
def test_a_mutated_header_never_crashes(
    encoded: tuple[bytes, ProxyHeader], data: st.DataObject
) -> None:
    wire = bytearray(encoded[0])
    index = data.draw(st.integers(0, len(wire) - 1))
    wire[index] = data.draw(st.integers(0, 255))
    wire += data.draw(st.binary(max_size=16))
    whole = run([bytes(wire)])
    split = run(bytewise(bytes(wire)))
    assert split[0] == whole[0]
    if whole[0] != "error":
        assert split == whole
    check_outcome(bytes(wire), whole)
