"""Framing layer: header + payload + CRC-32, COBS-stuffed, 0x00-delimited.

This layer is I/O free. :func:`encode_frame` builds the bytes to write;
:class:`FrameDecoder` takes bytes as they arrive (any chunking) and returns the
intact frames. Damaged frames never raise out of :meth:`FrameDecoder.feed`:
they are counted and optionally reported as :class:`Rejection` events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from . import cobs
from .crc import crc32
from .errors import (
    CobsError,
    CrcError,
    FrameLengthError,
    FrameTooLargeError,
    FramingError,
    ProtocolError,
    UnsupportedVersion,
)
from .wire import CRC_SIZE, HEADER, HEADER_SIZE, MAX_FRAME_SIZE, OVERHEAD, PROTOCOL_VERSION, SEQ_MASK

#: Bytes the decoder may buffer beyond ``max_encoded_size(max_frame_size)``.
BUFFER_SLACK = 16


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    """One intact frame (CRC verified, length consistent).

    Attributes
    ----------
    msg_type : int
        Header message type (not yet checked against :class:`~firmware_bridge.wire.MessageType`).
    seq : int
        Header sequence number, u32.
    payload : bytes
        msgpack payload, ``payload_length`` bytes.
    flags : int
        Header flag bits (``FLAG_RETRANSMIT``).
    version : int
        Header protocol version.
    """

    msg_type: int
    seq: int
    payload: bytes
    flags: int = 0
    version: int = PROTOCOL_VERSION


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    """A frame the decoder discarded.

    Attributes
    ----------
    error : FramingError or ProtocolError
        Why it was discarded (class tells the counter it went to).
    n_bytes : int
        Encoded bytes thrown away with it.
    """

    error: FramingError | ProtocolError
    n_bytes: int


@dataclasses.dataclass(slots=True)
class DecoderCounters:
    """Counters of a :class:`FrameDecoder`; ``bytes_discarded`` counts encoded
    bytes of every rejected frame, of overflowing partial frames and of bytes
    dropped by :meth:`FrameDecoder.reset`.
    """

    frames_ok: int = 0
    crc_errors: int = 0
    length_errors: int = 0
    cobs_errors: int = 0
    version_errors: int = 0
    oversize: int = 0
    bytes_received: int = 0
    bytes_discarded: int = 0

    def as_dict(self) -> dict[str, int]:
        """Counters as a plain ``{name: value}`` dict."""
        return dataclasses.asdict(self)


_COUNTER_FOR = {
    CobsError: "cobs_errors",
    CrcError: "crc_errors",
    FrameLengthError: "length_errors",
    FrameTooLargeError: "oversize",
    UnsupportedVersion: "version_errors",
}


def build_frame(msg_type: int, seq: int, payload: bytes, *, flags: int = 0,
                max_frame_size: int = MAX_FRAME_SIZE) -> bytes:
    """Unstuffed frame bytes: header + payload + CRC-32 (little-endian).

    Parameters
    ----------
    msg_type : int
        Message type code, 0..255.
    seq : int
        Sequence number, 0..2**32-1.
    payload : bytes
        msgpack payload.
    flags : int, optional
        Header flag bits, 0..255.
    max_frame_size : int, optional
        Largest allowed frame, header and CRC included, in bytes.

    Returns
    -------
    bytes
        ``len(payload) + 16`` bytes, not yet COBS-encoded.

    Raises
    ------
    ValueError
        If ``msg_type``, ``flags`` or ``seq`` is out of range.
    FrameTooLargeError
        If the frame would exceed ``max_frame_size``.
    """
    if not (0 <= msg_type <= 0xFF and 0 <= flags <= 0xFF and 0 <= seq <= SEQ_MASK):
        raise ValueError(f"header field out of range: msg_type={msg_type} flags={flags} seq={seq}")
    size = len(payload) + OVERHEAD
    if size > max_frame_size:
        raise FrameTooLargeError(f"frame of {size} bytes exceeds {max_frame_size}")
    body = HEADER.pack(PROTOCOL_VERSION, msg_type, flags, 0, seq, len(payload)) + bytes(payload)
    return body + crc32(body).to_bytes(CRC_SIZE, "little")


def encode_frame(msg_type: int, seq: int, payload: bytes, *, flags: int = 0,
                 max_frame_size: int = MAX_FRAME_SIZE) -> bytes:
    """Wire bytes of one frame: COBS(header + payload + CRC) followed by 0x00.

    Parameters and exceptions are those of :func:`build_frame`.

    Returns
    -------
    bytes
        Bytes ready to write to the serial line, ending with the 0x00 delimiter.
    """
    return cobs.encode(build_frame(msg_type, seq, payload, flags=flags,
                                   max_frame_size=max_frame_size)) + b"\x00"


def parse_frame(decoded: bytes, *, max_frame_size: int = MAX_FRAME_SIZE) -> Frame:
    """Check and split one unstuffed frame.

    Checks, in this order: size limit, minimum length, CRC, version, length field.

    Parameters
    ----------
    decoded : bytes
        Frame bytes after COBS decoding (header + payload + CRC).
    max_frame_size : int, optional
        Largest allowed frame in bytes.

    Returns
    -------
    Frame

    Raises
    ------
    FrameTooLargeError, FrameLengthError, CrcError
        Damaged frame.
    UnsupportedVersion
        CRC is valid but the version byte is not ``PROTOCOL_VERSION``.
    """
    n = len(decoded)
    if n > max_frame_size:
        raise FrameTooLargeError(f"frame of {n} bytes exceeds {max_frame_size}")
    if n < OVERHEAD:
        raise FrameLengthError(f"frame of {n} bytes is shorter than header+CRC ({OVERHEAD})")
    received = int.from_bytes(decoded[n - CRC_SIZE:], "little")
    computed = crc32(memoryview(decoded)[:n - CRC_SIZE])
    if received != computed:
        raise CrcError(f"CRC mismatch: received 0x{received:08x}, computed 0x{computed:08x}")
    version, msg_type, flags, _reserved, seq, length = HEADER.unpack_from(decoded)
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"protocol version {version}, expected {PROTOCOL_VERSION}")
    if length != n - OVERHEAD:
        raise FrameLengthError(f"header says {length} payload bytes, frame has {n - OVERHEAD}")
    return Frame(msg_type, seq, bytes(decoded[HEADER_SIZE:n - CRC_SIZE]), flags, version)


class FrameDecoder:
    """Incremental, I/O-free frame decoder with resynchronisation.

    Bytes are split at 0x00 delimiters; each delimited chunk is COBS-decoded and
    checked with :func:`parse_frame`. A damaged chunk is dropped and counted, and
    decoding resumes at the next delimiter, so garbage costs at most the frame
    it touches. A partial frame that grows beyond :attr:`buffer_limit` is
    dropped (counted in ``oversize``) and the rest of it, up to the next
    delimiter, is discarded without buffering.

    Parameters
    ----------
    max_frame_size : int, optional
        Largest accepted unstuffed frame in bytes (header + payload + CRC).
    on_reject : callable, optional
        Called with a :class:`Rejection` for each discarded frame.

    Attributes
    ----------
    counters : DecoderCounters
    buffer_limit : int
        Most bytes ever held in the partial-frame buffer.
    """

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE,
                 on_reject: Callable[[Rejection], None] | None = None) -> None:
        if max_frame_size < OVERHEAD:
            raise ValueError(f"max_frame_size must be >= {OVERHEAD}")
        self.max_frame_size = max_frame_size
        self.buffer_limit = cobs.max_encoded_size(max_frame_size) + BUFFER_SLACK
        self.counters = DecoderCounters()
        self._on_reject = on_reject
        self._buf = bytearray()
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes of the current partial frame held in the buffer."""
        return len(self._buf)

    def reset(self) -> None:
        """Drop any partial frame (call after a reconnect: the old stream is gone)."""
        self.counters.bytes_discarded += len(self._buf)
        self._buf.clear()
        self._discarding = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Consume received bytes and return the frames they completed.

        Parameters
        ----------
        data : bytes
            Any number of bytes from the line (bytes, bytearray, memoryview).

        Returns
        -------
        list of Frame
            Intact frames completed by ``data``, in arrival order. Damaged frames
            are counted and reported to ``on_reject``; ``feed`` does not raise.
        """
        data = bytes(data)
        self.counters.bytes_received += len(data)
        frames: list[Frame] = []
        pos, n = 0, len(data)
        while pos < n:
            end = data.find(0, pos)
            if end < 0:
                self._append(data[pos:])
                break
            piece = data[pos:end]
            pos = end + 1
            if self._discarding:
                self.counters.bytes_discarded += len(piece)
                self._discarding = False
            elif len(self._buf) + len(piece) > self.buffer_limit:
                self._overflow(len(self._buf) + len(piece))
                self._discarding = False
            elif self._buf:
                self._buf += piece
                chunk = bytes(self._buf)
                self._buf.clear()
                self._decode(chunk, frames)
            elif piece:
                self._decode(piece, frames)
        return frames

    def _append(self, piece: bytes) -> None:
        """Buffer the start of a frame whose delimiter has not arrived yet."""
        if self._discarding:
            self.counters.bytes_discarded += len(piece)
        elif len(self._buf) + len(piece) > self.buffer_limit:
            self._overflow(len(self._buf) + len(piece))
        else:
            self._buf += piece

    def _overflow(self, n_bytes: int) -> None:
        self._buf.clear()
        self._discarding = True
        self._reject(FrameTooLargeError(
            f"partial frame exceeds {self.buffer_limit} buffered bytes"), n_bytes)

    def _decode(self, chunk: bytes, frames: list[Frame]) -> None:
        try:
            frame = parse_frame(cobs.decode(chunk), max_frame_size=self.max_frame_size)
        except (FramingError, UnsupportedVersion) as exc:
            self._reject(exc, len(chunk))
        else:
            self.counters.frames_ok += 1
            frames.append(frame)

    def _reject(self, error: FramingError | ProtocolError, n_bytes: int) -> None:
        counters = self.counters
        name = _COUNTER_FOR[type(error)]
        setattr(counters, name, getattr(counters, name) + 1)
        counters.bytes_discarded += n_bytes
        if self._on_reject is not None:
            self._on_reject(Rejection(error, n_bytes))
