"""Framing: encode/decode, chunking, resynchronisation, size limits, counters."""

import numpy as np
import pytest

from firmware_bridge import cobs
from firmware_bridge.errors import CrcError, FrameLengthError, FrameTooLargeError, UnsupportedVersion
from firmware_bridge.framing import BUFFER_SLACK, Frame, FrameDecoder, build_frame, encode_frame, parse_frame
from firmware_bridge.wire import FLAG_RETRANSMIT, MAX_FRAME_SIZE, OVERHEAD, MessageType


def _frames(n: int, seed: int = 0, max_payload: int = 300) -> list[Frame]:
    rng = np.random.default_rng(seed)
    return [Frame(int(rng.integers(0, 256)), int(rng.integers(0, 2**32)),
                  rng.integers(0, 256, int(rng.integers(0, max_payload)), dtype=np.uint8).tobytes(),
                  int(rng.integers(0, 256)))
            for _ in range(n)]


def _wire(frames) -> bytes:
    return b"".join(encode_frame(f.msg_type, f.seq, f.payload, flags=f.flags) for f in frames)


def test_encode_frame_layout():
    wire = encode_frame(MessageType.ACK, 5, b"\x80")
    assert wire.endswith(b"\x00") and 0 not in wire[:-1]
    decoded = cobs.decode(wire[:-1])
    assert decoded == build_frame(MessageType.ACK, 5, b"\x80")
    assert decoded.hex() == "011100000500000001000000804bd110df"
    assert parse_frame(decoded) == Frame(MessageType.ACK, 5, b"\x80", 0, 1)


def test_round_trip_any_chunking():
    frames = _frames(200)
    wire = _wire(frames)
    rng = np.random.default_rng(1)
    for chunk in (1, 7, 255, 4096, len(wire)):
        decoder = FrameDecoder()
        got = []
        for start in range(0, len(wire), chunk):
            got += decoder.feed(wire[start:start + chunk])
        assert got == frames
        assert decoder.counters.frames_ok == len(frames)
        assert decoder.counters.bytes_discarded == 0 and decoder.buffered == 0
    # random split points, bytearray and memoryview input
    cuts = np.sort(rng.integers(0, len(wire), 50))
    decoder, got, prev = FrameDecoder(), [], 0
    for cut in [*list(cuts), len(wire)]:
        got += decoder.feed(memoryview(bytearray(wire[prev:cut])))
        prev = cut
    assert got == frames


def test_resync_after_garbage_and_damage():
    frames = _frames(6, seed=2)
    good = [encode_frame(f.msg_type, f.seq, f.payload, flags=f.flags) for f in frames]
    damaged = bytearray(good[1])
    damaged[len(damaged) // 2] ^= 0x04
    stream = (b"\x13\x37garbage\x00" + good[0] + bytes(damaged) + good[2]
              + good[3][:-5] + b"\x00" + good[4] + b"\x00\x00" + good[5])
    rejected = []
    decoder = FrameDecoder(on_reject=rejected.append)
    got = decoder.feed(stream)
    assert got == [frames[0], frames[2], frames[4], frames[5]]
    c = decoder.counters
    assert c.frames_ok == 4 and len(rejected) == 3
    assert c.crc_errors + c.cobs_errors + c.length_errors == 3
    assert c.bytes_discarded == sum(r.n_bytes for r in rejected)


def test_garbage_without_delimiter_spoils_only_next_frame():
    frames = _frames(3, seed=3)
    good = [encode_frame(f.msg_type, f.seq, f.payload, flags=f.flags) for f in frames]
    decoder = FrameDecoder()
    assert decoder.feed(b"\x01\x02\x03" + good[0] + good[1] + good[2]) == [frames[1], frames[2]]


def test_oversize_partial_frame_is_dropped_and_bounded():
    decoder = FrameDecoder(max_frame_size=1024)
    limit = decoder.buffer_limit
    assert limit == cobs.max_encoded_size(1024) + BUFFER_SLACK
    ok = encode_frame(1, 1, b"x" * 100)
    for _ in range(10):  # 10 x 500 bytes without a delimiter
        assert decoder.feed(b"\x55" * 500) == []
        assert decoder.buffered <= limit
    assert decoder.counters.oversize == 1
    assert decoder.feed(b"\x00" + ok) == [Frame(1, 1, b"x" * 100)]
    assert decoder.counters.bytes_discarded == 5000
    # a complete over-long frame arriving in one piece
    assert decoder.feed(b"\x55" * 5000 + b"\x00" + ok) == [Frame(1, 1, b"x" * 100)]
    assert decoder.counters.oversize == 2


def test_decoded_frame_over_limit_rejected():
    big = encode_frame(1, 1, b"\x07" * 200)
    decoder = FrameDecoder(max_frame_size=200)
    assert len(big) - 1 <= decoder.buffer_limit  # fits the buffer, fails the decoded size
    assert decoder.feed(big) == []
    assert decoder.counters.oversize == 1
    with pytest.raises(FrameTooLargeError):
        encode_frame(1, 1, b"\x00" * (MAX_FRAME_SIZE - OVERHEAD + 1))
    assert len(encode_frame(1, 1, b"\x00" * (MAX_FRAME_SIZE - OVERHEAD))) > MAX_FRAME_SIZE


@pytest.mark.parametrize("mutate, error", [
    (lambda d: d[:10], FrameLengthError),
    (lambda d: d[:-1] + bytes([d[-1] ^ 1]), CrcError),
])
def test_parse_frame_errors(mutate, error):
    with pytest.raises(error):
        parse_frame(mutate(build_frame(1, 2, b"abc")))


def test_parse_frame_version_and_length_checked_after_crc():
    from firmware_bridge.vectors import _raw_frame
    with pytest.raises(UnsupportedVersion):
        parse_frame(_raw_frame(1, 2, b"\x80", version=9))
    with pytest.raises(FrameLengthError):
        parse_frame(_raw_frame(1, 2, b"\x80", length=5))


@pytest.mark.parametrize("kwargs", [dict(msg_type=256), dict(seq=-1), dict(seq=2**32), dict(flags=300)])
def test_build_frame_range_checks(kwargs):
    args = dict(msg_type=1, seq=0, payload=b"", flags=0) | kwargs
    with pytest.raises(ValueError):
        build_frame(args.pop("msg_type"), args.pop("seq"), args.pop("payload"), **args)


def test_reset_discards_partial_frame():
    wire = encode_frame(1, 7, b"hello", flags=FLAG_RETRANSMIT)
    decoder = FrameDecoder()
    decoder.feed(wire[:5])
    decoder.reset()
    assert decoder.buffered == 0 and decoder.counters.bytes_discarded == 5
    assert decoder.feed(wire[5:]) == []  # the tail alone is a damaged frame
    assert decoder.feed(wire) == [Frame(1, 7, b"hello", FLAG_RETRANSMIT)]
    assert set(decoder.counters.as_dict()) >= {"frames_ok", "crc_errors", "length_errors", "cobs_errors",
                                               "oversize", "bytes_discarded"}
