"""The store's SQLite schema (version 1), one place: :mod:`edge.store.store` creates it, docs/store.md describes it.

Two tables hold the data, one the bookkeeping:

``spectra``
    One row per input message the daemon took in, in arrival order (``row``): the message as received
    (``frame``; a rejected one is cut to the store's ``max_rejected_frame_bytes``, ``truncated`` = 1), where it
    came from (``source``: ``push``, ``ack``, ``serial``), ``spectrum_id`` / ``instrument_id`` as the message named
    them, and ``answered`` (0 until its result is stored: on start the daemon replays every row with 0).
    ``dedup_key`` (``instrument_id`` NUL ``id``, unique) lets the daemon recognise a resent spectrum.
``results``
    Every message the daemon published on the ``prediction``, ``error``, ``drift`` and ``link`` topics, in
    publication order (``row``), as published (``payload``: the msgpack bytes). ``seq`` is the prediction's
    sequence number (NULL for other topics): persisted, never reused. ``spectrum_row`` links a prediction or
    rejection to its spectrum.
``meta``
    ``schema_version``, ``created_ns``, ``last_seq`` (the highest ``seq`` ever given, kept even when retention
    deletes that prediction).

``priority`` (both tables) orders retention and the downlink: 0 nominal, 1 rejected input, 2 low quality or low
confidence, 3 drift alarms and link events, 4 novel. Retention deletes the lowest priority first, oldest first
within a priority; it never deletes an unanswered spectrum. ``exported_ns`` is set by ``edge-downlink``.
"""

from __future__ import annotations

__all__ = ["PRIORITY", "SCHEMA_SQL", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1

PRIORITY = {"nominal": 0, "rejected": 1, "doubtful": 2, "event": 3, "novel": 4}
"""Retention and downlink priority of a stored row (higher is kept longer and sent first)."""

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS spectra (
    row            INTEGER PRIMARY KEY,
    received_ns    INTEGER NOT NULL,
    source         TEXT    NOT NULL,
    spectrum_id    TEXT,
    instrument_id  TEXT,
    dedup_key      TEXT UNIQUE,
    frame          BLOB    NOT NULL,
    frame_bytes    INTEGER NOT NULL,
    truncated      INTEGER NOT NULL DEFAULT 0,
    answered       INTEGER NOT NULL DEFAULT 0,
    priority       INTEGER NOT NULL DEFAULT 0,
    exported_ns    INTEGER
);
CREATE INDEX IF NOT EXISTS spectra_pending ON spectra (answered) WHERE answered = 0;
CREATE INDEX IF NOT EXISTS spectra_retention ON spectra (priority, row);
CREATE TABLE IF NOT EXISTS results (
    row            INTEGER PRIMARY KEY,
    seq            INTEGER UNIQUE,
    topic          TEXT    NOT NULL,
    spectrum_row   INTEGER,
    created_ns     INTEGER NOT NULL,
    priority       INTEGER NOT NULL DEFAULT 0,
    payload        BLOB    NOT NULL,
    exported_ns    INTEGER
);
CREATE INDEX IF NOT EXISTS results_spectrum ON results (spectrum_row);
CREATE INDEX IF NOT EXISTS results_retention ON results (priority, row);
"""
