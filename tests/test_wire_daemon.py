"""The wire specification against a running daemon: every conformance vector answered as specified, every output
message valid under the JSON Schema, and the inputs that used to kill or hang it (issue #17) survived."""

from __future__ import annotations

import json
import math
import os
import time

import msgpack
import numpy as np
import pytest
import zmq
from daemon_harness import RunningDaemon

from edge.client import ControlClient
from edge.data import load_spectra
from edge.shift import shift_spectra
from edge.wire_spec import validator
from edge.wire_vectors import VECTORS_PATH

VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))["vectors"]
ALL_TOPICS = ("prediction", "error", "status", "drift", "link")


def _check_schema(topic: str, payload: dict) -> None:
    errors = [e.message for e in validator(message=topic).iter_errors(payload)]
    assert not errors, (topic, errors, payload)


def _next_answer(d: RunningDaemon, timeout_s: float = 10.0) -> tuple[str, dict]:
    """The next prediction, error or link message (status messages are schema-checked and skipped)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = d.rx.recv(timeout_s=0.2)
        if got is None:
            continue
        _check_schema(*got)
        if got[0] != "status":
            return got
    raise AssertionError("no answer from the daemon")


def _send(d: RunningDaemon, frames: list[bytes]) -> None:
    d.tx.sock.send_multipart(frames)


def test_every_vector_is_answered_by_a_running_daemon_as_specified(synthetic_bundle):
    """One vector at a time: a rejected vector gets one ``error`` with its reason and the identity it carried;
    a decodable spectrum is predicted or (too short for the model's axis) refused by preprocessing, naming its
    id; a link event (on the internal input) is republished, a lost event reported. Then a real spectrum is still
    classified."""
    good = load_spectra("synthetic:test")
    with RunningDaemon(synthetic_bundle, topics=ALL_TOPICS) as d:
        for case in VECTORS:
            frames = [bytes.fromhex(h) for h in case["frames_hex"]]
            if case["message"] == "event":  # events come only from the serial input, on the internal input
                d.send_internal(frames[0])
            else:
                _send(d, frames)
            topic, msg = _next_answer(d)
            if "rejected" in case:
                want = case["rejected"]
                assert topic == "error" and msg["reason"] == want["reason"], (case["name"], msg)
                assert want["detail_contains"] in msg["detail"], (case["name"], msg)
                assert {k: msg[k] for k in ("id", "instrument_id", "instrument_seq")} == \
                    {k: want[k] for k in ("id", "instrument_id", "instrument_seq")}, case["name"]
            elif case["message"] == "event":
                ev = case["decoded"]
                if ev["type"] == "link":
                    assert topic == "link" and {k: msg[k] for k in ev} == ev
                else:
                    assert topic == "error" and msg["reason"] == "lost"
                    assert msg["instrument_seq"] == ev["instrument_seq"] and msg["id"] == ev["id"]
            else:
                want = case["decoded"]
                assert topic in ("prediction", "error"), case["name"]
                if topic == "error":  # too short for the model's axis: outside it, or covering too little of it
                    assert msg["reason"] in ("preprocess", "coverage"), (case["name"], msg)
                if want["id"] is not None:
                    assert msg["id"] == want["id"]
                assert (msg["instrument_id"], msg["instrument_seq"]) == (want["instrument_id"], want["instrument_seq"])
        d.tx.send(good.intensities[0], good.raman_shift_cm1, id="after")
        topic, msg = _next_answer(d)
        status = d.daemon.status()
    assert topic == "prediction" and msg["id"] == "after"
    n_rejected = sum("rejected" in c for c in VECTORS)
    assert status["rejections"]["wire"] == n_rejected  # a multipart message is one rejection
    assert status["counters"]["lost"] == sum(c.get("decoded", {}).get("type") == "lost" for c in VECTORS)


def test_events_on_the_public_input_are_refused(synthetic_bundle):
    """An input peer cannot forge link states or lost spectra: every event vector sent on the public input (valid
    or not) is one ``wire`` error naming the internal input, echoing the identity it carried; nothing reaches the
    link topic and ``lost`` stays 0. The same valid events on the internal input are published."""
    events = [c for c in VECTORS if c["message"] == "event"]
    assert any("decoded" in c and c["decoded"]["type"] == "lost" for c in events)
    with RunningDaemon(synthetic_bundle, topics=ALL_TOPICS) as d:
        for case in events:
            d.tx.send_raw(bytes.fromhex(case["frames_hex"][0]))
            topic, msg = _next_answer(d)
            assert topic == "error" and msg["reason"] == "wire", (case["name"], topic, msg)
            assert "accepted only on the daemon's internal input" in msg["detail"], msg
            if case.get("decoded", {}).get("type") == "lost":
                assert msg["instrument_seq"] == case["decoded"]["instrument_seq"]
        status = d.daemon.status()
        link = next(c for c in events if c.get("decoded", {}).get("type") == "link")
        d.send_internal(bytes.fromhex(link["frames_hex"][0]))
        topic, msg = _next_answer(d)
    assert status["rejections"] == {"wire": len(events)} and status["counters"]["lost"] == 0
    assert topic == "link" and msg["state"] == link["decoded"]["state"]


def test_output_messages_follow_the_schema_with_novelty_drift_and_store(novelty_bundle, soysal, tmp_path):
    """Predictions with novelty fields, an offset drift alarm, status with novelty, drift and store entries:
    each valid under the JSON Schema (additional fields refused); the store keeps the drift alarm (whose ``kind``
    field once crashed the old journal) as published."""
    from edge.store import open_for_reading

    test = load_spectra(soysal / "raw_test.npz")
    rng = np.random.default_rng(7)
    raw = test.intensities[rng.integers(0, len(test), 200)].copy()
    raw[120:] = shift_spectra(raw[120:], 12.0)
    seen: dict[str, int] = {}
    with RunningDaemon(novelty_bundle["path"], topics=ALL_TOPICS, store=str(tmp_path / "store.sqlite"),
                       drift={"warmup": 50, "offset_window": 15}) as d:
        for i in range(len(raw)):
            d.tx.send(raw[i], test.raman_shift_cm1, id=f"s{i}", sent_ns=time.time_ns())
        deadline = time.monotonic() + 60
        while (seen.get("prediction", 0) < len(raw) or not seen.get("drift")) and time.monotonic() < deadline:
            got = d.rx.recv(timeout_s=0.2)
            if got is not None:
                _check_schema(*got)
                seen[got[0]] = seen.get(got[0], 0) + 1
        status = d.daemon.status()
    _check_schema("status", status)
    assert seen["prediction"] == len(raw) and seen.get("drift", 0) >= 1 and seen["status"] >= 1
    assert {"novelty", "drift", "store"} <= set(status) and status["store"]["alarm"] is False
    db = open_for_reading(tmp_path / "store.sqlite")
    topics = dict(db.execute("SELECT topic, count(*) FROM results GROUP BY topic").fetchall())
    assert topics["drift"] == seen["drift"] and topics["prediction"] == len(raw)
    stored = [msgpack.unpackb(p) for (p,) in db.execute("SELECT payload FROM results WHERE topic = 'drift'")]
    assert all(d["type"] == "drift" and "kind" in d for d in stored)


def _finite_drift(status: dict) -> bool:
    values = [v for v in status["drift"]["statistics"].values() if v is not None]
    off = status["drift"]["offset_cm1"]
    return all(math.isfinite(v) for v in values) and (off is None or math.isfinite(off))


def _arr(a: np.ndarray) -> dict:
    return {"dtype": a.dtype.str, "shape": [a.size], "data": a.tobytes()}


def test_inputs_that_used_to_kill_or_hang_the_daemon_are_answered(novelty_bundle, soysal, tmp_path):
    """Issue #17's crash cases against one running daemon (store and control on): list and map dtypes, link
    and lost events carrying ``kind``/``self``, load_head with a NUL byte or a FIFO path, float32 ±3e38 and
    float64 1e300 intensities, a NaN appearing after preprocessing, a foreign exception in preprocessing. Each is
    answered (error topic or control reply); real spectra before and after are classified and the drift
    statistics stay finite."""
    test = load_spectra(soysal / "raw_test.npz")
    axis = test.raman_shift_cm1
    fifo = tmp_path / "head.fifo"
    os.mkfifo(fifo)

    def spec(sid: str, intensity) -> bytes:
        return msgpack.packb({"type": "spectrum", "v": 1, "id": sid, "intensity": intensity,
                              "raman_shift_cm1": _arr(axis.astype(np.float64))}, use_bin_type=True)

    y32 = test.intensities[0].astype(np.float32)
    huge32, huge64 = y32.copy(), test.intensities[1].astype(np.float64)
    huge32[[10, 20]] = [3e38, -3e38]
    huge64[30] = 1e300
    crashers = {
        "dtype-list": spec("dtype-list", {**_arr(y32), "dtype": ["<f4"]}),
        "dtype-map": spec("dtype-map", {**_arr(y32), "dtype": {"<f4": True}}),
        "f32-extreme": spec("f32-extreme", _arr(huge32)),
        "f64-extreme": spec("f64-extreme", _arr(huge64)),
    }
    events = [msgpack.packb({"type": "link", "v": 1, "state": "up", "kind": "x", "self": 1}),
              msgpack.packb({"type": "lost", "v": 1, "instrument_seq": 5, "reason": "r", "kind": "k", "self": 2})]
    with RunningDaemon(novelty_bundle["path"], topics=ALL_TOPICS, store=str(tmp_path / "store.sqlite"),
                       control="tcp://127.0.0.1:*", drift={"warmup": 20}, heads_dir=str(tmp_path)) as d:
        # faults injected into the one preprocessing call: a NaN appearing after preprocessing, and a foreign
        # exception (a library bug) for one spectrum
        real_process = d.daemon.preprocessor.process

        def faulty(x, axis=None, offset_cm1=0.0):
            if (np.atleast_2d(x)[:, 0] == 4343.0).any():
                raise ZeroDivisionError("injected")
            out, spikes, despiked = real_process(x, axis, offset_cm1)
            out = np.array(out, copy=True)
            rows = np.atleast_2d(x)[:, 0] == 4242.0
            out.reshape(len(rows), -1)[rows, 7] = np.nan
            return out, spikes, despiked

        d.daemon.preprocessor.process = faulty
        for i in range(30):
            d.tx.send(test.intensities[i], axis, id=f"before{i}")
        for frame in crashers.values():
            d.tx.send_raw(frame)
        for frame in events:
            d.send_internal(frame)
        nan_src = test.intensities[2].copy()
        nan_src[0] = 4242.0
        d.tx.send(nan_src, axis, id="nan-after-preprocess")
        nan_src[0] = 4343.0
        d.tx.send(nan_src, axis, id="foreign-exception", instrument_seq=77)
        with ControlClient(d.daemon.endpoints["control"], timeout_s=10, context=d.ctx) as ctl:
            nul = ctl.request({"cmd": "load_head", "path": "/tmp/a\x00b.npz"})
            t0 = time.monotonic()
            fifo_reply = ctl.request({"cmd": "load_head", "path": str(fifo)})
            fifo_s = time.monotonic() - t0
        for i in range(30, 60):
            d.tx.send(test.intensities[i], axis, id=f"after{i}")
        preds, other = d.messages(60, n_err=len(crashers) + 3, timeout_s=60, trailing_s=0.3)
        status = d.daemon.status()
        alive = d.thread.is_alive()
    errors = {e["id"]: e for e in other["error"]}
    assert alive and len(preds) == 60 and set(preds) == {f"before{i}" for i in range(30)} | {f"after{i}" for i in
                                                                                           range(30, 60)}
    for sid in crashers:
        assert errors[sid]["reason"] == "wire", errors.get(sid)
    assert "exceed" in errors["f32-extreme"]["detail"] and "exceed" in errors["f64-extreme"]["detail"]
    assert errors["nan-after-preprocess"]["reason"] == "preprocess"
    assert errors["foreign-exception"]["reason"] == "internal" and errors["foreign-exception"]["instrument_seq"] == 77
    assert "ZeroDivisionError" in errors["foreign-exception"]["detail"]
    assert [m["state"] for m in other["link"]] == ["up"] and "kind" not in other["link"][0]
    assert any(e["reason"] == "lost" and e["instrument_seq"] == 5 for e in other["error"])
    assert nul["ok"] is False and nul["reason"] == "invalid_head"
    assert fifo_reply["ok"] is False and "not a regular file" in fifo_reply["error"] and fifo_s < 5
    assert _finite_drift(status) and status["drift"]["seen"] == 60
    assert status["store"]["alarm"] is False


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_store_on_a_full_disk_degrades_to_not_stored(synthetic_bundle):
    """``--store /dev/full``: every write fails (SQLITE_FULL); the daemon keeps classifying and raises the store
    alarm in its status, counting the records it could not store."""
    good = load_spectra("synthetic:test")
    with RunningDaemon(synthetic_bundle, store="/dev/full") as d:
        for i in range(10):
            d.tx.send(good.intensities[i], good.raman_shift_cm1, id=f"{i}")
        preds, _ = d.collect(10)
        d.tx.send(good.intensities[0], good.raman_shift_cm1, id="late")
        late, _ = d.collect(1)
        status = d.daemon.status()
        alive = d.thread.is_alive()
    assert alive and len(preds) == 10 and "late" in late
    st = status["store"]
    assert st["alarm"] is True and "full" in st["error"] and st["not_stored"] >= 22  # 11 spectra + 11 results


def test_oversized_message_is_dropped_by_zeromq_and_the_daemon_lives_on(synthetic_bundle):
    """``zmq.MAXMSGSIZE`` on the input: a 2 MB message never reaches the daemon (its connection is dropped);
    a new connection is served."""
    good = load_spectra("synthetic:test")
    with RunningDaemon(synthetic_bundle) as d:
        d.tx.send_raw(b"\x00" * (2 << 20))
        tx2 = d.ctx.socket(zmq.PUSH)
        tx2.setsockopt(zmq.LINGER, 0)
        tx2.connect(d.daemon.endpoints["input"])
        from edge.wire import encode_spectrum

        tx2.send(encode_spectrum(good.intensities[0], good.raman_shift_cm1, id="ok"))
        preds, errs = d.collect(1, timeout_s=10)
        tx2.close(linger=0)
        status = d.daemon.status()
    assert "ok" in preds and errs == [] and status["counters"]["received"] == 1
