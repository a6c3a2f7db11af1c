"""Serial path end to end: simulated instrument -> pty -> ``edge-daemon --serial`` -> predictions.

The simulator (:class:`firmware_bridge.simulator.SimulatedInstrument`, this process) streams the real
``raw_test`` spectra (repeated; ``synthetic:stream`` when the data folder is absent) as fast as the link
reads them; the daemon runs in its own process exactly as deployed (``edge-daemon --serial <pty> --input ''``,
:func:`edge.demo.stream_serial`) and publishes on ZeroMQ. Reported:

* ``measured_spectra_per_s``: spectra classified per second, first acquisition to last prediction, and
  ``steady_spectra_per_s`` over the second half of the run (start-up excluded);
* ``line_rate_bound``: spectra/s a real UART could carry at 115 200 and 921 600 baud, ``baud / 10 /
  frame_bytes`` (8N1), for the frames measured here (float32 axis + float32 counts) and for the compact
  variant (calibration polynomial + uint16 counts). A pty ignores the baud rate, so the measured figure is the
  software path only; on a real line the smaller of the two bounds the rate.

Run ``python bench/bench_serial_daemon.py [--bundle DIR] [--quick] [--json PATH]`` or ``edge-bench serial``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import time
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np
import zmq

from edge.bundle import Bundle
from edge.data import SpectraSet, load_spectra
from edge.demo import stream_serial
from edge.errors import DataError
from firmware_bridge.protocol import SpectrumMessage, encode_message

BAUD_RATES = (115_200, 921_600)


def _spectra(n: int, grid) -> SpectraSet:
    try:
        base = load_spectra("rruff_soysal/raw_test.npz")
    except DataError:
        base = load_spectra("synthetic:stream", grid)
    idx = np.arange(n) % len(base)
    return SpectraSet(base.intensities[idx], base.labels[idx], base.raman_shift_cm1, source=base.source)


def _frame_bytes(spectra: SpectraSet, compact: bool) -> int:
    """Bytes on the wire of one SPECTRUM frame (COBS, delimiters included) as the simulator sends it."""
    axis = spectra.raman_shift_cm1
    counts = spectra.intensities[0]
    if compact:  # calibration polynomial instead of the axis, uint16 counts
        counts = np.round(counts / max(float(counts.max()), 1e-12) * 60000.0)
        msg = SpectrumMessage("simulated-instrument", 1, time.time_ns(), 100.0, 785.0, None, counts,
                              sample_label=str(spectra.labels[0]), calibration=(float(axis[0]), float(axis[1] - axis[0])),
                              counts_dtype="u2", seq=0)
    else:
        msg = SpectrumMessage("simulated-instrument", 1, time.time_ns(), 100.0, 785.0, axis.astype(np.float32),
                              counts, sample_label=str(spectra.labels[0]), seq=0)
    return len(encode_message(msg)) + 1  # + the leading delimiter


def run(quick: bool = False, bundle: str | pathlib.Path | None = None) -> dict[str, Any]:
    """Measure the serial path end to end.

    Parameters
    ----------
    quick : bool, optional
        300 spectra instead of 1500.
    bundle : path-like, optional
        Model bundle (default: the benchmark bundle, built on the 40 % split when absent; see ``edge-bench``).

    Returns
    -------
    dict
        ``measured_spectra_per_s``, ``steady_spectra_per_s``, ``sent``/``received``/``lost``, latency, the
        line-rate bounds per baud rate, link and simulator counters.

    Raises
    ------
    EdgeError
        If the bundle cannot be built or loaded, or the daemon fails.
    """
    if bundle is None:
        from bench.__main__ import RESULTS, default_bundle

        bundle = default_bundle(RESULTS)
    b = Bundle.load(bundle)
    n = 300 if quick else 1500
    spectra = _spectra(n, b.grid)
    ctx = zmq.Context()
    try:
        res = stream_serial(spectra, b.path, 0.0, timeout_s=120.0, live=False, ctx=ctx)
    finally:
        ctx.term()
    if res["daemon_exit_code"] != 0:
        raise RuntimeError(f"edge-daemon exited with {res['daemon_exit_code']}: {res['daemon_stderr'][-400:]}")
    recv = np.sort(np.fromiter(res["recv_ns"].values(), dtype=np.int64))
    half = len(recv) // 2
    steady = (len(recv) - 1 - half) / ((recv[-1] - recv[half]) / 1e9) if len(recv) > 4 else None
    link = ((res["final_status"] or {}).get("serial") or {}).get("counters", {})
    wire = link.get("bytes_received", 0) / max(1, link.get("frames_ok", 1))
    frames = {"f4_axis_f4_counts": _frame_bytes(spectra, False), "calibration_u2_counts": _frame_bytes(spectra, True)}
    lat = res["latency_ms"]
    return {
        "python": platform.python_version(), "machine": platform.machine(), "bundle": str(b.path),
        "model_id": b.model_id, "data": spectra.source, "transport": "pty (baud rate ignored)",
        "sent": n, "received": len(res["preds"]), "lost_reported": len(res["lost"]),
        "rejected": len(res["errors"]), "seconds": res["seconds"],
        "measured_spectra_per_s": len(res["preds"]) / res["seconds"] if res["seconds"] > 0 else None,
        "steady_spectra_per_s": steady,
        "latency_ms_under_flood": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))}
        if len(lat) else None,
        "frame_bytes": frames, "mean_bytes_per_frame_received": wire,
        "line_rate_bound_spectra_per_s": {
            variant: {str(baud): baud / 10 / size for baud in BAUD_RATES} for variant, size in frames.items()},
        "link": link, "simulator": res["simulator"],
        "note": "a pty ignores the baud rate: the measured figure is the software path (link + daemon); "
                "on a UART the rate is min(measured, line-rate bound)",
    }


def main(argv: list[str] | None = None) -> int:
    """Run the serial-daemon benchmark from the command line; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=None, help="model bundle (default: the benchmark bundle)")
    parser.add_argument("--json", type=pathlib.Path, help="write the results to this file")
    parser.add_argument("--quick", action="store_true", help="300 spectra instead of 1500")
    args = parser.parse_args(argv)
    results = run(quick=args.quick, bundle=args.bundle)
    text = json.dumps(results, indent=2, default=str)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
