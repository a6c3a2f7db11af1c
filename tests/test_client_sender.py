"""SpectrumSender.close() delivers what is still queued (issue #17): the linger is kept, and configurable."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
import zmq

from edge.client import SpectrumSender
from edge.errors import EdgeError
from edge.wire import decode_spectrum


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _close_and_term(tx: SpectrumSender, ctx: zmq.Context) -> tuple[threading.Thread, list[float]]:
    done: list[float] = []

    def run() -> None:
        tx.close()
        ctx.term()  # returns once the queue is delivered, or the linger has passed
        done.append(time.monotonic())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, done


def test_spectra_queued_at_close_are_delivered():
    """N spectra queued while nobody listens yet, then close() and context termination: the receiver, bound
    only afterwards, still gets all N, in order (a zero linger would drop every one)."""
    n, endpoint = 300, f"tcp://127.0.0.1:{_free_port()}"
    ctx = zmq.Context()
    tx = SpectrumSender(endpoint, ctx)
    y = np.linspace(1.0, 2.0, 500)
    for i in range(n):
        tx.send(y, id=f"q{i}")
    closer, done = _close_and_term(tx, ctx)
    time.sleep(0.5)
    assert not done  # still lingering: the queue is not dropped
    rx_ctx = zmq.Context()
    rx = rx_ctx.socket(zmq.PULL)
    rx.bind(endpoint)
    got = []
    try:
        while len(got) < n and rx.poll(5000):
            got.append(decode_spectrum(rx.recv()).id)
    finally:
        rx.close(linger=0)
        rx_ctx.term()
    closer.join(5)
    assert got == [f"q{i}" for i in range(n)] and done


def test_linger_is_configurable_and_validated():
    ctx = zmq.Context()
    tx = SpectrumSender(f"tcp://127.0.0.1:{_free_port()}", ctx, linger_ms=100)
    tx.send(np.ones(10), id="never")
    t0 = time.monotonic()
    closer, done = _close_and_term(tx, ctx)
    closer.join(5)
    assert done and done[0] - t0 < 2.0  # nobody listens: given up after ~0.1 s, not the default 5 s
    for bad in (-2, 1.5, "5000", True):
        with pytest.raises(EdgeError, match="linger_ms"):
            SpectrumSender("tcp://127.0.0.1:1", zmq.Context.instance(), linger_ms=bad)
