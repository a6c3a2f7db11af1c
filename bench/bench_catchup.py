"""What catch-up costs (issue #17): how fast a subscriber fetches a backlog, and whether serving it slows
classification.

* ``backlog``: a daemon (its own process, store and catch-up on) classifies ``n`` flooded spectra; then a
  subscriber that starts from seq 0 (``PredictionSubscriber(catchup=..., after_seq=0)``) receives all of them:
  messages/s, and that each came exactly once, in order.
* ``latency``: the daemon's end-to-end p50/p99 at 500 spectra/s, alone and while another client pulls the
  whole stored backlog from the catch-up endpoint over and over (pages of 1 000). The catch-up thread has its
  own read connection (WAL: it never blocks the daemon's writes); the difference is the cost of sharing the
  CPU and the GIL.

Run ``edge-bench catchup [--bundle DIR] [--json PATH] [--quick]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from edge.catchup_client import CatchUpClient
from edge.client import PredictionSubscriber, SpectrumSender
from edge.data import load_spectra
from edge.demo import _free_port, start_daemon

from .bench_latency import machine


def _flood(ctx: zmq.Context[Any], ep_in: str, ep_out: str, x: np.ndarray, axis: np.ndarray, n: int,
           timeout_s: float = 120.0) -> int:
    """Send ``n`` spectra as fast as possible; wait until the daemon published them (a status says so)."""
    with PredictionSubscriber(ep_out, topics=("status",), context=ctx) as rx, SpectrumSender(ep_in, ctx) as tx:
        rx.wait_ready(timeout_s=30)
        for i in range(n):
            tx.send(x[i % len(x)], axis, id=f"f{i}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = rx.recv(timeout_s=0.5)
            if got and got[0] == "status" and got[1]["counters"]["published"] >= n:
                return int(got[1]["counters"]["published"])
    raise RuntimeError(f"the daemon did not publish {n} predictions within {timeout_s} s")


def _backlog(ctx: zmq.Context[Any], ep_out: str, ep_cu: str, n: int) -> dict[str, Any]:
    """A subscriber from seq 0 receives the ``n`` stored predictions: rate, exactly once, in order."""
    seqs: list[int] = []
    with PredictionSubscriber(ep_out, topics=("prediction",), context=ctx, catchup=ep_cu, after_seq=0) as rx:
        rx.wait_ready(timeout_s=30)
        t0 = time.perf_counter()
        deadline = time.monotonic() + 120
        while len(seqs) < n and time.monotonic() < deadline:
            got = rx.recv(timeout_s=0.5)
            if got and got[0] == "prediction":
                seqs.append(int(got[1]["seq"]))
        dt = time.perf_counter() - t0
        stats = rx.stats
    return {"stored": n, "received": len(seqs), "seconds": dt, "messages_per_s": len(seqs) / dt,
            "exactly_once_in_order": seqs == list(range(1, n + 1)), "subscriber_stats": stats}


def _steady(ctx: zmq.Context[Any], ep_in: str, ep_out: str, x: np.ndarray, axis: np.ndarray, n: int, rate_hz: float,
            prefix: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """End-to-end latency (sender's clock to receipt) of ``n`` spectra sent at ``rate_hz``; ids start with
    ``prefix`` (the store recognises a repeated id as a resend and would not classify it again).
    """
    lat: list[float] = []
    with PredictionSubscriber(ep_out, topics=("prediction",), context=ctx) as rx, SpectrumSender(ep_in, ctx) as tx:
        rx.wait_ready(timeout_s=30)
        t0 = time.perf_counter()

        def take(timeout: float) -> None:
            got = rx.recv(timeout_s=timeout)
            if got and got[0] == "prediction":
                lat.append((time.time_ns() - got[1]["sent_ns"]) / 1e6)

        for i in range(n):
            while time.perf_counter() < t0 + i / rate_hz:
                take(0)
            tx.send(x[i % len(x)], axis, id=f"{prefix}{i}")
        deadline = time.monotonic() + timeout_s
        while len(lat) < n and time.monotonic() < deadline:
            take(0.5)
        dt = time.perf_counter() - t0
    a = np.asarray(lat or [np.nan])
    return {"sent": n, "received": len(lat), "rate_hz": rate_hz, "spectra_per_s": len(lat) / dt,
            "latency_p50_ms": float(np.percentile(a, 50)), "latency_p99_ms": float(np.percentile(a, 99))}


def _pull(ep_cu: str, seconds: float) -> dict[str, float]:
    """Pull the whole backlog again and again, one page of 1 000 at a time, for ``seconds``."""
    ctx = zmq.Context()
    client = CatchUpClient(ep_cu, ctx, timeout_s=10)
    pages = messages = 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            after_seq, after_row = 0, None
            while time.monotonic() < end:
                reply = client.page(after_seq, limit=1000, after_row=after_row)
                pages += 1
                messages += len(reply["messages"])
                if not reply["more"]:
                    break
                after_seq, after_row = reply["last_seq"], reply["cursor"]
    finally:
        client.close()
        ctx.term()
    return {"pages": pages, "messages": messages, "seconds": seconds}


def run(bundle: str | Path, data: str = "rruff_soysal/raw_test.npz", quick: bool = False) -> dict[str, Any]:
    """Run both measurements on ``bundle`` with spectra from ``data``; returns the JSON-able result."""
    s = load_spectra(data)
    x, axis = s.intensities, s.raman_shift_cm1
    n_backlog, n_rate = (5000, 1500) if quick else (20000, 3000)
    eps = {k: f"tcp://127.0.0.1:{_free_port()}" for k in ("in", "out", "catchup")}
    ctx = zmq.Context()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_daemon(Path(bundle), eps["in"], eps["out"], str(Path(tmp) / "store.sqlite"),
                            extra_args=("--catchup", eps["catchup"]))
        try:
            published = _flood(ctx, eps["in"], eps["out"], x, axis, n_backlog)
            backlog = _backlog(ctx, eps["out"], eps["catchup"], published)
            alone = _steady(ctx, eps["in"], eps["out"], x, axis, n_rate, 500.0, "alone-")
            seconds = n_rate / 500.0 + 3
            puller = subprocess.Popen([sys.executable, "-m", "bench.bench_catchup", eps["catchup"], str(seconds)],
                                      stdout=subprocess.PIPE, text=True)  # its own process: it takes no CPU from ours
            time.sleep(1.0)
            loaded = _steady(ctx, eps["in"], eps["out"], x, axis, n_rate, 500.0, "loaded-")
            pulled = json.loads(puller.communicate(timeout=seconds + 60)[0] or "{}")
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
            ctx.term()
    return {"machine": machine(), "backlog": backlog,
            "latency_500_per_s": {"alone": alone, "while_catching_up": {**loaded, "catch_up_pulled": pulled},
                                  "p50_increase_ms": loaded["latency_p50_ms"] - alone["latency_p50_ms"]}}


if __name__ == "__main__":  # the puller process: python -m bench.bench_catchup ENDPOINT SECONDS
    print(json.dumps(_pull(sys.argv[1], float(sys.argv[2]))))
