"""Consistent Overhead Byte Stuffing (COBS), Cheshire & Baker 1999.

COBS removes every 0x00 from a byte string so that 0x00 can delimit frames.
The encoded form is a chain of blocks ``code, data[code-1]``: a block with
``code < 0xFF`` stands for its data followed by one 0x00, a block with
``code == 0xFF`` for 254 data bytes and no zero; the zero implied by the last
block is dropped. Overhead: at most ``ceil(n / 254)`` bytes (1 for n == 0).

Both functions work block by block (C-level ``split``/``find``/slicing for the
data), never byte by byte in Python.
"""

from __future__ import annotations

import numpy as np

from .errors import CobsError

_MAX_BLOCK = 254


def max_encoded_size(decoded_size: int) -> int:
    """Upper bound of the COBS-encoded length, without the frame delimiter.

    Parameters
    ----------
    decoded_size : int
        Length of the unstuffed data, in bytes.

    Returns
    -------
    int
        ``decoded_size + max(1, ceil(decoded_size / 254))``.
    """
    return decoded_size + max(1, -(-decoded_size // _MAX_BLOCK))


def encode(data: bytes | bytearray | memoryview) -> bytes:
    """COBS-encode ``data``; the result contains no 0x00 and no delimiter.

    Parameters
    ----------
    data : bytes
        Any bytes (bytes, bytearray or memoryview).

    Returns
    -------
    bytes
        Encoded bytes, ``len(data) + 1 <= len(result) <= max_encoded_size(len(data))``.
    """
    data = bytes(data)
    if data.count(0) < 256:  # few runs: a loop over the runs beats NumPy's overhead
        return _encode_runs(data)
    # Vectorised: cut the data into zero-free runs; run j (length L, starting at
    # `start` in the data with the zeros removed) becomes L // 254 full blocks
    # (code 0xFF) and a final block (code L % 254 + 1) that stands for the zero
    # after the run -- omitted for the last run if it ended on a full block.
    # Every block's code byte is inserted in front of its data.
    raw = np.frombuffer(data, dtype=np.uint8)
    zeros = np.flatnonzero(raw == 0)
    run_start = np.concatenate(([0], zeros + 1))
    length = np.concatenate((zeros, [raw.size])) - run_start
    full = length // _MAX_BLOCK
    blocks = full + 1
    if length[-1] and length[-1] % _MAX_BLOCK == 0:
        blocks[-1] -= 1
    run = np.repeat(np.arange(length.size), blocks)
    index_in_run = np.arange(run.size) - np.repeat(np.cumsum(blocks) - blocks, blocks)
    position = (run_start - np.arange(length.size))[run] + _MAX_BLOCK * index_in_run
    code = np.where(index_in_run < full[run], 0xFF, length[run] - _MAX_BLOCK * full[run] + 1)
    return np.insert(raw[raw != 0], position, code.astype(np.uint8)).tobytes()


def _encode_runs(data: bytes) -> bytes:
    """Loop over the zero-free runs (C-level ``split`` and slicing)."""
    chunks = data.split(b"\x00")
    out = bytearray()
    last = len(chunks) - 1
    for index, chunk in enumerate(chunks):
        n = len(chunk)
        start = 0
        while n - start >= _MAX_BLOCK:
            out.append(0xFF)
            out += chunk[start:start + _MAX_BLOCK]
            start += _MAX_BLOCK
        rest = n - start
        # A chunk that ended on a full 0xFF block still needs an empty block to
        # carry the zero that follows it -- except after the final chunk.
        if rest or n == 0 or index != last:
            out.append(rest + 1)
            out += chunk[start:]
    return bytes(out)


def decode(data: bytes | bytearray | memoryview) -> bytes:
    """Decode one COBS-encoded frame (without its 0x00 delimiter).

    Parameters
    ----------
    data : bytes
        Encoded bytes of exactly one frame.

    Returns
    -------
    bytes
        The original data.

    Raises
    ------
    CobsError
        If ``data`` is empty, contains 0x00, or a code byte points past the end.
    """
    data = bytes(data)
    n = len(data)
    if n == 0:
        raise CobsError("empty COBS frame")
    if data.find(0) >= 0:
        raise CobsError("zero byte inside COBS frame")
    # Walk the chain of code bytes (one step per block, not per byte). Each code
    # byte after the first sits exactly where the zero implied by the previous
    # block belongs: overwrite it with 0x00, or drop it if the previous block
    # was a full 0xFF block (no implied zero). Finally drop the first code byte.
    out = bytearray(data)
    no_zero: list[int] = []
    code = data[0]
    i = code
    while i < n:
        if code == 0xFF:
            no_zero.append(i)
        else:
            out[i] = 0
        code = data[i]
        i += code
    if i > n:
        raise CobsError(f"last COBS block claims {code - 1} bytes, only {n - (i - code) - 1} left")
    for i in reversed(no_zero):
        del out[i]
    del out[0]
    return bytes(out)
