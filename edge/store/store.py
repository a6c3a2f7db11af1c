"""The daemon's durable store: every spectrum it takes in and every result it publishes, in one SQLite file.

Why SQLite (standard-library ``sqlite3``): one file, no server, crash-safe transactions, on every Jetson image;
WAL mode lets a reader (``edge-downlink``, a catch-up request) read while the daemon writes. With
``synchronous = NORMAL`` a committed transaction survives the process being killed (SIGKILL); the last
transactions before a power cut may be lost (the WAL is synced at checkpoints: docs/store.md, "guarantees").

One :class:`Store` per thread (a connection is not used by two threads at once; it may be handed over). The
daemon writes one transaction per micro-batch (:meth:`Store.write_batch`): its new input messages, already
answered, with every result, after classifying them and before acknowledging or publishing anything. The serial
input stores each spectrum before its link ACKs it (:meth:`Store.admit`); the daemon stores its result later
(:meth:`Store.record`, or with its micro-batch).

Checkpoints (copying the WAL into the database file, with an fsync) run in a background thread on its own
connection (:class:`_Checkpointer`), not inside the daemon's commits: measured with 17 kB spectra, SQLite's automatic
checkpoint made a commit 2.6 times slower (0.37 against 0.14 ms per spectrum, two commits each). What is stored
and when it is durable do not change: a commit is in the WAL either way.

A write that fails (disk full, I/O error, a store on ``/dev/full``) never stops the daemon: the store raises its
status alarm, counts what it could not store (``not_stored``) and tries again after ``retry_s``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from ..errors import ConfigError
from .reading import results_after as read_results_after
from .schema import SCHEMA_SQL, SCHEMA_VERSION

__all__ = ["Admission", "Arrival", "PendingSpectrum", "Store", "StoreConfig", "StoreError", "StoredResult", "dedup_key"]
log = logging.getLogger("edge.store")
T = TypeVar("T")

CHECKPOINT_INTERVAL_S = 0.2
"""How often the background thread checkpoints the WAL (PASSIVE: it never blocks the daemon's writes)."""
PAGE_BYTES = 16384
"""Page size of a new store file (SQLite's default is 4 KiB): fewer overflow pages per stored spectrum."""
FALLBACK_AUTOCHECKPOINT_BYTES = 64 << 20
"""SQLite's own automatic checkpoint, kept as a safety net should the background thread fall behind (at 64 MiB of
WAL, in pages of the file's own size): the WAL stays bounded whatever happens."""


class StoreError(ConfigError):
    """The store file cannot be used at all: not a SQLite file, another schema version, cannot be created."""


@dataclass(frozen=True)
class StoreConfig:
    """Store settings (``[daemon.store]`` keys; docs/store.md).

    Parameters
    ----------
    path : str
        SQLite file (created with its folder when absent).
    max_bytes : int
        Retention bound on the live data, in bytes (0: none): above it the lowest-priority, oldest rows go first.
    max_age_s : float
        Retention bound on age, in seconds (0: none): answered rows older than this are deleted whatever their
        priority.
    max_rejected_frame_bytes : int
        A rejected input message is stored cut to this many bytes (the frame of a valid spectrum is always whole).
    retention_interval_s : float
        How often retention runs.
    retry_s : float
        After a failed write, the store tries again after this many seconds (what arrives meanwhile is counted
        ``not_stored``).
    synchronous : {"NORMAL", "FULL"}
        SQLite ``synchronous`` of this connection: ``NORMAL`` (default) keeps a commit through a killed process;
        ``FULL`` (one fsync per transaction) also through a power cut. The serial input uses ``FULL`` for its
        connection: what it ACKs to the instrument is gone from the instrument (docs/serial.md).
    """

    path: str
    max_bytes: int = 0
    max_age_s: float = 0.0
    max_rejected_frame_bytes: int = 16384
    retention_interval_s: float = 5.0
    retry_s: float = 10.0
    synchronous: str = "NORMAL"

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("the store needs a file path")
        if self.synchronous not in ("NORMAL", "FULL"):
            raise ConfigError(f"store synchronous must be NORMAL or FULL, got {self.synchronous!r}")
        if self.max_bytes < 0 or self.max_age_s < 0 or self.max_rejected_frame_bytes < 0:
            raise ConfigError("store max_bytes, max_age_s and max_rejected_frame_bytes must be ≥ 0")
        if self.retention_interval_s <= 0 or self.retry_s <= 0:
            raise ConfigError("store retention_interval_s and retry_s must be > 0")


@dataclass(frozen=True)
class Arrival:
    """One input message to store.

    Parameters
    ----------
    frame : bytes
        The message as received.
    source : str
        ``"push"``, ``"ack"`` or ``"serial"``.
    received_ns : int
        Arrival time, ns since the epoch.
    spectrum_id, instrument_id : str or None
        Identity the message named (None when unreadable); with ``spectrum_id`` set, a later message with the same
        pair is a duplicate.
    accepted : bool
        False for a rejected message: stored cut to ``max_rejected_frame_bytes`` and never a duplicate.
    """

    frame: bytes
    source: str
    received_ns: int
    spectrum_id: str | None = None
    instrument_id: str | None = None
    accepted: bool = True


@dataclass(frozen=True)
class Admission:
    """What :meth:`Store.admit` did with an :class:`Arrival`: its ``row`` (None when not stored), or the earlier
    row it duplicates (``duplicate_of``) and whether that one is already ``answered``.
    """

    row: int | None
    duplicate_of: int | None = None
    answered: bool = False


@dataclass(frozen=True)
class StoredResult:
    """One published message to store: ``topic``, msgpack ``payload``, prediction ``seq`` (None for other
    topics), the ``spectrum_row`` it answers, its retention ``priority`` (:data:`edge.store.schema.PRIORITY`);
    with :meth:`Store.write_batch`, ``arrival`` instead names the spectrum it answers by its index among the
    arrivals stored in the same transaction.
    """

    topic: str
    payload: bytes
    created_ns: int
    seq: int | None = None
    spectrum_row: int | None = None
    priority: int = 0
    arrival: int | None = None


@dataclass(frozen=True)
class PendingSpectrum:
    """A stored spectrum without a result (replayed on start): ``row``, ``frame``, ``source``, ``received_ns``."""

    row: int
    frame: bytes
    source: str
    received_ns: int


_SQL_CHUNK = 500
"""Keys per ``IN (...)`` list (SQLite's default limit on bound parameters was 999 before version 3.32)."""


def _spectrum_values(a: Arrival, key: str | None, cap: int, answered_priority: int | None = None) -> tuple[Any, ...]:
    """The ``spectra`` columns of one arrival (a rejected frame cut to ``cap`` bytes), unanswered, or answered
    with ``answered_priority``.
    """
    frame = a.frame if a.accepted else a.frame[:cap]
    priority = (0 if a.accepted else 1) if answered_priority is None else answered_priority
    return (a.received_ns, a.source, a.spectrum_id, a.instrument_id, key, frame, len(a.frame),
            int(len(frame) < len(a.frame)), int(answered_priority is not None), priority)


def dedup_key(instrument_id: str | None, spectrum_id: str | None) -> str | None:
    """The key a resent spectrum is recognised by (``instrument_id`` NUL ``id``); None without an ``id``."""
    return f"{instrument_id or ''}\x00{spectrum_id}" if spectrum_id else None


def _dedup_key(a: Arrival) -> str | None:
    return dedup_key(a.instrument_id, a.spectrum_id) if a.accepted else None


def _lookup(conn: sqlite3.Connection, wanted: Sequence[str]) -> dict[str, tuple[int, bool]]:
    stored: dict[str, tuple[int, bool]] = {}
    for i in range(0, len(wanted), _SQL_CHUNK):
        chunk = wanted[i:i + _SQL_CHUNK]
        for key, row, answered in conn.execute(
                f"SELECT dedup_key, row, answered FROM spectra WHERE dedup_key IN ({','.join('?' * len(chunk))})",
                chunk):
            stored[key] = (int(row), bool(answered))
    return stored


def _admit(conn: sqlite3.Connection, arrivals: Sequence[Arrival], cap: int,
           answered_priority: dict[int, int] | None = None) -> list[Admission]:
    """Insert ``arrivals`` within the caller's transaction (those in ``answered_priority``, by index, answered
    with that priority); their admissions, in order.

    Three statements a micro-batch instead of one ``INSERT … RETURNING`` per spectrum (same rows, same admissions):
    which keys are stored already; the new rows in one executemany, in arrival order (each gets max(row) + 1, as
    one INSERT at a time would: the transaction holds the write lock); their rows.
    """
    keys = [_dedup_key(a) for a in arrivals]
    stored = _lookup(conn, sorted({k for k in keys if k is not None}))
    first_in_batch: dict[str, int] = {}  # key -> index of its first new arrival in this batch
    new: list[int] = []
    for i, key in enumerate(keys):
        if key is None or (key not in stored and key not in first_in_batch):
            if key is not None:
                first_in_batch[key] = i
            new.append(i)
    rows: dict[int, int] = {}
    if new:
        top = conn.execute("SELECT coalesce(max(row), 0) FROM spectra").fetchone()[0]
        prio = answered_priority or {}
        conn.executemany(
            "INSERT INTO spectra (received_ns, source, spectrum_id, instrument_id, dedup_key, frame, "
            "frame_bytes, truncated, answered, priority) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [_spectrum_values(arrivals[i], keys[i], cap, prio.get(i)) for i in new])
        got = [int(r) for r, in conn.execute("SELECT row FROM spectra WHERE row > ? ORDER BY row", (top,))]
        if len(got) != len(new):  # (cannot happen while the transaction holds the write lock)
            raise sqlite3.IntegrityError(f"stored {len(got)} spectra for {len(new)} new arrivals")
        rows = dict(zip(new, got, strict=True))
    out: list[Admission] = []
    for i, key in enumerate(keys):
        if i in rows:
            out.append(Admission(rows[i]))
        elif key in stored:
            out.append(Admission(None, *stored[key]))
        else:  # a resend within this micro-batch: the duplicate of its first copy, just stored
            first = first_in_batch[cast("str", key)]
            out.append(Admission(None, rows[first], first in (answered_priority or {})))
    return out


def _top_seq(results: Sequence[StoredResult]) -> int:
    return max((r.seq for r in results if r.seq is not None), default=0)


def _record(conn: sqlite3.Connection, results: Sequence[StoredResult], answered: Sequence[tuple[int, int]],
            last_seq: int) -> bool:
    """Insert ``results`` and mark the ``answered`` rows within the caller's transaction."""
    conn.executemany("INSERT INTO results (seq, topic, spectrum_row, created_ns, priority, payload) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     [(r.seq, r.topic, r.spectrum_row, r.created_ns, r.priority, r.payload) for r in results])
    if answered:
        conn.executemany("UPDATE spectra SET answered = 1, priority = ? WHERE row = ?", [(p, row) for row, p in answered])
    top = _top_seq(results)
    if top > last_seq:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (str(top),))
    return True


class Store:
    """Open (or create) the store file.

    Parameters
    ----------
    config : StoreConfig

    Raises
    ------
    StoreError
        When the file is not a SQLite file, holds another schema version, or cannot be created or opened.
        A full disk or an I/O error is not raised: the store starts in its alarm state (:meth:`status`).
    """

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.path = Path(config.path)
        self.not_stored = 0
        self.error: str | None = None
        self.last_seq = 0
        self._retry_at = 0.0
        self._next_retention = 0.0
        self._conn: sqlite3.Connection | None = None
        self._checkpointer: _Checkpointer | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store's folder {self.path.parent}: {exc}") from exc
        self._open()

    # -- opening -------------------------------------------------------------------------------------------
    def _open(self) -> None:
        try:
            # one thread at a time, not one thread for ever: the daemon opens it at construction, runs in another
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=10.0, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {self.path}: {exc}") from exc
        try:
            # before the first table (a store created earlier keeps its own): 16 KiB pages hold a spectrum's frame in
            # two pages instead of five; a micro-batch's transaction costs ~30 % less (measured, 17 kB frames)
            conn.execute(f"PRAGMA page_size = {PAGE_BYTES}")
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # before the first table: freed pages can be returned
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.config.synchronous}")  # checked: NORMAL or FULL
            page_bytes = int(conn.execute("PRAGMA page_size").fetchone()[0])
            conn.execute(f"PRAGMA wal_autocheckpoint = {FALLBACK_AUTOCHECKPOINT_BYTES // page_bytes}")  # _Checkpointer does it
            conn.executescript(SCHEMA_SQL)
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if version is None:
                conn.execute("INSERT INTO meta VALUES ('schema_version', ?), ('created_ns', ?), ('last_seq', '0')",
                             (str(SCHEMA_VERSION), str(time.time_ns())))
            elif version[0] != str(SCHEMA_VERSION):
                conn.close()
                raise StoreError(f"the store {self.path} has schema version {version[0]}; this daemon reads version "
                                 f"{SCHEMA_VERSION} (move the file away or export it with edge-downlink first)")
            self.last_seq = int(conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0])
        except StoreError:
            raise
        except sqlite3.DatabaseError as exc:
            if _is_full_or_io(exc):
                conn.close()
                self._fail(exc, 0)  # e.g. a store on /dev/full: run, alarm raised, retried later
                return
            conn.close()
            raise StoreError(f"cannot use {self.path} as the store: {exc}") from exc
        self._conn = conn
        if self._checkpointer is None:
            self._checkpointer = _Checkpointer(self.path, CHECKPOINT_INTERVAL_S)
            self._checkpointer.start()
            weakref.finalize(self, self._checkpointer.signal_stop)  # a store never closed does not leave it running

    # -- writing -------------------------------------------------------------------------------------------
    def _write(self, work: Callable[[sqlite3.Connection], T], n_items: int) -> T | None:
        """Run ``work`` in one transaction; on failure record the alarm, count ``n_items`` not stored, return None."""
        if self._conn is None or self.error is not None:
            if time.monotonic() < self._retry_at:
                self.not_stored += n_items
                return None
            if self._conn is None:
                try:
                    self._open()
                except StoreError as exc:
                    self._fail(exc, n_items)
                    return None
                if self._conn is None:  # still full
                    self.not_stored += n_items
                    return None
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError, ValueError, OverflowError) as exc:
            self._fail(exc, n_items)
            return None
        if self.error is not None:
            log.warning("store %s writes again after: %s", self.path, self.error)
            self.error = None
        return out

    def _fail(self, exc: Exception, n_items: int) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        self.not_stored += n_items
        self._retry_at = time.monotonic() + self.config.retry_s
        log.error("store %s: write failed (%d record(s) not stored; retry in %.0f s): %s", self.path, n_items,
                  self.config.retry_s, self.error)

    def admit(self, arrivals: Sequence[Arrival]) -> list[Admission]:
        """Store a micro-batch of input messages in one transaction (unanswered: their results follow later).

        Parameters
        ----------
        arrivals : sequence of Arrival

        Returns
        -------
        list of Admission
            One per arrival, in order. A spectrum whose (``instrument_id``, ``id``) was stored before is not
            stored again: its admission names the earlier row. When the store cannot write, every admission has
            ``row`` None (counted in ``not_stored``).
        """
        cap = self.config.max_rejected_frame_bytes
        got = self._write(lambda conn: _admit(conn, arrivals, cap), len(arrivals))
        return got if got is not None else [Admission(None) for _ in arrivals]

    def record(self, results: Sequence[StoredResult], answered: Sequence[tuple[int, int]] = ()) -> bool:
        """Store published results and mark their spectra answered, in one transaction.

        Parameters
        ----------
        results : sequence of StoredResult
        answered : sequence of (int, int)
            ``(spectrum row, priority)`` of each spectrum these results answer.

        Returns
        -------
        bool
            False when the store could not write (counted in ``not_stored``).
        """
        ok = self._write(lambda conn: _record(conn, results, answered, self.last_seq), len(results)) is not None
        if ok:
            self.last_seq = max(self.last_seq, _top_seq(results))
        return ok

    def write_batch(self, arrivals: Sequence[Arrival], results: Sequence[StoredResult],
                    answered: Sequence[tuple[int, int]] = ()) -> list[Admission] | None:
        """Store a whole micro-batch in one transaction: its input messages, already answered, and the results
        published for them (the daemon's path: docs/store.md).

        Parameters
        ----------
        arrivals : sequence of Arrival
            The micro-batch's new input messages.
        results : sequence of StoredResult
            Its published messages, in order. One whose ``arrival`` is set answers that arrival: it is linked to its
            new row, and the arrival is stored answered, with the highest priority of its results.
        answered : sequence of (int, int)
            ``(spectrum row, priority)`` of spectra stored before (replayed, or stored by the serial input) that
            these results answer.

        Returns
        -------
        list of Admission or None
            One per arrival, as :meth:`admit` returns them (an arrival found stored already, e.g. by the serial
            input meanwhile, is not stored again: its results are linked to the earlier row); None when the store
            could not write (nothing of the batch is stored; counted in ``not_stored``).
        """
        cap = self.config.max_rejected_frame_bytes
        priority: dict[int, int] = {}
        for r in results:
            if r.arrival is not None:
                priority[r.arrival] = max(r.priority, priority.get(r.arrival, r.priority))

        def work(conn: sqlite3.Connection) -> list[Admission]:
            adm = _admit(conn, arrivals, cap, priority)
            linked = [r if r.arrival is None else dataclasses.replace(
                r, spectrum_row=adm[r.arrival].row if adm[r.arrival].row is not None else adm[r.arrival].duplicate_of,
                arrival=None) for r in results]
            _record(conn, linked, answered, self.last_seq)
            return adm

        got = self._write(work, len(arrivals) + len(results))
        if got is not None:
            self.last_seq = max(self.last_seq, _top_seq(results))
        return got

    def writable(self) -> bool:
        """False while the store waits to retry after a failed write (what comes meanwhile is not stored)."""
        return self.error is None or time.monotonic() >= self._retry_at

    def lookup(self, keys: Sequence[str]) -> dict[str, tuple[int, bool]]:
        """The stored spectra among dedup ``keys`` (``instrument_id`` NUL ``id``): key → (row, answered).

        A read outside any transaction (:meth:`write_batch` checks again within its own). Empty when the store
        cannot be read.
        """
        return self._read(lambda conn: _lookup(conn, sorted(set(keys))), {})

    # -- reading -------------------------------------------------------------------------------------------
    def _read(self, query: Callable[[sqlite3.Connection], T], default: T) -> T:
        if self._conn is None:
            return default
        try:
            return query(self._conn)
        except sqlite3.Error as exc:
            log.error("store %s: read failed: %s", self.path, exc)
            return default

    def pending(self, limit: int, after_row: int = 0) -> list[PendingSpectrum]:
        """Stored spectra without a result, in arrival order (replayed on start).

        Parameters
        ----------
        limit : int
            At most this many.
        after_row : int
            Only rows after this one (to page through).
        """
        return self._read(lambda c: [PendingSpectrum(*r) for r in c.execute(
            "SELECT row, frame, source, received_ns FROM spectra WHERE answered = 0 AND row > ? ORDER BY row LIMIT ?",
            (after_row, limit))], [])

    def results_after(self, after_seq: int, topics: Sequence[str] | None = None,
                      limit: int = 1000) -> tuple[list[tuple[str, bytes]], bool]:
        """Results published after the prediction with sequence number ``after_seq``, in publication order.

        The first page of :func:`edge.store.reading.results_after` (the catch-up server pages through it on its own
        read connection: :mod:`edge.catchup`).

        Parameters
        ----------
        after_seq : int
            Last prediction ``seq`` the caller has (0: from the start of what is kept).
        topics : sequence of str, optional
            Only these topics (default: all).
        limit : int
            At most this many messages.

        Returns
        -------
        messages : list of (str, bytes)
            ``(topic, payload)`` as published.
        complete : bool
            False when predictions after ``after_seq`` are not in the store (retention deleted them, or they could
            not be written); False too when the store cannot be read.
        """

        def query(c: sqlite3.Connection) -> tuple[list[tuple[str, bytes]], bool]:
            page = read_results_after(c, after_seq, topics, limit)
            return page.messages, page.complete

        nothing: tuple[list[tuple[str, bytes]], bool] = ([], False)
        return self._read(query, nothing)

    def counts(self) -> dict[str, int]:
        """Rows kept: ``spectra``, ``pending`` (no result yet), ``results``; ``bytes`` of live data."""
        def query(c: sqlite3.Connection) -> dict[str, int]:
            spectra, pending = c.execute("SELECT count(*), coalesce(sum(answered = 0), 0) FROM spectra").fetchone()
            results = c.execute("SELECT count(*) FROM results").fetchone()[0]
            return {"spectra": int(spectra), "pending": int(pending), "results": int(results), "bytes": _live_bytes(c)}
        return self._read(query, {"spectra": 0, "pending": 0, "results": 0, "bytes": 0})

    # -- retention -----------------------------------------------------------------------------------------
    def maybe_apply_retention(self) -> int:
        """Run :meth:`apply_retention` when ``retention_interval_s`` has passed since the last run."""
        now = time.monotonic()
        if now < self._next_retention or (not self.config.max_bytes and not self.config.max_age_s):
            return 0
        self._next_retention = now + self.config.retention_interval_s
        return self.apply_retention()

    def apply_retention(self, chunk: int = 256) -> int:
        """Delete answered rows beyond the age and byte bounds; returns how many spectra and results went.

        Order: everything older than ``max_age_s``; then, while the live data exceed ``max_bytes``, the lowest
        priority first and the oldest first within it (a spectrum goes with its results). Unanswered spectra are
        never deleted. Freed pages are returned to the file system (incremental vacuum).
        """
        cfg = self.config

        def work(conn: sqlite3.Connection) -> int:
            deleted = 0
            if cfg.max_age_s:
                cutoff = time.time_ns() - int(cfg.max_age_s * 1e9)
                deleted += conn.execute("DELETE FROM results WHERE created_ns < ? AND (spectrum_row IS NULL OR "
                                        "spectrum_row IN (SELECT row FROM spectra WHERE answered = 1))",
                                        (cutoff,)).rowcount
                deleted += conn.execute("DELETE FROM spectra WHERE answered = 1 AND received_ns < ?", (cutoff,)).rowcount
            while cfg.max_bytes and _live_bytes(conn) > cfg.max_bytes:
                rows = conn.execute("SELECT row, priority FROM spectra WHERE answered = 1 ORDER BY priority, row "
                                    "LIMIT ?", (chunk,)).fetchall()
                events = conn.execute("SELECT row, priority FROM results WHERE spectrum_row IS NULL "
                                      "ORDER BY priority, row LIMIT ?", (chunk,)).fetchall()
                if not rows and not events:
                    break
                if rows and (not events or rows[0][1] <= events[0][1]):
                    ids = [r for r, _ in rows]
                    marks = ",".join("?" * len(ids))
                    deleted += conn.execute(f"DELETE FROM results WHERE spectrum_row IN ({marks})", ids).rowcount
                    deleted += conn.execute(f"DELETE FROM spectra WHERE row IN ({marks})", ids).rowcount
                else:
                    ids = [r for r, _ in events]
                    deleted += conn.execute(f"DELETE FROM results WHERE row IN ({','.join('?' * len(ids))})",
                                            ids).rowcount
                conn.execute("PRAGMA incremental_vacuum")
            return deleted

        return self._write(work, 0) or 0

    # -- status and closing --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The store's entry in the daemon's status message.

        Returns
        -------
        dict
            ``{"store": {"path", "last_seq", "not_stored", "alarm" (a write failed and has not yet succeeded
            again), "error"}}``.
        """
        return {"store": {"path": str(self.path), "last_seq": self.last_seq, "not_stored": self.not_stored,
                          "alarm": self.error is not None, "error": self.error}}

    def close(self) -> None:
        """Checkpoint the WAL and close (failures are logged, not raised)."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._conn is None:
            return
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("store %s: checkpoint on close failed: %s", self.path, exc)
        self._conn.close()
        self._conn = None


class _Checkpointer(threading.Thread):
    """Checkpoint the store's WAL every ``interval_s`` from a connection of its own (a daemon thread).

    sqlite3 releases the GIL while SQLite works, so the checkpoint's copy and fsync overlap the daemon's loop instead
    of stalling the commit that crosses SQLite's automatic threshold. PASSIVE: it copies what no reader still needs
    and never blocks a writer. Failures are logged at debug level (the daemon's own writes raise the alarm).
    """

    def __init__(self, path: Path, interval_s: float) -> None:
        super().__init__(name=f"store-checkpoint:{path.name}", daemon=True)
        self.path = path
        self.interval_s = interval_s
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Checkpoint until :meth:`stop`."""
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=1.0)
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            log.debug("store %s: no background checkpoints: %s", self.path, exc)
            return
        try:
            while not self._stop_event.wait(self.interval_s):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    log.debug("store %s: background checkpoint failed: %s", self.path, exc)
        finally:
            conn.close()

    def signal_stop(self) -> None:
        """Ask the thread to stop after its current checkpoint (without waiting)."""
        self._stop_event.set()

    def stop(self) -> None:
        """Stop and wait for the thread (at most a few seconds)."""
        self._stop_event.set()
        self.join(timeout=5.0)


def _live_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database's pages in use (the file's size less its free pages)."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int(page_size) * int(pages)


def _is_full_or_io(exc: sqlite3.Error) -> bool:
    """A full disk or an I/O error (the store degrades and retries), as opposed to an unusable file."""
    name = getattr(exc, "sqlite_errorname", "")
    return name.startswith(("SQLITE_FULL", "SQLITE_IOERR")) or "disk is full" in str(exc)


def open_for_reading(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection to a store file (for ``edge-downlink`` and tools), WAL readers beside the daemon.

    Raises
    ------
    StoreError
        When the file is absent or is not a store of this schema version.
    """
    p = Path(path)
    if not p.is_file():
        raise StoreError(f"no store at {p}")
    try:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, isolation_level=None)
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"{p} is not a raman-edge store: {exc}") from exc
    if version is None or version[0] != str(SCHEMA_VERSION):
        conn.close()
        raise StoreError(f"{p} has store schema version {version[0] if version else '?'}; expected {SCHEMA_VERSION}")
    return conn
