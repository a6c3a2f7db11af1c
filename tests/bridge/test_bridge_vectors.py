"""Conformance vectors in firmware_bridge/test_vectors.json (usable by a C implementation)."""

import json

import pytest

from firmware_bridge import cobs, errors
from firmware_bridge.crc import crc32
from firmware_bridge.framing import FrameDecoder
from firmware_bridge.protocol import decode_frame, message_to_dict
from firmware_bridge.vectors import VECTORS_PATH, build_vectors

VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


def test_vector_file_matches_generator():
    assert VECTORS == json.loads(json.dumps(build_vectors()))


@pytest.mark.parametrize("case", VECTORS["crc32"], ids=lambda c: c["data_hex"][:12] or "empty")
def test_crc_vectors(case):
    assert crc32(bytes.fromhex(case["data_hex"])) == int(case["crc32"], 16)


@pytest.mark.parametrize("case", VECTORS["cobs"], ids=lambda c: str(len(c["decoded_hex"]) // 2))
def test_cobs_vectors(case):
    decoded, encoded = bytes.fromhex(case["decoded_hex"]), bytes.fromhex(case["encoded_hex"])
    assert cobs.encode(decoded) == encoded
    assert cobs.decode(encoded) == decoded


def _events(wire: bytes, max_frame_size: int) -> list[dict]:
    """Decode ``wire`` one delimiter at a time so frames and rejections keep their order."""
    events: list[dict] = []
    decoder = FrameDecoder(max_frame_size, on_reject=lambda r: events.append({"error": type(r.error).__name__}))
    start = 0
    while start < len(wire):
        end = wire.find(0, start)
        end = len(wire) if end < 0 else end + 1
        for frame in decoder.feed(wire[start:end]):
            event = {"frame": {"version": frame.version, "msg_type": frame.msg_type, "flags": frame.flags,
                               "seq": frame.seq, "payload_hex": frame.payload.hex()}}
            try:
                event["message"] = message_to_dict(decode_frame(frame))
            except errors.ProtocolError as exc:
                event["error"] = type(exc).__name__
            events.append(event)
        start = end
    return events


@pytest.mark.parametrize("case", VECTORS["frames"], ids=lambda c: c["name"])
def test_frame_vectors(case):
    wire = bytes.fromhex(case["wire_hex"])
    got = _events(wire, case.get("max_frame_size", VECTORS["max_frame_size"]))
    assert json.loads(json.dumps(got)) == case["expect"]
    for event in case["expect"]:
        if "error" in event:
            assert issubclass(getattr(errors, event["error"]), errors.BridgeError)
    if "decoded_hex" in case:
        assert cobs.decode(wire[:-1]).hex() == case["decoded_hex"]
