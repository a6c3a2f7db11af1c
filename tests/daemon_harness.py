"""A daemon running in a thread on random 127.0.0.1 ports, with a sender and a subscriber: the one harness
the daemon tests share (bounded waits, linger 0, everything closed on exit)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import zmq

from edge.client import PredictionSubscriber, SpectrumSender
from edge.daemon import INTERNAL_INPUT, Daemon, DaemonConfig


class RunningDaemon:
    """``with RunningDaemon(bundle, **daemon_settings) as d: d.tx.send(...); preds, errs = d.collect(n)``.

    ``client_keys``: ``{"curve_secret_key": ..., "curve_server_key": ...}`` for ``tx`` and ``rx`` (CurveZMQ)."""

    def __init__(self, bundle, topics=("prediction", "error", "status"), instrument=None, client_keys=None, **kw):
        self.ctx = zmq.Context()
        self.topics = topics
        self.client_keys = dict(client_keys or {})
        self.daemon = Daemon(DaemonConfig(bundle=str(bundle), input="tcp://127.0.0.1:*",
                                          output="tcp://127.0.0.1:*", **kw), context=self.ctx, instrument=instrument)
        self.thread = threading.Thread(target=self.daemon.run, daemon=True)
        self._internal: zmq.Socket | None = None

    def __enter__(self) -> RunningDaemon:
        self.thread.start()
        assert self.daemon.ready.wait(20)
        self.tx = SpectrumSender(self.daemon.endpoints["input"], self.ctx, **self.client_keys)
        self.rx = PredictionSubscriber(self.daemon.endpoints["output"], topics=self.topics, context=self.ctx,
                                       **self.client_keys)
        self.rx.wait_ready(timeout_s=10)
        return self

    def messages(self, n_pred: int, n_err: int = 0, timeout_s: float = 20.0, trailing_s: float = 0.0):
        """Predictions by id and other messages by topic, until ``n_pred`` predictions and ``n_err`` errors
        arrived (or ``timeout_s``); then whatever follows within ``trailing_s`` (e.g. drift after its batch)."""
        preds, other = {}, defaultdict(list)

        def take(got) -> None:
            if got and got[0] == "prediction":
                preds[got[1]["id"]] = got[1]
            elif got:
                other[got[0]].append(got[1])

        deadline = time.monotonic() + timeout_s
        while (len(preds) < n_pred or len(other["error"]) < n_err) and time.monotonic() < deadline:
            take(self.rx.recv(timeout_s=0.2))
        while trailing_s and (got := self.rx.recv(timeout_s=trailing_s)) is not None:
            take(got)
        return preds, other

    def send_internal(self, frame: bytes) -> None:
        """Send one frame on the daemon's internal input, as the serial input does (the only way to send events)."""
        if self._internal is None:
            self._internal = self.ctx.socket(zmq.PUSH)
            self._internal.connect(INTERNAL_INPUT)
        self._internal.send(frame)

    def collect(self, n_pred: int, n_err: int = 0, timeout_s: float = 20.0):
        """Predictions by id and the list of error payloads."""
        preds, other = self.messages(n_pred, n_err, timeout_s)
        return preds, other["error"]

    def __exit__(self, *exc) -> None:
        self.daemon.stop()
        self.thread.join(30)
        self.tx.sock.close(linger=0)
        if self._internal is not None:
            self._internal.close(linger=0)
        self.rx.close()
        # destroy, not term: a socket a test left open (or a daemon that did not stop) fails the test below instead of
        # blocking the suite for ever in zmq_ctx_term (seen once in CI, under load, in test_security.py)
        self.ctx.destroy(linger=0)
        if self.thread.is_alive():
            raise AssertionError("the daemon did not stop within 30 s of stop()")
