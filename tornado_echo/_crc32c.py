"""CRC-32C, which the standard library lacks, for PROXY v2 header checksums."""

from __future__ import annotations

from typing import Final


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            # 0x82F63B78: the Castagnoli polynomial, bit-reversed (RFC 4960,
            # appendix B), as the spec requires.
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE: Final = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as PROXY v2's checksum TLV uses."""
    # Pure Python is fast enough here: a header has at most a few KiB, and
    # the standard library has no CRC-32C.
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
