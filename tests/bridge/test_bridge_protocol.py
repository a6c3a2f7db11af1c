"""Protocol messages, validation and the sequence tracker."""

import math

import msgpack
import numpy as np
import pytest

from firmware_bridge.errors import InvalidField, MalformedPayload, ProtocolError, UnknownMessageType, UnsupportedVersion
from firmware_bridge.framing import Frame, FrameDecoder
from firmware_bridge.protocol import (
    Ack,
    Hello,
    Nack,
    ResendRequest,
    ResendUnavailable,
    SequenceTracker,
    SpectrumMessage,
    StatusMessage,
    decode_frame,
    encode_message,
    evaluate_calibration,
    message_to_dict,
    seq_add,
    seq_diff,
)
from firmware_bridge.wire import NackReason

AXIS = (200.0 + np.arange(1392)).astype(np.float32)  # 200 .. 1591 cm^-1


def _spectrum(**kw) -> SpectrumMessage:
    rng = np.random.default_rng(0)
    fields = dict(instrument_id="RMN-1", session_id=99, acquisition_time_ns=1_700_000_000_000_000_000,
                  integration_time_ms=100.0, laser_wavelength_nm=785.0, raman_shift_cm1=AXIS,
                  counts=rng.uniform(0, 5e4, AXIS.size).astype(np.float32), sample_label="calcite")
    fields.update(kw)
    return SpectrumMessage(**fields)


def _round_trip(msg, seq=None, **kw):
    (frame,) = FrameDecoder().feed(encode_message(msg, seq, **kw))
    return decode_frame(frame)


def test_spectrum_round_trip_float32():
    msg = _spectrum()
    got = _round_trip(msg, 1234)
    assert isinstance(got, SpectrumMessage) and got.seq == 1234 and not got.retransmitted
    assert got.raman_shift_cm1.dtype == np.float32 and got.raman_shift_cm1.shape == (1392,)
    assert np.array_equal(got.raman_shift_cm1, AXIS) and np.array_equal(got.counts, msg.counts)
    for key in ("instrument_id", "session_id", "acquisition_time_ns", "integration_time_ms",
                "laser_wavelength_nm", "sample_label"):
        assert getattr(got, key) == getattr(msg, key)
    assert got.counts.flags.writeable  # decoded arrays own their memory


def test_spectrum_calibration_and_integer_counts():
    counts = np.arange(1392, dtype=np.float32) * 40
    msg = _spectrum(raman_shift_cm1=None, calibration=(200.0, 1.0), counts=counts, counts_dtype="u2")
    got = _round_trip(msg, 7, retransmit=True)
    assert got.retransmitted and got.calibration == (200.0, 1.0) and got.counts_dtype == "u2"
    assert np.array_equal(got.raman_shift_cm1, AXIS)
    assert np.array_equal(got.counts, counts)
    quad = evaluate_calibration([100.0, 0.5, 1e-4], 10)
    assert quad.dtype == np.float32 and math.isclose(quad[9], 100 + 4.5 + 81e-4, rel_tol=1e-6)
    big = _round_trip(_spectrum(counts=np.full(1392, 2.0**31, np.float32), counts_dtype="u4"), 1)
    assert big.counts[0] == 2.0**31


@pytest.mark.parametrize("msg", [
    StatusMessage("RMN-1", 99, 1000, "idle", -55.0, 80.0, 3, "ok", seq=10),
    StatusMessage("RMN-1", 99, 1000, seq=0),
    Hello("daemon"), Ack(5), Nack(6, NackReason.MALFORMED_PAYLOAD, "bad"), Nack(6),
    ResendRequest(2**32 - 1), ResendUnavailable(8, 100), ResendUnavailable(8),
], ids=lambda m: type(m).__name__)
def test_control_messages_round_trip(msg):
    assert message_to_dict(_round_trip(msg)) == message_to_dict(msg)


def test_unknown_nack_reason_is_kept():
    got = _round_trip(Nack(1, 200))
    assert got.reason == 200 and got.reason_name == "UNKNOWN_200"


@pytest.mark.parametrize("kwargs", [
    dict(counts=np.array([1.0, np.nan], np.float32), raman_shift_cm1=np.array([1.0, 2.0], np.float32)),
    dict(counts=np.ones(3, np.float32), raman_shift_cm1=np.ones(4, np.float32)),
    dict(counts=np.ones((2, 2), np.float32), raman_shift_cm1=np.ones(4, np.float32)),
    dict(counts=np.ones(0, np.float32), raman_shift_cm1=np.ones(0, np.float32)),
    dict(raman_shift_cm1=None),
    dict(counts_dtype="f8"),
    dict(raman_shift_cm1=None, calibration=(1.0,) * 9),
    dict(raman_shift_cm1=None, calibration=(1e300, 1e300, 1e300)),
])
def test_spectrum_construction_validates(kwargs):
    with pytest.raises(InvalidField):
        _spectrum(**kwargs)


def test_integer_dtype_requires_integral_counts():
    with pytest.raises(InvalidField):
        encode_message(_spectrum(counts_dtype="u2"), 1)  # float counts with fractions / > 65535
    with pytest.raises(InvalidField):
        encode_message(Ack(1), -1)
    with pytest.raises(InvalidField):
        encode_message(_spectrum())  # no seq


def _frame_with(fields: dict, msg_type: int = 1, seq: int = 3) -> Frame:
    return Frame(msg_type, seq, msgpack.packb(fields, use_bin_type=True))


BASE = _spectrum().to_fields()


@pytest.mark.parametrize("change", [
    {"counts": None}, {"instrument_id": None}, {"session_id": -1}, {"session_id": 2**32},
    {"acquisition_time_ns": "now"}, {"integration_time_ms": 0}, {"laser_wavelength_nm": float("inf")},
    {"integration_time_ms": True}, {"counts": b"\x00\x00\x80"}, {"counts": b""},
    {"raman_shift_cm1": b"\x00" * 8}, {"raman_shift_cm1": "text"}, {"calibration": [1.0, 2.0]},
    {"raman_shift_cm1": None}, {"counts_dtype": "i2"}, {"sample_label": 5}, {"instrument_id": "x" * 300},
    {"counts": np.array([np.inf] * 1392, "<f4").tobytes()},
], ids=lambda c: ",".join(c))
def test_decode_spectrum_invalid_fields(change):
    fields = dict(BASE)
    for key, value in change.items():
        if value is None:
            fields.pop(key)
        else:
            fields[key] = value
    with pytest.raises(InvalidField) as info:
        decode_frame(_frame_with(fields))
    assert info.value.nack_reason == NackReason.INVALID_FIELD


def test_decode_calibration_variant_validation():
    fields = dict(BASE)
    del fields["raman_shift_cm1"]
    for calibration in ([], ["a"], [True], [float("nan")]):
        with pytest.raises(InvalidField):
            decode_frame(_frame_with(fields | {"calibration": calibration}))
    got = decode_frame(_frame_with(fields | {"calibration": [200, 1]}))  # ints accepted
    assert np.array_equal(got.raman_shift_cm1, AXIS)


@pytest.mark.parametrize("frame, error", [
    (Frame(0x7F, 1, b"\x80"), UnknownMessageType),
    (Frame(1, 1, b"\x80", version=2), UnsupportedVersion),
    (Frame(0x11, 1, b"\x93\x01\x02\x03"), MalformedPayload),
    (Frame(0x11, 1, b"\xc1"), MalformedPayload),
    (Frame(0x11, 1, b""), MalformedPayload),
    (Frame(0x11, 1, b"\x81\x01\x02"), MalformedPayload),  # integer key
    (Frame(0x11, 1, b"\x81\xc4\x01k\x02"), MalformedPayload),  # binary key
    (Frame(0x11, 1, b"\x80\x80"), MalformedPayload),
    (Frame(0x12, 1, b"\x80"), InvalidField),  # NACK without reason
    (Frame(0x10, 0, b"\x80"), InvalidField),  # HELLO without host_id
])
def test_decode_frame_errors(frame, error):
    with pytest.raises(error) as info:
        decode_frame(frame)
    assert isinstance(info.value, ProtocolError)


def test_status_unknown_keys_ignored_and_nil_optional():
    got = decode_frame(_frame_with({"instrument_id": "a", "session_id": 1, "uptime_ms": 5, "state": "idle",
                                    "laser_power_mw": None, "future_key": [1, 2]}, msg_type=2, seq=9))
    assert isinstance(got, StatusMessage) and got.next_seq == 9 and got.laser_power_mw is None


# --------------------------------------------------------------------------- sequence tracker
def test_seq_arithmetic_wraps():
    assert seq_add(2**32 - 1, 1) == 0 and seq_add(0, -1) == 2**32 - 1
    assert seq_diff(0, 2**32 - 1) == 1 and seq_diff(2**32 - 1, 0) == -1
    assert seq_diff(5, 5) == 0 and seq_diff(2**31, 0) == -(2**31)


def test_tracker_in_order_gap_recover_duplicate():
    t = SequenceTracker()
    assert t.observe(10).kind == "first"
    assert t.observe(11).kind == "new"
    obs = t.observe(14)
    assert obs.kind == "new" and obs.missing == (12, 13) and obs.deliver
    assert t.missing == (12, 13)
    assert t.observe(13).kind == "recovered" and t.missing == (12,)
    assert t.observe(13).kind == "duplicate" and not t.observe(11).deliver
    assert t.observe(9).kind == "duplicate"  # before tracking started, within the window
    assert t.give_up(12) and not t.give_up(12)
    assert t.observe(12).kind == "late" and not t.observe(12).deliver
    assert t.missing == ()


def test_tracker_wrap_around():
    t = SequenceTracker()
    t.observe(2**32 - 3)
    obs = t.observe(1)  # ..., 2**32-2, 2**32-1, 0 missing
    assert obs.kind == "new" and obs.missing == (2**32 - 2, 2**32 - 1, 0)
    assert t.observe(0).kind == "recovered"
    assert t.observe(2**32 - 1).kind == "recovered"
    assert t.observe(2).kind == "new" and t.highest == 2
    assert t.observe(2**32 - 3).kind == "duplicate"


def test_tracker_status_high_water_mark():
    t = SequenceTracker()
    assert t.observe_next(0).kind == "first"  # nothing sent yet
    assert t.observe(0).kind == "new"
    obs = t.observe_next(4)  # 1, 2, 3 were sent but not seen
    assert obs.missing == (1, 2, 3) and t.highest == 3
    assert t.observe_next(4).kind == "none"
    assert t.observe(4).kind == "new" and t.observe(2).kind == "recovered"


def test_tracker_restart_and_resync():
    t = SequenceTracker(window=16, max_gap=100)
    t.observe(50, session_id=1)
    t.observe(53, session_id=1)
    obs = t.observe(0, session_id=2)
    assert obs.kind == "restart" and obs.abandoned == (51, 52) and obs.deliver
    assert t.missing == () and t.session_id == 2
    assert t.observe(1, session_id=2).kind == "new"
    obs = t.observe(500, session_id=2)
    assert obs.kind == "resync" and obs.missing == ()
    assert t.observe(400).kind == "resync"  # 100 behind: outside the dedupe window
    assert t.observe_next(401).kind == "none"
    assert t.observe_next(10_000).kind == "resync"


def test_tracker_memory_bounded():
    t = SequenceTracker(window=64)
    for seq in range(10_000):
        t.observe(seq)
    assert len(t._received._set) <= 64


def test_integer_dtype_range_is_exact():
    with pytest.raises(InvalidField):  # float32(2**32 - 1) rounds up to 2**32: out of range
        encode_message(_spectrum(counts=np.full(1392, 2**32 - 1, np.float32), counts_dtype="u4"), 1)
    with pytest.raises(InvalidField):
        encode_message(_spectrum(counts=np.full(1392, 65536, np.float32), counts_dtype="u2"), 1)
    top = float(np.nextafter(np.float32(2**32), np.float32(0)))
    got = _round_trip(_spectrum(counts=np.full(1392, top, np.float32), counts_dtype="u4"), 1)
    assert got.counts[0] == top


def test_spectrum_without_axis_or_calibration_cannot_be_encoded():
    # Found while typing for mypy (#20): to_fields called None.astype -> AttributeError (not a
    # BridgeError) when raman_shift_cm1 was cleared after construction.
    msg = _spectrum(seq=1)
    msg.raman_shift_cm1 = None
    with pytest.raises(InvalidField, match="raman_shift_cm1 or calibration"):
        encode_message(msg)
