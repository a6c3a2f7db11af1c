"""ZeroMQ wire format of the daemon: msgpack maps, arrays as raw little-endian bytes with dtype and shape.

The specification is ``docs/wire.md`` (version 1); the field tables it describes are declared once in
:mod:`edge.wire_spec` (with their JSON Schema, ``edge/wire_schema.json``) and checked here; conformance vectors
are in ``edge/wire_vectors.json``. In short:

Input (PUSH → the daemon's PULL socket), one frame, a map ``{"type": "spectrum", "v": 1, "intensity": array,
"raman_shift_cm1": array, "id", "sent_ns", "instrument_id", "instrument_seq", "label"}``; an array is a map
``{"dtype": "<f4" | "<f8" | "<u2" | "<u4" | "<i2" | "<i4", "shape": [M], "data": bin}``.

Output (the daemon's PUB socket), two frames ``[topic, payload]``: topic ``b"prediction"``, ``b"error"``,
``b"status"``, ``b"drift"`` or ``b"link"``; payload a msgpack map.

Events (the serial input → the daemon's internal input, :func:`encode_event`), a small map whose first key is
``type``: ``"link"`` is republished on the ``link`` topic; ``"lost"`` on the ``error`` topic with reason
``"lost"``. Only the specified fields of an event travel on. On the public input an event is refused
(:func:`event_type` tells it apart): input peers cannot forge link states or lost spectra.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from .errors import WireError
from .wire_spec import (
    ARRAY_DTYPES,
    LINK_EVENT,
    LOST_EVENT,
    MAX_ABS_INTENSITY,
    MAX_ABS_SHIFT_CM1,
    MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_POINTS,
    SPECTRUM,
    WIRE_VERSION,
    check_field,
)

__all__ = [
    "EVENT_TYPES",
    "MAX_MESSAGE_BYTES",
    "MAX_POINTS",
    "TOPICS",
    "WIRE_VERSION",
    "SpectrumIn",
    "decode_event",
    "decode_payload",
    "decode_spectrum",
    "encode_event",
    "encode_payload",
    "encode_spectrum",
    "event_type",
    "pack_array",
    "peek_identity",
    "unpack_array",
]

TOPICS = {"prediction": b"prediction", "error": b"error", "status": b"status", "drift": b"drift", "link": b"link"}
_DTYPES = frozenset(ARRAY_DTYPES)
#: Event types an input may hand to the daemon besides spectra (see :func:`encode_event`).
EVENT_TYPES = ("link", "lost")
_MAX_EVENT_BYTES = MAX_EVENT_BYTES  # events are small; a frame above this is never parsed as an event
_FIELDS = {f.name: f for f in SPECTRUM.fields}
_IDENTITY = ("id", "instrument_id", "instrument_seq")
_EVENT_FIELDS = {"link": {f.name: f for f in LINK_EVENT.fields}, "lost": {f.name: f for f in LOST_EVENT.fields}}


def pack_array(a: np.ndarray) -> dict[str, Any]:
    """Pack an array as a msgpack-ready map (little-endian bytes, dtype string, shape)."""
    a = np.asarray(a)
    dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    a = np.ascontiguousarray(a, dtype=dt)
    return {"dtype": dt.str.replace("=", "<").replace("|", "<"), "shape": list(a.shape), "data": a.tobytes()}


def unpack_array(m: Any, name: str) -> np.ndarray:
    """Inverse of :func:`pack_array` with validation.

    Parameters
    ----------
    m : Any
        The decoded msgpack value: a map ``{"dtype", "shape", "data"}`` (docs/wire.md, "Arrays").
    name : str
        Field name, for the error message.

    Returns
    -------
    numpy.ndarray, shape (M,)
        A read-only view of ``data`` with the given dtype.

    Raises
    ------
    WireError
        If the map lacks fields, names an unsupported dtype, has a bad shape, or its byte count does not
        match its shape.
    """
    if not isinstance(m, dict) or not {"dtype", "shape", "data"} <= set(m):
        raise WireError(f"{name}: expected a map with dtype, shape, data")
    dtype, shape, data = m["dtype"], m["shape"], m["data"]
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise WireError(f"{name}: unsupported dtype {dtype!r:.60} (use one of {sorted(_DTYPES)})")
    if (not isinstance(shape, (list, tuple)) or len(shape) != 1 or not isinstance(shape[0], int)
            or isinstance(shape[0], bool) or not 0 < shape[0] <= MAX_POINTS):
        raise WireError(f"{name}: shape must be [M] with 0 < M ≤ {MAX_POINTS}, got {shape!r:.60}")
    if not isinstance(data, (bytes, bytearray)):
        raise WireError(f"{name}: data must be msgpack bin (raw bytes), got {type(data).__name__}")
    if len(data) != shape[0] * np.dtype(dtype).itemsize:
        raise WireError(f"{name}: {len(data)} bytes do not hold {shape[0]} values of {dtype}")
    return np.frombuffer(data, dtype=dtype)


def _check_magnitude(a: np.ndarray, name: str, limit: float) -> None:
    """Refuse finite values beyond ``limit`` (NaN and Inf are left to preprocessing, which names them)."""
    if a.dtype.kind != "f" or (a.max() <= limit and a.min() >= -limit):
        return  # integer dtypes of the wire (≤ 32 bits) stay far below every limit; NaN: preprocessing refuses
    big = np.isfinite(a) & (np.abs(a) > limit)
    if big.any():
        worst = float(np.max(np.abs(a[big])))
        raise WireError(f"{name}: {int(big.sum())} value(s) up to {worst:.3g} exceed ±{limit:.0e}; scale the "
                        "spectrum down before sending")


@dataclass
class SpectrumIn:
    """A decoded input spectrum (arrays are read-only views of the message bytes)."""

    id: str
    intensity: np.ndarray
    raman_shift_cm1: np.ndarray | None
    sent_ns: int | None = None
    instrument_id: str | None = None
    instrument_seq: int | None = None
    label: str | None = None


def encode_spectrum(intensity: np.ndarray, raman_shift_cm1: np.ndarray | None = None, *, id: str | None = None,
                    sent_ns: int | None = None, instrument_id: str | None = None,
                    instrument_seq: int | None = None, label: str | None = None) -> bytes:
    """Encode one spectrum for the daemon's input socket.

    Parameters
    ----------
    intensity : numpy.ndarray, shape (M,)
        Intensities (float32 recommended).
    raman_shift_cm1 : numpy.ndarray, shape (M,), optional
        Raman shift in cm⁻¹; omit when the intensities are on the model's grid.
    id, sent_ns, instrument_id, instrument_seq, label
        See the module docstring; ``sent_ns`` defaults to ``time.time_ns()`` now.
    """
    msg: dict[str, Any] = {"type": "spectrum", "v": WIRE_VERSION, "id": id or uuid.uuid4().hex[:16],
                           "intensity": pack_array(intensity),
                           "sent_ns": time.time_ns() if sent_ns is None else sent_ns}
    if raman_shift_cm1 is not None:
        msg["raman_shift_cm1"] = pack_array(raman_shift_cm1)
    for k, v in (("instrument_id", instrument_id), ("instrument_seq", instrument_seq), ("label", label)):
        if v is not None:
            msg[k] = v
    return msgpack.packb(msg, use_bin_type=True)


def _checked(msg: dict[str, Any], keys: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """Check ``keys`` of a decoded map: their values (None when absent or invalid) and the problems found."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key in keys:
        value, problem = check_field(_FIELDS[key], msg.get(key))
        values[key] = None if problem else value
        if problem:
            problems.append(problem)
    return values, problems


def _identity(msg: dict[str, Any]) -> dict[str, Any]:
    """``id``, ``instrument_id``, ``instrument_seq`` of a decoded map, each None when absent or invalid."""
    return _checked(msg, _IDENTITY)[0]


def peek_identity(frame: bytes) -> dict[str, Any]:
    """Read the identity fields (``id``, ``instrument_id``, ``instrument_seq``) of a frame, for a rejection.

    Each is None when it cannot be read (the frame is not a msgpack map, or the field is absent or invalid).

    Parameters
    ----------
    frame : bytes
        Any input frame (at most :data:`MAX_MESSAGE_BYTES` are read).

    Returns
    -------
    dict
    """
    try:
        msg = msgpack.unpackb(frame, raw=False, strict_map_key=True, max_bin_len=MAX_MESSAGE_BYTES,
                              max_str_len=MAX_MESSAGE_BYTES)
    except Exception:  # any undecodable frame simply has no identity
        return {"id": None, "instrument_id": None, "instrument_seq": None}
    return _identity(msg if isinstance(msg, dict) else {})


def decode_spectrum(frame: bytes) -> SpectrumIn:
    """Decode and validate one input frame (docs/wire.md, "spectrum").

    Parameters
    ----------
    frame : bytes
        One msgpack map.

    Returns
    -------
    SpectrumIn

    Raises
    ------
    WireError
        Larger than :data:`MAX_MESSAGE_BYTES`, not msgpack, not a map, wrong type or version, missing or
        malformed fields, or values beyond the limits. Its ``identity`` holds the ``id``, ``instrument_id``,
        ``instrument_seq`` that could be read.
    """
    if len(frame) > MAX_MESSAGE_BYTES:  # ZeroMQ drops these on tcp/ipc (edge.socket_limits); inproc does not
        raise WireError(f"message of {len(frame)} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes")
    try:
        msg = msgpack.unpackb(frame, raw=False, strict_map_key=True, max_bin_len=8 * MAX_POINTS + 64)
    except Exception as exc:  # msgpack raises several foreign types for damaged bytes
        raise WireError(f"not a msgpack message: {type(exc).__name__}: {exc}") from exc
    if not isinstance(msg, dict):
        raise WireError(f"message must be a map, got {type(msg).__name__}")
    identity, problems = _checked(msg, _IDENTITY)
    try:
        return _decode_map(msg, identity, problems)
    except WireError as exc:
        exc.identity = identity
        raise
    except Exception as exc:  # a foreign error here is a validation gap: still a wire rejection
        raise WireError(f"malformed spectrum: {type(exc).__name__}: {exc}", identity) from exc


def _decode_map(msg: dict[str, Any], identity: dict[str, Any], identity_problems: list[str]) -> SpectrumIn:
    if msg.get("type") != "spectrum":
        raise WireError(f"message type must be 'spectrum', got {msg.get('type')!r:.60}")
    if type(msg.get("v")) is not int or msg["v"] != WIRE_VERSION:
        raise WireError(f"wire version {msg.get('v')!r:.60} not supported (this daemon speaks the int {WIRE_VERSION})")
    if "intensity" not in msg:
        raise WireError("message has no 'intensity'")
    intensity = unpack_array(msg["intensity"], "intensity")
    _check_magnitude(intensity, "intensity", MAX_ABS_INTENSITY)
    axis = None
    if msg.get("raman_shift_cm1") is not None:
        axis = unpack_array(msg["raman_shift_cm1"], "raman_shift_cm1")
        if axis.shape != intensity.shape:
            raise WireError(f"raman_shift_cm1 has {axis.size} points, intensity {intensity.size}")
        _check_magnitude(axis, "raman_shift_cm1", MAX_ABS_SHIFT_CM1)
    values, problems = _checked(msg, ("sent_ns", "label"))
    if identity_problems or problems:
        raise WireError((identity_problems + problems)[0])
    return SpectrumIn(identity["id"] or uuid.uuid4().hex[:16], intensity, axis, values["sent_ns"],
                      identity["instrument_id"], identity["instrument_seq"], values["label"])


def encode_event(kind: str, **fields: Any) -> bytes:
    """Encode a link-state or lost-spectrum event for the daemon's internal input.

    Parameters
    ----------
    kind : {"link", "lost"}
        ``link``: fields ``state`` (str), ``reason`` (str), ``attempt`` (int), ``url`` (str).
        ``lost``: fields ``instrument_seq`` (int, the lost sequence number), ``reason`` (str),
        ``instrument_id`` (str, optional).
    **fields
        msgpack-serialisable values; ``time_ns`` defaults to ``time.time_ns()`` now.

    Returns
    -------
    bytes
        A msgpack map whose first key is ``type`` (:func:`decode_event` relies on it).

    Raises
    ------
    WireError
        If ``kind`` is not an event type or the encoded event is larger than 4096 bytes.
    """
    if kind not in EVENT_TYPES:
        raise WireError(f"event type must be one of {EVENT_TYPES}, got {kind!r}")
    msg = {"type": kind, "v": WIRE_VERSION, **fields}
    msg.setdefault("time_ns", time.time_ns())
    frame = msgpack.packb(msg, use_bin_type=True)
    if len(frame) > _MAX_EVENT_BYTES:
        raise WireError(f"{kind} event of {len(frame)} bytes exceeds {_MAX_EVENT_BYTES}")
    return frame


def event_type(frame: bytes) -> str | None:
    """The event type (``"link"`` or ``"lost"``) of an input frame, or None when it is not an event.

    Cheap for spectra: a frame above 4096 bytes (:data:`MAX_EVENT_BYTES`) is not an event, and only the first
    key/value of a smaller one is read. The daemon uses it to refuse events on its public input (docs/wire.md §5).

    Parameters
    ----------
    frame : bytes
        Any input frame.

    Returns
    -------
    str or None
    """
    if len(frame) > _MAX_EVENT_BYTES:
        return None
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=_MAX_EVENT_BYTES)
    try:
        unpacker.feed(frame)
        if unpacker.read_map_header() < 1 or unpacker.unpack() != "type":
            return None
        kind = unpacker.unpack()
    except Exception:  # not an event (garbage, or a spectrum): decode_spectrum will say why
        return None
    return kind if isinstance(kind, str) and kind in EVENT_TYPES else None


def decode_event(frame: bytes) -> dict[str, Any] | None:
    """Decode an input frame made by :func:`encode_event`; None when the frame is not an event.

    Cheap for spectra: a frame above 4096 bytes is not parsed, and only its first key/value is read otherwise.
    A frame that is not an event (a spectrum, or garbage) returns None and is left to :func:`decode_spectrum`.

    Raises
    ------
    WireError
        The frame is an event (``type`` "link" or "lost") but its version or fields are invalid.
    """
    if event_type(frame) is None:
        return None
    try:
        msg = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception:  # not an event after all (garbage after its first key): decode_spectrum will say why
        return None
    if not isinstance(msg, dict):
        return None
    fields = _EVENT_FIELDS[msg["type"]]
    identity = {"id": None, "instrument_id": None, "instrument_seq": None}
    if msg["type"] == "lost":
        identity = {k: value if problem is None else None
                    for k in identity for value, problem in [check_field(fields[k], msg.get(k))]}
    if type(msg.get("v")) is not int or msg["v"] != WIRE_VERSION:
        raise WireError(f"{msg['type']} event: wire version {msg.get('v')!r:.60} not supported", identity)
    event: dict[str, Any] = {}
    for name, f in fields.items():  # only the specified fields travel on: no unknown key reaches a publisher
        value, problem = check_field(f, msg.get(name))
        if problem:
            raise WireError(f"{msg['type']} event: {problem}", identity)
        if name in msg:
            event[name] = value
    return event


def encode_payload(payload: dict[str, Any]) -> bytes:
    """Msgpack bytes of an output payload (prediction, error, status ...)."""
    return msgpack.packb(payload, use_bin_type=True)


def decode_payload(frame: bytes) -> dict[str, Any]:
    """Decode an output payload.

    Raises
    ------
    WireError
        If the frame is not a msgpack map.
    """
    try:
        msg = msgpack.unpackb(frame, raw=False)
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise WireError(f"not a msgpack payload: {exc}") from exc
    if not isinstance(msg, dict):
        raise WireError("payload must be a map")
    return msg
