"""The acknowledged input (edge.ack_input) and its sender (edge.client.AckedSender): store before ack, resends
recognised and not classified again, malformed messages acknowledged `rejected`, restarts on the same store."""

from __future__ import annotations

import os
import time

import msgpack
import numpy as np
import pytest
import zmq
from daemon_harness import RunningDaemon

from edge.client import AckedSender, SenderFullError
from edge.daemon import Daemon, DaemonConfig
from edge.data import load_spectra
from edge.errors import ConfigError, EdgeError
from edge.store import open_for_reading
from edge.wire import decode_payload, encode_event, encode_spectrum
from edge.wire_spec import validator


@pytest.fixture(scope="module")
def spectra():
    return load_spectra("synthetic:test")


def _dealer(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def _ack(sock: zmq.Socket, timeout_s: float = 10.0) -> dict:
    assert sock.poll(int(timeout_s * 1000)), "no ack"
    ack = decode_payload(sock.recv())
    assert not list(validator(message="ack").iter_errors(ack)), ack
    return ack


def _predicted(path: str) -> dict[str, int]:
    """Predictions per spectrum id in the store (the ground truth of what was answered)."""
    db = open_for_reading(path)
    counts: dict[str, int] = {}
    for (payload,) in db.execute("SELECT payload FROM results WHERE topic = 'prediction'"):
        sid = msgpack.unpackb(payload)["id"]
        counts[sid] = counts.get(sid, 0) + 1
    db.close()
    return counts


def test_ack_input_needs_a_store(synthetic_bundle):
    with pytest.raises(ConfigError, match="needs a store"):
        DaemonConfig.from_dict({"ack_input": "tcp://127.0.0.1:5999"})
    with pytest.raises(ConfigError, match="needs a store"):  # built directly, without from_dict: refused at start
        Daemon(DaemonConfig(bundle=str(synthetic_bundle), ack_input="tcp://127.0.0.1:5999"))


def test_each_spectrum_is_acknowledged_after_it_is_stored_and_predicted_once(synthetic_bundle, spectra, tmp_path):
    path = str(tmp_path / "store.sqlite")
    with RunningDaemon(synthetic_bundle, store=path, ack_input="tcp://127.0.0.1:*") as d:
        endpoint = d.daemon.endpoints["ack_input"]
        raw = _dealer(d.ctx, endpoint)
        raw.send(encode_spectrum(spectra.intensities[0], spectra.raman_shift_cm1, id="first", instrument_id="rover"))
        ack = _ack(raw)
        db = open_for_reading(path)  # the ack is sent after the commit: the spectrum is in the file already
        stored = db.execute("SELECT count(*) FROM spectra WHERE dedup_key = ?", ("rover\x00first",)).fetchone()[0]
        db.close()
        tx_ctx = zmq.Context()
        with AckedSender(endpoint, tx_ctx) as tx:
            ids = [tx.send(spectra.intensities[i % 50], spectra.raman_shift_cm1, instrument_id="rover")
                   for i in range(120)]
            assert tx.flush(20) == 0
            assert tx.counts["stored"] == 120 and tx.counts["sent"] == 120
        tx_ctx.term()
        preds, errs = d.collect(121)
        raw.close()
    assert ack["status"] == "stored" and ack["id"] == "first" and ack["instrument_id"] == "rover" and stored == 1
    assert len(set(ids)) == 120 and set(preds) == {*ids, "first"} and not errs
    assert _predicted(path) == dict.fromkeys([*ids, "first"], 1)


def test_a_resent_spectrum_is_acknowledged_again_and_not_predicted_again(synthetic_bundle, spectra, tmp_path):
    frame = encode_spectrum(spectra.intensities[1], spectra.raman_shift_cm1, id="once", instrument_id="rover")
    with RunningDaemon(synthetic_bundle, store=str(tmp_path / "s.sqlite"), ack_input="tcp://127.0.0.1:*") as d:
        raw = _dealer(d.ctx, d.daemon.endpoints["ack_input"])
        raw.send(frame)
        first = _ack(raw)
        raw.send(frame)  # the same spectrum again, as a sender whose ack was lost resends it
        second = _ack(raw)
        preds, other = d.messages(1, trailing_s=0.5)
        status = d.daemon.status()
        raw.close()
    assert (first["status"], second["status"]) == ("stored", "duplicate") and second["id"] == "once"
    assert list(preds) == ["once"] and not other["error"]  # a resend is protocol, not an error: counted only
    assert status["counters"]["duplicates"] == 1
    assert status["ack_input"]["acks"] == {"stored": 1, "duplicate": 1, "rejected": 0, "not_stored": 0}


def test_malformed_messages_are_acknowledged_rejected_and_answered_on_the_error_topic(synthetic_bundle, spectra,
                                                                                      tmp_path):
    no_id = msgpack.unpackb(encode_spectrum(spectra.intensities[0], spectra.raman_shift_cm1), raw=False)
    del no_id["id"]
    with RunningDaemon(synthetic_bundle, store=str(tmp_path / "s.sqlite"), ack_input="tcp://127.0.0.1:*") as d:
        raw = _dealer(d.ctx, d.daemon.endpoints["ack_input"])
        raw.send(msgpack.packb({"type": "spectrum", "v": 1, "id": "bad", "instrument_id": "rover"}))  # no intensity
        bad = _ack(raw)
        raw.send(msgpack.packb(no_id, use_bin_type=True))
        anonymous = _ack(raw)
        raw.send(encode_event("lost", instrument_seq=7, reason="forged", instrument_id="rover"))
        event = _ack(raw)  # an event is not a spectrum: only the serial input's internal socket takes events
        req = d.ctx.socket(zmq.REQ)  # a REQ sender works too: its delimiter frame comes back
        req.setsockopt(zmq.LINGER, 0)
        req.connect(d.daemon.endpoints["ack_input"])
        req.send(b"\xc1 not msgpack")
        garbage = _ack(req)
        _, other = d.messages(0, n_err=4)
        raw.close()
        req.close()
    assert (bad["status"], bad["reason"], bad["id"]) == ("rejected", "wire", "bad") and "intensity" in bad["detail"]
    assert anonymous["status"] == "rejected" and "needs each spectrum's 'id'" in anonymous["detail"]
    assert garbage["status"] == "rejected" and garbage["id"] is None
    assert event["status"] == "rejected" and event["reason"] == "wire"
    assert sorted(e["reason"] for e in other["error"]) == ["wire"] * 4
    assert "bad" in [e["id"] for e in other["error"]]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_store_that_cannot_write_acknowledges_not_stored_and_classifies_nothing(synthetic_bundle, spectra):
    with RunningDaemon(synthetic_bundle, store="/dev/full", ack_input="tcp://127.0.0.1:*") as d:
        raw = _dealer(d.ctx, d.daemon.endpoints["ack_input"])
        raw.send(encode_spectrum(spectra.intensities[2], spectra.raman_shift_cm1, id="kept", instrument_id="rover"))
        ack = _ack(raw)
        preds, other = d.messages(1, timeout_s=1.0)
        raw.close()
    assert ack["status"] == "not_stored" and ack["retry_after_ms"] == 10000 and "resend" in ack["detail"]
    assert not preds and not other["error"]  # the resend will be answered, once


def test_the_sender_resends_to_a_restarted_daemon_and_each_spectrum_is_predicted_once(synthetic_bundle, spectra,
                                                                                      tmp_path):
    path = str(tmp_path / "store.sqlite")
    tx_ctx = zmq.Context()
    with RunningDaemon(synthetic_bundle, store=path, ack_input="tcp://127.0.0.1:*") as d:
        endpoint = d.daemon.endpoints["ack_input"]
        tx = AckedSender(endpoint, tx_ctx, resend_timeout_ms=300, max_in_flight=400)
        ids = [tx.send(spectra.intensities[i % 50], spectra.raman_shift_cm1, instrument_id="rover")
               for i in range(150)]
        while tx.counts["stored"] < 30:
            tx.poll(0.01)
        # stopped with spectra in flight: some stored and acknowledged, some perhaps stored with the ack lost
    ids += [tx.send(spectra.intensities[i % 50], spectra.raman_shift_cm1, instrument_id="rover")
            for i in range(50)]  # while no daemon runs: kept
    waiting = tx.in_flight
    with RunningDaemon(synthetic_bundle, store=path, ack_input=endpoint):
        left = tx.flush(30)
    assert waiting >= 50 and left == 0 and tx.close(0) == 0
    tx_ctx.term()
    assert _predicted(path) == dict.fromkeys(ids, 1)
    assert tx.counts["stored"] + tx.counts["duplicate"] == 200 and tx.counts["reconnects"] >= 1 and not tx.rejected


def test_a_full_window_blocks_then_raises_and_close_reports_what_is_unacknowledged(spectra):
    ctx = zmq.Context()
    tx = AckedSender("tcp://127.0.0.1:9", ctx, max_in_flight=2, block_timeout_s=0.2)  # nobody listens there
    tx.send(spectra.intensities[0], spectra.raman_shift_cm1, id="a")
    tx.send(spectra.intensities[0], spectra.raman_shift_cm1, id="b")
    t = time.monotonic()
    with pytest.raises(SenderFullError, match="2 spectra unacknowledged"):
        tx.send(spectra.intensities[0], spectra.raman_shift_cm1, id="c")
    assert time.monotonic() - t >= 0.2
    with pytest.raises(EdgeError, match="already in flight"):
        tx.send(spectra.intensities[0], spectra.raman_shift_cm1, id="a")
    assert tx.close(timeout_s=0.1) == 2
    assert [(k, i) for k, i, _ in tx.unacknowledged()] == [("", "a"), ("", "b")]
    with pytest.raises(EdgeError, match="closed"):
        tx.send(np.ones(4, np.float32), id="d")
    ctx.term()
    with pytest.raises(EdgeError, match="max_in_flight"):
        AckedSender("tcp://127.0.0.1:9", max_in_flight=0)


def test_the_sender_resends_after_its_timeout_and_after_retry_after_ms_when_not_stored(spectra):
    """Against a stand-in daemon (a ROUTER): no ack -> resent after resend_timeout_ms; `not_stored` -> resent only
    after the daemon's retry_after_ms; `stored` -> forgotten."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    tx = AckedSender(f"tcp://127.0.0.1:{port}", ctx, resend_timeout_ms=100)

    def receive() -> tuple[list[bytes], float]:
        deadline = time.monotonic() + 5
        while not router.poll(10):
            tx.poll(0.01)
            assert time.monotonic() < deadline, "nothing (re)sent"
        return router.recv_multipart(), time.monotonic()

    def reply(peer: bytes, status: str, **extra) -> None:
        router.send_multipart([peer, msgpack.packb({"type": "ack", "v": 1, "id": "a", "instrument_id": "rover",
                                                    "status": status, **extra})])

    tx.send(spectra.intensities[0], spectra.raman_shift_cm1, id="a", instrument_id="rover")
    (peer, first), t_first = receive()
    (_, again), t_again = receive()  # no ack: resent after the timeout
    reply(peer, "not_stored", retry_after_ms=400, detail="disk full")
    tx.poll(0.05)
    _, t_third = receive()
    reply(peer, "stored")
    assert tx.flush(2) == 0
    tx.close(0)
    router.close()
    ctx.term()
    assert again == first and t_again - t_first >= 0.09
    assert t_third - t_again >= 0.39  # the daemon's retry_after_ms, not the 100 ms timeout
    assert tx.counts["not_stored"] == 1 and tx.counts["stored"] == 1 and tx.counts["resent"] >= 2


def test_curve_on_the_input_protects_the_acknowledged_input_too(synthetic_bundle, spectra, tmp_path):
    from edge.keys_cli import new_key_pair

    daemon_pub, daemon_sec = new_key_pair(tmp_path, "daemon")
    client_pub, client_sec = new_key_pair(tmp_path, "client")
    _, intruder_sec = new_key_pair(tmp_path, "intruder")
    (tmp_path / "authorized").mkdir()
    (tmp_path / "authorized" / "client.key").write_bytes(client_pub.read_bytes())
    client = {"curve_secret_key": client_sec, "curve_server_key": daemon_pub}
    with RunningDaemon(synthetic_bundle, curve=["input", "output"], client_keys=client, store=str(tmp_path / "s.db"),
                       ack_input="tcp://127.0.0.1:*", curve_secret_key=str(daemon_sec),
                       curve_authorized_dir=str(tmp_path / "authorized")) as d:
        endpoint = d.daemon.endpoints["ack_input"]
        with AckedSender(endpoint, d.ctx, **client) as ok, \
                AckedSender(endpoint, d.ctx, curve_secret_key=intruder_sec, curve_server_key=daemon_pub) as bad:
            ok.send(spectra.intensities[0], spectra.raman_shift_cm1, id="ok")
            bad.send(spectra.intensities[1], spectra.raman_shift_cm1, id="intruder")
            assert ok.flush(10) == 0
            assert bad.flush(1.0) == 1  # never acknowledged: its handshake fails, the daemon never sees it
            bad.close(0)
        preds, _ = d.messages(1, trailing_s=0.5)
    assert list(preds) == ["ok"] and d.daemon.counters["received"] == 1
