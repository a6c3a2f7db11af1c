"""Benchmark of the firmware bridge: frame decoder and serial path over a pty.

Run ``python bench/bench_bridge.py --json PATH`` (or call :func:`run`). Measures

* FrameDecoder throughput (bytes/s, frames/s) and full decode to
  :class:`~firmware_bridge.protocol.SpectrumMessage` (spectra/s), for a
  1392-point spectrum sent as float32 axis + float32 counts and as calibration
  polynomial + uint16 counts;
* encoding throughput (spectra/s);
* end-to-end spectra/s through simulator -> pty -> InstrumentLink with the port
  set to 115 200 and 921 600 baud. A pty ignores the baud rate, so the
  line-rate-limited figure ``baud / 10 / frame_bytes`` (8N1: 10 bit times per
  byte) is reported next to the measured one.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import threading
import time
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np

from firmware_bridge.framing import FrameDecoder
from firmware_bridge.link import InstrumentLink, LinkConfig
from firmware_bridge.protocol import SpectrumMessage, decode_frame, encode_message
from firmware_bridge.simulator import SimulatedInstrument, synthetic_spectra
from firmware_bridge.transport import Backoff

BAUD_RATES = (115_200, 921_600)


def _messages(n: int, variant: str) -> list[SpectrumMessage]:
    out = []
    for seq, (axis, counts, meta) in enumerate(synthetic_spectra(seed=0, count=n)):
        if variant == "f4":
            out.append(SpectrumMessage("bench", 1, meta["acquisition_time_ns"], 100.0, 785.0, axis, counts,
                                       sample_label=meta["sample_label"], seq=seq))
        else:
            out.append(SpectrumMessage("bench", 1, meta["acquisition_time_ns"], 100.0, 785.0, None,
                                       np.round(counts), sample_label=meta["sample_label"],
                                       calibration=(200.0, 1.0), counts_dtype="u2", seq=seq))
    return out


def _timed(fn, min_time_s: float) -> tuple[int, float]:
    """Call ``fn`` repeatedly for at least ``min_time_s``; (calls, seconds)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time_s:
            return calls, elapsed


def bench_codec(variant: str, n_frames: int = 200, chunk: int = 4096, min_time_s: float = 1.0) -> dict[str, Any]:
    """Encoder and decoder throughput for one payload variant."""
    msgs = _messages(n_frames, variant)
    wires = [encode_message(m) for m in msgs]
    stream = b"".join(wires)
    chunks = [stream[i:i + chunk] for i in range(0, len(stream), chunk)]

    def frames_only() -> None:
        decoder = FrameDecoder()
        for piece in chunks:
            decoder.feed(piece)

    def full() -> None:
        decoder = FrameDecoder()
        for piece in chunks:
            for frame in decoder.feed(piece):
                decode_frame(frame)

    def encode() -> None:
        for m in msgs:
            encode_message(m)

    check = FrameDecoder()
    if sum(len(check.feed(piece)) for piece in chunks) != n_frames:
        raise RuntimeError("decoder lost frames of a clean stream")
    calls, seconds = _timed(frames_only, min_time_s)
    frame_bps = calls * len(stream) / seconds
    calls_full, seconds_full = _timed(full, min_time_s)
    calls_enc, seconds_enc = _timed(encode, min_time_s)
    return {
        "frame_bytes": len(stream) / n_frames,
        "decoder_bytes_per_s": frame_bps,
        "decoder_frames_per_s": calls * n_frames / seconds,
        "decode_to_message_spectra_per_s": calls_full * n_frames / seconds_full,
        "decode_to_message_bytes_per_s": calls_full * len(stream) / seconds_full,
        "encode_spectra_per_s": calls_enc * n_frames / seconds_enc,
    }


def bench_pty(baudrate: int, duration_s: float = 3.0, variant: str = "f4") -> dict[str, Any]:
    """Spectra/s delivered by InstrumentLink from an unthrottled simulator over a pty."""
    source = synthetic_spectra(seed=1) if variant == "f4" else (
        (a, c, m | {"calibration": (200.0, 1.0)}) for a, c, m in synthetic_spectra(seed=1))
    delivered, first = [0], threading.Event()
    marks: dict[str, float] = {}

    def on_spectrum(msg: SpectrumMessage) -> None:
        delivered[0] += 1
        if not first.is_set():
            marks["start"] = time.perf_counter()
            first.set()

    stop = threading.Event()
    with SimulatedInstrument(source, rate_hz=None, record_sent=False, heartbeat_interval_s=0.5,
                             counts_dtype=variant) as sim:
        link = InstrumentLink(sim.url, baudrate=baudrate, config=LinkConfig(), backoff=Backoff(0.02, 0.2))
        thread = threading.Thread(target=link.run, kwargs=dict(on_spectrum=on_spectrum, stop_event=stop))
        thread.start()
        try:
            if not first.wait(10.0):
                raise RuntimeError("no spectrum arrived over the pty within 10 s")
            n0 = delivered[0]
            stop.wait(duration_s)
            n1, t1 = delivered[0], time.perf_counter()
        finally:
            stop.set()
            thread.join(5.0)
        counters = link.counters()
    spectra_per_s = (n1 - n0) / (t1 - marks["start"])
    frame_bytes = counters["bytes_received"] / max(1, counters["frames_ok"])
    line_bytes_per_s = baudrate / 10
    return {
        "baudrate": baudrate,
        "measured_spectra_per_s": spectra_per_s,
        "measured_bytes_per_s": spectra_per_s * frame_bytes,
        "frame_bytes_on_wire": frame_bytes,
        "line_rate_bytes_per_s": line_bytes_per_s,
        "line_rate_limited_spectra_per_s": line_bytes_per_s / frame_bytes,
        "note": "a pty ignores the baud rate; the measured figure is the software path only",
        "crc_errors": counters["crc_errors"], "seqs_lost": counters["seqs_lost"],
    }


def run(out: dict, *, quick: bool = False) -> dict:
    """Run all bridge benchmarks and store them in ``out["bridge"]``.

    Parameters
    ----------
    out : dict
        Results dict shared with other benchmarks; ``out["bridge"]`` is set.
    quick : bool, optional
        Shorter timings (for smoke runs).

    Returns
    -------
    dict
        The bridge results.
    """
    min_time_s, duration_s = (0.3, 1.0) if quick else (1.0, 3.0)
    results: dict[str, Any] = {
        "python": platform.python_version(), "machine": platform.machine(),
        "codec": {v: bench_codec(v, min_time_s=min_time_s) for v in ("f4", "u2")},
        "pty": {v: [bench_pty(b, duration_s, v) for b in BAUD_RATES] for v in ("f4", "u2")},
    }
    for variant in ("f4", "u2"):
        codec = results["codec"][variant]
        fastest_line = max(BAUD_RATES) / 10
        codec["decoder_faster_than_line_rate_921600"] = codec["decode_to_message_bytes_per_s"] > fastest_line
        codec["decoder_speedup_over_line_rate_921600"] = codec["decode_to_message_bytes_per_s"] / fastest_line
    out["bridge"] = results
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the serial-bridge benchmark from the command line; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=pathlib.Path, help="write the results to this file")
    parser.add_argument("--quick", action="store_true", help="shorter timings")
    args = parser.parse_args(argv)
    out: dict = {}
    run(out, quick=args.quick)
    text = json.dumps(out, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
