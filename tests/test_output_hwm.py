"""A slow subscriber at the output high-water mark: its losses are counted in the status, the others get all."""

from __future__ import annotations

import threading
import time

import pytest
import zmq
from daemon_harness import RunningDaemon

from edge.daemon import DaemonConfig
from edge.data import load_spectra
from edge.errors import ConfigError


def test_slow_subscriber_drops_are_counted_and_fast_one_gets_everything(synthetic_bundle, tmp_path):
    s = load_spectra("synthetic:stream")
    n = 4000
    running = RunningDaemon(synthetic_bundle, output_hwm=200, status_interval_s=0.2)
    # ipc (a local socket file): its kernel buffers are small, unlike loopback TCP's (MBs, autotuned), so the
    # slow subscriber's queues overflow within a few thousand predictions
    running.daemon.config.output = f"ipc://{tmp_path}/out"
    with running as d:
        slow = d.ctx.socket(zmq.SUB)
        slow.setsockopt(zmq.LINGER, 0)
        slow.setsockopt(zmq.RCVHWM, 10)
        slow.setsockopt(zmq.SUBSCRIBE, b"prediction")
        slow.connect(d.daemon.endpoints["output"])
        deadline = time.monotonic() + 10
        while d.daemon.counters["subscriptions"] < 4 and time.monotonic() < deadline:  # fast: 3 topics, slow: 1
            time.sleep(0.01)
        assert d.daemon.counters["subscriptions"] >= 4

        def send() -> None:
            for i in range(n):
                d.tx.send(s.intensities[i % len(s)], s.raman_shift_cm1, id=f"{i}")

        sender = threading.Thread(target=send)
        sender.start()
        preds, _ = d.messages(n, timeout_s=60)  # the fast subscriber reads while the daemon publishes
        sender.join(10)
        status = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the next periodic status, after the last prediction
            got = d.rx.recv(timeout_s=0.5)
            if got and got[0] == "status" and got[1]["counters"]["published"] == n:
                status = got[1]
                break
        slow_got = 0
        while slow.poll(300):  # now read what the slow subscriber's queues held
            slow.recv_multipart()
            slow_got += 1
        slow.close()
    assert len(preds) == n  # the fast subscriber lost nothing
    assert sorted(p["seq"] for p in preds.values()) == list(range(preds["0"]["seq"], preds["0"]["seq"] + n))
    assert status is not None
    missed = n - slow_got
    dropped = status["counters"]["dropped_hwm"]
    assert missed > 0
    print(f"slow subscriber missed {missed} of {n}; dropped_hwm = {dropped}")
    assert 1 <= dropped <= missed  # the documented bound (docs/wire.md §7)
    assert status["output"] == {"hwm": 200, "dropped_hwm_by_topic": {"prediction": dropped}}


def test_output_hwm_must_be_positive():
    with pytest.raises(ConfigError, match="output_hwm"):
        DaemonConfig.from_dict({"output_hwm": 0})
