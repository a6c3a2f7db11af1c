"""Latency and throughput of the classifier and the daemon (issue 2 targets).

* onnxruntime, 1 intra-op thread: per-spectrum latency at batch 1 (p50, p99) for FP32 and INT8, and
  batch-64 throughput (spectra/s). Target: INT8 batch-1 p50 ≤ 0.2 ms for the compact model.
* daemon end to end (``edge-daemon`` in its own process, ZeroMQ over TCP on 127.0.0.1): latency from the
  sender's clock to the subscriber's receipt (p50, p99) at a steady rate, and sustained throughput when
  spectra are sent as fast as possible. Targets: p50 ≤ 1 ms, ≥ 2 000 spectra/s.
* the store's cost (issue 17): the same two daemon rows with ``--store`` on a temporary SQLite file (WAL,
  ``synchronous = NORMAL``, one transaction per micro-batch for the spectra and one for their results), next to
  the rows without it. Targets: ≥ 3 000 spectra/s flooded and p50 ≤ 1.5 ms at 500 spectra/s with the store on.
* components (issue 15): per-spectrum cost at batch 1 of cosmic-ray spike removal (target ≤ 0.05 ms), the
  quality gate and the axis calibration; and the daemon's steady-rate latency with all of instrument hygiene
  on (a calibration file, the laser wavelength for the emission-line test): target p50 ≤ 1.2 ms at 500/s.

Run ``edge-bench latency [--bundle DIR] [--json PATH]``.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from edge.backends import OnnxRuntimeBackend
from edge.bundle import Bundle
from edge.client import PredictionSubscriber, SpectrumSender
from edge.data import load_spectra
from edge.demo import _free_port, start_daemon
from edge.preprocess import Preprocessor


def machine() -> dict[str, Any]:
    """The host's CPU, core count, load average and library versions, recorded with every result."""
    import onnxruntime

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "onnxruntime": onnxruntime.__version__}


def bench_backend(model: Path, x: np.ndarray, n_single: int = 2000, n_batches: int = 50) -> dict[str, Any]:
    """Batch-1 latency (ms) and batch-64 throughput (spectra/s) of one ONNX model, 1 thread."""
    with OnnxRuntimeBackend(model, intra_op_threads=1) as be:
        be.warmup(x.shape[1:], (1, 64))
        times = np.empty(n_single)
        for i in range(n_single):
            row = x[i % len(x)][None, :]
            t = time.perf_counter()
            be.infer(row)
            times[i] = time.perf_counter() - t
        batch = np.ascontiguousarray(np.resize(x, (64, *x.shape[1:])))
        t = time.perf_counter()
        for _ in range(n_batches):
            be.infer(batch)
        dt = time.perf_counter() - t
    return {"batch1_p50_ms": float(np.percentile(times, 50) * 1e3), "batch1_p99_ms": float(np.percentile(times, 99) * 1e3),
            "batch64_spectra_per_s": 64 * n_batches / dt, "bytes": model.stat().st_size}


def _stream(ctx, ep_in: str, ep_out: str, x: np.ndarray, axis: np.ndarray, n: int, rate_hz: float, timeout_s: float = 60,
            tag: str = "", pid: int | None = None):
    lat = []
    with PredictionSubscriber(ep_out, topics=("prediction",), context=ctx) as rx, SpectrumSender(ep_in, ctx) as tx:
        rx.wait_ready(timeout_s=30)  # the daemon is up: its start-up is not counted in its CPU time below
        cpu0 = _cpu_seconds(pid) if pid is not None else None
        period = 1.0 / rate_hz if rate_hz else 0.0
        t0 = time.perf_counter()
        got = 0
        for i in range(n):
            if period:
                while time.perf_counter() < t0 + i * period:
                    r = rx.recv(timeout_s=0)
                    if r and r[0] == "prediction":
                        lat.append((time.time_ns() - r[1]["sent_ns"]) / 1e6)
                        got += 1
            tx.send(x[i % len(x)], axis, id=f"{tag}{i}")  # unique per run: a store answers a repeated id once
        deadline = time.monotonic() + timeout_s
        while got < n and time.monotonic() < deadline:
            r = rx.recv(timeout_s=0.5)
            if r and r[0] == "prediction":
                lat.append((time.time_ns() - r[1]["sent_ns"]) / 1e6)
                got += 1
        dt = time.perf_counter() - t0
        cpu1 = _cpu_seconds(pid) if pid is not None else None
    lat_a = np.asarray(lat)
    out = {"sent": n, "received": got, "seconds": dt, "spectra_per_s": got / dt,
           "latency_p50_ms": float(np.percentile(lat_a, 50)), "latency_p99_ms": float(np.percentile(lat_a, 99))}
    if cpu0 is not None and cpu1 is not None:  # the daemon's own CPU per spectrum: load from others hides it less
        out["daemon_cpu_ms_per_spectrum"] = (cpu1 - cpu0) * 1e3 / max(got, 1)
    return out


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _per_call_ms(fn, n: int) -> dict[str, float]:
    fn()
    times = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t
    return {"p50_ms": float(np.percentile(times, 50) * 1e3), "p99_ms": float(np.percentile(times, 99) * 1e3)}


def bench_components(x: np.ndarray, axis: np.ndarray, n: int = 2000) -> dict[str, Any]:
    """Batch-1 cost of the instrument-hygiene steps on real spectra (``x`` shape (B, M) on ``axis``)."""
    from edge.calibration import Calibration
    from edge.quality import QualityConfig, assess
    from edge.spikes import remove_spikes

    rows = [np.ascontiguousarray(r, dtype=np.float32) for r in x[:50]]
    k = iter(range(10**9))
    spikes = _per_call_ms(lambda: remove_spikes(rows[next(k) % len(rows)]), n)
    cfg = QualityConfig(laser_nm=785.0)
    quality = _per_call_ms(lambda: assess(rows[next(k) % len(rows)], axis, cfg), max(200, n // 4))
    cal = Calibration("bench", None, [0.4, 1e-4], (600.0, 1600.0), calibration_id="bench")
    calibration = _per_call_ms(lambda: cal.apply(axis), max(200, n // 4))
    return {"spike_removal": {**spikes, "target_p50_ms": 0.05, "meets_target": spikes["p50_ms"] <= 0.05},
            "quality_gate_with_emission_test": quality, "calibration_apply_uncached": calibration}


def bench_daemon(bundle: Path, x: np.ndarray, axis: np.ndarray, rate_hz: float = 500.0, n_rate: int = 3000,
                 n_flood: int = 20000, extra_args: tuple[str, ...] = (), store: str | None = None) -> dict[str, Any]:
    """Daemon end-to-end latency at ``rate_hz`` and sustained throughput when flooded (own process); with
    ``store`` (a SQLite file) the daemon keeps every spectrum and result there (``--store``).
    """
    ep_in, ep_out = f"tcp://127.0.0.1:{_free_port()}", f"tcp://127.0.0.1:{_free_port()}"
    proc = start_daemon(bundle, ep_in, ep_out, store, extra_args=extra_args)
    ctx = zmq.Context()
    load0 = os.getloadavg()[0]  # before and after: the machine is shared, say how busy it was
    try:
        steady = _stream(ctx, ep_in, ep_out, x, axis, n_rate, rate_hz, tag="steady-", pid=proc.pid)
        flood = _stream(ctx, ep_in, ep_out, x, axis, n_flood, 0.0, tag="flood-", pid=proc.pid)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        ctx.term()
    if proc.returncode != 0:
        raise RuntimeError(f"the daemon exited with status {proc.returncode}: {err.strip()[-500:]}")
    out: dict[str, Any] = {"store": store is not None, "load_average_1min": [load0, os.getloadavg()[0]]}
    if store is not None:
        out["store_bytes"] = sum(p.stat().st_size for p in Path(store).parent.glob(Path(store).name + "*"))
    return {**out, "steady": {**steady, "rate_hz": rate_hz}, "flood": flood,
            "targets": {"p50_ms_max": 1.0, "spectra_per_s_min": 2000},
            "meets_targets": bool(steady["latency_p50_ms"] <= 1.0 and flood["spectra_per_s"] >= 2000
                                  and flood["received"] == flood["sent"])}


def run(bundle: str | Path, data: str = "rruff_soysal/raw_test.npz", quick: bool = False) -> dict[str, Any]:
    """Time onnxruntime batch 1/64, the preprocessing components and the daemon end to end; returns the JSON."""
    b = Bundle.load(bundle)
    spectra = load_spectra(data, b.grid)
    x = Preprocessor(b.preprocessing)(spectra.intensities, spectra.raman_shift_cm1)
    out: dict[str, Any] = {"machine": machine(), "bundle": str(b.path), "model_id": b.model_id,
                           "n_parameters": b.manifest["model"]["n_parameters"], "data": spectra.source}
    for prec in ("fp32", "int8"):
        if b.has_file("model.int8.onnx" if prec == "int8" else "model.onnx"):
            path, _ = b.onnx_model(prec)
            out[f"onnxruntime_{prec}"] = bench_backend(path, x, n_single=500 if quick else 3000)
    if "onnxruntime_int8" in out:
        out["onnxruntime_int8"]["meets_target_p50_0.2ms"] = out["onnxruntime_int8"]["batch1_p50_ms"] <= 0.2
    out["daemon"] = bench_daemon(b.path, spectra.intensities, spectra.raman_shift_cm1,
                                 n_rate=600 if quick else 3000, n_flood=3000 if quick else 20000)
    out["daemon_store"] = bench_daemon_store(b.path, spectra.intensities, spectra.raman_shift_cm1,
                                             n_rate=600 if quick else 3000, n_flood=3000 if quick else 20000)
    out["store_cost"] = store_cost(out["daemon"], out["daemon_store"])
    out["components"] = bench_components(spectra.intensities, spectra.raman_shift_cm1, n=500 if quick else 3000)
    out["daemon_hygiene"] = _bench_daemon_hygiene(b.path, spectra, quick)
    return out


def bench_daemon_store(bundle: Path, x: np.ndarray, axis: np.ndarray, n_rate: int = 3000,
                       n_flood: int = 20000) -> dict[str, Any]:
    """:func:`bench_daemon` with ``--store`` on a fresh SQLite file in a temporary folder (issue 17 targets:
    ≥ 3 000 spectra/s flooded, p50 ≤ 1.5 ms at 500 spectra/s).
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        res = bench_daemon(bundle, x, axis, n_rate=n_rate, n_flood=n_flood, store=str(Path(tmp) / "store.sqlite"))
    res["targets"] = {"p50_ms_max": 1.5, "spectra_per_s_min": 3000}
    res["meets_targets"] = bool(res["steady"]["latency_p50_ms"] <= 1.5 and res["flood"]["spectra_per_s"] >= 3000
                                and res["flood"]["received"] == res["flood"]["sent"])
    return res


def store_cost(without: dict[str, Any], with_store: dict[str, Any]) -> dict[str, Any]:
    """The two daemon rows side by side: flooded spectra/s and steady p50/p99 (ms) without and with the store."""
    def row(r: dict[str, Any]) -> dict[str, float]:
        return {"flood_spectra_per_s": r["flood"]["spectra_per_s"], "steady_p50_ms": r["steady"]["latency_p50_ms"],
                "steady_p99_ms": r["steady"]["latency_p99_ms"],
                "steady_daemon_cpu_ms_per_spectrum": r["steady"].get("daemon_cpu_ms_per_spectrum"),
                "flood_daemon_cpu_ms_per_spectrum": r["flood"].get("daemon_cpu_ms_per_spectrum")}

    a, b = row(without), row(with_store)
    return {"without_store": a, "with_store": b,
            "flood_throughput_ratio": b["flood_spectra_per_s"] / a["flood_spectra_per_s"],
            "steady_p50_added_ms": b["steady_p50_ms"] - a["steady_p50_ms"],
            "meets_targets": with_store["meets_targets"]}


def _bench_daemon_hygiene(bundle: Path, spectra, quick: bool) -> dict[str, Any]:
    """Measure the daemon at 500 spectra/s with spike removal, quality gate (emission test) and a calibration on."""
    import tempfile

    from edge.calibration import Calibration

    with tempfile.TemporaryDirectory() as tmp:
        cal_path = Path(tmp) / "calibration.json"
        Calibration("bench", 785.0, [0.4, 1e-4], (600.0, 1600.0), calibration_id="bench").save(cal_path)
        res = bench_daemon(bundle, spectra.intensities, spectra.raman_shift_cm1, n_rate=600 if quick else 3000,
                           n_flood=3000 if quick else 20000,
                           extra_args=("--calibration", str(cal_path), "--laser-nm", "785"))
    res["targets"] = {"p50_ms_max": 1.2}
    res["meets_targets"] = bool(res["steady"]["latency_p50_ms"] <= 1.2)
    return res
