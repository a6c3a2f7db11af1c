"""The malformed-message mix against ``edge-daemon`` in its own process (issue #17).

``edge-bench malformed --json PATH [--messages 10000] [--seed 0] [--bundle DIR]``: starts the real daemon CLI
(``python -m edge``, as deployed) on two free 127.0.0.1 ports, warms it up with valid spectra and reads its
steady-state resident memory (``VmRSS`` in ``/proc/PID/status``), resets its peak (``VmHWM``, by writing 5 to
``/proc/PID/clear_refs``), then floods it with the seeded mix of :func:`edge.fuzz.malformed_mix` (about 1/5
valid spectra) and reports:

* ``crashed``: the daemon process exited during the run (a stalled daemon shows as missing answers);
* ``valid_sent`` / ``predicted`` / ``predicted_more_than_once``; ``malformed_sent`` / ``malformed_answered``
  (one ``error``, with the reason the specification names) and :func:`edge.fuzz.score_answers`' other checks;
* ``dropped_by_size``: messages over the size limit sent (each on its own connection) and the connections the
  daemon closed on reading their size (a socket monitor's ``DISCONNECTED`` events): ZeroMQ drops them unread;
* memory (kB): steady ``VmRSS`` after the warm-up, peak ``VmHWM`` over the mix, the highest ``VmRSS`` sampled
  every 10 ms, and the bar: peak below steady + 100 MB;
* ``largest_spectra_flood``: then the worst case for memory, ``largest`` (300) of the largest valid spectra
  (65 536 float64 points and axis, 1 MB each) in a flood: predicted, and peak RSS above the steady state;
* ``rejections_by_reason`` (from the daemon's own status); ``malformed_bytes`` and ``wire_rejected_bytes``
  (those the decoder refuses, which the store cuts): what storing them whole or cut would cost (issue #17);
* ``store`` (with ``--store-cap BYTES``: the daemon runs with a store whose rejected frames are cut to BYTES):
  its size on disk (file and write-ahead log) before and after the mix.

:func:`drive_mix` (send the mix, collect the answers) is shared with tests/test_malformed_mix.py.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from edge.bundle import Bundle
from edge.client import PredictionSubscriber
from edge.demo import _free_port
from edge.fuzz import MixMessage, malformed_mix, score_answers
from edge.socket_limits import MAX_BYTES, receive_hwm
from edge.synthetic import SyntheticLibrary
from edge.wire import encode_spectrum

#: Peak RSS allowed above the steady state (issue #17), bytes.
RSS_BAR_BYTES = 100 * 2**20
#: Per-frame caps whose storage cost is reported (bytes).
STORE_CAPS = (1024, 4096, 16384, 32768, 65536)


def drive_mix(messages: list[MixMessage], ctx: zmq.Context[Any], input_endpoint: str, rx: PredictionSubscriber,
              timeout_s: float = 120.0, settle_s: float = 0.5) -> dict[str, Any]:
    """Send ``messages`` to a daemon's input and collect its answers.

    Messages expected to be dropped by size travel one at a time on a connection of their own (ZeroMQ closes the
    connection that sent one, losing whatever followed it on that connection); each is waited for until the
    daemon closes that connection (at most 5 s). The others go on one PUSH socket, as fast as it takes them. A
    thread reads the answers meanwhile, as a subscriber does, so they do not pile up in the daemon's output queue.

    Parameters
    ----------
    messages : list of MixMessage
    ctx : zmq.Context
    input_endpoint : str
        The daemon's input (PULL) endpoint.
    rx : PredictionSubscriber
        A live subscriber of ``prediction`` and ``error`` (``wait_ready`` done).
    timeout_s : float
        Longest wait for all answers after the last message was sent.
    settle_s : float
        Listening after the last expected answer (a duplicate would arrive here).

    Returns
    -------
    dict
        ``answers`` (list of (topic, payload) on ``prediction``/``error``), ``oversize_sent``,
        ``oversize_connections_closed``, ``send_seconds``, ``seconds`` (first send to last answer).
    """
    tx = ctx.socket(zmq.PUSH)
    tx.setsockopt(zmq.SNDHWM, 100000)
    tx.setsockopt(zmq.LINGER, 2000)
    tx.connect(input_endpoint)
    big = ctx.socket(zmq.PUSH)
    big.setsockopt(zmq.LINGER, 0)
    big.setsockopt(zmq.RECONNECT_IVL, 10)
    monitor = big.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    big.connect(input_endpoint)
    answers: list[tuple[str, dict[str, Any]]] = []
    expected = sum(m.expect != "dropped" for m in messages)
    oversize, closed = 0, 0
    done = threading.Event()

    def listen() -> None:  # a subscriber reads as answers come (the daemon never queues them for it)
        while not done.is_set():
            _take(rx, answers, 0.05)

    reader = threading.Thread(target=listen, daemon=True)  # rx is used by this thread only until it ends
    t0 = time.perf_counter()
    reader.start()
    try:
        for m in messages:
            if m.expect != "dropped":
                tx.send_multipart(m.frames)
                continue
            oversize += 1
            big.send_multipart(m.frames)
            if monitor.poll(5000):
                monitor.recv_multipart()
                closed += 1
        send_s = time.perf_counter() - t0
        deadline = time.monotonic() + timeout_s
        while len(answers) < expected and time.monotonic() < deadline and reader.is_alive():
            time.sleep(0.05)
        time.sleep(settle_s)
        seconds = time.perf_counter() - t0
    finally:
        done.set()
        reader.join(5)
        big.disable_monitor()
        monitor.close(linger=0)
        big.close(linger=0)
        tx.close(linger=0)
    return {"answers": answers, "oversize_sent": oversize, "oversize_connections_closed": closed,
            "send_seconds": send_s, "seconds": seconds}


def _take(rx: PredictionSubscriber, answers: list[tuple[str, dict[str, Any]]], timeout_s: float) -> None:
    while (got := rx.recv(timeout_s=timeout_s)) is not None:
        if got[0] in ("prediction", "error"):
            answers.append(got)
        timeout_s = 0.0


def _proc_status(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of a process, kB (empty when it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in lines) if k in ("VmRSS", "VmHWM")}


class _RssSampler(threading.Thread):
    """Highest ``VmRSS`` of a process, sampled every ``period_s``."""

    def __init__(self, pid: int, period_s: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.pid, self.period_s, self.peak_kb = pid, period_s, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak_kb = max(self.peak_kb, _proc_status(self.pid).get("VmRSS", 0))
            self.done.wait(self.period_s)


def _bytes_summary(messages: list[MixMessage]) -> dict[str, Any]:
    """What storing these messages would cost: whole, and cut to each of :data:`STORE_CAPS` bytes."""
    sizes = [m.nbytes for m in messages]
    return {"frames": len(sizes), "whole": sum(sizes), **{f"capped_{c}": sum(min(n, c) for n in sizes) for c in STORE_CAPS},
            "largest_frame": max(sizes, default=0), "median_frame": float(np.median(sizes)) if sizes else 0.0}


def _store_bytes(path: Path) -> int:
    """Bytes of a SQLite store on disk: the file and its write-ahead log (0 when absent)."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def _reset_hwm(pid: int) -> bool:
    """Reset a process's peak RSS (``VmHWM := VmRSS``, Linux ≥ 4.0); False when not permitted."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _measured(pid: int, work: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], dict[str, int], _RssSampler]:
    """Run ``work`` while sampling the process's RSS; returns its result, the process's status after, the sampler."""
    sampler = _RssSampler(pid)
    sampler.start()
    try:
        result = work()
    finally:
        sampler.done.set()
        sampler.join()
    return result, _proc_status(pid), sampler


def _renamed(messages: list[MixMessage]) -> list[MixMessage]:
    """``messages`` with ids ``largest-<index>`` and no ``instrument_seq`` (not to collide with the mix's)."""
    out = []
    for m in messages:
        msg = msgpack.unpackb(m.frames[0], raw=False)
        msg["id"] = f"largest-{m.index}"
        msg.pop("instrument_seq", None)
        out.append(dataclasses.replace(m, frames=(msgpack.packb(msg, use_bin_type=True),)))
    return out


def _status(ctx: zmq.Context[Any], output_endpoint: str) -> dict[str, Any]:
    """A fresh status from the daemon: a new subscription makes it publish one (docs/wire.md §7)."""
    with PredictionSubscriber(output_endpoint, topics=("status",), context=ctx) as sub:
        return sub.wait_ready(timeout_s=10)


def _warm_up(ctx: zmq.Context[Any], input_endpoint: str, rx: PredictionSubscriber, bundle: Bundle,
             n: int) -> int:
    """Send ``n`` valid spectra and wait for their predictions; returns how many arrived."""
    lib = SyntheticLibrary(grid=bundle.grid)
    x = lib.sample(n_per_class=max(1, n // len(lib.labels) + 1), seed=7).intensities[:n]
    tx = ctx.socket(zmq.PUSH)
    tx.setsockopt(zmq.LINGER, 0)
    tx.connect(input_endpoint)
    for i, row in enumerate(x):
        tx.send(encode_spectrum(row, bundle.grid.axis, id=f"warm-{i}"))
    got, deadline = 0, time.monotonic() + 60
    while got < n and time.monotonic() < deadline:
        r = rx.recv(timeout_s=0.2)
        got += r is not None and r[0] == "prediction"
    tx.close(linger=0)
    return got


def _finite_drift(status: dict[str, Any]) -> bool | None:
    drift = status.get("drift")
    if drift is None:
        return None
    values = [v for v in (drift.get("statistics") or {}).values() if v is not None]
    off = drift.get("offset_cm1")
    return all(math.isfinite(v) for v in values) and (off is None or math.isfinite(off))


def run(bundle: str | Path, n_messages: int = 10000, seed: int = 0, warmup: int = 2000,
        largest: int = 300, store_cap: int | None = None) -> dict[str, Any]:
    """Run the mix against ``edge-daemon`` in its own process.

    Parameters
    ----------
    bundle : path-like
        Model bundle (its grid and ``min_coverage`` shape the mix).
    n_messages : int
        Messages in the mix.
    seed : int
        Seed of the mix.
    warmup : int
        Valid spectra sent before the steady-state memory is read.
    largest : int
        Then, the worst case for memory: this many of the largest valid spectra (1 MB each) in a flood (0: skip).
    store_cap : int, optional
        Run the daemon with a store (docs/store.md) in a temporary folder whose rejected frames are cut to this many
        bytes (``max_rejected_frame_bytes``), and report the store's size on disk; None: no store.

    Returns
    -------
    dict
        The figures of the module docstring.
    """
    b = Bundle.load(bundle)
    messages = malformed_mix(n_messages, seed, b.grid, b.preprocessing.min_coverage)
    ep_in, ep_out = f"tcp://127.0.0.1:{_free_port()}", f"tcp://127.0.0.1:{_free_port()}"
    ctx = zmq.Context()
    with tempfile.TemporaryFile("w+") as log, tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "edge", "--bundle", str(b.path), "--input", ep_in, "--output", ep_out, "-q"]
        store = Path(tmp) / "store.sqlite"
        if store_cap is not None:
            config = Path(tmp) / "daemon.toml"
            config.write_text(f'[daemon]\nstore = "{store}"\n[daemon.store_options]\n'
                              f"max_rejected_frame_bytes = {int(store_cap)}\n", encoding="utf-8")
            cmd += ["--config", str(config)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            with PredictionSubscriber(ep_out, topics=("prediction", "error"), context=ctx) as rx:
                rx.wait_ready(timeout_s=60)
                warmed = _warm_up(ctx, ep_in, rx, b, warmup)
                time.sleep(1.0)
                steady = _proc_status(proc.pid)
                hwm_reset = _reset_hwm(proc.pid)
                store_before = _store_bytes(store)
                driven, peak, sampler = _measured(proc.pid, lambda: drive_mix(messages, ctx, ep_in, rx, timeout_s=300))
                alive = proc.poll() is None
                status = _status(ctx, ep_out) if alive else {}
                store_after = _store_bytes(store)
                worst: dict[str, Any] = {}
                if alive and largest:  # the worst case for memory: nothing but the largest valid spectra
                    flood = malformed_mix(largest, seed + 1, b.grid, b.preprocessing.min_coverage, valid_fraction=0.0,
                                          only=["huge_valid_f8"])
                    flood = [dataclasses.replace(m, key=f"largest-{m.index}") for m in _renamed(flood)]
                    worst_reset = _reset_hwm(proc.pid)
                    got, worst_peak, worst_sampler = _measured(
                        proc.pid, lambda: drive_mix(flood, ctx, ep_in, rx, timeout_s=300))
                    worst_score = score_answers(flood, got["answers"])
                    worst_kb = max(worst_peak.get("VmHWM", 0) if worst_reset else 0, worst_sampler.peak_kb)
                    worst = {"sent": largest, "bytes_each": flood[0].nbytes, "predicted": worst_score["predicted"],
                             "ok": worst_score["ok"], "peak_kb": worst_kb, "peak_above_steady_kb": worst_kb - steady["VmRSS"],
                             "meets_bar": worst_kb - steady["VmRSS"] < RSS_BAR_BYTES // 1024,
                             "seconds": round(got["seconds"], 2)}
                    alive = proc.poll() is None
        finally:
            proc.terminate()
            try:
                exit_code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                exit_code = proc.wait()
            ctx.term()
        log.seek(0)
        tail = log.read()[-2000:]
    score = score_answers(messages, driven["answers"])
    steady_kb = steady.get("VmRSS", 0)
    peak_kb = max(peak.get("VmHWM", 0) if hwm_reset else 0, sampler.peak_kb)
    malformed = [m for m in messages if m.expect in ("error", "answer")]
    counters = status.get("counters", {})
    return {
        "bundle": str(b.path), "model_id": b.model_id, "seed": seed, "messages": n_messages,
        "kinds_in_mix": len(score["by_kind"]) - 1, "load_average": list(os.getloadavg()),
        "crashed": not alive, "daemon_exit_code_after_sigterm": exit_code,
        "warmup": {"sent": warmup, "predicted": warmed},
        **{k: score[k] for k in ("valid_sent", "predicted", "predicted_more_than_once", "valid_missing",
                                 "malformed_sent", "malformed_answered", "malformed_missing",
                                 "answered_more_than_once", "anonymous_sent", "anonymous_errors",
                                 "unexpected_answers", "wrong_answer", "ok")},
        "dropped_by_size": {"sent": driven["oversize_sent"],
                            "connections_closed_by_daemon": driven["oversize_connections_closed"],
                            "answered": score["dropped_answered"]},
        "memory_kb": {"steady_rss": steady_kb, "peak_hwm": peak.get("VmHWM"), "hwm_reset": hwm_reset,
                      "peak_rss_sampled": sampler.peak_kb, "peak": peak_kb,
                      "peak_above_steady": peak_kb - steady_kb, "bar_above_steady": RSS_BAR_BYTES // 1024,
                      "meets_bar": peak_kb - steady_kb < RSS_BAR_BYTES // 1024},
        "largest_spectra_flood": worst,
        "store": None if store_cap is None else {
            "max_rejected_frame_bytes": store_cap, "bytes_on_disk_before_mix": store_before,
            "bytes_on_disk_after_mix": store_after, "status": status.get("store")},
        "input_queue": {"rcvhwm_messages": receive_hwm("input"), "max_message_bytes": MAX_BYTES["input"]},
        "drift_statistics_finite": _finite_drift(status),
        "daemon_counters": counters, "rejections_by_reason": status.get("rejections", {}),
        "answers_by_reason": score["rejections_by_reason"],
        "malformed_bytes": _bytes_summary(malformed),
        "wire_rejected_bytes": _bytes_summary([m for m in malformed if m.reason == "wire"]),
        "seconds": {"send": round(driven["send_seconds"], 2), "send_to_last_answer": round(driven["seconds"], 2)},
        "by_kind": score["by_kind"],
        "daemon_log_tail": tail if not alive else "",
    }
