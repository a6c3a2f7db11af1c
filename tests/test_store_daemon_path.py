"""The daemon's answering path with a store, in process (no sockets): one transaction per micro-batch, resends, an
instrument calibration, and a disk that stays full for several retry intervals (docs/store.md)."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import numpy as np
import pytest

from edge.ack_input import Received
from edge.calibration import Calibration
from edge.daemon import Daemon, DaemonConfig
from edge.data import load_spectra
from edge.hygiene import InstrumentConfig
from edge.wire import encode_spectrum
from trainer.eval_instruments import MessageCapture


class _Acks:
    """Stands in for the acknowledged input's socket: keeps (id, status) of every ack."""

    def __init__(self) -> None:
        self.acks: list[tuple[str, str]] = []

    def acknowledge(self, items: Any, store: Any) -> None:
        for it in items:
            status = "duplicate" if it.duplicate_of is not None else "stored" if it.row is not None else "not_stored"
            self.acks.append((it.spectrum.id, status))


class _FullDisk:
    """A connection whose writes fail while ``full`` (SQLite's own error for a full disk)."""

    full = False

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, *args: Any) -> Any:
        if _FullDisk.full and sql.startswith("BEGIN"):
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def test_a_calibrated_instruments_spectra_are_stored_answered_and_linked(synthetic_bundle, tmp_path):
    """With a calibration each spectrum is classified as a copy on its calibrated axis: its answer must still be
    linked to its stored row (a rejection after calibration once stopped the daemon with a KeyError)."""
    cal = tmp_path / "cal.json"
    Calibration("probe-1", 785.0, [0.6, 1e-4], (600.0, 1600.0), calibration_id="c").save(cal)
    store = tmp_path / "s.sqlite"
    d = Daemon(DaemonConfig(bundle=str(synthetic_bundle), store=str(store)),
               instrument=InstrumentConfig(calibration=str(cal), laser_nm=785.0))
    d.backend.__enter__()
    good = load_spectra("synthetic:test").intensities[0].astype(np.float32)
    frames = [encode_spectrum(good, id="good"),
              encode_spectrum(np.ones(101, np.float32), np.linspace(600.0, 700.0, 101), id="narrow")]
    pub = MessageCapture()
    d._process(frames, pub)  # type: ignore[arg-type]
    d.join_drift(pub)
    assert sorted((t, p["id"]) for t, p in pub.messages) == [("error", "narrow"), ("prediction", "good")]
    db = sqlite3.connect(store)
    assert db.execute("SELECT spectrum_id, answered FROM spectra ORDER BY row").fetchall() == [("good", 1), ("narrow", 1)]
    assert db.execute("SELECT r.topic, s.spectrum_id FROM results r JOIN spectra s ON s.row = r.spectrum_row "
                      "ORDER BY r.row").fetchall() == [("error", "narrow"), ("prediction", "good")]
    assert d._store is not None and d._store.pending(10) == []
    d._store.close()
    d.backend.close()


@pytest.mark.parametrize("retry_s", [0.2])
def test_while_the_disk_stays_full_an_acknowledged_spectrum_is_classified_only_once_stored(synthetic_bundle, tmp_path,
                                                                                          retry_s):
    d = Daemon(DaemonConfig(bundle=str(synthetic_bundle), store=str(tmp_path / "s.sqlite"),
                            store_options={"retry_s": retry_s}))
    d.backend.__enter__()
    assert d._store is not None
    acks = _Acks()
    d._acks = acks  # type: ignore[assignment]
    d._store._conn = _FullDisk(d._store._conn)  # type: ignore[assignment,arg-type]
    spectra = load_spectra("synthetic:test").intensities[:4].astype(np.float32)
    pub = MessageCapture()

    def send(i: int) -> None:
        d._process([], pub, acked=[Received([b"peer"], encode_spectrum(spectra[i], id=f"s{i}"))])

    try:
        _FullDisk.full = True
        send(0)  # the commit fails after classifying: published, acknowledged not_stored (the documented corner)
        send(1)  # within the retry interval: not classified
        time.sleep(retry_s * 1.5)
        send(2)  # the retry: stored first, which fails again: not classified
        time.sleep(retry_s * 1.5)
        send(3)
        _FullDisk.full = False
        time.sleep(retry_s * 1.5)
        for i in range(4):  # the sender resends what was not stored
            send(i)
    finally:
        _FullDisk.full = False
    predicted = [p["id"] for t, p in pub.messages if t == "prediction"]
    assert sorted(predicted) == ["s0", "s0", "s1", "s2", "s3"]  # s1-s3 once; s0 also before its failed commit
    assert acks.acks == [(f"s{i}", "not_stored") for i in range(4)] + [(f"s{i}", "stored") for i in range(4)]
    assert d._store.error is None and d._store.pending(10) == []
    d._store.close()
    d.backend.close()
