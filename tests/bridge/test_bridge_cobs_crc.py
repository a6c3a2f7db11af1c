"""COBS byte stuffing and CRC-32."""

import zlib

import numpy as np
import pytest

from firmware_bridge import cobs
from firmware_bridge.crc import CRC32_CHECK, crc32
from firmware_bridge.errors import BridgeError, CobsError


@pytest.mark.parametrize("decoded, encoded", [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
])
def test_cobs_known_vectors(decoded, encoded):
    assert cobs.encode(decoded) == encoded
    assert cobs.decode(encoded) == decoded


@pytest.mark.parametrize("data, encoded", [
    # 254 non-zero bytes: one full block, no trailing code byte
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    # 255 bytes starting with zero
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
    # 255 non-zero bytes: full block + 1-byte block
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    # 254 non-zero bytes then a zero: full block, empty block for the zero, final empty block
    (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
    (bytes(range(3, 256)) + b"\x00\x01", b"\xfe" + bytes(range(3, 256)) + b"\x02\x01"),
])
def test_cobs_254_255_boundaries(data, encoded):
    assert cobs.encode(data) == encoded
    assert cobs.decode(encoded) == data


@pytest.mark.parametrize("n", [0, 1, 253, 254, 255, 256, 507, 508, 509, 762, 1000, 65536])
@pytest.mark.parametrize("zero_fraction", [0.0, 0.01, 0.5, 1.0])
def test_cobs_round_trip_and_overhead(n, zero_fraction):
    rng = np.random.default_rng(n)
    data = rng.integers(1, 256, n, dtype=np.uint8)
    data[rng.random(n) < zero_fraction] = 0
    data = data.tobytes()
    encoded = cobs.encode(data)
    assert 0 not in encoded
    assert len(data) + 1 <= len(encoded) <= cobs.max_encoded_size(len(data))
    assert cobs.decode(encoded) == data


@pytest.mark.parametrize("bad", [b"", b"\x00", b"\x03\x11\x00", b"\x05\x11\x22", b"\xff" + b"\x01" * 200])
def test_cobs_decode_rejects_invalid(bad):
    with pytest.raises(CobsError):
        cobs.decode(bad)
    assert issubclass(CobsError, BridgeError)


def test_crc32_check_value_and_chaining():
    assert crc32(b"123456789") == CRC32_CHECK == 0xCBF43926
    assert crc32(b"") == 0
    data = bytes(range(256)) * 3
    assert crc32(data) == zlib.crc32(data)
    assert crc32(data[100:], crc32(data[:100])) == crc32(data)
    assert crc32(memoryview(data)) == crc32(bytearray(data))


@pytest.mark.parametrize("layout", [
    [b"\x00" * 300, b"\x01" * 254, b"\x00", b"\x02" * 508],
    [b"\x03\x00" * 300, b"\x04" * 255],
    [b"\x05" * 254, b"\x00\x06" * 300, b"\x07" * 254],
    [b"\x00" * 257],
    [b"\x08" * 1000, b"\x00" * 256],
])
def test_cobs_vectorised_path_matches_run_loop(layout):
    data = b"".join(layout)
    assert data.count(0) >= 256  # takes the NumPy path
    assert cobs.encode(data) == cobs._encode_runs(data)
    assert cobs.decode(cobs.encode(data)) == data

