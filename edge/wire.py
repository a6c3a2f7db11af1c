"""ZeroMQ wire format of the daemon: msgpack maps, arrays as raw little-endian bytes with dtype and shape.

Input (PUSH → the daemon's PULL socket), one frame, a map::

    type            "spectrum"
    v               1 (wire version)
    id              str, the spectrum's id (the daemon makes one when absent)
    intensity       array (see below), shape (M,), intensities in any units
    raman_shift_cm1 array, shape (M,), Raman shift in cm⁻¹; absent = already on the model grid
    sent_ns         int, optional: sender's clock (time.time_ns) when sent, for end-to-end latency
    instrument_id   str, optional
    instrument_seq  int, optional: the instrument's sequence number, carried through
    label           str, optional: known mineral (evaluation runs only)

An array is a map ``{"dtype": "<f4" | "<f8" | "<u2" | "<u4" | "<i4", "shape": [M], "data": bytes}``.

Output (the daemon's PUB socket), two frames ``[topic, payload]``: topic ``b"prediction"``, ``b"error"``,
``b"status"``, ``b"drift"`` or ``b"link"``; payload a msgpack map (fields in the README, "Wire format").

Events (the serial input → the daemon's internal input, :func:`encode_event`), a small map whose first key is
``type``: ``"link"`` (``state`` "up" | "down" | "reconnecting", ``reason``, ``attempt``, ``url``) is republished
on the ``link`` topic; ``"lost"`` (``instrument_seq`` int, ``reason`` str, ``instrument_id``) on the ``error``
topic with reason ``"lost"``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from .errors import WireError

__all__ = [
    "EVENT_TYPES",
    "TOPICS",
    "WIRE_VERSION",
    "SpectrumIn",
    "decode_event",
    "decode_payload",
    "decode_spectrum",
    "encode_event",
    "encode_payload",
    "encode_spectrum",
    "pack_array",
    "unpack_array",
]

WIRE_VERSION = 1
TOPICS = {"prediction": b"prediction", "error": b"error", "status": b"status", "drift": b"drift", "link": b"link"}
_DTYPES = {"<f4", "<f8", "<u2", "<u4", "<i4", "<i2"}
MAX_POINTS = 65536
#: Event types an input may hand to the daemon besides spectra (see :func:`encode_event`).
EVENT_TYPES = ("link", "lost")
_MAX_EVENT_BYTES = 4096  # events are small; a frame above this is never parsed as an event


def pack_array(a: np.ndarray) -> dict[str, Any]:
    """An array as a msgpack-ready map (little-endian bytes, dtype string, shape)."""
    a = np.asarray(a)
    dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    a = np.ascontiguousarray(a, dtype=dt)
    return {"dtype": dt.str.replace("=", "<").replace("|", "<"), "shape": list(a.shape), "data": a.tobytes()}


def unpack_array(m: Any, name: str) -> np.ndarray:
    """Inverse of :func:`pack_array` with validation.

    Raises
    ------
    WireError
        If the map lacks fields, names an unsupported dtype, or its byte count does not match its shape.
    """
    if not isinstance(m, dict) or not {"dtype", "shape", "data"} <= set(m):
        raise WireError(f"{name}: expected a map with dtype, shape, data")
    dtype, shape, data = m["dtype"], m["shape"], m["data"]
    if dtype not in _DTYPES:
        raise WireError(f"{name}: unsupported dtype {dtype!r} (use one of {sorted(_DTYPES)})")
    if not isinstance(shape, (list, tuple)) or len(shape) != 1 or not isinstance(shape[0], int) or not 0 < shape[0] <= MAX_POINTS:
        raise WireError(f"{name}: shape must be [M] with 0 < M ≤ {MAX_POINTS}, got {shape!r}")
    if not isinstance(data, (bytes, bytearray)) or len(data) != shape[0] * np.dtype(dtype).itemsize:
        raise WireError(f"{name}: {len(data) if isinstance(data, (bytes, bytearray)) else type(data).__name__} "
                        f"bytes do not hold {shape[0]} values of {dtype}")
    return np.frombuffer(data, dtype=dtype)


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
                           "intensity": pack_array(intensity), "sent_ns": time.time_ns() if sent_ns is None else sent_ns}
    if raman_shift_cm1 is not None:
        msg["raman_shift_cm1"] = pack_array(raman_shift_cm1)
    for k, v in (("instrument_id", instrument_id), ("instrument_seq", instrument_seq), ("label", label)):
        if v is not None:
            msg[k] = v
    return msgpack.packb(msg, use_bin_type=True)


def _opt(msg: dict, key: str, typ: type | tuple[type, ...]):
    v = msg.get(key)
    if v is not None and not isinstance(v, typ):
        raise WireError(f"field {key!r} must be {typ}, got {type(v).__name__}")
    return v


def decode_spectrum(frame: bytes) -> SpectrumIn:
    """Decode and validate one input frame.

    Raises
    ------
    WireError
        Not msgpack, not a map, wrong type or version, missing or malformed fields.
    """
    try:
        msg = msgpack.unpackb(frame, raw=False, strict_map_key=True, max_bin_len=8 * MAX_POINTS + 64)
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise WireError(f"not a msgpack message: {exc}") from exc
    if not isinstance(msg, dict):
        raise WireError(f"message must be a map, got {type(msg).__name__}")
    if msg.get("type") != "spectrum":
        raise WireError(f"message type must be 'spectrum', got {msg.get('type')!r}")
    if msg.get("v") != WIRE_VERSION:
        raise WireError(f"wire version {msg.get('v')!r} not supported (this daemon speaks {WIRE_VERSION})")
    if "intensity" not in msg:
        raise WireError("message has no 'intensity'")
    intensity = unpack_array(msg["intensity"], "intensity")
    axis = unpack_array(msg["raman_shift_cm1"], "raman_shift_cm1") if msg.get("raman_shift_cm1") is not None else None
    if axis is not None and axis.shape != intensity.shape:
        raise WireError(f"raman_shift_cm1 has {axis.size} points, intensity {intensity.size}")
    sid = _opt(msg, "id", str) or uuid.uuid4().hex[:16]
    return SpectrumIn(sid, intensity, axis, _opt(msg, "sent_ns", int), _opt(msg, "instrument_id", str),
                      _opt(msg, "instrument_seq", int), _opt(msg, "label", str))


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


def decode_event(frame: bytes) -> dict[str, Any] | None:
    """The event map of an input frame made by :func:`encode_event`, or None when the frame is not an event.

    Cheap for spectra: a frame above 4096 bytes is not parsed, and only its first key/value is read otherwise.
    A frame that is not an event (a spectrum, or garbage) returns None and is left to :func:`decode_spectrum`.

    Raises
    ------
    WireError
        The frame is an event (``type`` "link" or "lost") but its version or fields are invalid.
    """
    if len(frame) > _MAX_EVENT_BYTES:
        return None
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=_MAX_EVENT_BYTES)
    try:
        unpacker.feed(frame)
        if unpacker.read_map_header() < 1 or unpacker.unpack() != "type" or unpacker.unpack() not in EVENT_TYPES:
            return None
        msg = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except (msgpack.UnpackException, msgpack.OutOfData, ValueError, TypeError):
        return None
    if msg.get("v") != WIRE_VERSION:
        raise WireError(f"{msg['type']} event: wire version {msg.get('v')!r} not supported")
    if msg["type"] == "lost":
        seq = msg.get("instrument_seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(msg.get("reason"), str):
            raise WireError("lost event needs an int 'instrument_seq' and a str 'reason'")
        _opt(msg, "instrument_id", str)
    elif not isinstance(msg.get("state"), str):
        raise WireError("link event needs a str 'state'")
    return msg


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
