"""The store's background checkpoints (edge.store.store._Checkpointer): the WAL is copied into the database by a
thread of the store's own, not inside the daemon's commits; closing the store (or dropping it) stops the thread."""

from __future__ import annotations

import gc
import sqlite3
import threading
import time

from edge.store import Arrival, Store, StoreConfig


def _checkpointers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("store-checkpoint:")]


def test_the_wal_is_checkpointed_in_the_background_and_the_thread_stops_with_the_store(tmp_path):
    path = tmp_path / "s.sqlite"
    before = len(_checkpointers())
    store = Store(StoreConfig(str(path)))
    assert len(_checkpointers()) == before + 1
    # well below SQLite's own automatic checkpoint threshold: only the background thread copies these pages
    store.admit([Arrival(bytes([i]) * 20_000, "push", time.time_ns(), f"s{i}", "r") for i in range(50)])
    db_size = path.stat().st_size
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and path.stat().st_size < db_size + 50 * 20_000:
        time.sleep(0.05)
    assert path.stat().st_size >= db_size + 50 * 20_000  # the frames reached the database file
    probe = sqlite3.connect(path)
    _busy, wal_frames, copied = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    probe.close()
    assert wal_frames > 0 and copied == wal_frames
    store.close()
    assert len(_checkpointers()) == before
    dropped = Store(StoreConfig(str(tmp_path / "t.sqlite")))  # never closed: garbage collection stops its thread
    assert len(_checkpointers()) == before + 1
    del dropped
    gc.collect()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and len(_checkpointers()) > before:
        time.sleep(0.05)
    assert len(_checkpointers()) == before
