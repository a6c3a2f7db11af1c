"""Property-based tests (hypothesis) of COBS, the frame decoder and the message decoder."""

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge import cobs
from firmware_bridge.errors import CobsError, ProtocolError
from firmware_bridge.framing import Frame, FrameDecoder, encode_frame
from firmware_bridge.protocol import decode_frame

FAST = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

frames_st = st.builds(Frame, msg_type=st.integers(0, 255), seq=st.integers(0, 2**32 - 1),
                      payload=st.binary(max_size=600), flags=st.integers(0, 255))


@FAST
@given(st.binary(max_size=3000))
def test_cobs_round_trip(data):
    encoded = cobs.encode(data)
    assert 0 not in encoded and len(encoded) <= cobs.max_encoded_size(len(data))
    assert cobs.decode(encoded) == data


@FAST
@given(st.binary(max_size=600))
def test_cobs_decode_only_raises_cobs_error(data):
    try:
        cobs.decode(data)
    except CobsError:
        pass


def _feed_all(decoder: FrameDecoder, data: bytes, cuts: list[int]) -> list[Frame]:
    out, prev = [], 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        out += decoder.feed(data[prev:cut])
        prev = cut
        assert decoder.buffered <= decoder.buffer_limit
    return out


@FAST
@given(garbage=st.binary(max_size=1500), frames=st.lists(frames_st, min_size=1, max_size=3),
       cuts=st.lists(st.integers(0, 10_000), max_size=4), limit=st.sampled_from([64, 700, 65536]))
def test_garbage_then_delimiter_then_frames_recovered(garbage, frames, cuts, limit):
    decoder = FrameDecoder(max_frame_size=limit)
    wire = b"".join(encode_frame(f.msg_type, f.seq, f.payload, flags=f.flags) for f in frames
                    if len(f.payload) + 16 <= limit)
    expected = [f for f in frames if len(f.payload) + 16 <= limit]
    got = _feed_all(decoder, garbage + b"\x00" + wire, cuts)
    assert got[len(got) - len(expected):] == expected
    for frame in got:
        try:
            decode_frame(frame)
        except ProtocolError:
            pass


@FAST
@given(frames=st.lists(frames_st, min_size=1, max_size=4), data=st.data())
def test_corrupted_frame_never_raises(frames, data):
    wire = bytearray(b"".join(encode_frame(f.msg_type, f.seq, f.payload, flags=f.flags) for f in frames))
    for _ in range(data.draw(st.integers(1, 5))):
        op = data.draw(st.sampled_from(["flip", "drop", "dup", "cut"]))
        pos = data.draw(st.integers(0, len(wire) - 1)) if wire else 0
        if not wire:
            break
        if op == "flip":
            wire[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "drop":
            del wire[pos]
        elif op == "dup":
            wire.insert(pos, wire[pos])
        else:
            del wire[pos:]
    decoder = FrameDecoder()
    got = decoder.feed(bytes(wire))
    assert all(f in frames for f in got)  # a CRC-32 never lets these damaged frames through
    c = decoder.counters
    assert c.frames_ok == len(got)
