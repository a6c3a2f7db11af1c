"""Serial crash run (issue 17): the daemon SIGKILLed mid-stream N times while a faulty instrument keeps streaming.

The simulated instrument runs in its own process (``edge-bridge simulate --tcp 0 --data ... --keep-unacked``):
custody mode (it keeps every spectrum until the daemon ACKs it and sends the unacknowledged ones again after every
HELLO and after :data:`UNACKED_RESEND_S`), with faults on the line (bit flips, dropped bytes, disconnects). The real
``edge-daemon --serial socket://... --store DB --input ''`` runs as a subprocess and is SIGKILLed at N seeded random
points (after a random number of new results since its start, plus a random delay), then restarted on the same
store. After the last restart it runs until every spectrum the instrument generated is answered, then both are
stopped with SIGTERM.

Reported, from the store's results (the source of truth) and the instrument's counters:

* ``lost``: spectra the instrument generated that have no prediction; ``duplicated``: spectra predicted more than
  once; ``seq_reused``: prediction ``seq`` values given to two predictions (in the store, or seen live by a
  subscriber across the restarts); all three should be 0;
* ``faults``: what the instrument injected (bit flips, dropped bytes, disconnects) and resent;
* ``spectra_per_s``: spectra answered per second over the run, kills and restarts included.

Run ``python -m bench.bench_crash_serial --kills N [--bundle DIR] [--json PATH]`` or
``edge-bench crash-serial --kills N --json PATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import msgpack
import numpy as np
import zmq

from edge.demo import _free_port
from edge.errors import EdgeError
from edge.store import StoreError, open_for_reading

INSTRUMENT_ID = "crash-serial"
UNACKED_RESEND_S = 5.0
"""The instrument's ACK timeout: an unacknowledged spectrum is sent again after it (a resend it made on its own after
a HELLO may be damaged on the line, and the host, which did not ask for it, cannot ask again). Long enough that the
backlog after a restart is answered first (else every resend is sent twice: congestion)."""


def _instrument(count: int, rate_hz: float, seed: int, disconnects: list[int], data: str | None) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "edge.bridge_cli", "simulate", "--tcp", "0", "--count", str(count),
           "--rate", str(rate_hz), "--seed", str(seed), "--instrument-id", INSTRUMENT_ID, "--heartbeat", "0.2",
           "--keep-unacked", "--max-unacked", str(max(8192, count)), "--unacked-resend-s", str(UNACKED_RESEND_S),
           "--bit-flip-rate", "0.01", "--drop-byte-rate", "0.01", "--disconnect-down-s", "0.3",
           "--disconnect-after", *map(str, disconnects)]
    if data:
        cmd[4:4] = ["--data", data]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _daemon(bundle: str, url: str, db: pathlib.Path, output: str, log: pathlib.Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen([sys.executable, "-m", "edge", "--bundle", bundle, "--input", "", "--output", output,
                                 "--serial", url, "--store", str(db), "-q"],
                                stdout=subprocess.DEVNULL, stderr=err)


def _check_alive(sim: subprocess.Popen[str]) -> None:
    if sim.poll() is not None:
        raise EdgeError(f"the instrument exited with {sim.returncode}: {sim.stderr.read()[-400:] if sim.stderr else ''}")


def _store_count(db: pathlib.Path, sql: str) -> int:
    """One integer the store holds (``sql`` selects it); 0 when there is no store file yet."""
    try:
        conn = open_for_reading(db)
    except StoreError:
        return 0
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def _results_row(db: pathlib.Path) -> int:
    """Highest ``results.row`` in the store (0 when there is none yet or the file is not there)."""
    return _store_count(db, "SELECT coalesce(max(row), 0) FROM results")


def _predicted_seqs(db: pathlib.Path) -> int:
    """Spectra the store holds a prediction for."""
    return _store_count(db, "SELECT count(DISTINCT spectrum_row) FROM results WHERE topic = 'prediction'")


class _LiveSeqs:
    """A subscriber that stays on the output endpoint across the restarts and records (seq, id) of predictions."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str) -> None:
        self.seen: dict[int, set[str]] = {}
        self._stop = threading.Event()
        self._sock = ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"prediction")
        self._sock.connect(endpoint)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(100):
                continue
            parts = self._sock.recv_multipart()
            msg = msgpack.unpackb(parts[-1])
            self.seen.setdefault(int(msg["seq"]), set()).add(str(msg["id"]))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close(linger=0)

    def reused(self) -> int:
        return sum(len(ids) > 1 for ids in self.seen.values())


def _analyse(db: pathlib.Path, count: int, session_id: int | None) -> dict[str, Any]:
    """Lost, duplicated and seq reuse from the store."""
    conn = open_for_reading(db)
    try:
        results = conn.execute("SELECT row, topic, seq, payload FROM results ORDER BY row").fetchall()
        first_ns, last_ns = conn.execute("SELECT min(created_ns), max(created_ns) FROM results "
                                         "WHERE topic = 'prediction'").fetchone()
        spectra = dict(conn.execute("SELECT source, count(*) FROM spectra GROUP BY source").fetchall())
        pending = conn.execute("SELECT count(*) FROM spectra WHERE answered = 0").fetchone()[0]
    finally:
        conn.close()
    predicted: Counter[int] = Counter()
    seqs: Counter[int] = Counter()
    replayed = 0
    lost_reported: Counter[str] = Counter()
    lost_reported_seqs: set[int] = set()
    rejected: Counter[str] = Counter()
    ids_ok = True
    last_seq, monotonic = 0, True
    for _, topic, seq, payload in results:
        msg = msgpack.unpackb(payload)
        if topic == "prediction":
            predicted[int(msg["instrument_seq"])] += 1
            seqs[int(seq)] += 1
            replayed += bool(msg.get("replayed"))
            monotonic &= int(seq) > last_seq
            last_seq = int(seq)
            if session_id is not None:
                ids_ok &= msg["id"] == f"{INSTRUMENT_ID}-{session_id}-{msg['instrument_seq']}"
        elif topic == "error":
            if msg.get("reason") == "lost":
                lost_reported[str(msg.get("detail")).split(":")[0]] += 1
                lost_reported_seqs.add(int(msg["instrument_seq"]))
            else:
                rejected[str(msg.get("reason"))] += 1
    sent = set(range(count))
    lost = sorted(sent - set(predicted))
    return {"sent": count, "predicted": len(set(predicted) & sent), "lost": len(lost), "lost_seqs": lost[:20],
            "duplicated": sum(n > 1 for n in predicted.values()), "seq_reused_in_store": sum(n > 1 for n in seqs.values()),
            "seq_increasing_in_store": monotonic, "replayed_predictions": replayed,
            "lost_reported_by_link": dict(lost_reported),
            "lost_reported_then_predicted": len(lost_reported_seqs & set(predicted)), "rejected": dict(rejected),
            "unexpected_predictions": sorted(set(predicted) - sent)[:20], "ids_match_session": ids_ok,
            "stored_spectra_by_source": spectra, "stored_unanswered": int(pending),
            "first_to_last_prediction_s": round((last_ns - first_ns) / 1e9, 2) if first_ns else None}


def run(bundle: str | pathlib.Path, kills: int = 20, seed: int = 0, rate_hz: float = 100.0,
        data: str | None = "rruff_soysal/raw_test.npz", keep_store: pathlib.Path | None = None) -> dict[str, Any]:
    """Stream from a faulty instrument into ``edge-daemon --serial --store`` and SIGKILL the daemon ``kills`` times.

    Parameters
    ----------
    bundle : path-like
        Model bundle the daemon serves.
    kills : int
        SIGKILLs of the daemon (each followed by a restart on the same store).
    seed : int
        Seeds the kill points, the instrument's faults and its disconnect points.
    rate_hz : float
        Spectra per second the instrument acquires.
    data : str or None
        Spectra file the instrument streams (repeated; None: the synthetic library).
    keep_store : path, optional
        Copy the store file here at the end.

    Returns
    -------
    dict
        ``lost``, ``duplicated``, ``seq_reused`` (targets 0), ``faults``, ``spectra_per_s``, the kill points, the
        instrument's counters.

    Raises
    ------
    EdgeError
        If the instrument or the daemon cannot be started, or the run does not finish within its time limit.
    """
    if kills < 0:
        raise EdgeError(f"--kills must be ≥ 0, got {kills}")
    rng = np.random.default_rng(seed)
    count = max(1000, int(rate_hz * max(kills, 1) * 4.0))  # about 4 s of acquisition per kill
    disconnects = sorted(int(x) for x in rng.choice(np.arange(50, count - 50), size=5, replace=False))
    work = pathlib.Path(tempfile.mkdtemp(prefix="crash-serial-"))
    db, log = work / "store.sqlite", work / "daemon.log"
    output = f"tcp://127.0.0.1:{_free_port()}"
    ctx: zmq.Context[Any] = zmq.Context()
    live = _LiveSeqs(ctx, output)
    sim = _instrument(count, rate_hz, seed, disconnects, data)
    procs: list[subprocess.Popen[Any]] = [sim]
    kill_points: list[dict[str, Any]] = []
    t0 = time.monotonic()
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().strip()
        if not url.startswith("socket://"):
            raise EdgeError(f"the instrument did not start: {url!r} {sim.stderr.read() if sim.stderr else ''}")
        for k in range(kills):
            start_row, started = _results_row(db), time.monotonic()
            daemon = _daemon(str(bundle), url, db, output, log)
            procs.append(daemon)
            after = int(rng.integers(1, 400))  # new results since this start, then a random delay
            delay_s = float(rng.uniform(0.0, 0.5))
            deadline = started + 60.0
            while _results_row(db) < start_row + after and time.monotonic() < deadline and daemon.poll() is None:
                _check_alive(sim)
                time.sleep(0.02)
            if daemon.poll() is not None:
                raise EdgeError(f"edge-daemon exited with {daemon.returncode} before kill {k + 1}; see {log}")
            time.sleep(delay_s)
            daemon.send_signal(signal.SIGKILL)
            daemon.wait()
            kill_points.append({"after_new_results": _results_row(db) - start_row, "delay_s": round(delay_s, 3),
                                "alive_s": round(time.monotonic() - started, 2)})
        daemon = _daemon(str(bundle), url, db, output, log)
        procs.append(daemon)
        deadline = time.monotonic() + 300.0
        while _predicted_seqs(db) < count and time.monotonic() < deadline and daemon.poll() is None:
            _check_alive(sim)
            time.sleep(0.1)
        t_done = time.monotonic()
        time.sleep(2.5)  # the last ACKs (and an unacked_resend_s round) reach the instrument
        sim.send_signal(signal.SIGTERM)
        _, sim_err = sim.communicate(timeout=30)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        live.close()
        ctx.term()
    try:
        instrument = json.loads(sim_err.strip().splitlines()[-1])
    except (ValueError, IndexError):
        instrument = {"error": sim_err[-400:]}
    found = _analyse(db, count, instrument.get("session_id"))
    daemon_log = log.read_text(errors="replace")
    if keep_store is not None:
        keep_store.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(db, keep_store)
    shutil.rmtree(work, ignore_errors=True)
    seconds = t_done - t0
    return {
        "python": platform.python_version(), "machine": platform.machine(), "bundle": str(bundle),
        "data": data or "synthetic library", "transport": "socket:// (TCP, the simulator in its own process)",
        "kills": kills, "seed": seed, "rate_hz": rate_hz, **found,
        "seq_reused": found["seq_reused_in_store"] + live.reused(), "seq_reused_live": live.reused(),
        "live_predictions_seen": sum(len(v) for v in live.seen.values()),
        "final_daemon_exit_code": daemon.returncode,
        "daemon_tracebacks": daemon_log.count("Traceback"),
        "faults": {k: instrument.get(k, 0) for k in ("fault_bit_flips", "fault_dropped_bytes", "disconnects",
                                                       "unacked_resent", "unacked_overflow")},
        "instrument_unacked_at_end": instrument.get("unacked"), "instrument": instrument,
        "seconds": round(seconds, 1), "spectra_per_s": round(found["predicted"] / seconds, 1) if seconds > 0 else None,
        "kill_points": kill_points, "disconnect_after": disconnects, "load_average": os.getloadavg(),
        "note": "lost = generated by the instrument and never predicted (store results); the line (TCP here, a UART "
                "on a rover) and the daemon restarts bound the rate, not the store",
    }


def main(argv: list[str] | None = None) -> int:
    """Run the serial crash benchmark from the command line; returns the exit code (1 when anything was lost)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="model bundle")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=100.0, help="spectra per second the instrument acquires")
    parser.add_argument("--json", type=pathlib.Path, help="write the results to this file")
    parser.add_argument("--keep-store", type=pathlib.Path, help="copy the daemon's store file here")
    args = parser.parse_args(argv)
    results = run(args.bundle, kills=args.kills, seed=args.seed, rate_hz=args.rate, keep_store=args.keep_store)
    text = json.dumps(results, indent=2, default=str)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0 if results["lost"] == results["duplicated"] == results["seq_reused"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
