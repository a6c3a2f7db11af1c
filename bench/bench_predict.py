"""Throughput of ``edge-predict``: single process vs a Dask ``LocalCluster`` of 1 and 2 workers (issue 16).

Input: ``n`` spectra (100 000 by default) made from the real ``raw_test`` spectra (each repeated with a random
scale and 1 % Gaussian noise, on the model grid), held in memory as 100 "files" of ``n/100`` spectra, so that
file reading is not timed. Each run classifies the same input with the same bundle and settings (batch 64,
1 inference thread per process); spectra/s is wall time over the whole ``predict`` call (for Dask: task
submission, transfer, classification and gathering; workers are started and warmed up before timing). The
three runs must give the same predicted labels (checked). Timings on a shared machine are noisy: the JSON
records ``os.getloadavg()`` before and after each run.

Run ``edge-bench predict [--bundle DIR] [--quick] [--json PATH]`` (``--quick``: 10 000 spectra).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.data import load_spectra
from edge.io import ReadResult, Spectra
from edge.predict import predict


def make_input(n: int, seed: int = 0, files: int = 100) -> ReadResult:
    """``n`` spectra from the real test split (scaled, noisy copies) as ``files`` in-memory files."""
    base = load_spectra("rruff_soysal/raw_test.npz")
    rng = np.random.default_rng(seed)
    per = int(np.ceil(n / files))
    out = ReadResult()
    for f in range(files):
        k = min(per, n - f * per)
        if k <= 0:
            break
        idx = rng.integers(len(base), size=k)
        x = base.intensities[idx] * rng.uniform(0.8, 1.2, (k, 1)).astype(np.float32)
        x += rng.normal(0, 0.01, x.shape).astype(np.float32)
        out.spectra.append(Spectra(base.raman_shift_cm1, x.astype(np.float32), {"source_file": f"mem{f:03d}"}))
    return out


def _timed(fn: Any) -> tuple[Any, dict[str, Any]]:
    load0 = os.getloadavg()
    t = time.perf_counter()
    result = fn()
    dt = time.perf_counter() - t
    return result, {"seconds": round(dt, 2), "loadavg_before": load0, "loadavg_after": os.getloadavg()}


def run(bundle: str | Path, quick: bool = False, n: int | None = None) -> dict[str, Any]:
    """Spectra/s of single-process and 1- and 2-worker Dask runs on the same ``n`` spectra."""
    from distributed import Client, LocalCluster

    n = n or (10_000 if quick else 100_000)
    read = make_input(n)
    settings: dict[str, Any] = {"batch_size": 64, "threads": 1}
    single, t1 = _timed(lambda: predict(read, bundle, **settings))
    runs: dict[str, Any] = {"single_process": {**t1, "spectra_per_s": round(n / t1["seconds"], 1)}}
    labels = [r["predicted"] for r in single.rows]
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                          processes=True) as cluster, Client(cluster) as client:
            # warm-up, untimed: every worker imports edge and loads its onnxruntime session (2 tasks per worker)
            predict(make_input(2 * workers * 16 * 64, seed=1, files=4), bundle, scheduler=client, **settings)
            res, t = _timed(lambda c=client: predict(read, bundle, scheduler=c, **settings))
        same = [r["predicted"] for r in res.rows] == labels
        runs[f"dask_{workers}_worker{'s' if workers > 1 else ''}"] = {
            **t, "spectra_per_s": round(n / t["seconds"], 1), "same_labels_as_single_process": same}
    return {"spectra": n, "bundle": str(bundle), "settings": settings, "cpu_count": os.cpu_count(), "runs": runs}
