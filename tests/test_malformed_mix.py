"""The seeded malformed-message mix (edge/fuzz.py, issue #17): its kinds, its scoring, and a running daemon under it:
alive, every valid spectrum predicted exactly once, every malformed message answered on the error topic (or, over
the size limit, dropped by ZeroMQ with its connection), drift statistics finite."""

from __future__ import annotations

import math

import msgpack
import pytest
from daemon_harness import RunningDaemon

from bench.bench_malformed import drive_mix
from edge.bundle import Bundle
from edge.errors import ConfigError
from edge.fuzz import answer_key, kinds, malformed_mix, score_answers
from edge.wire import MAX_MESSAGE_BYTES
from edge.wire_vectors import build_vectors

# what issue #17 names, each at least once among the kinds
REQUIRED = {"truncated_msgpack", "empty_frame", "vector:dtype_list", "vector:dtype_map", "shape_lie_longer",
            "shape_lie_shorter", "axis_count_wrong_length", "vector:intensity_float32_extreme",
            "vector:intensity_float64_extreme", "nan_intensity", "inf_intensity", "huge_valid_f8", "huge_nan",
            "random_bytes_near_limit", "axis_decreasing", "vector:version_2", "vector:multipart_message",
            "multipart_empty_frames", "vector:link_event", "vector:lost_event", "non_utf8_id", "non_utf8_key",
            "deep_nesting_100k", "deep_nesting_in_field", "oversize"}


def test_the_mix_is_seeded_and_covers_every_kind_the_issue_names():
    names = kinds()
    assert len(names) >= 36 and REQUIRED <= set(names)
    refused_vectors = {f"vector:{v['name']}" for v in build_vectors()["vectors"]
                       if "rejected" in v or v["message"] == "event"}
    assert refused_vectors <= set(names)  # every invalid conformance vector is reused, none duplicated by hand
    a, b, c = malformed_mix(600, seed=3), malformed_mix(600, seed=3), malformed_mix(600, seed=4)
    assert [m.frames for m in a] == [m.frames for m in b] and [m.frames for m in a] != [m.frames for m in c]
    mix = malformed_mix(3000, seed=0)
    keys = [m.key for m in mix if m.key is not None]
    assert len(keys) == len(set(keys))  # every identifiable answer names one message
    valid = sum(m.kind == "valid" for m in mix) / len(mix)
    assert 0.15 < valid < 0.25
    assert {m.kind for m in mix} == {*names, "valid"}
    for m in mix:
        assert (m.nbytes > MAX_MESSAGE_BYTES) == (m.expect == "dropped"), m.kind
    huge = next(m for m in mix if m.kind == "huge_valid_f8")
    assert MAX_MESSAGE_BYTES - 128 * 1024 < huge.nbytes <= MAX_MESSAGE_BYTES
    with pytest.raises(ConfigError, match="unknown kind"):
        malformed_mix(10, only=["no_such_kind"])


def _answers(mix):
    """The answers the specification promises for ``mix``."""
    out = []
    for m in mix:
        if m.expect == "dropped":
            continue
        ident = {"id": None, "instrument_seq": None}
        if isinstance(m.key, int):
            ident["instrument_seq"] = m.key
        elif isinstance(m.key, str):
            ident["id"] = m.key
        if m.expect in ("prediction", "answer"):
            out.append(("prediction", ident))
        else:
            out.append(("error", {**ident, "reason": m.reason or "wire"}))
    return out


def test_score_answers_finds_every_kind_of_failure():
    mix = malformed_mix(400, seed=1)
    good = _answers(mix)
    report = score_answers(mix, good)
    assert report["ok"] and report["valid_missing"] == 0 and report["malformed_missing"] == 0
    assert report["predicted"] == report["valid_sent"] > 50 and report["dropped_sent"] > 0
    assert report["anonymous_errors"] == report["anonymous_sent"] > 0

    valid_at = next(i for i, (t, p) in enumerate(good) if t == "prediction" and answer_key(p) is not None
                    and next(m for m in mix if m.key == answer_key(p)).expect == "prediction")
    error_at = next(i for i, (t, p) in enumerate(good) if t == "error" and p["reason"] == "wire"
                    and answer_key(p) is not None)
    anonymous_at = next(i for i, (t, p) in enumerate(good) if t == "error" and answer_key(p) is None)
    oversize = next(m for m in mix if m.expect == "dropped")

    missing = score_answers(mix, good[:valid_at] + good[valid_at + 1:])
    assert not missing["ok"] and missing["valid_missing"] == 1
    twice = score_answers(mix, [*good, good[valid_at]])
    assert not twice["ok"] and twice["predicted_more_than_once"] == 1
    wrong = [*good]
    wrong[error_at] = ("error", {**good[error_at][1], "reason": "preprocess"})
    report = score_answers(mix, wrong)
    assert not report["ok"] and report["wrong_answer"][0]["expect"] == "error"
    no_error = score_answers(mix, good[:error_at] + good[error_at + 1:])
    assert not no_error["ok"] and no_error["malformed_missing"] == 1
    no_anonymous = score_answers(mix, good[:anonymous_at] + good[anonymous_at + 1:])
    assert not no_anonymous["ok"] and no_anonymous["anonymous_errors"] == no_anonymous["anonymous_sent"] - 1
    leaked = score_answers(mix, [*good, ("error", {"instrument_seq": oversize.key, "reason": "wire"})])
    assert not leaked["ok"] and leaked["dropped_answered"] == 1
    stranger = score_answers(mix, [*good, ("prediction", {"id": "not-in-the-mix", "instrument_seq": None})])
    assert not stranger["ok"] and stranger["unexpected_answers"] == 1


def _finite_drift(status: dict) -> bool:
    values = [v for v in status["drift"]["statistics"].values() if v is not None]
    off = status["drift"]["offset_cm1"]
    return bool(values) and all(math.isfinite(v) for v in values) and (off is None or math.isfinite(off))


def test_a_running_daemon_answers_the_whole_mix(novelty_bundle):
    """1 500 messages of every kind, about a fifth valid, sent as fast as the socket takes them."""
    b = Bundle.load(novelty_bundle["path"])
    mix = malformed_mix(1500, seed=0, grid=b.grid, min_coverage=b.preprocessing.min_coverage)
    with RunningDaemon(b.path, drift={"warmup": 50}) as d:
        driven = drive_mix(mix, d.ctx, d.daemon.endpoints["input"], d.rx, timeout_s=60)
        status = d.daemon.status()
        alive = d.thread.is_alive()
    report = score_answers(mix, driven["answers"])
    assert alive
    assert report["wrong_answer"] == [] and report["unexpected_answers"] == 0
    assert report["predicted"] == report["valid_sent"] > 250 and report["predicted_more_than_once"] == 0
    assert report["malformed_answered"] == report["malformed_sent"] > 1000 and report["malformed_missing"] == 0
    assert report["anonymous_errors"] == report["anonymous_sent"] > 50
    # over the size limit: ZeroMQ closed each one's connection, and nothing answered it
    assert driven["oversize_connections_closed"] == driven["oversize_sent"] == report["dropped_sent"] > 0
    assert report["dropped_answered"] == 0 and report["ok"]
    errors = sum(t == "error" for t, _ in driven["answers"])
    assert status["counters"]["rejected"] == errors == sum(status["rejections"].values())
    assert status["counters"]["published"] == sum(t == "prediction" for t, _ in driven["answers"])
    assert status["drift"]["seen"] == status["counters"]["published"] and _finite_drift(status)


def test_vector_messages_keep_their_defect_and_gain_a_matchable_identity():
    """A reused vector keeps what makes it invalid; only its identity is rewritten (or added) for matching."""
    mix = malformed_mix(50, seed=2, valid_fraction=0.0, only=["vector:id_not_str", "vector:instrument_seq_negative",
                                                              "vector:link_event", "vector:not_msgpack"])
    for m in mix:
        if m.kind == "vector:not_msgpack":
            assert m.key is None
            continue
        msg = msgpack.unpackb(m.frames[0], raw=False)
        if m.kind == "vector:id_not_str":
            assert msg["id"] == 5 and m.key == msg["instrument_seq"] == m.index
        elif m.kind == "vector:instrument_seq_negative":
            assert msg["instrument_seq"] == -1 and m.key == msg["id"] == f"mix-{m.index}"
        else:
            assert next(iter(msg)) == "type" and msg["type"] == "link" and m.key == msg["instrument_seq"]


def test_a_refused_message_leaves_no_reference_cycle(synthetic_bundle):
    """A refused message's exception, kept for its answer, must not hold the daemon's frame (its traceback did, and
    the frame held the batch's list, which held the exception): each batch's frames then lived until the cyclic
    garbage collector ran, 50-60 MB of peak memory under the mix."""
    import gc
    import time

    from edge.daemon import Daemon, DaemonConfig, _Input

    class Capture:
        def __init__(self):
            self.sent = []

        def send_multipart(self, parts):
            self.sent.append(parts)

    d = Daemon(DaemonConfig(bundle=str(synthetic_bundle), input="", output="tcp://127.0.0.1:*"))
    mix = malformed_mix(40, seed=5, valid_fraction=0.0, only=["truncated_msgpack", "vector:dtype_map", "shape_as_map"])
    out = Capture()
    gc.collect()
    gc.disable()
    try:
        d._answer([_Input(m.frames[0], "push") for m in mix], out, time.time_ns())
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert len(out.sent) == len(mix) and all(topic == b"error" for topic, _ in out.sent)
    assert unreachable == 0
