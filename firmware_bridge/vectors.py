"""Generator of ``test_vectors.json`` (conformance vectors, see PROTOCOL.md §9).

Run ``python -m firmware_bridge.vectors [PATH]`` to rewrite the file; the test
suite checks that the stored file equals :func:`build_vectors`. Expected values
are built from the messages that were encoded (and, for damaged frames, from
the kind of damage), not by running the decoder.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import msgpack
import numpy as np

from . import cobs
from .crc import crc32
from .protocol import (
    Ack,
    Hello,
    Message,
    Nack,
    ResendRequest,
    ResendUnavailable,
    SpectrumMessage,
    StatusMessage,
    encode_message,
    message_to_dict,
)
from .wire import HEADER, MAX_FRAME_SIZE, PROTOCOL_VERSION, MessageType, NackReason

VECTORS_PATH = pathlib.Path(__file__).with_name("test_vectors.json")

_T_NS = 1_700_000_000_123_456_789


def _raw_frame(msg_type: int, seq: int, payload: bytes, *, version: int = PROTOCOL_VERSION,
               flags: int = 0, length: int | None = None) -> bytes:
    """Unstuffed frame with arbitrary header values and a correct CRC."""
    body = HEADER.pack(version, msg_type, flags, 0, seq, len(payload) if length is None else length)
    body += payload
    return body + crc32(body).to_bytes(4, "little")


def _wire(decoded: bytes) -> bytes:
    return cobs.encode(decoded) + b"\x00"


def _frame_json(decoded: bytes) -> dict[str, Any]:
    version, msg_type, flags, _, seq, _ = HEADER.unpack_from(decoded)
    return {"version": version, "msg_type": msg_type, "flags": flags, "seq": seq,
            "payload_hex": decoded[12:-4].hex()}


def _ok(msg: Message, *, retransmit: bool = False) -> tuple[bytes, dict[str, Any]]:
    """Wire bytes of ``msg`` and its expected decode event."""
    wire = encode_message(msg, retransmit=retransmit)
    if isinstance(msg, SpectrumMessage):
        msg.retransmitted = retransmit
    return wire, {"frame": _frame_json(cobs.decode(wire[:-1])), "message": message_to_dict(msg)}


def _protocol_error(decoded: bytes, error: str) -> tuple[bytes, dict[str, Any]]:
    return _wire(decoded), {"frame": _frame_json(decoded), "error": error}


def _spectrum(**overrides: Any) -> SpectrumMessage:
    fields: dict[str, Any] = dict(instrument_id="RMN-0042", session_id=0x1234ABCD, acquisition_time_ns=_T_NS,
                  integration_time_ms=250.0, laser_wavelength_nm=785.0,
                  raman_shift_cm1=np.array([200.0, 201.0, 202.0, 203.5], np.float32),
                  counts=np.array([10.0, 12.25, 0.0, 1000.0], np.float32),
                  sample_label="quartz", seq=42)
    fields.update(overrides)
    return SpectrumMessage(**fields)


def _spectrum_fields(**overrides: Any) -> bytes:
    """Msgpack payload of the reference spectrum with fields replaced/removed (None)."""
    fields = _spectrum().to_fields()
    for key, value in overrides.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    payload: bytes = msgpack.packb(fields, use_bin_type=True)  # msgpack has no type hints
    return payload


def _cobs_vectors() -> list[dict[str, str]]:
    cases = [b"", b"\x00", b"\x00\x00", b"\x11\x22\x00\x33", b"\x11\x22\x33\x44", b"\x11\x00\x00\x00",
             bytes(range(1, 255)), bytes(range(0, 255)), bytes(range(1, 256)),
             bytes(range(2, 256)) + b"\x00", bytes(range(3, 256)) + b"\x00\x01",
             b"\xAA" * 254 + b"\x00", b"\xAA" * 508]
    return [{"decoded_hex": c.hex(), "encoded_hex": cobs.encode(c).hex()} for c in cases]


def _frame_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = []

    def add(name: str, description: str, parts: list[tuple[bytes, dict[str, Any] | None]], **extra: Any) -> None:
        wire = b"".join(p[0] for p in parts)
        vectors.append({"name": name, "description": description, **extra, "wire_hex": wire.hex(),
                        "expect": [p[1] for p in parts if p[1] is not None]})

    ack_wire, ack_event = _ok(Ack(5))
    add("ack", "ACK of seq 5: the worked example of PROTOCOL.md", [(ack_wire, ack_event)],
        decoded_hex=cobs.decode(ack_wire[:-1]).hex())
    add("resend_request_wrap", "RESEND_REQUEST for seq 0xFFFFFFFF", [_ok(ResendRequest(0xFFFFFFFF))])
    add("hello", "HELLO from the host", [_ok(Hello("raman-edge"))])
    add("nack", "NACK with reason INVALID_FIELD and detail",
        [_ok(Nack(7, NackReason.INVALID_FIELD, "counts: contains NaN"))])
    add("resend_unavailable", "RESEND_UNAVAILABLE with oldest_seq", [_ok(ResendUnavailable(3, 100))])
    add("status_minimal", "STATUS with required fields only",
        [_ok(StatusMessage("RMN-0042", 0x1234ABCD, 5000, "idle", seq=43))])
    add("status_full", "STATUS with all optional fields",
        [_ok(StatusMessage("RMN-0042", 0x1234ABCD, 123456, "acquiring", -60.5, 99.5, 17,
                           "ok", seq=43))])
    add("spectrum_axis_f4", "SPECTRUM with float32 axis and float32 counts", [_ok(_spectrum())])
    add("spectrum_calibration_u2", "SPECTRUM with calibration polynomial and uint16 counts",
        [_ok(_spectrum(raman_shift_cm1=None, calibration=(200.0, 1.5), counts_dtype="u2",
                       counts=np.array([0.0, 1.0, 65535.0, 300.0], np.float32),
                       sample_label=None, seq=0))])
    add("spectrum_u4_retransmit", "SPECTRUM with uint32 counts, FLAG_RETRANSMIT set",
        [_ok(_spectrum(counts_dtype="u4", counts=np.array([1.0, 2.0, 3.0, 4.0], np.float32),
                       seq=0xFFFFFFFF), retransmit=True)])
    add("two_frames_and_empty", "empty frames (0x00 0x00) are skipped; two frames in one stream",
        [(b"\x00\x00", None), _ok(Ack(1)), (b"\x00", None), _ok(Ack(2))])

    ack_decoded = cobs.decode(ack_wire[:-1])
    flipped = bytearray(ack_decoded)
    flipped[4] ^= 0x10
    add("crc_error", "ACK with one bit of seq flipped", [(_wire(bytes(flipped)), {"error": "CrcError"})])
    bad_crc = ack_decoded[:-4] + bytes(4)
    add("crc_zero", "ACK with the CRC replaced by zeros", [(_wire(bad_crc), {"error": "CrcError"})])
    add("cobs_overrun", "code byte points past the end of the frame",
        [(bytes([0x09, 0x01, 0x02, 0x00]), {"error": "CobsError"})])
    add("too_short", "15 decoded bytes: shorter than header + CRC",
        [(_wire(bytes(range(1, 16))), {"error": "FrameLengthError"})])
    add("length_mismatch", "payload_length says 2, payload has 1 byte (CRC valid)",
        [(_wire(_raw_frame(MessageType.ACK, 5, b"\x80", length=2)), {"error": "FrameLengthError"})])
    add("version_2", "version byte 2 with a valid CRC",
        [(_wire(_raw_frame(MessageType.ACK, 5, b"\x80", version=2)), {"error": "UnsupportedVersion"})])
    add("oversize_decoded", "valid 74-byte frame (fits the buffer), decoder limited to 64 bytes",
        [(encode_message(Nack(1, 0, "x" * 40)), {"error": "FrameTooLargeError"}), _ok(Ack(9))],
        max_frame_size=64)
    add("oversize_buffer", "200 non-zero bytes without delimiter, decoder limited to 64 bytes",
        [(b"\x55" * 200 + b"\x00", {"error": "FrameTooLargeError"}), _ok(Ack(9))], max_frame_size=64)
    add("resync_after_garbage", "garbage, delimiter, then two intact frames",
        [(bytes([0x13, 0x37, 0xC0, 0xFF, 0xEE]) + b"\x00", {"error": "CobsError"}),
         _ok(Ack(10)), _ok(Ack(11))])
    truncated = encode_message(Ack(12))[:-6]
    add("truncated_then_frame", "ACK cut after 12 bytes (its last code byte 0x06 points past the end), "
        "then the leading delimiter of the next frame and an intact ACK",
        [(truncated + b"\x00", {"error": "CobsError"}), _ok(Ack(13))])
    add("truncated_merges", "the same truncated ACK directly followed by an intact ACK (no delimiter "
        "between them): both are lost as one damaged frame -- why senders emit a leading 0x00",
        [(truncated + encode_message(Ack(13)), {"error": "CrcError"})])

    add("unknown_type", "message type 0x7F with a valid CRC",
        [_protocol_error(_raw_frame(0x7F, 1, b"\x80"), "UnknownMessageType")])
    add("payload_not_map", "payload is a msgpack array",
        [_protocol_error(_raw_frame(MessageType.ACK, 1, b"\x93\x01\x02\x03"), "MalformedPayload")])
    add("payload_truncated_msgpack", "payload is a truncated msgpack string",
        [_protocol_error(_raw_frame(MessageType.ACK, 1, b"\xa5ab"), "MalformedPayload")])
    add("payload_extra_bytes", "payload has bytes after the map",
        [_protocol_error(_raw_frame(MessageType.ACK, 1, b"\x80\x80"), "MalformedPayload")])
    add("spectrum_missing_counts", "SPECTRUM without 'counts'",
        [_protocol_error(_raw_frame(MessageType.SPECTRUM, 42, _spectrum_fields(counts=None)), "InvalidField")])
    add("spectrum_axis_length_mismatch", "axis has 3 points, counts 4",
        [_protocol_error(_raw_frame(MessageType.SPECTRUM, 42, _spectrum_fields(
            raman_shift_cm1=np.arange(3, dtype="<f4").tobytes())), "InvalidField")])
    add("spectrum_nan_counts", "counts contain NaN",
        [_protocol_error(_raw_frame(MessageType.SPECTRUM, 42, _spectrum_fields(
            counts=np.array([1, np.nan, 3, 4], "<f4").tobytes())), "InvalidField")])
    add("spectrum_axis_and_calibration", "both 'raman_shift_cm1' and 'calibration'",
        [_protocol_error(_raw_frame(MessageType.SPECTRUM, 42, _spectrum_fields(
            calibration=[200.0, 1.0])), "InvalidField")])
    add("spectrum_bad_dtype", "counts_dtype 'f8' is not allowed",
        [_protocol_error(_raw_frame(MessageType.SPECTRUM, 42, _spectrum_fields(counts_dtype="f8")),
                         "InvalidField")])
    add("spectrum_negative_integration", "integration_time_ms must be > 0",
        [_protocol_error(_raw_frame(MessageType.SPECTRUM, 42, _spectrum_fields(integration_time_ms=-1.0)),
                         "InvalidField")])
    add("spectrum_wrong_type", "instrument_id is an integer",
        [_protocol_error(_raw_frame(MessageType.SPECTRUM, 42, _spectrum_fields(instrument_id=7)),
                         "InvalidField")])
    return vectors


def build_vectors() -> dict[str, Any]:
    """The complete content of ``test_vectors.json``."""
    return {
        "format": "raman-edge firmware_bridge conformance vectors",
        "protocol_version": PROTOCOL_VERSION,
        "max_frame_size": MAX_FRAME_SIZE,
        "crc32": [{"data_hex": d.hex(), "crc32": f"0x{crc32(d):08x}"}
                  for d in (b"123456789", b"", b"\x00", bytes(range(256)))],
        "cobs": _cobs_vectors(),
        "frames": _frame_vectors(),
    }


def write_vectors(path: pathlib.Path = VECTORS_PATH) -> None:
    """Write :func:`build_vectors` as indented JSON to ``path``."""
    path.write_text(json.dumps(build_vectors(), indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover
    write_vectors(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else VECTORS_PATH)
