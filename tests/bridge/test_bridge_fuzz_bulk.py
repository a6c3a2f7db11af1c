"""Seeded bulk fuzzing of the frame decoder: >= 100 000 random and corrupted byte streams.

Properties checked for every stream:
* ``FrameDecoder.feed`` never raises; ``decode_frame`` raises only ``ProtocolError``;
* the partial-frame buffer never exceeds ``buffer_limit``;
* every intact frame that follows the corruption after a 0x00 delimiter is recovered.
"""

import numpy as np

from firmware_bridge.errors import ProtocolError
from firmware_bridge.framing import FrameDecoder
from firmware_bridge.protocol import (
    Ack,
    Nack,
    ResendUnavailable,
    SpectrumMessage,
    StatusMessage,
    decode_frame,
    encode_message,
)

N_CORRUPTED = 70_000
N_RANDOM = 35_000
MAX_FRAME = 512  # small limit so oversize handling is exercised often


def _pool() -> list[bytes]:
    rng = np.random.default_rng(0)
    msgs = [Ack(int(s)) for s in rng.integers(0, 2**32, 8)]
    msgs += [Nack(3, 6, "x" * int(n)) for n in rng.integers(0, 40, 4)]
    msgs += [ResendUnavailable(9, 1), StatusMessage("i", 1, 2, "idle", seq=5)]
    for n in (1, 4, 16, 40):
        msgs.append(SpectrumMessage("s", 1, 10, 1.0, 785.0, np.arange(n, dtype=np.float32),
                                    rng.uniform(0, 100, n).astype(np.float32), seq=int(n)))
    return [encode_message(m, m.seq if m.seq is not None else 0) for m in msgs]


POOL = _pool()
CLEAN_FRAMES = {frame for wire in POOL for frame in FrameDecoder().feed(wire)}


def _corrupt(frame: bytes, kind: int, u: np.ndarray, garbage: bytes) -> bytes:
    """Damage ``frame``; ``u`` holds 8 uniform draws in [0, 1) that pick positions/bits/counts."""
    buf = bytearray(frame)
    n = len(buf)
    count = 1 + int(u[0] * 3)
    positions = [int(x * n) for x in u[1:1 + count]]
    if kind == 0:  # bit flips
        for pos, x in zip(positions, u[4:4 + count], strict=False):
            buf[pos] ^= 1 << int(x * 8)
    elif kind == 1:  # dropped bytes
        for pos in sorted(set(positions), reverse=True):
            del buf[pos]
    elif kind == 2:  # duplicated bytes
        for pos in positions:
            buf.insert(pos, buf[pos])
    elif kind == 3:  # truncation
        del buf[positions[0]:]
    elif kind == 4:  # garbage burst (may contain zeros)
        buf[:0] = garbage[:1 + int(u[7] * 63)]
    else:  # long run without delimiter: overflow
        buf += b"\x55" * (MAX_FRAME + int(u[7] * 2 * MAX_FRAME))
    return bytes(buf)


def _feed_checked(decoder: FrameDecoder, stream: bytes, cuts) -> list:
    frames, prev = [], 0
    for cut in (*cuts, len(stream)):
        frames += decoder.feed(stream[prev:cut])
        prev = cut
        assert decoder.buffered <= decoder.buffer_limit
    for frame in frames:
        if frame not in CLEAN_FRAMES:  # only frames that survived corruption need decoding
            try:
                decode_frame(frame)
            except ProtocolError:
                pass
    return frames


def test_bulk_corrupted_streams_recover_following_frames():
    rng = np.random.default_rng(12345)
    decoder = FrameDecoder(MAX_FRAME)
    picks = rng.integers(0, len(POOL), (N_CORRUPTED, 3))
    kinds = rng.integers(0, 6, N_CORRUPTED)
    uniforms = rng.random((N_CORRUPTED, 8))
    cut_draws = rng.random((N_CORRUPTED, 2))
    n_cuts = rng.integers(0, 3, N_CORRUPTED)
    garbage = rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    offsets = rng.integers(0, (1 << 20) - 64, N_CORRUPTED)
    for i in range(N_CORRUPTED):
        a, b, c = picks[i]
        bad = _corrupt(POOL[a], kinds[i], uniforms[i], garbage[offsets[i]:offsets[i] + 64])
        stream = bad + b"\x00" + POOL[b] + POOL[c]
        cuts = sorted(int(x * len(stream)) for x in cut_draws[i][:n_cuts[i]])
        frames = _feed_checked(decoder, stream, cuts)
        assert len(frames) >= 2, f"stream {i}: intact frames after corruption not recovered"
        assert frames[-2:] == decoder_frames(b) + decoder_frames(c), f"stream {i}"
    c = decoder.counters
    assert c.crc_errors and c.cobs_errors and c.length_errors and c.oversize


def test_bulk_random_streams_never_raise_and_stay_bounded():
    rng = np.random.default_rng(54321)
    decoder = FrameDecoder(MAX_FRAME)
    # windows into four 1 MB random pools with different densities of 0x00
    pools = []
    for zero_p in (0.0, 0.002, 0.02, 0.1):
        data = rng.integers(1, 256, 1 << 20, dtype=np.uint8)
        data[rng.random(data.size) < zero_p] = 0
        pools.append(data.tobytes())
    which = rng.integers(0, 4, N_RANDOM)
    lengths = rng.integers(0, 800, N_RANDOM)
    starts = rng.integers(0, (1 << 20) - 1200, N_RANDOM)
    cuts = rng.random((N_RANDOM, 2))
    for i in range(N_RANDOM):
        stream = pools[which[i]][starts[i]:starts[i] + lengths[i]]
        _feed_checked(decoder, stream, sorted((cuts[i] * len(stream)).astype(int).tolist()))
    # after any garbage, a delimiter plus an intact frame is always recovered
    assert _feed_checked(decoder, b"\x00" + POOL[0], ()) == decoder_frames(0)
    assert N_CORRUPTED + N_RANDOM >= 100_000


_CLEAN = {}


def decoder_frames(index: int) -> list:
    """The frame(s) a clean decoder produces from POOL[index] (cached)."""
    if index not in _CLEAN:
        _CLEAN[index] = FrameDecoder().feed(POOL[index])
    return _CLEAN[index]
