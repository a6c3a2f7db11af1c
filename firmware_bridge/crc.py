"""CRC-32 used by the frame trailer: the zlib / ISO-HDLC / IEEE 802.3 CRC-32.

Parameters (Rocksoft model): width 32, poly 0x04C11DB7, init 0xFFFFFFFF,
refin/refout true (processed LSB-first, i.e. the reflected poly 0xEDB88320),
xorout 0xFFFFFFFF, check ``crc32(b"123456789") == 0xCBF43926``.
This is Python's :func:`zlib.crc32`, ``crc32()`` in zlib's C API and the
Ethernet/PNG/gzip CRC; table-driven C code for it is in every libc-adjacent
project.
"""

from __future__ import annotations

import zlib

#: Value of ``crc32(b"123456789")``; use it to self-test an implementation.
CRC32_CHECK = 0xCBF43926


def crc32(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC-32 of ``data`` as an unsigned 32-bit integer.

    Parameters
    ----------
    data : bytes
        Bytes to checksum (bytes, bytearray or memoryview).
    value : int, optional
        Running CRC of the preceding bytes, to checksum data in pieces:
        ``crc32(b, crc32(a)) == crc32(a + b)``.

    Returns
    -------
    int
        CRC in ``[0, 2**32)``; appended to a frame as 4 little-endian bytes.
    """
    return zlib.crc32(data, value) & 0xFFFFFFFF
