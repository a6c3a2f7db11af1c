"""The wire format's field tables: one declaration per message, read by the decoder and turned into JSON Schema.

Every message of the daemon's ZeroMQ wire format (docs/wire.md) is declared here once, as a table of
:class:`Field` (msgpack type, required or not, unit, limits). :func:`edge.wire.decode_spectrum` and
:func:`edge.wire.decode_event` validate their scalar fields with :func:`check_field` against these tables,
and :func:`json_schema` writes them as JSON Schema (draft 2020-12), shipped as ``edge/wire_schema.json``
(``python -m edge.wire_spec --write``; the tests fail when the file and the tables differ, and validate the
daemon's real output messages against the schema).

msgpack types are named ``str``, ``int``, ``float`` (float64; float32 accepted on input), ``number`` (int or
float), ``bool``, ``nil``, ``bin``, ``map`` and ``array``; a field may allow several (``("int", "nil")``).
JSON Schema has no binary type: every property carries an ``x-msgpack`` keyword listing its msgpack types,
which :func:`validator` checks (a plain JSON Schema validator ignores it and checks the rest).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ARRAY_DTYPES",
    "CATCHUP_TOPICS",
    "MAX_ABS_INTENSITY",
    "MAX_ABS_SHIFT_CM1",
    "MAX_CATCHUP_LIMIT",
    "MAX_CATCHUP_REPLY_BYTES",
    "MAX_CATCHUP_REQUEST_BYTES",
    "MAX_EVENT_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_POINTS",
    "MAX_STR_CHARS",
    "MESSAGES",
    "SCHEMA_PATH",
    "UINT64_MAX",
    "WIRE_VERSION",
    "Field",
    "Message",
    "check_field",
    "json_schema",
    "validator",
]

WIRE_VERSION = 1
#: Largest number of points of an input array.
MAX_POINTS = 65536
#: Input array dtypes (numpy ``dtype.str``: little-endian float32/float64, uint16/uint32, int16/int32).
ARRAY_DTYPES = ("<f4", "<f8", "<u2", "<u4", "<i2", "<i4")
#: Longest ``id``, ``instrument_id`` or ``label`` (characters).
MAX_STR_CHARS = 256
#: Largest finite |intensity| accepted. Counts of any detector are far below (a uint32 ADC sum: 4.3e9);
#: float32 values near 3e38 overflow inside the float32 preprocessing and would come out as NaN.
MAX_ABS_INTENSITY = 1e15
#: Largest |Raman shift| accepted (cm⁻¹); Raman bands lie within ±10 000 cm⁻¹.
MAX_ABS_SHIFT_CM1 = 1e5
UINT64_MAX = 2**64 - 1
#: Largest input message (bytes): two float64 arrays of MAX_POINTS plus 64 KiB for every other field.
#: The daemon sets it as ``zmq.MAXMSGSIZE`` on its input socket: ZeroMQ drops a larger message (and the
#: connection that sent it) before the daemon reads it.
MAX_MESSAGE_BYTES = 2 * 8 * MAX_POINTS + 65536
#: Largest event frame (``link``/``lost``); a larger frame is never read as an event.
MAX_EVENT_BYTES = 4096
#: Largest catch-up request (bytes; ``zmq.MAXMSGSIZE`` of the catch-up socket: a larger one is dropped by ZeroMQ).
MAX_CATCHUP_REQUEST_BYTES = 4096
#: Largest ``limit`` of a catch-up request (messages per reply).
MAX_CATCHUP_LIMIT = 10000
#: A catch-up reply stops adding messages before their payloads exceed this many bytes (at least one is sent).
MAX_CATCHUP_REPLY_BYTES = 4 << 20
SCHEMA_PATH = Path(__file__).with_name("wire_schema.json")

_JSON_TYPE = {"str": "string", "int": "integer", "float": "number", "number": "number", "bool": "boolean",
              "nil": "null", "map": "object", "array": "array"}


@dataclass(frozen=True)
class Field:
    """One field of a message.

    Parameters
    ----------
    name : str
    types : tuple of str
        Allowed msgpack types (module docstring).
    required : bool
        Must be present (and not nil, unless ``"nil"`` is among ``types``).
    doc : str
        Meaning, with the unit in words.
    unit : str
        Unit (``"ns"``, ``"cm-1"``, ``"s"``) or ``""``.
    limits : dict
        JSON Schema keywords restricting the value (``const``, ``enum``, ``minimum``, ``maximum``,
        ``minLength``, ``maxLength``, ``items``, ``$ref``).
    integral_float : bool
        An input integer may also arrive as a float holding an exact integer within the limits
        (JavaScript numbers); it is converted to int.
    """

    name: str
    types: tuple[str, ...]
    required: bool
    doc: str
    unit: str = ""
    limits: dict[str, Any] = field(default_factory=dict)
    integral_float: bool = False

    def schema(self) -> dict[str, Any]:
        """Return the JSON Schema of this field's value."""
        s: dict[str, Any] = {"description": self.doc, "x-msgpack": list(self.types)}
        json_types = [_JSON_TYPE[t] for t in self.types if t in _JSON_TYPE]
        if self.integral_float and "integer" in json_types:
            s["x-integral-float"] = True
        if json_types and "$ref" not in self.limits:
            s["type"] = json_types[0] if len(json_types) == 1 else sorted(set(json_types))
        if self.unit:
            s["x-unit"] = self.unit
        s.update(self.limits)
        return s


@dataclass(frozen=True)
class Message:
    """A message: where it travels, its topic frame (outputs), its fields, and whether others may appear.

    ``extra`` True: unknown fields are allowed (inputs: ignored); False: every field is listed here.
    """

    name: str
    direction: str  # "input", "output", "ack", "control-request", "control-reply", "part"
    doc: str
    fields: tuple[Field, ...]
    topic: str | None = None
    extra: bool = False

    def schema(self) -> dict[str, Any]:
        """Return the JSON Schema of this message (a map)."""
        s: dict[str, Any] = {"description": self.doc, "type": "object", "x-msgpack": ["map"],
                             "x-direction": self.direction,
                             "properties": {f.name: f.schema() for f in self.fields},
                             "required": [f.name for f in self.fields if f.required],
                             "additionalProperties": self.extra}
        if self.topic is not None:
            s["x-topic"] = self.topic
        return s


def _s(name: str, required: bool, doc: str, nil: bool = False, **limits: Any) -> Field:
    return Field(name, ("str", "nil") if nil else ("str",), required, doc, limits=limits)


def _i(name: str, required: bool, doc: str, unit: str = "", nil: bool = False, **limits: Any) -> Field:
    return Field(name, ("int", "nil") if nil else ("int",), required, doc, unit, limits)


def _f(name: str, required: bool, doc: str, unit: str = "", nil: bool = False, number: bool = False) -> Field:
    t = "number" if number else "float"
    return Field(name, (t, "nil") if nil else (t,), required, doc, unit)


def _MAP(name: str, required: bool, doc: str) -> Field:
    """A field whose value is a msgpack map."""
    return Field(name, ("map",), required, doc)


def _TYPE(value: str, doc: str) -> Field:
    """The required ``type`` field, constant ``value``."""
    return _s("type", True, doc, const=value)


_V = _i("v", True, f"wire version, exactly {WIRE_VERSION}", const=WIRE_VERSION)
_U64: dict[str, Any] = {"minimum": 0, "maximum": UINT64_MAX}
_ID_LIMITS: dict[str, Any] = {"minLength": 1, "maxLength": MAX_STR_CHARS}

ARRAY = Message("array", "part", "An input array: raw little-endian values with dtype and shape.", (
    _s("dtype", True, "numpy dtype string", enum=list(ARRAY_DTYPES)),
    Field("shape", ("array",), True, "[M], one int, the number of points",
          limits={"items": {"type": "integer", "minimum": 1, "maximum": MAX_POINTS}, "minItems": 1, "maxItems": 1}),
    Field("data", ("bin",), True, "M * itemsize bytes, little-endian (msgpack bin; a str is refused)",
          limits={"x-maxBytes": 8 * MAX_POINTS}),
))

SPECTRUM = Message("spectrum", "input", "One spectrum, PUSHed to the daemon's input (PULL) endpoint as one frame.", (
    _TYPE("spectrum", "message type"),
    _V,
    _s("id", False, "the sender's id of the spectrum (the daemon makes a 16-hex-digit one when absent)", nil=True,
       **_ID_LIMITS),
    Field("intensity", ("map",), True, "intensities in any units (counts ...), shape (M,)",
          limits={"$ref": "#/$defs/array"}),
    Field("raman_shift_cm1", ("map", "nil"), False,
          "Raman shift of each intensity, shape (M,), strictly increasing; absent or nil: already on the "
          "model grid", "cm-1", {"anyOf": [{"$ref": "#/$defs/array"}, {"type": "null"}]}),
    Field("sent_ns", ("int", "nil"), False, "the sender's clock when sent (end-to-end latency)", "ns", _U64,
          integral_float=True),
    _s("instrument_id", False, "the instrument's name, carried through", nil=True, **_ID_LIMITS),
    Field("instrument_seq", ("int", "nil"), False, "the instrument's sequence number, carried through", "",
          _U64, integral_float=True),
    _s("label", False, "known mineral (evaluation runs only), carried through", nil=True, maxLength=MAX_STR_CHARS),
), extra=True)

_LINK_FIELDS = (
    _s("state", True, "link state", enum=["up", "down", "reconnecting"]),
    _s("reason", False, "why the state changed", nil=True),
    _i("attempt", False, "reconnection attempt (0 when up)", nil=True, minimum=0),
    _s("url", False, "pyserial URL of the instrument", nil=True),
    _s("instrument_id", False, "the instrument's name once its status was heard", nil=True),
    _i("time_ns", False, "when the serial input saw the change", "ns", nil=True, **_U64),
)
LINK_EVENT = Message("link_event", "input", "Serial link state change, from the serial input (internal input).",
                     (_TYPE("link", "message type"), _V, *_LINK_FIELDS))
LOST_EVENT = Message("lost_event", "input", "A spectrum the serial link lost for good (internal input).", (
    _TYPE("lost", "message type"), _V,
    _i("instrument_seq", True, "the lost spectrum's sequence number", **_U64),
    _s("reason", True, "why it is lost"),
    _s("instrument_id", False, "the instrument's name", nil=True),
    _s("id", False, "the id the spectrum would have had", nil=True),
    _i("time_ns", False, "when the loss was declared", "ns", nil=True, **_U64),
))

_IDENTITY = (
    _s("id", True, "the spectrum's id (nil when unreadable)", nil=True),
    _s("instrument_id", True, "as sent (nil when absent or unreadable)", nil=True),
    _i("instrument_seq", True, "as sent (nil when absent or unreadable)", nil=True),
)
PREDICTION = Message("prediction", "output", "One classified spectrum.", (
    _TYPE("prediction", "message type"), _V,
    _s("id", True, "the spectrum's id (as sent, or made by the daemon)"),
    _i("seq", True, "daemon sequence number, from 1, +1 per prediction; with a store, never reused across restarts",
       minimum=1),
    Field("labels", ("array",), True, "top-k mineral names, best first", limits={"items": {"type": "string"}}),
    Field("probabilities", ("array",), True, "top-k probabilities (float64), same order; not the full vector",
          limits={"items": {"type": "number"}}),
    _s("model_id", True, "the bundle's model id"),
    _s("model_sha256", True, "SHA-256 of the ONNX file served"),
    _s("precision", True, "classifier served", enum=["int8", "fp32"]),
    _s("head_version", True, "the classification head that made it"),
    _i("received_ns", True, "when the daemon received its micro-batch", "ns", **_U64),
    _i("sent_ns", True, "as sent (nil when not sent)", "ns", nil=True),
    _i("batch_size", True, "size of the micro-batch it ran in", minimum=1),
    _s("instrument_id", True, "as sent (nil when not sent)", nil=True),
    _i("instrument_seq", True, "as sent (nil when not sent)", nil=True),
    _s("label", True, "as sent (nil when not sent)", nil=True),
    _i("published_ns", True, "when it was published", "ns", **_U64),
    _f("novelty_score", False, "novelty score of the deciding detector (novelty on)"),
    _f("novelty_threshold", False, "its threshold (novelty on)"),
    Field("novel", ("bool",), False, "novelty_score > novelty_threshold (novelty on)"),
    _s("novelty_detector", False, "which detector decided (novelty on)", enum=["library", "autoencoder"]),
    _f("library_score", False, "spectral-library score (nil without a library match; novelty on)", nil=True),
    _f("reconstruction_error", False, "autoencoder line residual, when the autoencoder decides"),
    _f("reconstruction_mse", False, "autoencoder MSE, when the autoencoder decides"),
    _f("offset_correction_cm1", False, "drift compensation applied before preprocessing (novelty on)", "cm-1",
       number=True),
    _i("spikes_removed", True, "cosmic-ray spikes removed from the spectrum before preprocessing", minimum=0),
    _MAP("quality", True, "the quality gate: ok (bool), reasons (array of str: saturated, empty, flat, low_snr, "
                          "not_raman, standard)"),
    Field("labels_trusted", ("bool",), True, "false when quality is not ok (novel is then true)"),
    Field("calibration", ("map", "nil"), True, "the instrument calibration applied: id, sha256 (nil without one)"),
    Field("replayed", ("bool",), False, "true: answered on restart from the store (received before a crash); absent "
                                        "otherwise"),
), topic="prediction")

ERROR = Message("error", "output", "A refused input (one per refused message) or a spectrum the serial link lost.", (
    _TYPE("error", "message type"), _V,
    _s("reason", True, "wire, preprocess, inference, internal, lost, duplicate (new values may appear in version 1)"),
    _s("detail", True, "what was wrong, in words"),
    *_IDENTITY,
    _i("received_ns", True, "when the daemon received it", "ns", **_U64),
    _i("rejected_total", False, "rejections so far (every reason but lost)", minimum=1),
    _i("lost_total", False, "lost spectra so far (reason lost)", minimum=1),
), topic="error")



STATUS = Message("status", "output", "Daemon state: periodic, on each new subscription, after a head swap, final.", (
    _TYPE("status", "message type"), _V,
    _s("model_id", True, "the bundle's model id"),
    _s("precision", True, "classifier served", enum=["int8", "fp32"]),
    _s("backend", True, "inference backend"),
    Field("providers", ("array",), True, "onnxruntime execution providers in use, in order (array of str)"),
    _MAP("counters", True, "received, published, rejected, batches, subscriptions, lost, drift_errors, "
         "dropped_hwm, replayed, duplicates (ints; dropped_hwm: messages a subscriber's full queue refused, a lower "
         "bound, §7; replayed: stored spectra answered on start; duplicates: resent spectra not classified again)"),
    _MAP("rejections", True, "rejections by reason (ints)"),
    _f("uptime_s", True, "seconds since the daemon started", "s"),
    Field("final", ("bool",), True, "true in the last status before exit"),
    _i("time_ns", True, "when sent", "ns", **_U64),
    _MAP("head", True, "version, n_classes, source, loads, rejected, last_error, swappable"),
    _MAP("novelty", False, "novelty model settings (novelty on; README, Novelty and drift)"),
    _MAP("drift", False, "drift monitor state (novelty on; README, Novelty and drift)"),
    _MAP("serial", False, "serial input state (serial input on; README, Serial input)"),
    _MAP("store", False, "path, last_seq, not_stored, alarm, error (store on; docs/store.md)"),
    _MAP("output", False, "hwm (the output high-water mark), dropped_hwm_by_topic (ints by topic; §7)"),
    _MAP("ack_input", False, "endpoint, acks (ints by ack status), unroutable (acks whose sender was gone; "
         "acknowledged input on; §4.3)"),
    _MAP("catchup", False, "endpoint, requests, refused, messages (catch-up on; §12)"),
    _MAP("hygiene", True, "quality_not_ok, spikes_removed, quality_reasons (counts by reason), calibration"),
), topic="status")

DRIFT = Message("drift", "output", "A drift alarm (novelty on).", (
    _TYPE("drift", "message type"), _V,
    _s("kind", True, "which statistic", enum=["novelty", "residual", "confidence", "background", "offset",
                                               "reference"]),
    _f("statistic", True, "its value", number=True),
    _f("threshold", True, "its alarm threshold", number=True),
    _i("detected_seq", True, "seq of the prediction at which it was detected", nil=True),
    _i("detected_ns", True, "when detected", "ns"),
    _i("change_seq", True, "seq where the change began (nil when unknown)", nil=True),
    _i("change_ns", True, "when the change began (nil when unknown)", "ns", nil=True),
    _f("offset_cm1", True, "moving-median Raman-shift offset estimate (nil before the first)", "cm-1", nil=True,
       number=True),
    _s("units", False, "offset: units of statistic and threshold (cm-1)"),
    _i("window", False, "offset: number of estimates in the moving median", minimum=0),
    Field("alarm", ("bool",), False, "reference: the reference line is beyond the threshold"),
    _f("reference_offset_cm1", False, "reference: offset of the reference line", "cm-1", number=True),
    _f("reference_line_cm1", False, "reference: the line's nominal position", "cm-1", number=True),
    _f("prominence", False, "reference: the line's prominence", number=True),
), topic="drift")

LINK = Message("link", "output", "A serial link state change, republished.", (
    _TYPE("link", "message type"), _V, *_LINK_FIELDS,
    _i("received_ns", True, "when the daemon received the event", "ns", **_U64),
), topic="link")

ACK = Message("ack", "ack", "The acknowledged input's answer to one input message, after the store's commit.", (
    _TYPE("ack", "message type"), _V,
    _s("id", True, "the spectrum's id as sent (nil when unreadable)", nil=True),
    _s("instrument_id", True, "as sent (nil when absent or unreadable)", nil=True),
    _s("status", True, "stored (kept with its result: answered exactly once), duplicate (a resend of a stored "
                       "spectrum: not classified again), rejected (malformed: resending cannot help), not_stored (the "
                       "store cannot write: keep it and resend after retry_after_ms)",
       enum=["stored", "duplicate", "rejected", "not_stored"]),
    _s("reason", False, "rejected: the error reason, as on the error topic"),
    _s("detail", False, "rejected, not_stored: what was wrong, in words"),
    _i("retry_after_ms", False, "not_stored: resend after this many ms", "ms", minimum=1),
))

CONTROL_REQUEST = Message("control_request", "control-request", "A request on the control (REP) endpoint.", (
    _s("cmd", True, "what to do", enum=["status", "load_head"]),
    _s("path", False, "load_head: a head file on the daemon's machine (a regular file)", nil=True, minLength=1),
    Field("head", ("bin", "nil"), False, "load_head: the head file's bytes (uplink); wins over path",
          limits={"x-maxBytes": 64 << 20}),
), extra=True)

CONTROL_REPLY = Message("control_reply", "control-reply", "The reply to every control request.", (
    Field("ok", ("bool",), True, "the request was carried out"),
    _MAP("status", False, "status: the daemon's status map (as on the status topic)"),
    _MAP("head", False, "status: the head entry of the status"),
    _s("head_version", False, "load_head: the head now served"),
    _s("previous_version", False, "load_head: the head served before"),
    _i("n_classes", False, "load_head: classes of the new head", minimum=1),
    _i("last_seq_previous_head", False, "load_head: last seq classified by the previous head", minimum=0),
    _s("reason", False, "refused: why", enum=["bad_request", "invalid_head", "backbone_mismatch",
                                              "no_embedding_output", "internal"]),
    _s("error", False, "refused: what was wrong, in words"),
))

CATCHUP_TOPICS = ("prediction", "error", "drift", "link")
"""Topics the store keeps and a catch-up returns (``status`` is live only)."""

CATCHUP_REQUEST = Message("catchup_request", "catchup-request",
                          "A request on the catch-up endpoint: the stored results after a prediction.", (
    _TYPE("catch_up", "request type"),
    Field("after_seq", ("int",), True, "the last prediction seq the subscriber has (0: everything kept)",
          limits={"minimum": 0, "maximum": 2**63 - 1}, integral_float=True),
    Field("topics", ("array", "nil"), False, "only these topics (default: all four)",
          limits={"items": {"enum": list(CATCHUP_TOPICS)}, "minItems": 1, "maxItems": len(CATCHUP_TOPICS)}),
    Field("limit", ("int", "nil"), False, f"at most this many messages (default 1000, at most {MAX_CATCHUP_LIMIT})",
          limits={"minimum": 1, "maximum": MAX_CATCHUP_LIMIT}, integral_float=True),
    Field("after_row", ("int", "nil"), False, "continue after this cursor (the previous reply's cursor)",
          limits={"minimum": 0, "maximum": 2**63 - 1}, integral_float=True),
), extra=True)

CATCHUP_REPLY = Message("catchup_reply", "catchup-reply", "The reply to every catch-up request.", (
    _TYPE("catch_up", "reply type"),
    Field("ok", ("bool",), True, "the request was answered from the store"),
    Field("messages", ("array",), False, "ok: [topic (str), payload (bin: the msgpack map as published)] pairs, "
          "in publication order", limits={"items": {"type": "array", "minItems": 2, "maxItems": 2}}),
    Field("complete", ("bool",), False, "ok: false when predictions after after_seq are no longer in the store"),
    Field("more", ("bool",), False, "ok: more messages follow (ask again with after_row = cursor)"),
    _i("last_seq", False, "ok: highest prediction seq in messages (after_seq when none)", minimum=0),
    _i("cursor", False, "ok: where the next page starts (after_row)", minimum=0),
    _i("store_last_seq", False, "ok: the highest seq the daemon ever gave", minimum=0),
    _s("reason", False, "refused: why", enum=["bad_request", "store", "internal"]),
    _s("error", False, "refused: what was wrong, in words"),
))

MESSAGES: dict[str, Message] = {m.name: m for m in (SPECTRUM, LINK_EVENT, LOST_EVENT, PREDICTION, ERROR, STATUS,
                                                    DRIFT, LINK, ACK, CONTROL_REQUEST, CONTROL_REPLY, CATCHUP_REQUEST,
                                                    CATCHUP_REPLY)}


def json_schema() -> dict[str, Any]:
    """Build the JSON Schema (draft 2020-12) of every message, as shipped in ``edge/wire_schema.json``.

    Returns
    -------
    dict
        ``$defs`` holds one schema per message (and ``array``); ``x-limits`` the numeric limits.
    """
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://raman-edge/wire/v1",
        "title": f"raman-edge daemon wire format, version {WIRE_VERSION} (docs/wire.md)",
        "x-wire-version": WIRE_VERSION,
        "x-limits": {"max_points": MAX_POINTS, "max_str_chars": MAX_STR_CHARS, "max_abs_intensity": MAX_ABS_INTENSITY,
                     "max_abs_shift_cm1": MAX_ABS_SHIFT_CM1, "max_message_bytes": MAX_MESSAGE_BYTES,
                     "max_event_bytes": MAX_EVENT_BYTES, "max_catchup_request_bytes": MAX_CATCHUP_REQUEST_BYTES,
                     "max_catchup_limit": MAX_CATCHUP_LIMIT, "max_catchup_reply_bytes": MAX_CATCHUP_REPLY_BYTES},
        "$defs": {"array": ARRAY.schema(), **{name: m.schema() for name, m in MESSAGES.items()}},
    }


_PY_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str, "float": float, "bool": bool, "nil": type(None), "bin": (bytes, bytearray), "map": dict,
    "array": (list, tuple)}


def _is(value: Any, t: str) -> bool:
    if t == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _PY_TYPES[t])


def check_field(f: Field, value: Any) -> tuple[Any, str | None]:
    """Check one decoded input value against its field.

    Parameters
    ----------
    f : Field
    value : Any
        The decoded msgpack value (None when absent or nil).

    Returns
    -------
    (value, problem)
        The value (an integral float converted to int) and None, or the value and a sentence saying what is
        wrong and how to send it.
    """
    if value is None:
        return None, (f"field {f.name!r} is required" if f.required and "nil" not in f.types else None)
    if f.integral_float and isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            return value, (f"field {f.name!r} must be an integer; got the float {value!r}, which is not one "
                           "(send a msgpack int, e.g. a JavaScript BigInt)")
        value = int(value)
    if not any(_is(value, t) for t in f.types):
        hint = " (a float holding an exact integer is also accepted)" if f.integral_float else ""
        return value, f"field {f.name!r} must be msgpack {' or '.join(f.types)}{hint}, got {type(value).__name__}"
    lim = f.limits
    if isinstance(value, int) and not isinstance(value, bool):
        lo, hi = lim.get("minimum"), lim.get("maximum")
        if (lo is not None and value < lo) or (hi is not None and value > hi) or lim.get("const", value) != value:
            want = f"= {lim['const']}" if "const" in lim else f"in [{lo}, {hi}]"
            return value, f"field {f.name!r} must be {want}, got {value}"
    if isinstance(value, str):
        if "const" in lim and value != lim["const"]:
            return value, f"field {f.name!r} must be {lim['const']!r}, got {value[:40]!r}"
        if "enum" in lim and value not in lim["enum"]:
            return value, f"field {f.name!r} must be one of {lim['enum']}, got {value[:40]!r}"
        if not lim.get("minLength", 0) <= len(value) <= lim.get("maxLength", len(value)):
            return value, (f"field {f.name!r} must have {lim.get('minLength', 0)} to {lim['maxLength']} "
                           f"characters, got {len(value)}")
    return value, None


def validator(schema: dict[str, Any] | None = None, message: str = "prediction") -> Any:
    """Make a ``jsonschema`` validator of one message that also checks the ``x-msgpack`` types.

    The ``x-msgpack`` keyword tells bin from str and int from float. Needs the ``jsonschema`` package (the
    ``[dev]`` extra); used by the tests.

    Parameters
    ----------
    schema : dict, optional
        The whole schema (default: :func:`json_schema`).
    message : str
        Name of the message (a key of :data:`MESSAGES`).

    Returns
    -------
    jsonschema.protocols.Validator
    """
    from jsonschema import Draft202012Validator, ValidationError, validators

    def x_msgpack(_v: Any, types: list[str], value: Any, schema: dict[str, Any]) -> Any:
        if schema.get("x-integral-float") and isinstance(value, float) and value.is_integer():
            return  # an input integer may arrive as an exactly integral float (range: minimum/maximum)
        if not any(_is(value, t) for t in types):
            yield ValidationError(f"{value!r:.60} is not msgpack {' or '.join(types)}")

    cls = validators.extend(Draft202012Validator, {"x-msgpack": x_msgpack})
    full = schema or json_schema()
    return cls({**full, "$ref": f"#/$defs/{message}"})


def main(argv: list[str] | None = None) -> int:
    """``python -m edge.wire_spec [--write | --check]``: print, write or check ``edge/wire_schema.json``."""
    ap = argparse.ArgumentParser(prog="python -m edge.wire_spec", description=main.__doc__)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--write", action="store_true", help=f"write {SCHEMA_PATH.name}")
    g.add_argument("--check", action="store_true", help=f"exit 1 when {SCHEMA_PATH.name} differs from the code")
    args = ap.parse_args(argv)
    text = json.dumps(json_schema(), indent=1, ensure_ascii=False) + "\n"
    if args.write:
        SCHEMA_PATH.write_text(text, encoding="utf-8")
    elif args.check:
        if not SCHEMA_PATH.is_file() or SCHEMA_PATH.read_text(encoding="utf-8") != text:
            print(f"error: {SCHEMA_PATH} differs from edge/wire_spec.py; run python -m edge.wire_spec --write",
                  file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
