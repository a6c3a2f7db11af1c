"""Protocol layer: typed messages <-> frames, validation, sequence tracking.

Every message has a ``seq`` attribute, the header sequence number; what it
means depends on the type (PROTOCOL.md, "Sequence numbers"):

=====================  ======================================================
SPECTRUM               the spectrum's own sequence number (sequenced)
STATUS                 the sequence number the *next* SPECTRUM will get
RESEND_UNAVAILABLE     the requested sequence number
HELLO                  0
ACK / NACK             sequence number of the frame acknowledged / rejected
RESEND_REQUEST         the wanted SPECTRUM sequence number
=====================  ======================================================
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal, TypeVar, overload

import msgpack
import numpy as np
import numpy.typing as npt

from .errors import InvalidField, MalformedPayload, UnknownMessageType, UnsupportedVersion
from .framing import Frame, encode_frame
from .wire import FLAG_RETRANSMIT, MAX_FRAME_SIZE, PROTOCOL_VERSION, SEQ_HALF, SEQ_MASK, MessageType, NackReason

#: Wire dtypes accepted for ``counts`` (key ``counts_dtype``), all little-endian.
COUNTS_DTYPES: dict[str, np.dtype[Any]] = {"f4": np.dtype("<f4"), "u2": np.dtype("<u2"), "u4": np.dtype("<u4")}
#: Most polynomial coefficients accepted in ``calibration``.
MAX_CALIBRATION_TERMS = 8
#: Longest accepted string field, in characters.
MAX_STRING_LENGTH = 256

_MISSING = object()

#: A decoded payload map: string keys, values not yet validated.
Fields = Mapping[str, object]
_T = TypeVar("_T")


# --------------------------------------------------------------------------- validation
@overload
def _field(fields: Fields, key: str, kinds: tuple[type[_T], ...], *,
           required: Literal[True] = True) -> _T: ...
@overload
def _field(fields: Fields, key: str, kinds: tuple[type[_T], ...], *, required: bool) -> _T | None: ...
def _field(fields: Fields, key: str, kinds: tuple[type[_T], ...], *, required: bool = True) -> _T | None:
    """Fetch ``fields[key]`` and check its type; None if optional and absent/nil."""
    value = fields.get(key, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise InvalidField(f"missing required field {key!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise InvalidField(f"field {key!r}: expected {names}, got {type(value).__name__}")
    return value


@overload
def _str(fields: Fields, key: str, *, required: Literal[True] = True) -> str: ...
@overload
def _str(fields: Fields, key: str, *, required: bool) -> str | None: ...
def _str(fields: Fields, key: str, *, required: bool = True) -> str | None:
    value = _field(fields, key, (str,), required=required)
    if value is not None and len(value) > MAX_STRING_LENGTH:
        raise InvalidField(f"field {key!r}: longer than {MAX_STRING_LENGTH} characters")
    return value


@overload
def _int(fields: Fields, key: str, *, bits: int = 32, required: Literal[True] = True) -> int: ...
@overload
def _int(fields: Fields, key: str, *, bits: int = 32, required: bool) -> int | None: ...
def _int(fields: Fields, key: str, *, bits: int = 32, required: bool = True) -> int | None:
    value = _field(fields, key, (int,), required=required)
    if value is not None and not 0 <= value < (1 << bits):
        raise InvalidField(f"field {key!r}: {value} outside u{bits}")
    return value


@overload
def _float(fields: Fields, key: str, *, positive: bool = False, required: Literal[True] = True) -> float: ...
@overload
def _float(fields: Fields, key: str, *, positive: bool = False, required: bool) -> float | None: ...
def _float(fields: Fields, key: str, *, positive: bool = False, required: bool = True) -> float | None:
    raw = _field(fields, key, (int, float), required=required)
    if raw is None:
        return None
    value = float(raw)
    if not math.isfinite(value) or (positive and value <= 0.0):
        raise InvalidField(f"field {key!r}: {value} is not a {'positive ' if positive else ''}finite number")
    return value


def _check_seq(seq: object) -> int:
    if isinstance(seq, bool) or not isinstance(seq, (int, np.integer)) or not 0 <= seq <= SEQ_MASK:
        raise InvalidField(f"sequence number {seq!r} outside u32")
    return int(seq)


def _finite_vector(name: str, values: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """``values`` as a contiguous float32 array of shape (N,), all finite."""
    array = np.ascontiguousarray(values, dtype=np.float32)
    if array.ndim != 1 or array.size == 0:
        raise InvalidField(f"{name}: expected a non-empty 1-D array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InvalidField(f"{name}: contains NaN or infinity")
    return array


def evaluate_calibration(coefficients: Iterable[float], n_pixels: int) -> npt.NDArray[np.float32]:
    """Raman-shift axis from a pixel calibration polynomial.

    Parameters
    ----------
    coefficients : iterable of float
        ``c0, c1, ..., ck`` (at most ``MAX_CALIBRATION_TERMS``) with
        ``shift_cm1(p) = sum_i c_i * p**i`` for pixel index ``p = 0 .. n_pixels-1``.
    n_pixels : int
        Number of detector pixels N.

    Returns
    -------
    np.ndarray, shape (N,), float32
        Raman shift per pixel in cm^-1, evaluated in float64 then rounded.

    Raises
    ------
    InvalidField
        If there are no or too many coefficients, or a result is not finite.
    """
    terms = np.asarray(list(coefficients), dtype=np.float64)
    if not 1 <= terms.size <= MAX_CALIBRATION_TERMS or not np.isfinite(terms).all():
        raise InvalidField(f"calibration: need 1..{MAX_CALIBRATION_TERMS} finite coefficients")
    pixels = np.arange(n_pixels, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        axis = np.polynomial.polynomial.polyval(pixels, terms).astype(np.float32)
    return _finite_vector("calibration axis", axis)


# --------------------------------------------------------------------------- messages
@dataclasses.dataclass(eq=False)
class SpectrumMessage:
    """One acquired spectrum (SPECTRUM, instrument -> host).

    Attributes
    ----------
    instrument_id : str
        Instrument serial/identifier.
    session_id : int
        u32 chosen by the instrument at boot; a change means its sequence restarted.
    acquisition_time_ns : int
        Start of acquisition, integer nanoseconds since the Unix epoch (UTC).
    integration_time_ms : float
        Detector integration time in milliseconds, > 0.
    laser_wavelength_nm : float
        Excitation wavelength in nanometres, > 0.
    raman_shift_cm1 : np.ndarray, shape (N,), float32
        Raman shift per pixel in cm^-1 (evaluated from ``calibration`` if that is given).
    counts : np.ndarray, shape (N,), float32
        Detector counts per pixel.
    sample_label : str or None
        Optional operator/sample label.
    calibration : tuple of float or None
        Pixel -> cm^-1 polynomial. When set, it is sent instead of the axis.
    counts_dtype : {"f4", "u2", "u4"}
        Wire encoding of ``counts`` (``u2``/``u4`` require integral counts).
    seq : int or None
        Sequence number (set by :func:`decode_frame`; default for :func:`encode_message`).
    retransmitted : bool
        True if the frame carried ``FLAG_RETRANSMIT``.
    """

    MSG_TYPE: ClassVar[MessageType] = MessageType.SPECTRUM

    instrument_id: str
    session_id: int
    acquisition_time_ns: int
    integration_time_ms: float
    laser_wavelength_nm: float
    raman_shift_cm1: npt.NDArray[np.float32] | None
    counts: npt.NDArray[np.float32]
    sample_label: str | None = None
    calibration: tuple[float, ...] | None = None
    counts_dtype: str = "f4"
    seq: int | None = None
    retransmitted: bool = False

    def __post_init__(self) -> None:
        self.counts = _finite_vector("counts", self.counts)
        if self.calibration is not None:
            self.calibration = tuple(float(c) for c in self.calibration)
            if self.raman_shift_cm1 is None:
                self.raman_shift_cm1 = evaluate_calibration(self.calibration, self.counts.size)
        if self.raman_shift_cm1 is None:
            raise InvalidField("need raman_shift_cm1 or calibration")
        self.raman_shift_cm1 = _finite_vector("raman_shift_cm1", self.raman_shift_cm1)
        if self.raman_shift_cm1.size != self.counts.size:
            raise InvalidField(f"raman_shift_cm1 has {self.raman_shift_cm1.size} points, "
                               f"counts {self.counts.size}")
        if self.counts_dtype not in COUNTS_DTYPES:
            raise InvalidField(f"counts_dtype {self.counts_dtype!r} not in {sorted(COUNTS_DTYPES)}")

    @property
    def n_pixels(self) -> int:
        """Number of points N."""
        return int(self.counts.size)

    def to_fields(self) -> dict[str, Any]:
        """Payload map of this message (see PROTOCOL.md, SPECTRUM)."""
        dtype = COUNTS_DTYPES[self.counts_dtype]
        counts = self.counts
        if dtype.kind == "u":
            info = np.iinfo(dtype)
            if (counts != np.round(counts)).any() or counts.min() < 0 or float(counts.max()) > info.max:
                raise InvalidField(f"counts are not integers in 0..{info.max} for dtype {self.counts_dtype}")
        fields: dict[str, Any] = {
            "instrument_id": self.instrument_id,
            "session_id": int(self.session_id),
            "acquisition_time_ns": int(self.acquisition_time_ns),
            "integration_time_ms": float(self.integration_time_ms),
            "laser_wavelength_nm": float(self.laser_wavelength_nm),
        }
        if self.calibration is not None:
            fields["calibration"] = list(self.calibration)
        elif self.raman_shift_cm1 is not None:
            fields["raman_shift_cm1"] = self.raman_shift_cm1.astype("<f4").tobytes()
        else:
            raise InvalidField("need raman_shift_cm1 or calibration")
        fields["counts_dtype"] = self.counts_dtype
        fields["counts"] = counts.astype(dtype).tobytes()
        if self.sample_label is not None:
            fields["sample_label"] = self.sample_label
        return fields

    @classmethod
    def from_fields(cls, fields: Fields, frame: Frame) -> SpectrumMessage:
        """Validate a decoded payload map (see :func:`decode_frame`)."""
        counts_dtype = _str(fields, "counts_dtype", required=False) or "f4"
        dtype = COUNTS_DTYPES.get(counts_dtype)
        if dtype is None:
            raise InvalidField(f"counts_dtype {counts_dtype!r} not in {sorted(COUNTS_DTYPES)}")
        raw = _field(fields, "counts", (bytes,))
        if len(raw) == 0 or len(raw) % dtype.itemsize:
            raise InvalidField(f"counts: {len(raw)} bytes is not a positive multiple of {dtype.itemsize}")
        counts = np.frombuffer(raw, dtype=dtype).astype(np.float32)
        calibration = _field(fields, "calibration", (list,), required=False)
        axis_raw = _field(fields, "raman_shift_cm1", (bytes,), required=False)
        if (calibration is None) == (axis_raw is None):
            raise InvalidField("exactly one of 'raman_shift_cm1' and 'calibration' is required")
        coefficients: tuple[float, ...] | None = None
        axis: npt.NDArray[np.float32] | None = None
        if calibration is not None:
            if not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in calibration):
                raise InvalidField("calibration: coefficients must be numbers")
            coefficients = tuple(calibration)
        elif axis_raw is not None:
            if len(axis_raw) != 4 * counts.size:
                raise InvalidField(f"raman_shift_cm1 has {len(axis_raw)} bytes, "
                                   f"expected {4 * counts.size} for {counts.size} counts")
            axis = np.frombuffer(axis_raw, dtype="<f4").astype(np.float32)
        return cls(
            instrument_id=_str(fields, "instrument_id"),
            session_id=_int(fields, "session_id"),
            acquisition_time_ns=_int(fields, "acquisition_time_ns", bits=64),
            integration_time_ms=_float(fields, "integration_time_ms", positive=True),
            laser_wavelength_nm=_float(fields, "laser_wavelength_nm", positive=True),
            raman_shift_cm1=axis, counts=counts,
            sample_label=_str(fields, "sample_label", required=False),
            calibration=coefficients, counts_dtype=counts_dtype,
            seq=frame.seq, retransmitted=bool(frame.flags & FLAG_RETRANSMIT))


@dataclasses.dataclass
class StatusMessage:
    """Heartbeat (STATUS, instrument -> host); ``seq`` is the next SPECTRUM seq.

    Attributes
    ----------
    instrument_id : str
    session_id : int
        u32 boot session, as in SPECTRUM.
    uptime_ms : int
        Milliseconds since the instrument booted.
    state : str
        Free-form state, e.g. ``"acquiring"``, ``"idle"``, ``"error"``.
    detector_temperature_c, laser_power_mw : float or None
        Optional housekeeping values (degrees Celsius, milliwatts).
    ring_oldest_seq : int or None
        Oldest sequence number still held in the resend ring buffer.
    message : str or None
        Optional human-readable text.
    seq : int or None
        Sequence number the next SPECTRUM will carry.
    """

    MSG_TYPE: ClassVar[MessageType] = MessageType.STATUS

    instrument_id: str
    session_id: int
    uptime_ms: int
    state: str = "acquiring"
    detector_temperature_c: float | None = None
    laser_power_mw: float | None = None
    ring_oldest_seq: int | None = None
    message: str | None = None
    seq: int | None = None

    @property
    def next_seq(self) -> int | None:
        """Alias of ``seq``: the sequence number of the next SPECTRUM."""
        return self.seq

    def to_fields(self) -> dict[str, Any]:
        """Payload map (optional fields left out when None)."""
        fields: dict[str, Any] = {"instrument_id": self.instrument_id, "session_id": int(self.session_id),
                  "uptime_ms": int(self.uptime_ms), "state": self.state}
        for key in ("detector_temperature_c", "laser_power_mw", "ring_oldest_seq", "message"):
            if getattr(self, key) is not None:
                fields[key] = getattr(self, key)
        return fields

    @classmethod
    def from_fields(cls, fields: Fields, frame: Frame) -> StatusMessage:
        """Validate a decoded payload map."""
        return cls(instrument_id=_str(fields, "instrument_id"), session_id=_int(fields, "session_id"),
                   uptime_ms=_int(fields, "uptime_ms", bits=64), state=_str(fields, "state"),
                   detector_temperature_c=_float(fields, "detector_temperature_c", required=False),
                   laser_power_mw=_float(fields, "laser_power_mw", required=False),
                   ring_oldest_seq=_int(fields, "ring_oldest_seq", required=False),
                   message=_str(fields, "message", required=False), seq=frame.seq)


@dataclasses.dataclass
class Hello:
    """Host announces itself after every (re)connect (HELLO, host -> instrument).

    The instrument answers with a STATUS at once, so the host learns the next
    sequence number (and any gap) without waiting for a heartbeat.
    """

    MSG_TYPE: ClassVar[MessageType] = MessageType.HELLO

    host_id: str = "host"
    seq: int = 0

    def to_fields(self) -> dict[str, Any]:
        """Payload map (see PROTOCOL.md)."""
        return {"host_id": self.host_id}

    @classmethod
    def from_fields(cls, fields: Fields, frame: Frame) -> Hello:
        """Validate a decoded payload map."""
        return cls(host_id=_str(fields, "host_id"), seq=frame.seq)


@dataclasses.dataclass
class Ack:
    """Acknowledges SPECTRUM ``seq`` (ACK, host -> instrument). Empty payload map."""

    MSG_TYPE: ClassVar[MessageType] = MessageType.ACK

    seq: int

    def to_fields(self) -> dict[str, Any]:
        """Payload map (see PROTOCOL.md)."""
        return {}

    @classmethod
    def from_fields(cls, fields: Fields, frame: Frame) -> Ack:
        """Validate a decoded payload map."""
        return cls(seq=frame.seq)


@dataclasses.dataclass
class Nack:
    """Rejects the intact frame with sequence number ``seq`` (NACK).

    Attributes
    ----------
    seq : int
    reason : int
        A :class:`~firmware_bridge.wire.NackReason` code (unknown codes are kept as int).
    detail : str
        Optional human-readable explanation ("" when absent).
    """

    MSG_TYPE: ClassVar[MessageType] = MessageType.NACK

    seq: int
    reason: int = NackReason.UNSPECIFIED
    detail: str = ""

    @property
    def reason_name(self) -> str:
        """Symbolic name of ``reason`` (``"UNKNOWN_<n>"`` for codes not in the table)."""
        try:
            return NackReason(self.reason).name
        except ValueError:
            return f"UNKNOWN_{self.reason}"

    def to_fields(self) -> dict[str, Any]:
        """Payload map (see PROTOCOL.md)."""
        fields: dict[str, Any] = {"reason": int(self.reason)}
        if self.detail:
            fields["detail"] = self.detail[:MAX_STRING_LENGTH]
        return fields

    @classmethod
    def from_fields(cls, fields: Fields, frame: Frame) -> Nack:
        """Validate a decoded payload map."""
        reason = _int(fields, "reason", bits=8)
        known = reason in NackReason._value2member_map_
        return cls(seq=frame.seq, reason=NackReason(reason) if known else reason,
                   detail=_str(fields, "detail", required=False) or "")


@dataclasses.dataclass
class ResendRequest:
    """Asks the instrument to retransmit SPECTRUM ``seq`` (RESEND_REQUEST)."""

    MSG_TYPE: ClassVar[MessageType] = MessageType.RESEND_REQUEST

    seq: int

    def to_fields(self) -> dict[str, Any]:
        """Payload map (see PROTOCOL.md)."""
        return {}

    @classmethod
    def from_fields(cls, fields: Fields, frame: Frame) -> ResendRequest:
        """Validate a decoded payload map."""
        return cls(seq=frame.seq)


@dataclasses.dataclass
class ResendUnavailable:
    """The instrument no longer holds SPECTRUM ``seq`` (RESEND_UNAVAILABLE).

    Attributes
    ----------
    seq : int
        The requested sequence number.
    oldest_seq : int or None
        Oldest sequence number still in the ring buffer, if any.
    """

    MSG_TYPE: ClassVar[MessageType] = MessageType.RESEND_UNAVAILABLE

    seq: int
    oldest_seq: int | None = None

    def to_fields(self) -> dict[str, Any]:
        """Payload map (see PROTOCOL.md)."""
        return {} if self.oldest_seq is None else {"oldest_seq": int(self.oldest_seq)}

    @classmethod
    def from_fields(cls, fields: Fields, frame: Frame) -> ResendUnavailable:
        """Validate a decoded payload map."""
        return cls(seq=frame.seq, oldest_seq=_int(fields, "oldest_seq", required=False))


Message = SpectrumMessage | StatusMessage | Hello | Ack | Nack | ResendRequest | ResendUnavailable
_MESSAGE_TYPES: tuple[type[Message], ...] = (
    SpectrumMessage, StatusMessage, Hello, Ack, Nack, ResendRequest, ResendUnavailable)
MESSAGE_CLASSES: dict[MessageType, type[Message]] = {cls.MSG_TYPE: cls for cls in _MESSAGE_TYPES}


def message_to_dict(msg: Message) -> dict[str, Any]:
    """JSON-friendly view of a message: ``{"type": name, "seq": ..., field: value}``.

    Arrays become lists of float, enums their integer code; used by the test
    vectors and for logging.
    """
    out: dict[str, Any] = {"type": msg.MSG_TYPE.name}
    for field in dataclasses.fields(msg):
        value = getattr(msg, field.name)
        if isinstance(value, np.ndarray):
            value = [float(v) for v in value]
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, enum.IntEnum):
            value = int(value)
        out[field.name] = value
    return out


def encode_payload(msg: Message) -> bytes:
    """Msgpack payload of ``msg`` (a map with string keys, binary as bin)."""
    payload: bytes = msgpack.packb(msg.to_fields(), use_bin_type=True)  # msgpack has no type hints
    return payload


def encode_message(msg: Message, seq: int | None = None, *, retransmit: bool = False,
                   max_frame_size: int = MAX_FRAME_SIZE) -> bytes:
    """Wire bytes (COBS-encoded, 0x00-terminated) of one message.

    Parameters
    ----------
    msg : Message
        Any message dataclass of this module.
    seq : int, optional
        Header sequence number; defaults to ``msg.seq``.
    retransmit : bool, optional
        Set ``FLAG_RETRANSMIT`` (a resend from the ring buffer).
    max_frame_size : int, optional
        Largest allowed unstuffed frame, in bytes.

    Returns
    -------
    bytes

    Raises
    ------
    InvalidField
        If ``seq`` is missing/out of range or a field cannot be encoded.
    FrameTooLargeError
        If the frame exceeds ``max_frame_size``.
    """
    seq = _check_seq(msg.seq if seq is None else seq)
    flags = FLAG_RETRANSMIT if retransmit else 0
    return encode_frame(msg.MSG_TYPE, seq, encode_payload(msg), flags=flags,
                        max_frame_size=max_frame_size)


def decode_payload(payload: bytes) -> dict[str, object]:
    """Unpack a msgpack payload that must be a map with string keys.

    Raises
    ------
    MalformedPayload
        If the bytes are not exactly one msgpack map with string keys.
    """
    try:
        fields = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)
    except (msgpack.exceptions.UnpackException, msgpack.exceptions.ExtraData,
            ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedPayload(f"payload is not valid msgpack: {exc}") from exc
    if not isinstance(fields, dict) or not all(isinstance(key, str) for key in fields):
        raise MalformedPayload(f"payload must be a map with string keys, got {type(fields).__name__}")
    return fields


def decode_frame(frame: Frame) -> Message:
    """Turn an intact frame into a validated message.

    Parameters
    ----------
    frame : Frame
        A frame returned by :class:`~firmware_bridge.framing.FrameDecoder`.

    Returns
    -------
    Message
        The message dataclass for ``frame.msg_type``, with ``seq`` set.

    Raises
    ------
    UnsupportedVersion
        Version byte is not ``PROTOCOL_VERSION``.
    UnknownMessageType
        Type byte not in :class:`~firmware_bridge.wire.MessageType`.
    MalformedPayload
        Payload is not a msgpack map with string keys.
    InvalidField
        Missing/ill-typed field, non-finite value, or array length mismatch.
    """
    if frame.version != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"protocol version {frame.version}, expected {PROTOCOL_VERSION}")
    try:
        cls = MESSAGE_CLASSES[MessageType(frame.msg_type)]
    except ValueError:
        raise UnknownMessageType(f"unknown message type 0x{frame.msg_type:02x}") from None
    return cls.from_fields(decode_payload(frame.payload), frame)


# --------------------------------------------------------------------------- sequencing
def seq_add(seq: int, delta: int) -> int:
    """``seq + delta`` modulo 2**32."""
    return (seq + delta) & SEQ_MASK


def seq_diff(a: int, b: int) -> int:
    """Signed serial-number distance ``a - b`` (RFC 1982), in ``[-2**31, 2**31)``."""
    d = (a - b) & SEQ_MASK
    return d - (1 << 32) if d >= SEQ_HALF else d


@dataclasses.dataclass(frozen=True)
class SeqObservation:
    """What :class:`SequenceTracker` concluded about one sequence number.

    Attributes
    ----------
    kind : str
        ``"first"`` (tracking starts here), ``"new"`` (ahead of the highest seen),
        ``"recovered"`` (a missing number arrived), ``"duplicate"`` (already
        received, or older than the tracking start), ``"late"`` (arrived after it
        was given up as lost), ``"restart"`` (instrument session changed) or
        ``"resync"`` (jump too large to be a gap). ``"none"`` for a STATUS that
        brings nothing new.
    seq : int
    missing : tuple of int
        Sequence numbers newly found missing, oldest first.
    abandoned : tuple of int
        Previously missing numbers dropped by a restart/resync (now lost).
    """

    kind: str
    seq: int
    missing: tuple[int, ...] = ()
    abandoned: tuple[int, ...] = ()

    @property
    def deliver(self) -> bool:
        """True if the spectrum carrying ``seq`` is new and must be delivered."""
        return self.kind in ("first", "new", "recovered", "restart", "resync")


class SequenceTracker:
    """Gap, duplicate and restart detection on the u32 SPECTRUM sequence.

    Sequence numbers compare in serial-number arithmetic (RFC 1982), so the
    wrap from 0xFFFFFFFF to 0 is an ordinary step of +1.

    Parameters
    ----------
    window : int, optional
        How many received (and given-up) numbers are remembered for duplicate
        detection; also the largest backwards jump treated as a late/duplicate
        frame rather than a resync.
    max_gap : int, optional
        Largest forward jump treated as a gap; a larger one is a resync (the
        skipped numbers are not listed individually).
    """

    def __init__(self, *, window: int = 4096, max_gap: int = 65536) -> None:
        if window < 1 or max_gap < 1:
            raise ValueError("window and max_gap must be >= 1")
        self.window = window
        self.max_gap = max_gap
        self.reset()

    def reset(self) -> None:
        """Forget everything (the next number observed starts tracking)."""
        self.highest: int | None = None
        self.session_id: int | None = None
        self._missing: dict[int, None] = {}
        self._received = _BoundedSet(self.window)
        self._lost = _BoundedSet(self.window)

    @property
    def missing(self) -> tuple[int, ...]:
        """Sequence numbers currently missing, in detection order (oldest first)."""
        return tuple(self._missing)

    def is_missing(self, seq: int) -> bool:
        """True if ``seq`` is currently listed as missing."""
        return seq in self._missing

    def give_up(self, seq: int) -> bool:
        """Declare missing ``seq`` lost; a later arrival is then ``"late"``.

        Returns
        -------
        bool
            True if ``seq`` was missing.
        """
        if self._missing.pop(seq, _MISSING) is _MISSING:
            return False
        self._lost.add(seq)
        return True

    def observe(self, seq: int, session_id: int | None = None) -> SeqObservation:
        """Classify the sequence number of an arriving SPECTRUM.

        Parameters
        ----------
        seq : int
            u32 sequence number from the frame header.
        session_id : int, optional
            Instrument boot session; a change restarts tracking.

        Returns
        -------
        SeqObservation
        """
        restart = self._check_session(session_id)
        if restart is not None or self.highest is None:
            return self._start(seq, seq, restart)
        d = seq_diff(seq, self.highest)
        if d > 0:
            if d - 1 > self.max_gap:
                return self._start(seq, seq, ("resync", self._abandon()))
            missing = self._add_missing(self.highest, d - 1)
            self.highest = seq
            self._received.add(seq)
            return SeqObservation("new", seq, missing)
        if seq in self._missing:
            del self._missing[seq]
            self._received.add(seq)
            return SeqObservation("recovered", seq)
        if seq in self._lost:
            return SeqObservation("late", seq)
        if d == 0 or seq in self._received or -d <= self.window:
            return SeqObservation("duplicate", seq)
        return self._start(seq, seq, ("resync", self._abandon()))

    def observe_next(self, next_seq: int, session_id: int | None = None) -> SeqObservation:
        """Account for a STATUS announcing the next SPECTRUM sequence number.

        Every number before ``next_seq`` that was neither received nor already
        missing becomes missing, which detects lost frames at the end of a burst.

        Parameters
        ----------
        next_seq : int
            Header seq of the STATUS.
        session_id : int, optional
            Instrument boot session.

        Returns
        -------
        SeqObservation
            ``seq`` is the last number already sent (``next_seq - 1``).
        """
        last = seq_add(next_seq, -1)
        restart = self._check_session(session_id)
        if restart is not None or self.highest is None:
            return self._start(last, None, restart)
        d = seq_diff(last, self.highest)
        if d <= 0:
            return SeqObservation("none", last)
        if d > self.max_gap:
            return self._start(last, None, ("resync", self._abandon()))
        missing = self._add_missing(self.highest, d)
        self.highest = last
        return SeqObservation("new", last, missing)

    # ------------------------------------------------------------------ helpers
    def _check_session(self, session_id: int | None) -> tuple[str, tuple[int, ...]] | None:
        if session_id is None or session_id == self.session_id:
            return None
        previous, self.session_id = self.session_id, session_id
        if previous is None:
            return None
        return ("restart", self._abandon())

    def _abandon(self) -> tuple[int, ...]:
        abandoned = tuple(self._missing)
        session = self.session_id
        self.reset()
        self.session_id = session
        return abandoned

    def _start(self, highest: int, received: int | None,
               event: tuple[str, tuple[int, ...]] | None) -> SeqObservation:
        self.highest = highest
        if received is not None:
            self._received.add(received)
        kind, abandoned = event if event is not None else ("first", ())
        return SeqObservation(kind, highest, abandoned=abandoned)

    def _add_missing(self, after: int, count: int) -> tuple[int, ...]:
        """List the ``count`` numbers following ``after`` as missing."""
        missing = tuple(seq_add(after, i) for i in range(1, count + 1))
        self._missing.update(dict.fromkeys(missing))
        return missing


class _BoundedSet:
    """Set remembering only the ``size`` most recently added members."""

    def __init__(self, size: int) -> None:
        self._set: set[int] = set()
        self._order: collections.deque[int] = collections.deque()
        self._size = size

    def add(self, item: int) -> None:
        if item in self._set:
            return
        self._set.add(item)
        self._order.append(item)
        if len(self._order) > self._size:
            self._set.discard(self._order.popleft())

    def __contains__(self, item: int) -> bool:
        return item in self._set


@dataclasses.dataclass
class ProtocolCounters:
    """Message-level counters kept by :class:`~firmware_bridge.link.InstrumentLink`."""

    spectra_delivered: int = 0
    spectra_retransmitted: int = 0
    statuses: int = 0
    duplicates: int = 0
    late_after_lost: int = 0
    gaps_detected: int = 0
    seqs_missing: int = 0
    seqs_recovered: int = 0
    seqs_lost: int = 0
    restarts: int = 0
    resyncs: int = 0
    protocol_errors: int = 0
    acks_sent: int = 0
    spectra_reoffered: int = 0
    spectra_not_taken: int = 0
    nacks_sent: int = 0
    nacks_received: int = 0
    hellos_sent: int = 0
    resend_requests_sent: int = 0
    resend_unavailable: int = 0
    unexpected_messages: int = 0

    def as_dict(self) -> dict[str, int]:
        """Counters as a plain ``{name: value}`` dict."""
        return dataclasses.asdict(self)
