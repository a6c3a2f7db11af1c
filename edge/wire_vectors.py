"""Generator of ``wire_vectors.json``: conformance vectors of the daemon's ZeroMQ input (docs/wire.md §8).

Run ``python -m edge.wire_vectors [--write]`` to print or rewrite the file; the tests check that the stored
file equals :func:`build_vectors` and that the decoder gives each vector's expected result. Expected values
are written from the messages as they were built (the fields put in, or the rule the message breaks), never
by running the decoder. Any implementation of a sender or of the daemon's input can replay them.

Each vector: ``name``; ``message`` (``"spectrum"`` or ``"event"``); ``frames_hex`` (the ZeroMQ message, one
hex string per frame); and either ``decoded`` (the fields the daemon reads; ``id`` null means "made by the
daemon": 16 lowercase hex digits; arrays as lists of numbers) or ``rejected`` (``reason`` on the error topic,
the ``id``/``instrument_id``/``instrument_seq`` echoed in the error, and ``detail_contains``, a fragment of
the detail text, informative only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from .wire_spec import MAX_POINTS, MAX_STR_CHARS, UINT64_MAX, WIRE_VERSION

__all__ = ["VECTORS_PATH", "build_vectors", "main"]

VECTORS_PATH = Path(__file__).with_name("wire_vectors.json")
_SENT = 1_700_000_000_123_456_789
_Y = [0.5, 1.25, 2.0, 0.0, -0.75, 3.5]  # exactly representable in every float dtype
_X = [200.0, 200.5, 201.0, 202.25, 203.0, 204.5]
_NONE = {"id": None, "instrument_id": None, "instrument_seq": None}


def _arr(values: list[float], dtype: str = "<f4", **override: Any) -> dict[str, Any]:
    a = np.asarray(values, dtype=dtype)
    return {"dtype": dtype, "shape": [a.size], "data": a.tobytes(), **override}


def _spec(**fields: Any) -> dict[str, Any]:
    return {"type": "spectrum", "v": WIRE_VERSION, "intensity": _arr(_Y), **fields}


def _pack(m: Any) -> str:
    return msgpack.packb(m, use_bin_type=True).hex()


def _ok(name: str, msg: dict[str, Any], **expect: Any) -> dict[str, Any]:
    intensity = expect.pop("intensity", _Y)
    decoded = {"id": msg.get("id"), "intensity": intensity, "raman_shift_cm1": None, "sent_ns": msg.get("sent_ns"),
               "instrument_id": msg.get("instrument_id"), "instrument_seq": msg.get("instrument_seq"),
               "label": msg.get("label"), **expect}
    return {"name": name, "message": "spectrum", "frames_hex": [_pack(msg)], "decoded": decoded}


def _bad(name: str, msg: Any, fragment: str, message: str = "spectrum", raw: bytes | None = None,
         **echo: Any) -> dict[str, Any]:
    frames = [raw.hex()] if raw is not None else [_pack(msg)]
    return {"name": name, "message": message, "frames_hex": frames,
            "rejected": {"reason": "wire", **_NONE, **echo, "detail_contains": fragment}}


def _spectrum_vectors() -> list[dict[str, Any]]:
    who: dict[str, Any] = {"id": "v-7", "instrument_id": "rover-1", "instrument_seq": 7}
    v = [
        _ok("minimal", _spec()),
        _ok("all_fields", _spec(id="s-1", raman_shift_cm1=_arr(_X, "<f8"), sent_ns=_SENT, instrument_id="rover-1",
                                instrument_seq=12, label="Quartz"), raman_shift_cm1=_X),
        *[_ok(f"dtype_{dt[1:]}", _spec(id=f"d-{dt[1:]}", intensity=_arr([1, 2, 3, 65535 if dt == "<u2" else 40000],
                                                                         dt)),
              intensity=[1, 2, 3, 65535 if dt == "<u2" else 40000]) for dt in ("<u2", "<u4", "<i4")],
        _ok("dtype_i2_negative", _spec(id="d-i2", intensity=_arr([-3, 0, 7], "<i2")), intensity=[-3, 0, 7]),
        _ok("dtype_f8", _spec(id="d-f8", intensity=_arr(_Y, "<f8"))),
        _ok("sent_ns_as_integral_float", _spec(id="f-1", sent_ns=1.7e18), sent_ns=1_700_000_000_000_000_000),
        _ok("instrument_seq_as_integral_float", _spec(id="f-2", instrument_seq=42.0), instrument_seq=42),
        _ok("unknown_fields_ignored", _spec(id="u-1", colour="green", extra={"a": 1})),
        _ok("nil_optionals", _spec(id=None, raman_shift_cm1=None, sent_ns=None, instrument_id=None,
                                   instrument_seq=None, label=None)),
        _ok("largest_uint64_sent_ns", _spec(id="big", sent_ns=UINT64_MAX)),
        _bad("not_msgpack", None, "not a msgpack message", raw=b"\xc1\x00garbage"),
        _bad("truncated_msgpack", None, "not a msgpack message", raw=bytes.fromhex(_pack(_spec(**who)))[:40]),
        _bad("array_not_map", [1, 2, 3], "must be a map"),
        _bad("wrong_type", _spec(type="hello", **who), "message type", **who),
        _bad("missing_version", {k: v for k, v in _spec(**who).items() if k != "v"}, "wire version", **who),
        _bad("version_2", _spec(v=2, **who), "wire version", **who),
        _bad("version_as_str", _spec(v="1", **who), "wire version", **who),
        _bad("version_as_bool", _spec(v=True, **who), "wire version", **who),
        _bad("missing_intensity", {k: v for k, v in _spec(**who).items() if k != "intensity"}, "no 'intensity'",
             **who),
        _bad("dtype_big_endian", _spec(intensity=_arr(_Y, ">f4"), **who), "unsupported dtype", **who),
        _bad("dtype_list", _spec(intensity={**_arr(_Y), "dtype": ["<f4"]}, **who), "unsupported dtype", **who),
        _bad("dtype_map", _spec(intensity={**_arr(_Y), "dtype": {"<f4": 1}}, **who), "unsupported dtype", **who),
        _bad("shape_zero", _spec(intensity=_arr([], shape=[0]), **who), "shape", **who),
        _bad("shape_too_many_points", _spec(intensity=_arr(_Y, shape=[MAX_POINTS + 1]), **who), "shape", **who),
        _bad("shape_2d", _spec(intensity=_arr(_Y, shape=[2, 3]), **who), "shape", **who),
        _bad("shape_bool", _spec(intensity=_arr([1.0], shape=[True]), **who), "shape", **who),
        _bad("data_as_str", _spec(intensity={"dtype": "<f4", "shape": [1], "data": "abcd"}, **who), "msgpack bin",
             **who),
        _bad("data_short", _spec(intensity=_arr(_Y, shape=[7]), **who), "do not hold", **who),
        _bad("axis_length_mismatch", _spec(raman_shift_cm1=_arr(_X[:5], "<f8"), **who), "points", **who),
        _bad("sent_ns_as_str", _spec(sent_ns=str(_SENT), **who), "sent_ns", **who),
        _bad("sent_ns_fractional_float", _spec(sent_ns=1.5, **who), "sent_ns", **who),
        _bad("sent_ns_negative", _spec(sent_ns=-1, **who), "sent_ns", **who),
        _bad("sent_ns_float_beyond_uint64", _spec(sent_ns=2.0**64, **who), "sent_ns", **who),
        _bad("instrument_seq_negative", _spec(**{**who, "instrument_seq": -1}), "instrument_seq",
             **{**who, "instrument_seq": None}),
        _bad("id_not_str", _spec(**{**who, "id": 5}), "'id'", **{**who, "id": None}),
        _bad("id_too_long", _spec(**{**who, "id": "x" * (MAX_STR_CHARS + 1)}), "'id'", **{**who, "id": None}),
        _bad("instrument_id_not_str", _spec(**{**who, "instrument_id": 1}), "instrument_id",
             **{**who, "instrument_id": None}),
        _bad("label_not_str", _spec(label=3, **who), "label", **who),
        _bad("intensity_float32_extreme", _spec(intensity=_arr([1.0, 3e38, -3e38], "<f4"), **who), "exceed", **who),
        _bad("intensity_float64_extreme", _spec(intensity=_arr([1.0, 1e300], "<f8"), **who), "exceed", **who),
        _bad("axis_extreme", _spec(raman_shift_cm1=_arr([200.0, 201, 202, 203, 204, 1e300], "<f8"), **who), "exceed",
             **who),
    ]
    frame = bytes.fromhex(_pack(_spec(**who)))
    v.append({"name": "multipart_message", "message": "spectrum", "frames_hex": [frame.hex(), frame.hex()],
              "rejected": {"reason": "wire", **who, "detail_contains": "multipart"}})
    return v


def _event_vectors() -> list[dict[str, Any]]:
    def ev(event_type: str, /, **fields: Any) -> dict[str, Any]:
        return {"type": event_type, "v": WIRE_VERSION, **fields}  # "type" first: how the daemon tells events apart

    link = {"state": "reconnecting", "reason": "port gone", "attempt": 2, "url": "loop://", "instrument_id": None,
            "time_ns": _SENT}
    lost = {"instrument_seq": 9, "reason": "resend unavailable", "instrument_id": "rover-1", "id": "rover-1-s-9",
            "time_ns": _SENT}
    return [
        {"name": "link_event", "message": "event", "frames_hex": [_pack(ev("link", **link))],
         "decoded": {"type": "link", "v": WIRE_VERSION, **link}},
        {"name": "link_event_unknown_keys_dropped", "message": "event",
         "frames_hex": [_pack(ev("link", state="up", kind="x", self=1, type_="y"))],
         "decoded": {"type": "link", "v": WIRE_VERSION, "state": "up"}},
        {"name": "lost_event", "message": "event", "frames_hex": [_pack(ev("lost", **lost))],
         "decoded": {"type": "lost", "v": WIRE_VERSION, **lost}},
        _bad("lost_event_without_reason", ev("lost", instrument_seq=9, instrument_id="rover-1"), "reason", "event",
             instrument_seq=9, instrument_id="rover-1"),
        _bad("link_event_bad_state", ev("link", state="sideways"), "state", "event"),
        _bad("link_event_version_2", {**ev("link", state="up"), "v": 2}, "wire version", "event"),
    ]


def build_vectors() -> dict[str, Any]:
    """Build the conformance vectors.

    Returns
    -------
    dict
        ``{"format", "wire_version", "vectors": [...]}`` (module docstring).
    """
    return {"format": "raman-edge daemon wire conformance vectors (docs/wire.md)", "wire_version": WIRE_VERSION,
            "vectors": _spectrum_vectors() + _event_vectors()}


def main(argv: list[str] | None = None) -> int:
    """``python -m edge.wire_vectors [--write]``: print the vectors, or rewrite ``edge/wire_vectors.json``."""
    ap = argparse.ArgumentParser(prog="python -m edge.wire_vectors", description=main.__doc__)
    ap.add_argument("--write", action="store_true", help=f"rewrite {VECTORS_PATH.name}")
    text = json.dumps(build_vectors(), indent=1) + "\n"
    if ap.parse_args(argv).write:
        VECTORS_PATH.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
