"""The daemon end to end over real ZeroMQ sockets on 127.0.0.1 (random ports, bounded waits)."""

import signal
import subprocess
import sys
import time

import msgpack
import numpy as np
import pytest
import zmq
from daemon_harness import RunningDaemon

from edge.backends import OnnxRuntimeBackend
from edge.bundle import Bundle
from edge.client import PredictionSubscriber, SpectrumSender
from edge.daemon import Daemon, DaemonConfig
from edge.data import load_spectra
from edge.errors import BundleError, ConfigError
from edge.preprocess import Preprocessor, RamanGrid
from edge.store import open_for_reading
from edge.wire import encode_spectrum


def offline_top1(bundle_path, spectra):
    b = Bundle.load(bundle_path)
    path, _ = b.onnx_model("auto")
    with OnnxRuntimeBackend(path) as be:
        p = be.infer(Preprocessor(b.preprocessing)(spectra.intensities, spectra.raman_shift_cm1))["probabilities"]
    return np.asarray(b.labels)[p.argmax(1)], p


def test_real_test_stream_matches_offline_inference(rruff_bundle, soysal):
    test = load_spectra(soysal / "raw_test.npz")
    expected, proba = offline_top1(rruff_bundle, test)
    with RunningDaemon(rruff_bundle) as d:
        for i in range(len(test)):
            d.tx.send(test.intensities[i], test.raman_shift_cm1, id=f"s{i}", label=str(test.labels[i]), instrument_seq=i)
        preds, _ = d.collect(len(test))
    assert len(preds) == 150
    for i in range(150):
        p = preds[f"s{i}"]
        assert p["labels"][0] == expected[i]
        assert p["probabilities"][0] == pytest.approx(float(proba[i].max()), abs=1e-6)
        assert p["instrument_seq"] == i and p["precision"] == "int8" and len(p["labels"]) == 3
        assert p["published_ns"] >= p["received_ns"]
    assert sorted(p["seq"] for p in preds.values()) == list(range(1, 151))


def test_instrument_axis_is_resampled_like_training(rruff_bundle, soysal):
    """A spectrum sent on its own (coarser, offset) axis is classified like its on-grid version."""
    test = load_spectra(soysal / "raw_test.npz")
    grid_axis = test.raman_shift_cm1
    inst_axis = np.arange(180.0, 1620.0, 0.5)
    x = np.interp(inst_axis, grid_axis, test.intensities[3]).astype(np.float32)
    expected, _ = offline_top1(rruff_bundle, test.subset([3]))
    with RunningDaemon(rruff_bundle) as d:
        d.tx.send(x * 1234.5, inst_axis, id="a")  # counts-like scale: max normalisation undoes it
        preds, _ = d.collect(1)
    assert preds["a"]["labels"][0] == expected[0]


BAD_FRAMES = {
    "garbage": b"\x00\xffnot msgpack",
    "list": msgpack.packb([1, 2, 3]),
    "wrong type": msgpack.packb({"type": "hello", "v": 1}),
    "wrong version": msgpack.packb({"type": "spectrum", "v": 7}),
    "short data": msgpack.packb({"type": "spectrum", "v": 1,
                                 "intensity": {"dtype": "<f4", "shape": [1392], "data": b"\x00" * 10}}),
    "bad dtype": msgpack.packb({"type": "spectrum", "v": 1, "intensity": {"dtype": "object", "shape": [2], "data": b""}}),
}


def test_malformed_messages_are_counted_answered_and_survived(synthetic_bundle):
    good = load_spectra("synthetic:test")
    nan = good.intensities[0].copy()
    nan[5] = np.nan
    with RunningDaemon(synthetic_bundle) as d:
        d.tx.send(good.intensities[0], good.raman_shift_cm1, id="before")
        for frame in BAD_FRAMES.values():
            d.tx.send_raw(frame)
        d.tx.send(nan, good.raman_shift_cm1, id="nan")
        d.tx.send(good.intensities[1][:10], good.raman_shift_cm1[:10][::-1].copy(), id="unsorted")
        d.tx.send(good.intensities[1], good.raman_shift_cm1, id="after")
        preds, errs = d.collect(2, n_err=len(BAD_FRAMES) + 2)
        status = d.daemon.status()
    assert set(preds) == {"before", "after"}
    assert len(errs) == len(BAD_FRAMES) + 2
    assert {e["id"] for e in errs if e["id"]} == {"nan", "unsorted"}
    assert {e["reason"] for e in errs} == {"wire", "preprocess"}
    assert status["counters"]["rejected"] == len(BAD_FRAMES) + 2 and status["counters"]["published"] == 2


def test_micro_batches_form_under_backlog_and_keep_order(synthetic_bundle):
    s = load_spectra("synthetic:stream")
    with RunningDaemon(synthetic_bundle, max_batch=32) as d:
        for i in range(len(s)):
            d.tx.send(s.intensities[i], s.raman_shift_cm1, id=f"{i}")
        preds, _ = d.collect(len(s))
    assert len(preds) == len(s)
    assert max(p["batch_size"] for p in preds.values()) > 1
    order = sorted(preds.values(), key=lambda p: p["seq"])
    assert [int(p["id"]) for p in order] == list(range(len(s)))  # published in arrival order


def test_store_keeps_every_spectrum_and_result(synthetic_bundle, tmp_path):
    s = load_spectra("synthetic:test")
    with RunningDaemon(synthetic_bundle, store=str(tmp_path / "store.sqlite")) as d:
        for i in range(20):
            d.tx.send(s.intensities[i], s.raman_shift_cm1, id=f"{i}")
        d.tx.send_raw(b"junk")
        d.collect(20, n_err=1)
    db = open_for_reading(tmp_path / "store.sqlite")
    assert db.execute("SELECT count(*), sum(answered) FROM spectra").fetchone() == (21, 21)
    topics = dict(db.execute("SELECT topic, count(*) FROM results GROUP BY topic").fetchall())
    assert topics == {"prediction": 20, "error": 1}
    assert [r[0] for r in db.execute("SELECT seq FROM results WHERE seq IS NOT NULL ORDER BY row")] == list(range(1, 21))


def test_sigterm_drains_and_exits_0(synthetic_bundle):
    """The edge-daemon process receives a burst, gets SIGTERM, and still publishes every prediction."""
    s = load_spectra("synthetic:stream")
    import socket

    def port():
        with socket.socket() as so:
            so.bind(("127.0.0.1", 0))
            return so.getsockname()[1]

    ep_in, ep_out = f"tcp://127.0.0.1:{port()}", f"tcp://127.0.0.1:{port()}"
    proc = subprocess.Popen([sys.executable, "-m", "edge", "--bundle", str(synthetic_bundle), "--input", ep_in,
                             "--output", ep_out, "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ctx = zmq.Context()
    try:
        with PredictionSubscriber(ep_out, context=ctx) as rx, SpectrumSender(ep_in, ctx) as tx:
            rx.wait_ready(timeout_s=30)
            for i in range(len(s)):
                tx.send(s.intensities[i], s.raman_shift_cm1, id=f"{i}")
            got, final = set(), None
            deadline = time.monotonic() + 30
            while not got and time.monotonic() < deadline:  # the PUSH connection is up: the burst is arriving
                r = rx.recv(timeout_s=0.5)
                if r and r[0] == "prediction":
                    got.add(r[1]["id"])
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and final is None:
                r = rx.recv(timeout_s=0.5)
                if r and r[0] == "prediction":
                    got.add(r[1]["id"])
                elif r and r[0] == "status" and r[1]["final"]:
                    final = r[1]
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        ctx.term()
    assert proc.returncode == 0, err
    assert final is not None and final["counters"]["received"] == final["counters"]["published"]
    assert len(got) == final["counters"]["published"] and len(got) > 0
    assert '"stopped"' in out


def test_refuses_bundle_for_another_axis(synthetic_bundle):
    with pytest.raises(BundleError, match="does not match the expected axis"):
        Daemon(DaemonConfig(bundle=str(synthetic_bundle)), expect_grid=RamanGrid(100.0, 1.0, 1392))


def test_bad_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown daemon setting"):
        DaemonConfig.from_dict({"bundel": "x"})


def test_wire_round_trip_and_validation():
    from edge.errors import WireError
    from edge.wire import decode_spectrum

    f = encode_spectrum(np.arange(5, dtype=np.float32), np.arange(5.0) + 200, id="x", instrument_seq=4)
    s = decode_spectrum(f)
    assert s.id == "x" and s.instrument_seq == 4 and s.intensity.dtype == np.float32
    for frame in BAD_FRAMES.values():
        with pytest.raises(WireError):
            decode_spectrum(frame)
