"""``edge-bench crash``: SIGKILL the daemon under a flood of acknowledged spectra, restart it, count what is lost.

A seeded run (issue #17, "Done when"): the real ``edge-daemon`` runs as a subprocess with a store, the acknowledged
input and an output on fixed free 127.0.0.1 ports. A thread of this process floods ``kills * per_kill`` spectra
(``rruff_soysal/raw_test``, repeated; ``synthetic:test`` without the data folder) through the acknowledged input
with the project's sender (:class:`edge.client.AckedSender`, default settings but for ``block_timeout_s``). Kill
``k`` happens at a seeded random point of the ``k``-th block of ``per_kill`` spectra (once the restarted daemon's status has
reached the subscriber, so every kill hits a serving daemon), after a seeded delay of 0–20 ms; the daemon is
restarted at once on the same store and endpoints. At the end the sender flushes (every spectrum acknowledged),
the daemon is stopped with SIGTERM (drain), and the store, the ground truth, is read:

* ``lost``: spectra sent and never predicted; ``duplicated``: spectra predicted more than once;
* ``seq_reused``: ``seq`` values given to two different predictions, in the store or as seen by the subscriber;
* ``subscriber_missing`` / ``subscriber_duplicated``: predictions in the store that a subscriber connected
  throughout (:class:`edge.client.PredictionSubscriber`, with catch-up from ``seq`` 0 when this code base has it:
  :data:`HAS_CATCHUP`, ``subscriber_catch_up`` in the result; live only otherwise) did not see, or saw more than
  once;
* throughput: ``spectra_per_s`` (per second of flood, restarts included), ``serving_spectra_per_s`` (acknowledged
  per second while a daemon served, restarts excluded); wall time.

Run ``python -m bench.bench_crash --bundle DIR --kills 20 --json PATH`` or ``edge-bench crash``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from edge.client import AckedSender, PredictionSubscriber
from edge.daemon import DaemonConfig
from edge.data import SpectraSet, load_spectra
from edge.errors import ConfigError, DataError, EdgeError
from edge.store import open_for_reading

INSTRUMENT = "crash-bench"
START_TIMEOUT_S = 120.0
#: Catch-up (issue #17's catch-up branch): the daemon's ``catchup`` endpoint and ``PredictionSubscriber(catchup=)``.
HAS_CATCHUP = ("catchup" in DaemonConfig.__dataclass_fields__
               and "catchup" in inspect.signature(PredictionSubscriber).parameters)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spectra(data: str) -> SpectraSet:
    try:
        return load_spectra(data)
    except DataError:
        return load_spectra("synthetic:test")


class _Flood(threading.Thread):
    """Send ``total`` spectra through an :class:`AckedSender`, then flush; progress readable from other threads."""

    def __init__(self, endpoint: str, spectra: SpectraSet, total: int, flush_timeout_s: float) -> None:
        super().__init__(name="crash-flood", daemon=True)
        self.endpoint, self.spectra, self.total, self.flush_timeout_s = endpoint, spectra, total, flush_timeout_s
        self.sent = 0
        self.counts: dict[str, int] = {}
        self.unacknowledged = -1
        self.error: str | None = None
        self.started = self.finished = 0.0

    def acked(self) -> int:
        c = self.counts
        return c.get("stored", 0) + c.get("duplicate", 0) + c.get("rejected", 0)

    def run(self) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        tx = AckedSender(self.endpoint, ctx, block_timeout_s=START_TIMEOUT_S)
        self.counts = tx.counts  # the sender's own counters, read live by the kill loop
        x, axis, n = self.spectra.intensities.astype(np.float32), self.spectra.raman_shift_cm1, len(self.spectra)
        self.started = time.monotonic()
        try:
            for i in range(self.total):
                tx.send(x[i % n], axis, id=f"c{i:07d}", instrument_id=INSTRUMENT, instrument_seq=i)
                self.sent = i + 1
            self.unacknowledged = tx.flush(self.flush_timeout_s)
        except EdgeError as exc:
            self.error = str(exc)
            self.unacknowledged = tx.in_flight
        finally:
            self.finished = time.monotonic()
            tx.close(0)
            ctx.term()


class _Watcher(threading.Thread):
    """A subscriber that stays connected throughout: every prediction's (id, seq) as it arrives."""

    def __init__(self, endpoint: str, catchup: str | None) -> None:
        super().__init__(name="crash-subscriber", daemon=True)
        self.endpoint, self.catchup = endpoint, catchup
        self.stats: dict[str, int] = {}
        self.seen: list[tuple[str, int]] = []
        self.generation = 0  # daemons heard from: +1 when a status names a later start time (a restarted daemon)
        self._started_ns = 0
        self.stop = threading.Event()

    def run(self) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        # with catch-up: from seq 0, every prediction the store keeps, exactly once, whatever the restarts
        extra: dict[str, Any] = {"catchup": self.catchup, "after_seq": 0} if self.catchup else {}
        rx = PredictionSubscriber(self.endpoint, topics=("prediction", "status"), context=ctx, **extra)
        try:
            while not self.stop.is_set():
                got = rx.recv(timeout_s=0.1)
                if got is None:
                    continue
                if got[0] == "prediction":
                    self.seen.append((got[1]["id"], got[1]["seq"]))
                elif got[0] == "status":
                    started_ns = int(got[1]["time_ns"] - got[1]["uptime_s"] * 1e9)
                    if started_ns > self._started_ns + 200_000_000:  # the same daemon: equal within rounding
                        self.generation += 1
                        self._started_ns = started_ns
        finally:
            self.stats = dict(getattr(rx, "stats", {}))
            rx.close()
            ctx.term()


class _Daemon:
    """The ``edge-daemon`` subprocess on fixed endpoints; its log goes to one file per start."""

    def __init__(self, bundle: Path, store: Path, ack: str, output: str, catchup: str | None, log_dir: Path) -> None:
        self.cmd = [sys.executable, "-m", "edge.cli", "--bundle", str(bundle), "--input", "", "--ack-input", ack,
                    "--output", output, "--store", str(store), "--instrument-grid", "bundle", "--quiet"]
        if catchup:
            self.cmd += ["--catchup", catchup]
        self.log_dir = log_dir
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        with open(self.log_dir / f"daemon-{self.starts:02d}.log", "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            log = (self.log_dir / f"daemon-{self.starts:02d}.log").read_text(errors="replace")[-2000:]
            raise ConfigError(f"edge-daemon exited with {self.proc.returncode} (start {self.starts}): {log}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9


def _wait(cond: Any, timeout_s: float, what: str, daemon: _Daemon, flood: _Flood) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        daemon.check_alive()
        if flood.error is not None:
            raise ConfigError(f"the sender failed: {flood.error}")
        if time.monotonic() > deadline:
            raise ConfigError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.005)


def _ground_truth(store: Path) -> tuple[Counter[str], dict[int, set[str]], dict[str, int]]:
    """Predictions per id, ids per seq, and other figures, from the store."""
    db = open_for_reading(store)
    per_id: Counter[str] = Counter()
    per_seq: dict[int, set[str]] = {}
    replayed = mismatched = 0
    for seq, payload in db.execute("SELECT seq, payload FROM results WHERE topic = 'prediction'"):
        msg = msgpack.unpackb(payload, raw=False)
        per_id[msg["id"]] += 1
        per_seq.setdefault(int(msg["seq"]), set()).add(msg["id"])
        replayed += bool(msg.get("replayed"))
        mismatched += int(msg["seq"]) != seq
    other = {
        "replayed": replayed, "seq_column_mismatch": mismatched,
        "errors": db.execute("SELECT count(*) FROM results WHERE topic = 'error'").fetchone()[0],
        "spectra_rows": db.execute("SELECT count(*) FROM spectra").fetchone()[0],
        "unanswered_rows": db.execute("SELECT count(*) FROM spectra WHERE answered = 0").fetchone()[0],
        "last_seq": int(db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0]),
    }
    db.close()
    return per_id, per_seq, other


def run(bundle: str | Path, kills: int = 20, per_kill: int = 2000, seed: int = 0,
        data: str = "rruff_soysal/raw_test.npz", work_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the crash benchmark.

    Parameters
    ----------
    bundle : path-like
        Model bundle the daemon serves.
    kills : int
        SIGKILLs (≥ 1); the daemon is restarted after each.
    per_kill : int
        Spectra flooded per kill (≥ 10); ``kills * per_kill`` in all.
    seed : int
        Seed of the kill points and delays.
    data : str
        Spectra to send (:func:`edge.data.load_spectra`; ``synthetic:test`` when it cannot be read).
    work_dir : path-like, optional
        Folder for the store and the daemon logs (default: a temporary folder, deleted afterwards).

    Returns
    -------
    dict
        ``lost``, ``duplicated``, ``seq_reused``, ``subscriber_missing``, ``subscriber_duplicated``, throughput,
        per-kill details (module docstring).

    Raises
    ------
    ConfigError
        Bad arguments, or the daemon or the sender failed (with the daemon's log tail).
    """
    if kills < 1 or per_kill < 10:
        raise ConfigError(f"--kills must be ≥ 1 and --per-kill ≥ 10, got {kills} and {per_kill}")
    rng = np.random.default_rng(seed)
    spectra = _spectra(data)
    tmp = Path(tempfile.mkdtemp(prefix="edge-crash-")) if work_dir is None else Path(work_dir)
    tmp.mkdir(parents=True, exist_ok=True)
    store = tmp / "store.sqlite"
    if store.exists():
        raise ConfigError(f"{store} exists: the crash run needs a new store")
    ack, out = f"tcp://127.0.0.1:{_free_port()}", f"tcp://127.0.0.1:{_free_port()}"
    catchup = f"tcp://127.0.0.1:{_free_port()}" if HAS_CATCHUP else None
    daemon = _Daemon(Path(bundle), store, ack, out, catchup, tmp)
    total = kills * per_kill
    flood = _Flood(ack, spectra, total, flush_timeout_s=600.0)
    watcher = _Watcher(out, catchup)
    t0 = time.monotonic()
    kill_log: list[dict[str, Any]] = []
    try:
        daemon.start()
        watcher.start()
        flood.start()
        for k in range(kills):
            started = time.monotonic()  # the daemon is serving once its status reaches the subscriber
            _wait(lambda: watcher.generation >= daemon.starts, START_TIMEOUT_S, f"daemon start {daemon.starts}",
                  daemon, flood)
            serving, acked_serving = time.monotonic(), flood.acked()
            up_s = serving - started
            target = k * per_kill + int(rng.integers(0, per_kill))
            _wait(lambda t=target: flood.sent >= t, START_TIMEOUT_S * 5, f"spectrum {target} to be sent", daemon,
                  flood)
            time.sleep(float(rng.uniform(0.0, 0.02)))
            sent, acked = flood.sent, flood.acked()
            daemon.kill()
            kill_log.append({"kill": k + 1, "sent": sent, "acknowledged": acked, "in_flight": sent - acked,
                             "serving_after_start_s": round(up_s, 2), "served_s": round(time.monotonic() - serving, 3),
                             "acknowledged_while_serving": acked - acked_serving})
            daemon.start()
        _wait(lambda: not flood.is_alive(), 900.0, "the sender to send and flush everything", daemon, flood)
        flood.join()
        # the last start serves before it is stopped (a kill after everything was acknowledged left nothing to wait
        # for: SIGTERM then came before the daemon had installed its handler, and it died of it)
        _wait(lambda: watcher.generation >= daemon.starts, START_TIMEOUT_S, f"daemon start {daemon.starts}", daemon,
              flood)
        # the last acknowledged micro-batch is classified after its ack; a catching-up subscriber needs the daemon
        deadline = time.monotonic() + (120.0 if HAS_CATCHUP else 2.0)
        while len({sid for sid, _ in watcher.seen}) < flood.sent and time.monotonic() < deadline:
            time.sleep(0.05)
        exit_code = daemon.stop()
        time.sleep(0.5)
    finally:
        watcher.stop.set()
        daemon.kill()
        watcher.join(5)
        flood.join(1)
    wall_s = time.monotonic() - t0
    per_id, per_seq, other = _ground_truth(store)
    sent_ids = [f"c{i:07d}" for i in range(flood.sent)]
    live = Counter(sid for sid, _ in watcher.seen)
    for sid, seq in watcher.seen:
        per_seq.setdefault(seq, set()).add(sid)
    flood_s = flood.finished - flood.started
    result = {
        "kills": kills, "per_kill": per_kill, "seed": seed, "data": spectra.source, "bundle": str(bundle),
        "sent": flood.sent, "unacknowledged": flood.unacknowledged, "sender_error": flood.error,
        "lost": sum(1 for s in sent_ids if per_id[s] == 0),
        "duplicated": sum(1 for s in sent_ids if per_id[s] > 1),
        "seq_reused": sum(1 for ids in per_seq.values() if len(ids) > 1),
        "subscriber_catch_up": HAS_CATCHUP, "subscriber_stats": watcher.stats,
        "subscriber_missing": sum(1 for s in per_id if live[s] == 0),
        "subscriber_duplicated": sum(1 for s in per_id if live[s] > 1),
        "subscriber_seen": len(watcher.seen),
        "predicted": sum(per_id.values()), **other,
        "sender": dict(flood.counts), "daemon_starts": daemon.starts, "final_exit_code": exit_code,
        "flood_seconds": round(flood_s, 1), "wall_seconds": round(wall_s, 1),
        "spectra_per_s": round(flood.sent / flood_s, 1) if flood_s > 0 else None,
        # acknowledged per second while a daemon served (from its first status to its kill): the rate without restarts
        "serving_spectra_per_s": round(sum(k["acknowledged_while_serving"] for k in kill_log)
                                       / max(1e-9, sum(k["served_s"] for k in kill_log)), 1),
        "mean_restart_s": round(float(np.mean([k["serving_after_start_s"] for k in kill_log[1:]]))
                                if len(kill_log) > 1 else 0.0, 2),
        "kill_points": kill_log, "load_average": list(os.getloadavg()), "cpus": os.cpu_count(),
    }
    if work_dir is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.bench_crash --bundle DIR [--kills 20] [--per-kill 2000] [--seed 0] [--json PATH]``."""
    ap = argparse.ArgumentParser(prog="python -m bench.bench_crash", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--per-kill", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    result = run(args.bundle, args.kills, args.per_kill, args.seed)
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
