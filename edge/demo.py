"""``edge-demo``: the main job in one command.

Builds (or reuses) a bundle, exports INT8, starts ``edge-daemon`` as its own process, streams spectra from a
simulated instrument over ZeroMQ, subscribes, prints live predictions and ends with a summary (sent,
received, lost, rejected, top-1, end-to-end latency p50/p99 in ms, throughput), optionally as JSON.

With ``--serial`` the instrument is :class:`firmware_bridge.simulator.SimulatedInstrument` on a pseudo-terminal
(in this process) and the daemon reads it with ``--serial <pty> --input ''``; ``--line-faults`` damages the
line (1 % bit flips and 1 % dropped bytes per frame, two disconnects), which the link repairs by resending.

Training and export run as subprocesses (``python -m trainer`` / ``python -m export``), so this onboard
package never imports torch: on a device without the ``[train]`` extra, pass ``--bundle`` of a ready bundle.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from firmware_bridge.simulator import FaultConfig, SimulatedInstrument

from .backends import OnnxRuntimeBackend
from .bundle import Bundle
from .cli_common import (
    CliParser,
    existing_dir,
    non_negative_float,
    positive_float,
    positive_int,
    require_extra,
    run_cli,
)
from .client import PredictionSubscriber, SpectrumSender
from .data import SpectraSet, load_spectra
from .demo_view import LiveView
from .errors import BundleError, ConfigError, EdgeError
from .preprocess import Preprocessor

__all__ = ["main", "run_demo"]

#: Optimiser steps for the synthetic demo model (12 well-separated classes learn fast).
SYNTHETIC_STEPS = 400


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], what: str) -> list[str]:
    """Run a step as a subprocess; returns its output lines (a failure: one EdgeError line, the step's own error)."""
    print(f"[demo] {what}: {' '.join(cmd[2:])}", flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    if proc.returncode != 0:
        last = next((line for line in reversed(lines) if "error:" in line), lines[-1] if lines else "no output")
        raise EdgeError(f"{what} failed (exit {proc.returncode}): {last.split('error:', 1)[-1].strip()}")
    return lines


def ensure_bundle(bundle_dir: Path, train: str, test: str, steps: int | None, data_dir: str | None,
                  force: bool = False) -> Bundle:
    """Reuse ``bundle_dir`` when it holds an INT8 model trained on ``train``; else train and export it.

    ``force`` lets the training replace another bundle in ``bundle_dir`` (the demo's own work folder); without
    it, a different bundle there is an error (edge-train refuses to overwrite it).

    Raises
    ------
    ConfigError
        If a bundle must be trained and torch (the ``[train]`` extra) is not installed.
    EdgeError
        If training or export fails (the step's own error line).
    """
    try:
        b = Bundle.load(bundle_dir)
        if b.has_file("model.int8.onnx") and b.manifest.get("training", {}).get("train_source", "").endswith(
                train.split("/")[-1]):
            print(f"[demo] reusing bundle {bundle_dir} ({b.model_id})", flush=True)
            return b
    except BundleError:
        pass
    require_extra("torch", "export", "edge-demo (it trains and exports a bundle; on a device, pass --bundle DIR "
                  "--no-train with a bundle built on a workstation)")
    require_extra("onnx", "export", "edge-demo")
    py = sys.executable
    extra = ["--data-dir", data_dir] if data_dir else []
    cmd = [py, "-m", "trainer", "--train", train, "--test", test, "--out", str(bundle_dir), "--no-progress", "-q", *extra]
    if steps:
        cmd += ["--steps", str(steps)]
    if force:
        cmd += ["--force"]
    print(f"[demo]   {_run(cmd, 'training')[-1]}", flush=True)
    out = _run([py, "-m", "export", str(bundle_dir), "--int8", "-q", *extra], "INT8 export")
    gate = next((line for line in out if line.startswith("INT8 gate")), out[-1] if out else "")
    print(f"[demo]   {gate}", flush=True)
    return Bundle.load(bundle_dir)


def start_daemon(bundle: Path, input_ep: str, output_ep: str, store: str | None,
                 serial: str | None = None, extra_args: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "edge", "--bundle", str(bundle), "--input", input_ep, "--output", output_ep, "-q"]
    if store:
        cmd += ["--store", store]
    if serial:
        cmd += ["--serial", serial]
    cmd += list(extra_args)  # e.g. --calibration FILE --laser-nm 785 (edge-bench latency, issue 15)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stream(spectra: SpectraSet, input_ep: str, output_ep: str, rate_hz: float, timeout_s: float,
           live: bool, ctx: zmq.Context[Any]) -> dict[str, Any]:
    """Send every spectrum as a simulated instrument and collect the daemon's answers."""
    n = len(spectra)
    preds: dict[str, dict[str, Any]] = {}
    errors: list[dict[str, Any]] = []
    recv_ns: dict[str, int] = {}
    done = threading.Event()
    view = LiveView(n, enabled=live)
    with PredictionSubscriber(output_ep, context=ctx) as rx:
        rx.wait_ready(timeout_s=30)

        def listen() -> None:
            deadline = time.monotonic() + timeout_s
            while len(preds) + len(errors) < n and time.monotonic() < deadline and not done.is_set():
                got = rx.recv(timeout_s=0.2)
                if got is None:
                    continue
                topic, msg = got
                if topic == "prediction":
                    recv_ns[msg["id"]] = time.time_ns()
                    preds[msg["id"]] = msg
                    view.prediction(msg, msg["id"])
                elif topic == "error":
                    errors.append(msg)

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        t_start = time.perf_counter()
        with SpectrumSender(input_ep, ctx) as tx:
            period = 1.0 / rate_hz if rate_hz > 0 else 0.0
            for i in range(n):
                if period:
                    while time.perf_counter() < t_start + i * period:
                        time.sleep(min(period, 0.0005))
                tx.send(spectra.intensities[i], spectra.raman_shift_cm1, id=f"spec-{i:05d}", instrument_seq=i,
                        instrument_id="simulated-instrument", label=str(spectra.labels[i]))
            t_sent = time.perf_counter()
            listener.join(timeout_s)
        done.set()
        t_end = time.perf_counter()
        view.close()
    lat = np.array([(recv_ns[k] - p["sent_ns"]) / 1e6 for k, p in preds.items()])
    daemon_ms = np.array([(p["published_ns"] - p["received_ns"]) / 1e6 for p in preds.values()])
    last_recv = max(recv_ns.values()) if recv_ns else 0
    return {"preds": preds, "errors": errors, "latency_ms": lat, "daemon_ms": daemon_ms,
            "send_seconds": t_sent - t_start, "seconds": t_end - t_start, "last_recv_ns": last_recv}


def _percentile(a: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile of ``a``, or None when ``a`` is empty."""
    return float(np.percentile(a, q)) if len(a) else None


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    """Train and export a bundle if needed, start the daemon and a simulated instrument, stream, and return the summary fields."""
    if args.no_train and not args.bundle:
        raise ConfigError("--no-train needs --bundle DIR (a ready bundle to serve)")
    work = Path(args.workdir)
    if not (args.bundle and args.no_train):  # the work folder holds the bundles the demo builds
        try:
            work.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--workdir {work}: cannot create it: {exc}") from exc
    if args.data:
        root = Path(args.data)
        train, test = str(root / "raw_train_labeled_40pct.npz"), str(root / "raw_test.npz")
        bundle_dir = Path(args.bundle or work / "bundle-rruff40")
        stream_set = test
    else:
        train, test, stream_set = "synthetic:train", "synthetic:test", "synthetic:stream"
        bundle_dir = Path(args.bundle or work / "bundle-synthetic")
    bundle = Bundle.load(args.bundle) if args.bundle and args.no_train else ensure_bundle(
        bundle_dir, train, test, args.steps or (None if args.data else SYNTHETIC_STEPS), args.data_dir,
        force=not args.bundle)
    spectra = load_spectra(stream_set, bundle.grid, args.data_dir)
    if args.limit:
        spectra = spectra.subset(slice(0, args.limit))
    if getattr(args, "serial", False):
        return run_serial_demo(args, bundle, spectra)
    input_ep = f"tcp://127.0.0.1:{_free_port()}"
    output_ep = f"tcp://127.0.0.1:{_free_port()}"
    print(f"[demo] starting edge-daemon on {input_ep} → {output_ep}", flush=True)
    proc = start_daemon(bundle.path, input_ep, output_ep, args.store)
    ctx = zmq.Context()
    try:
        res = stream(spectra, input_ep, output_ep, args.rate, args.timeout, not args.no_live, ctx)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
        ctx.term()
    if proc.returncode != 0:
        raise EdgeError(f"edge-daemon exited with {proc.returncode}: {err.strip()[-600:]}")
    preds = res["preds"]
    ids = [f"spec-{i:05d}" for i in range(len(spectra))]
    correct = [preds[i]["labels"][0] == preds[i].get("label") for i in ids if i in preds]
    # Offline check: the same bundle and model through onnxruntime here must give the same top-1.
    model_path, precision = bundle.onnx_model("auto")
    with OnnxRuntimeBackend(model_path) as backend:
        x = Preprocessor(bundle.preprocessing)(spectra.intensities, spectra.raman_shift_cm1)
        offline = np.asarray(bundle.labels)[backend.infer(x)["probabilities"].argmax(1)]
    same = [preds[i]["labels"][0] == offline[k] for k, i in enumerate(ids) if i in preds]
    lat, dms = res["latency_ms"], res["daemon_ms"]
    summary = {
        "data": "rruff_soysal raw_test" if args.data else "synthetic",
        "bundle": str(bundle.path), "model_id": bundle.model_id, "precision": precision,
        "sent": len(spectra), "received": len(preds), "rejected": len(res["errors"]),
        "lost": len(spectra) - len(preds) - len(res["errors"]),
        "top1_accuracy": float(np.mean(correct)) if correct else None,
        "matches_offline": bool(all(same)) and len(same) == len(spectra),
        "offline_agreement": float(np.mean(same)) if same else None,
        "latency_ms": {"p50": _percentile(lat, 50), "p99": _percentile(lat, 99), "max": float(lat.max()) if len(lat) else None},
        "daemon_processing_ms": {"p50": _percentile(dms, 50), "p99": _percentile(dms, 99)},
        "throughput_spectra_per_s": len(preds) / res["seconds"] if res["seconds"] > 0 else None,
        "send_rate_hz": args.rate, "seconds": res["seconds"], "daemon_exit_code": proc.returncode,
    }
    return summary


def demo_line_faults(n_spectra: int, seed: int = 7) -> FaultConfig:
    """Line damage of ``edge-demo --serial --line-faults``.

    Parameters
    ----------
    n_spectra : int
        Spectra streamed; the disconnects come after 1/3 and 2/3 of them.
    seed : int, optional
        Seed of the fault generator (7 damages frames early in the run).

    Returns
    -------
    FaultConfig
        1 % bit flips and 1 % dropped bytes per frame, two 0.2 s disconnects.
    """
    return FaultConfig(bit_flip_rate=0.01, drop_byte_rate=0.01, disconnect_down_s=0.2, seed=seed,
                       disconnect_after_frames=tuple(sorted({max(1, n_spectra // 3), max(1, 2 * n_spectra // 3)})))


def stream_serial(spectra: SpectraSet, bundle: Path, rate_hz: float, timeout_s: float, live: bool, ctx: zmq.Context[Any],
                  *, faults: FaultConfig | None = None, store: str | None = None,
                  instrument_id: str = "simulated-instrument") -> dict[str, Any]:
    """Stream ``spectra`` from a simulated instrument on a pty into ``edge-daemon --serial`` and collect the answers.

    Parameters
    ----------
    spectra : SpectraSet
        Spectra to send, in order; spectrum ``i`` gets instrument sequence number ``i``.
    bundle : Path
        Model bundle the daemon serves.
    rate_hz : float
        Spectra per second the instrument acquires (≤ 0: as fast as the link reads them).
    timeout_s : float
        Longest wait for every spectrum to be classified or reported lost, in seconds.
    live : bool
        Print each prediction.
    ctx : zmq.Context
    faults : FaultConfig, optional
        Line damage (default: none).
    store : str, optional
        Daemon store file (SQLite; docs/store.md).
    instrument_id : str, optional

    Returns
    -------
    dict
        ``preds`` and ``recv_ns`` keyed by instrument sequence number, ``lost`` {seq: reason} (error topic,
        reason "lost"), ``errors`` (other rejections), ``links`` (link events), ``final_status``,
        ``latency_ms`` (instrument acquisition → prediction received), ``daemon_ms``, ``seconds`` (first
        acquisition → last answer), ``simulator`` counters, ``daemon_exit_code``, ``daemon_stderr``.

    Raises
    ------
    EdgeError
        If the daemon does not come up within 30 s.
    """
    n = len(spectra)
    axis = np.asarray(spectra.raman_shift_cm1, dtype=np.float32)
    acquired_ns = np.zeros(n, dtype=np.int64)

    def source() -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
        for i in range(n):
            acquired_ns[i] = time.time_ns()
            yield axis, spectra.intensities[i], {"sample_label": str(spectra.labels[i]),
                                                 "acquisition_time_ns": int(acquired_ns[i])}

    preds: dict[int, dict[str, Any]] = {}
    recv_ns: dict[int, int] = {}
    lost: dict[int, str] = {}
    errors: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    final: dict[str, Any] | None = None
    view = LiveView(n, enabled=live)
    # The pty exists from here on; the instrument streams only after sim.start() and the link's HELLO, so no
    # spectrum is published before the subscription below is live.
    sim = SimulatedInstrument(source(), transport="pty", rate_hz=rate_hz if rate_hz > 0 else None,
                              ring_size=max(256, min(n, 4096)), faults=faults or FaultConfig(),
                              heartbeat_interval_s=0.2, instrument_id=instrument_id, record_sent=False)
    print(f"[demo] simulated instrument on {sim.url}", flush=True)
    output_ep = f"tcp://127.0.0.1:{_free_port()}"
    proc = start_daemon(bundle, "", output_ep, store, serial=sim.url)
    t_start = t_end = time.perf_counter()
    terminated = False
    try:
        with PredictionSubscriber(output_ep, topics=("prediction", "error", "status", "link"), context=ctx) as rx:
            rx.wait_ready(timeout_s=30)
            t_start = time.perf_counter()
            sim.start()
            deadline = time.monotonic() + timeout_s
            while len(preds) + len(lost) + len(errors) < n and time.monotonic() < deadline and proc.poll() is None:
                got = rx.recv(timeout_s=0.2)
                if got is None:
                    continue
                topic, msg = got
                if topic == "prediction":
                    seq = msg["instrument_seq"]
                    recv_ns[seq], preds[seq] = time.time_ns(), msg
                    t_end = time.perf_counter()
                    view.prediction(msg, f"seq {seq}")
                elif topic == "error" and msg.get("reason") == "lost":
                    lost[msg["instrument_seq"]] = msg["detail"]
                    t_end = time.perf_counter()
                    view.lost_spectrum(f"seq {msg['instrument_seq']}: {msg['detail']}")
                elif topic == "error":
                    errors.append(msg)
                elif topic == "link":
                    links.append(msg)
                    view.event(f"link {msg['state']}: {msg.get('reason', '')}")
            view.close()
            proc.send_signal(signal.SIGTERM)  # drains, publishes its final status (with the link counters), exits
            terminated = True
            deadline = time.monotonic() + 20
            while final is None and time.monotonic() < deadline and proc.poll() is None:
                got = rx.recv(timeout_s=0.2)
                if got is not None and got[0] == "status" and got[1].get("final"):
                    final = got[1]
    finally:
        if not terminated and proc.poll() is None:  # once only: a second SIGTERM would kill it while exiting
            proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        sim.stop()
    lat = np.array([(recv_ns[k] - acquired_ns[k]) / 1e6 for k in preds])
    daemon_ms = np.array([(p["published_ns"] - p["received_ns"]) / 1e6 for p in preds.values()])
    return {"preds": preds, "recv_ns": recv_ns, "lost": lost, "errors": errors, "links": links, "final_status": final,
            "latency_ms": lat, "daemon_ms": daemon_ms, "seconds": t_end - t_start, "simulator": sim.stats(),
            "daemon_exit_code": proc.returncode, "daemon_stderr": err}


def run_serial_demo(args: argparse.Namespace, bundle: Bundle, spectra: SpectraSet) -> dict[str, Any]:
    """``edge-demo --serial``: the demo over a pty through the firmware_bridge link (see :func:`stream_serial`)."""
    n = len(spectra)
    faults = demo_line_faults(n) if args.line_faults else None
    ctx = zmq.Context()
    try:
        res = stream_serial(spectra, bundle.path, args.rate, args.timeout, not args.no_live, ctx, faults=faults,
                            store=args.store)
    finally:
        ctx.term()
    if res["daemon_exit_code"] != 0:
        raise EdgeError(f"edge-daemon exited with {res['daemon_exit_code']}: {res['daemon_stderr'].strip()[-600:]}")
    preds, lost = res["preds"], res["lost"]
    seqs = sorted(preds)
    correct = [preds[i]["labels"][0] == preds[i].get("label") for i in seqs]
    model_path, precision = bundle.onnx_model("auto")
    with OnnxRuntimeBackend(model_path) as backend:
        x = Preprocessor(bundle.preprocessing)(spectra.intensities, spectra.raman_shift_cm1)
        offline = np.asarray(bundle.labels)[backend.infer(x)["probabilities"].argmax(1)]
    same = [preds[i]["labels"][0] == offline[i] for i in seqs]
    lat, dms = res["latency_ms"], res["daemon_ms"]
    missing = n - len(set(preds) | set(lost)) - len(res["errors"])
    link = ((res["final_status"] or {}).get("serial") or {}).get("counters", {})
    return {
        "data": "rruff_soysal raw_test" if args.data else "synthetic", "transport": "serial (pty)",
        "bundle": str(bundle.path), "model_id": bundle.model_id, "precision": precision,
        "sent": int(res["simulator"].get("spectra_generated", 0)), "received": len(preds),
        "rejected": len(res["errors"]), "lost": len(lost) + max(0, missing), "lost_reported": len(lost),
        "top1_accuracy": float(np.mean(correct)) if correct else None,
        "matches_offline": bool(all(same)) and len(same) == n,
        "offline_agreement": float(np.mean(same)) if same else None,
        "latency_ms": {"p50": _percentile(lat, 50), "p99": _percentile(lat, 99), "max": float(lat.max()) if len(lat) else None},
        "daemon_processing_ms": {"p50": _percentile(dms, 50), "p99": _percentile(dms, 99)},
        "throughput_spectra_per_s": len(preds) / res["seconds"] if res["seconds"] > 0 else None,
        "send_rate_hz": args.rate, "seconds": res["seconds"], "daemon_exit_code": res["daemon_exit_code"],
        "line_faults": bool(args.line_faults),
        "link": {k: link.get(k) for k in ("frames_ok", "crc_errors", "cobs_errors", "length_errors", "connects",
                                          "seqs_missing", "seqs_recovered", "seqs_lost", "spectra_retransmitted")},
        "link_events": [m["state"] for m in res["links"]],
        "simulator": res["simulator"],
    }


def build_parser() -> argparse.ArgumentParser:
    """Build the ``edge-demo`` argument parser."""
    p = CliParser(prog="edge-demo", description="Train (or reuse) → INT8 → daemon → live stream → summary.")
    p.add_argument("--data", type=existing_dir, default=None,
                   help="folder of the paper's splits (rruff_soysal); default: synthetic spectra")
    p.add_argument("--data-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--bundle", default=None, help="bundle folder to use or create")
    p.add_argument("--no-train", action="store_true", help="use --bundle as it is")
    p.add_argument("--workdir", default="edge-demo-work", help="where bundles are built")
    p.add_argument("--steps", type=positive_int, default=None,
                   help=f"training steps (default: the model config's; {SYNTHETIC_STEPS} for synthetic data)")
    p.add_argument("--rate", type=non_negative_float, default=500.0, help="spectra per second sent (0: as fast as possible)")
    p.add_argument("--limit", type=positive_int, default=None, help="stream only the first N spectra")
    p.add_argument("--timeout", type=positive_float, default=60.0, help="seconds to wait for all predictions")
    p.add_argument("--store", default=None, help="daemon store file (SQLite; docs/store.md)")
    p.add_argument("--no-live", action="store_true", help="no live view (sample predictions and a progress line)")
    p.add_argument("--json", default=None, help="write the summary JSON here")
    p.add_argument("--serial", action="store_true",
                   help="stream over a pty from a simulated instrument (firmware_bridge protocol) into edge-daemon --serial")
    p.add_argument("--line-faults", action="store_true",
                   help="with --serial: 1 %% bit flips and dropped bytes per frame and two disconnects on the line")
    return p


def _fmt(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    """A figure of the summary, or "n/a" when there is none (e.g. nothing arrived)."""
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def demo_impl(argv: Sequence[str] | None = None) -> int:
    """``edge-demo``: run the demo and print its summary; returns 0, or 2 when spectra were lost or the daemon's
    answers differ from offline inference.
    """
    args = build_parser().parse_args(argv)
    if args.line_faults and not args.serial:
        raise ConfigError("--line-faults applies to --serial only")
    if args.json:
        _check_writable(Path(args.json))
    summary = run_demo(args)
    if summary["sent"] and not summary["received"]:
        raise EdgeError(f"no prediction arrived within --timeout {args.timeout:g} s ({summary['sent']} spectra sent, "
                        f"{summary['rejected']} rejected); is the daemon overloaded? try a longer --timeout")
    lat = summary["latency_ms"]
    acc = summary["top1_accuracy"]
    print(f"[demo] sent {summary['sent']}, received {summary['received']}, lost {summary['lost']}, "
          f"rejected {summary['rejected']}; top-1 {_fmt(None if acc is None else 100 * acc, '.1f', ' %')}; "
          f"matches offline onnxruntime: {summary['matches_offline']}")
    print(f"[demo] end-to-end latency p50 {_fmt(lat['p50'], '.2f', ' ms')}, p99 {_fmt(lat['p99'], '.2f', ' ms')}; "
          f"throughput {_fmt(summary['throughput_spectra_per_s'], '.0f')} spectra/s at a send rate of "
          f"{summary['send_rate_hz']:g}/s")
    if "link" in summary:
        link = summary["link"]
        print(f"[demo] serial link: {summary['lost_reported']} reported lost; CRC errors {link['crc_errors']}, "
              f"recovered by resend {link['seqs_recovered']}, connects {link['connects']}")
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
        except OSError as exc:
            raise ConfigError(f"--json {args.json}: cannot write: {exc}") from exc
        print(f"[demo] summary written to {args.json}")
    return 0 if summary["lost"] == 0 and summary["matches_offline"] else 2


def _check_writable(path: Path) -> None:
    """Refuse an output file whose folder does not exist or is not writable (before minutes of work)."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ConfigError(f"{path}: cannot write there (is a folder, or its folder is missing or not writable)")


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``edge-demo``: user errors print one ``error:`` line and exit 1."""
    return run_cli(demo_impl, argv, "edge-demo")


if __name__ == "__main__":
    sys.exit(main())
