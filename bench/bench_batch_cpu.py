"""CPU time of the daemon's per-batch path, in process (issue 17, cost): no sockets, no other process.

The daemon's loop is one thread, so its CPU time per spectrum bounds what it can sustain (≥ 3 000 spectra/s
flooded needs ≲ 0.3 ms at batch 64). On a shared machine the end-to-end rows of ``edge-bench latency`` move
with the load; this figure moves much less. Real spectra (``raw_test``, on their own axis, as a sender
sends them) are encoded once, then answered micro-batch by micro-batch through ``Daemon._process`` (decode,
store, classify, quality gate, novelty, publish, drift monitor) with a capturing publisher, at batch 64 and
batch 1, with and without the store. ``profile=True`` adds the cProfile top entries of each row.

Run ``edge-bench batchcpu [--bundle DIR] [--json PATH]``.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from edge.daemon import Daemon, DaemonConfig
from edge.data import load_spectra
from edge.wire import encode_spectrum


class _Capture:
    """A publisher that keeps nothing (the messages are encoded, as the daemon sends them)."""

    def __init__(self) -> None:
        self.sent = 0

    def send_multipart(self, parts: Any) -> None:
        self.sent += 1


def _daemon(bundle: Path, store: str | None) -> Daemon:
    d = Daemon(DaemonConfig(bundle=str(bundle), store=store or ""))
    d.backend.__enter__()
    d.backend.warmup(d.bundle.preprocessing.sample_shape, (1, 8))
    if d.novelty is not None:
        d.novelty.load((1, d.grid.n_points))
    return d


def measure(bundle: Path, batch: int, n: int, store: bool, profile: bool = False,
            data: str = "rruff_soysal/raw_test.npz", top: int = 15) -> dict[str, Any]:
    """CPU and wall ms per spectrum of ``n`` spectra answered in micro-batches of ``batch``."""
    spectra = load_spectra(data)
    frames: list[bytes | list[bytes]] = [
        encode_spectrum(spectra.intensities[i % len(spectra)], spectra.raman_shift_cm1, id=f"c{i}")
        for i in range(n + 2 * batch)]
    with tempfile.TemporaryDirectory() as tmp:
        d = _daemon(bundle, str(Path(tmp) / "store.sqlite") if store else None)
        pub = _Capture()
        for i in range(0, 2 * batch, batch):  # warm-up (first-call costs, the store's tables)
            d._process(frames[i:i + batch], pub)
        d.join_drift(pub)
        frames = frames[2 * batch:]
        prof = cProfile.Profile() if profile else None
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if prof is not None:
            prof.enable()
        for i in range(0, len(frames), batch):
            d._process(frames[i:i + batch], pub)
        d.join_drift(pub)  # the last batch's drift bookkeeping (it overlaps the next batch: edge.daemon)
        if prof is not None:
            prof.disable()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        if d._store is not None:
            d._store.close()
        d.backend.close()
    out: dict[str, Any] = {"batch": batch, "store": store, "spectra": len(frames),
                           "cpu_ms_per_spectrum": cpu * 1e3 / len(frames),
                           "wall_ms_per_spectrum": wall * 1e3 / len(frames), "profiled": profile}
    if prof is not None:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(top)
        out["profile_cumulative"] = [line.rstrip() for line in s.getvalue().splitlines() if line.strip()][-top - 1:]
    return out


def run(bundle: str | Path, quick: bool = False, profile: bool = False) -> dict[str, Any]:
    """The four rows (batch 64 and 1, store off and on); returns the JSON."""
    n64, n1 = (640, 150) if quick else (3200, 600)
    rows = [measure(Path(bundle), b, n, s, profile) for s in (False, True) for b, n in ((64, n64), (1, n1))]
    return {"bundle": str(bundle), "load_average_1min": os.getloadavg()[0], "rows": rows,
            "note": "process CPU (all threads: the store's checkpoint thread too) per spectrum; profiled rows are slower"}
