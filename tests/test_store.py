"""The daemon's SQLite store (edge.store): dedup, replay, persisted seq, catch-up reads, retention, a full disk."""

from __future__ import annotations

import os
import sqlite3
import time

import msgpack
import pytest
from daemon_harness import RunningDaemon

from edge.daemon import DaemonConfig
from edge.data import load_spectra
from edge.errors import ConfigError
from edge.store import PRIORITY, Arrival, Store, StoreConfig, StoredResult, StoreError, open_for_reading
from edge.wire import encode_spectrum


def _arrival(i: int, instrument: str | None = "rover", accepted: bool = True, size: int = 100) -> Arrival:
    return Arrival(bytes([i % 251]) * size, "push", time.time_ns(), f"s{i}", instrument, accepted)


def _prediction(seq: int, row: int | None, priority: int = 0) -> StoredResult:
    return StoredResult("prediction", msgpack.packb({"seq": seq}), time.time_ns(), seq, row, priority)


def test_a_resent_spectrum_is_recognised_by_instrument_and_id(tmp_path):
    store = Store(StoreConfig(str(tmp_path / "s.sqlite")))
    first = store.admit([_arrival(1), _arrival(2), _arrival(1, instrument="lander")])
    assert [a.row for a in first] == [1, 2, 3]
    again = store.admit([_arrival(1), _arrival(1, accepted=False), _arrival(2, instrument=None)])
    assert again[0].row is None and again[0].duplicate_of == 1 and again[0].answered is False
    assert again[1].row == 4  # a rejected message is never a duplicate
    assert again[2].row == 5  # no instrument id: another identity
    store.record([_prediction(1, 1)], [(1, 0)])
    assert store.admit([_arrival(1)])[0].answered is True


def test_a_micro_batch_is_stored_answered_with_its_results_in_one_transaction(tmp_path):
    store = Store(StoreConfig(str(tmp_path / "s.sqlite"), max_rejected_frame_bytes=10))
    arrivals = [_arrival(1), _arrival(2), _arrival(3, accepted=False, size=50), _arrival(1)]
    err = StoredResult("error", msgpack.packb({"reason": "wire"}), time.time_ns(), None, None, PRIORITY["rejected"],
                       arrival=2)
    dup = StoredResult("error", msgpack.packb({"reason": "duplicate"}), time.time_ns(), None, None, PRIORITY["rejected"])
    novel = StoredResult("prediction", msgpack.packb({"seq": 2}), time.time_ns(), 2, None, PRIORITY["novel"], arrival=1)
    first = StoredResult("prediction", msgpack.packb({"seq": 1}), time.time_ns(), 1, None, 0, arrival=0)
    adm = store.write_batch(arrivals, [first, novel, err, dup])
    assert adm is not None and [(a.row, a.duplicate_of) for a in adm] == [(1, None), (2, None), (3, None), (None, 1)]
    assert store.last_seq == 2 and store.pending(10) == []  # nothing left to replay: stored answered
    db = sqlite3.connect(tmp_path / "s.sqlite")
    assert db.execute("SELECT row, answered, priority, truncated FROM spectra ORDER BY row").fetchall() == [
        (1, 1, 0, 0), (2, 1, PRIORITY["novel"], 0), (3, 1, PRIORITY["rejected"], 1)]
    assert db.execute("SELECT seq, topic, spectrum_row FROM results ORDER BY row").fetchall() == [
        (1, "prediction", 1), (2, "prediction", 2), (None, "error", 3), (None, "error", None)]
    assert db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone() == ("2",)
    db.close()
    # a resend in a later micro-batch: its results are linked to the row stored first, nothing new is stored
    again = store.write_batch([_arrival(1)], [StoredResult("error", b"\x80", time.time_ns(), None, None, 1, arrival=0)])
    assert again is not None and (again[0].row, again[0].duplicate_of, again[0].answered) == (None, 1, True)
    assert store.results_after(2)[0] == [("error", msgpack.packb({"reason": "wire"})),
                                         ("error", msgpack.packb({"reason": "duplicate"})), ("error", b"\x80")]


def test_seq_and_pending_spectra_survive_reopening(tmp_path):
    path = str(tmp_path / "s.sqlite")
    store = Store(StoreConfig(path))
    rows = [a.row for a in store.admit([_arrival(i) for i in range(5)])]
    store.record([_prediction(1, rows[0]), _prediction(2, rows[1])], [(rows[0], 0), (rows[1], 0)])
    store.close()
    again = Store(StoreConfig(path))
    assert again.last_seq == 2
    assert [p.row for p in again.pending(10)] == rows[2:]
    assert [p.row for p in again.pending(1, after_row=rows[2])] == [rows[3]]


def test_results_after_a_seq_come_in_publication_order_with_other_topics(tmp_path):
    store = Store(StoreConfig(str(tmp_path / "s.sqlite")))
    rows = [a.row for a in store.admit([_arrival(i) for i in range(4)])]
    err = StoredResult("error", msgpack.packb({"reason": "wire"}), time.time_ns(), None, None, PRIORITY["rejected"])
    store.record([_prediction(1, rows[0]), _prediction(2, rows[1]), err, _prediction(3, rows[2])])
    msgs, complete = store.results_after(1)
    assert complete and [t for t, _ in msgs] == ["prediction", "error", "prediction"]
    assert [msgpack.unpackb(p).get("seq") for _, p in msgs] == [2, None, 3]
    only, _ = store.results_after(0, topics=["prediction"], limit=2)
    assert [msgpack.unpackb(p)["seq"] for _, p in only] == [1, 2]
    assert store.results_after(3) == ([], True)


def test_retention_deletes_nominal_oldest_first_and_keeps_novel_and_pending(tmp_path):
    store = Store(StoreConfig(str(tmp_path / "s.sqlite"), max_bytes=400_000))
    rows = [a.row for a in store.admit([_arrival(i, size=4000) for i in range(300)])]
    novel = set(rows[:20])  # the oldest are novel: kept longest all the same
    answered = rows[:280]  # the last 20 have no result yet: never deleted
    store.record([_prediction(i + 1, r, PRIORITY["novel"] if r in novel else 0) for i, r in enumerate(answered)],
                 [(r, PRIORITY["novel"] if r in novel else 0) for r in answered])
    deleted = store.apply_retention()
    kept = {r for (r,) in store._conn.execute("SELECT row FROM spectra")}
    assert deleted > 0 and store.counts()["bytes"] <= 400_000
    assert novel <= kept and set(rows[280:]) <= kept
    nominal_kept = sorted(kept - novel - set(rows[280:]))
    assert nominal_kept == [r for r in answered if r not in novel][-len(nominal_kept):]  # the newest nominal ones
    assert store.results_after(0, ["prediction"])[0] and store.last_seq == 280


def test_retention_by_age(tmp_path):
    store = Store(StoreConfig(str(tmp_path / "s.sqlite"), max_age_s=60))
    old = Arrival(b"x", "push", time.time_ns() - 120 * 10**9, "old", "r")
    rows = [a.row for a in store.admit([old, _arrival(1)])]
    store.record([], [(r, 0) for r in rows])
    store.apply_retention()
    assert [r for (r,) in store._conn.execute("SELECT row FROM spectra")] == [rows[1]]


def test_a_file_that_is_not_a_store_is_refused(tmp_path):
    (tmp_path / "x.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="cannot use"):
        Store(StoreConfig(str(tmp_path / "x.sqlite")))
    db = sqlite3.connect(tmp_path / "v9.sqlite")
    db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT); INSERT INTO meta VALUES ('schema_version', '9');")
    db.close()
    with pytest.raises(StoreError, match="schema version 9"):
        Store(StoreConfig(str(tmp_path / "v9.sqlite")))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_raises_the_alarm_and_counts_what_is_not_stored():
    store = Store(StoreConfig("/dev/full", retry_s=0.01))
    assert store.status()["store"]["alarm"] is True
    assert [a.row for a in store.admit([_arrival(1), _arrival(2)])] == [None, None]
    time.sleep(0.02)
    assert store.record([_prediction(1, None)]) is False
    assert store.not_stored == 3
    time.sleep(0.02)
    assert store.writable() is True  # its retry is due
    assert store.write_batch([_arrival(3)], [_prediction(2, None)]) is None and store.not_stored == 5
    assert store.writable() is False  # until retry_s has passed


def test_store_settings_are_checked():
    with pytest.raises(ConfigError, match="unknown store option"):
        DaemonConfig.from_dict({"store": "x.sqlite", "store_options": {"max_megabytes": 3}})
    with pytest.raises(ConfigError, match="no store file"):
        DaemonConfig.from_dict({"store_options": {"max_bytes": 3}})
    with pytest.raises(ConfigError, match="replaced by 'store'"):
        DaemonConfig.from_dict({"journal": "j.bin"})
    with pytest.raises(ConfigError, match="max_bytes"):
        DaemonConfig.from_dict({"store": "x.sqlite", "store_options": {"max_bytes": -1}})


def test_the_daemon_replays_what_a_kill_left_unanswered_and_continues_seq(synthetic_bundle, tmp_path):
    """Spectra stored without a result (the daemon was killed between the two transactions) are answered first on
    restart, marked replayed; seq continues from the store; a resent spectrum is not classified again."""
    s = load_spectra("synthetic:test")
    path = str(tmp_path / "store.sqlite")
    with RunningDaemon(synthetic_bundle, store=path) as d:
        for i in range(5):
            d.tx.send(s.intensities[i], s.raman_shift_cm1, id=f"a{i}", instrument_id="rover")
        first, _ = d.collect(5)
    store = Store(StoreConfig(path))  # as if the daemon died after admitting these three
    store.admit([Arrival(encode_spectrum(s.intensities[i], s.raman_shift_cm1, id=f"k{i}", instrument_id="rover"),
                         "push", time.time_ns(), f"k{i}", "rover") for i in range(3)])
    store.close()
    with RunningDaemon(synthetic_bundle, store=path) as d:
        d.tx.send(s.intensities[0], s.raman_shift_cm1, id="a0", instrument_id="rover")  # a resend
        d.tx.send(s.intensities[9], s.raman_shift_cm1, id="new", instrument_id="rover")
        preds, errs = d.collect(1, n_err=1)
        deadline = time.monotonic() + 20  # the replayed predictions may arrive first (a subscriber live in time)
        while "new" not in preds and time.monotonic() < deadline:
            more, more_errs = d.collect(1, timeout_s=1)
            preds.update(more)
            errs += more_errs
        status = d.daemon.status()
    assert sorted(p["seq"] for p in first.values()) == [1, 2, 3, 4, 5]
    assert preds["new"]["seq"] == 9 and "replayed" not in preds["new"]
    assert [e["reason"] for e in errs] == ["duplicate"] and errs[0]["id"] == "a0"
    assert status["counters"]["replayed"] == 3 and status["counters"]["duplicates"] == 1
    db = open_for_reading(path)
    replays = [msgpack.unpackb(p) for (p,) in db.execute("SELECT payload FROM results WHERE seq BETWEEN 6 AND 8")]
    assert sorted(p["id"] for p in replays) == ["k0", "k1", "k2"] and all(p["replayed"] for p in replays)
    assert db.execute("SELECT count(*) FROM spectra WHERE answered = 0").fetchone()[0] == 0
