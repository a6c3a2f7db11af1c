"""Catch-up reads: the stored results after a prediction, in publication order, one page at a time.

One function, :func:`results_after`, shared by :meth:`edge.store.Store.results_after` (the daemon's own
connection) and the catch-up server (:mod:`edge.catchup`, its own read-only connection: WAL readers never block
the daemon's writes). A page is read in one read transaction, so it is one consistent snapshot.

Paging: a page ends after ``limit`` messages or about ``max_bytes`` of payload; its ``cursor`` (the ``results``
row of its last message) is where the next page starts (``after_row``). Paging by ``seq`` alone could not
continue after a page ending in errors, which have no ``seq``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CatchUpPage", "results_after"]


@dataclass(frozen=True)
class CatchUpPage:
    """One page of stored results.

    Parameters
    ----------
    messages : list of (str, bytes)
        ``(topic, payload)`` exactly as published, in publication order.
    complete : bool
        False when predictions after ``after_seq`` (up to the page's end; to the store's last prediction on the
        last page) are not in the store: retention deleted them, or the store could not write them.
    more : bool
        More messages follow: ask again with ``after_row = cursor`` and ``after_seq = last_seq``.
    last_seq : int
        The highest prediction ``seq`` in ``messages`` (``after_seq`` when there is none).
    cursor : int
        The ``results`` row of the last message of the page (the start row when the page is empty).
    store_last_seq : int
        The highest ``seq`` the daemon ever gave (``meta.last_seq``) at the time of the read.
    """

    messages: list[tuple[str, bytes]]
    complete: bool
    more: bool
    last_seq: int
    cursor: int
    store_last_seq: int


def _start_row(conn: sqlite3.Connection, after_seq: int) -> int:
    """The ``results`` row after which the messages following prediction ``after_seq`` begin.

    When that prediction is gone (retention) or was never stored: just before the first prediction after it, or,
    when there is none, after the last prediction before it (0 when none).
    """
    if after_seq == 0:
        return 0
    got = conn.execute("SELECT row FROM results WHERE seq = ?", (after_seq,)).fetchone()
    if got is not None:
        return int(got[0])
    nxt = conn.execute("SELECT min(row) FROM results WHERE seq > ?", (after_seq,)).fetchone()[0]
    if nxt is not None:
        return int(nxt) - 1
    prev = conn.execute("SELECT max(row) FROM results WHERE seq < ?", (after_seq,)).fetchone()[0]
    return int(prev or 0)


def results_after(conn: sqlite3.Connection, after_seq: int, topics: Sequence[str] | None = None, limit: int = 1000,
                  max_bytes: int = 0, after_row: int | None = None) -> CatchUpPage:
    """Read the stored results published after prediction ``after_seq`` (or after row ``after_row``).

    Parameters
    ----------
    conn : sqlite3.Connection
        A connection to the store in autocommit mode (``isolation_level=None``), e.g.
        :func:`edge.store.open_for_reading`.
    after_seq : int
        The last prediction ``seq`` the reader has (0: from the start of what is kept); ≥ 0.
    topics : sequence of str, optional
        Only these topics (default: every stored topic: ``prediction``, ``error``, ``drift``, ``link``).
    limit : int
        At most this many messages (≥ 1).
    max_bytes : int
        Stop before the payloads of the page exceed this many bytes (0: no bound); the first message is always
        returned, so that paging progresses.
    after_row : int, optional
        Start after this ``results`` row: the ``cursor`` of the previous page (default: where ``after_seq`` is).

    Returns
    -------
    CatchUpPage

    Raises
    ------
    sqlite3.Error
        When the store cannot be read.
    """
    conn.execute("BEGIN")  # one snapshot for the whole page
    try:
        store_last = int(conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0])
        start = _start_row(conn, after_seq) if after_row is None else after_row
        sql = "SELECT row, topic, payload, seq FROM results WHERE row > ?"
        args: list[object] = [start]
        if topics is not None:
            sql += f" AND topic IN ({','.join('?' * len(topics))})"
            args.extend(topics)
        cur = conn.execute(sql + " ORDER BY row LIMIT ?", (*args, limit + 1))
        messages: list[tuple[str, bytes]] = []
        size, last_seq, cursor, more = 0, after_seq, start, False
        for row, topic, payload, seq in cur:
            if len(messages) == limit or (max_bytes and messages and size + len(payload) > max_bytes):
                more = True
                break
            messages.append((str(topic), bytes(payload)))
            size += len(payload)
            cursor = int(row)
            if seq is not None:
                last_seq = max(last_seq, int(seq))
        cur.close()
        # every prediction in (after_seq, up_to] should be stored: up_to is the page's last one, or the store's
        if more:
            n, up_to = conn.execute("SELECT count(*), max(seq) FROM results WHERE seq > ? AND row <= ?",
                                    (after_seq, cursor)).fetchone()
        else:
            n = conn.execute("SELECT count(*) FROM results WHERE seq > ?", (after_seq,)).fetchone()[0]
            up_to = store_last
        complete = up_to is None or up_to <= after_seq or int(n) == int(up_to) - after_seq
    finally:
        if conn.in_transaction:  # a read transaction: ending it only releases the snapshot
            conn.execute("ROLLBACK")
    return CatchUpPage(messages, complete, more, last_seq, cursor, store_last)
