"""Stopping the daemon (issue #17): it stops taking input, answers what it received and exits within
``drain_timeout_s``, even under a sender that keeps sending and a backlog it cannot finish in time."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import zmq
from daemon_harness import RunningDaemon

from edge.data import load_spectra
from edge.wire import encode_spectrum


def test_stop_drains_within_the_deadline_under_a_steady_sender(synthetic_bundle, caplog):
    good = load_spectra("synthetic:test")
    timeout_s = 1.5
    keep_sending, sent, attempts = threading.Event(), [0], [0]
    with RunningDaemon(synthetic_bundle, max_batch=1, drain_timeout_s=timeout_s) as d:
        real_process = d.daemon.preprocessor.process

        # ~20 spectra/s: a backlog builds up behind the sender; the daemon's own queue holds at most 30 (its receive
        # queue is bounded in bytes, edge.socket_limits), 1.5 s of work: more than the drain deadline leaves; batches
        # of one keep the overshoot past the deadline at 0.05 s
        def slow(x, axis=None, offset_cm1=0.0):
            time.sleep(0.05 * len(np.atleast_2d(x)))
            return real_process(x, axis, offset_cm1)

        d.daemon.preprocessor.process = slow

        def sender() -> None:
            sock = d.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDTIMEO, 100)
            sock.connect(d.daemon.endpoints["input"])
            frames = [encode_spectrum(good.intensities[i], good.raman_shift_cm1, id=f"s{i}") for i in range(20)]
            while keep_sending.is_set():
                attempts[0] += 1
                try:
                    sock.send(frames[sent[0] % len(frames)])
                    sent[0] += 1
                except zmq.Again:
                    pass
                time.sleep(0.0005)  # ~2000/s: far more than the daemon answers
            sock.close()

        keep_sending.set()
        t = threading.Thread(target=sender, daemon=True)
        t.start()
        preds, errors = 0, 0
        while preds < 20:  # running: predictions flow
            got = d.rx.recv(timeout_s=5)
            assert got is not None
            preds += got[0] == "prediction"
        with caplog.at_level(logging.WARNING, logger="edge.daemon"):
            t0 = time.monotonic()
            d.daemon.stop()
            d.thread.join(timeout_s + 5)
            elapsed = time.monotonic() - t0
        sent_at_exit, attempts_at_exit = sent[0], attempts[0]
        final = None
        while (got := d.rx.recv(timeout_s=1.0)) is not None:  # what the daemon published before exiting
            if got[0] == "prediction":
                preds += 1
            elif got[0] == "error":
                errors += 1
            elif got[0] == "status" and got[1]["final"]:
                final = got[1]
        time.sleep(0.2)
        still_sending = attempts[0] > attempts_at_exit
        keep_sending.clear()
        t.join(5)
    assert not d.thread.is_alive() and elapsed < timeout_s + 0.5, elapsed
    assert still_sending  # the sender never gave up: the daemon stopped taking input on its own
    assert final is not None
    c = final["counters"]
    assert c["received"] > 20 and c["published"] + c["rejected"] == c["received"]  # all it took, answered
    assert (preds, errors) == (c["published"], c["rejected"])  # ... and delivered before exit
    assert c["received"] < sent_at_exit  # a backlog was left: the deadline, not an empty queue, ended the drain
    assert any("drain deadline" in r.getMessage() for r in caplog.records)
