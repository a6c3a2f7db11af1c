"""Downlink packages: what a thin link should carry first, within a byte budget (``edge-downlink``; docs/store.md).

A package is one file: a msgpack header map, then the records as one zlib stream of msgpack maps (or plain
msgpack with ``compression="none"``). Kinds, in the order they are filled in and written:

``novel`` (priority 4)
    Novel spectra: the spectrum message as received (``frame``) and its prediction.
``doubtful`` (priority 2)
    Low-quality or low-confidence spectra (quality gate not ok, labels not trusted, top-1 < 0.5), same content.
``event`` (priority 3)
    Drift alarms, link events and lost-spectrum reports (results without a spectrum).
``rejected`` (priority 1)
    Rejected inputs: the ``error`` message only (reason, detail, id), without the frame (a malformed or cut frame
    cannot be used on the ground); at most ``max_rejected`` per package so a flood of garbage cannot take the link.
    They go before the nominal sample: a rejection tells the operator an instrument or sender misbehaves, a nominal
    result only confirms the expected.
``nominal`` (priority 0)
    A seeded sample of nominal predictions, spread over time (stratified over arrival order), predictions only:
    a nominal spectrum is 17 kB against ~0.5 kB for its prediction, so the link carries ~30 times more of the
    picture (what was seen, when, how confidently); its spectrum stays in the store.

Within a kind the oldest go first. An item is left out only when it does not fit in what remains after every item
before it; a smaller one after it may still go. Only results not yet exported are taken (unless
``include_exported``). Once the package is written and fsynced, what it holds is marked exported in the store
(``exported_ns``, one transaction): a crash in between sends those items again next time, never loses them.
"""

from __future__ import annotations

import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from .errors import ConfigError, DataError
from .store import SCHEMA_VERSION, StoreError, open_for_reading

__all__ = ["FORMAT", "KINDS", "MAX_BUDGET_BYTES", "VERSION", "Package", "Plan", "mark_exported", "plan_downlink", "read_package",
           "write_package"]

FORMAT = "raman-edge-downlink"
VERSION = 1
KINDS = ("novel", "doubtful", "event", "rejected", "nominal")
"""Record kinds in the order they are filled in and written."""
_FINISH_RESERVE = 16  # bytes the zlib stream's end (final block, Adler-32) may add after the last sync flush
_CHUNK = 500
MAX_BUDGET_BYTES = 1 << 30
"""A package is assembled in memory before it is written: budgets above 1 GiB are refused (a thin link carries MBs)."""
_SMALLEST_RECORD = 24  # bytes: no record takes less (its keys alone do), so with less room the filling stops


@dataclass
class Plan:
    """A package ready to write: its ``header``, the encoded ``body``, and the store rows it holds.

    ``result_rows`` and ``spectrum_rows`` are marked exported after the file is written; ``items`` lists
    ``(kind, result row, seq, spectrum id, bytes)`` per record, in package order.
    """

    header: dict[str, Any]
    body: bytes
    result_rows: list[int] = field(default_factory=list)
    spectrum_rows: list[int] = field(default_factory=list)
    items: list[tuple[str, int, int | None, str | None, int]] = field(default_factory=list)

    @property
    def size_bytes(self) -> int:
        """Bytes of the package file."""
        return len(_pack_header(self.header)) + len(self.body)


@dataclass(frozen=True)
class Package:
    """A package read back by :func:`read_package`: ``header`` and ``records`` (maps, in package order)."""

    header: dict[str, Any]
    records: list[dict[str, Any]]


class _Body:
    """Records appended to a zlib stream (sync-flushed after each, so its exact size is known) or plain msgpack;
    :meth:`try_add` keeps a record only when the body still fits ``limit`` bytes.
    """

    def __init__(self, limit: int, compress: bool) -> None:
        self.limit = limit - (_FINISH_RESERVE if compress else 0)
        self._z = zlib.compressobj(6) if compress else None
        self._parts: list[bytes] = []
        self.size = 0

    def try_add(self, record: dict[str, Any]) -> int:
        """Append ``record`` if it fits; returns its bytes in the file (0: it did not fit and was not added)."""
        raw = msgpack.packb(record, use_bin_type=True)
        if self._z is None:
            out = raw
        elif self.size + len(raw) // 1000 > self.limit:  # deflate cannot shrink it that far: skip the work
            return 0
        else:
            before = self._z.copy()
            out = self._z.compress(raw) + self._z.flush(zlib.Z_SYNC_FLUSH)
            if self.size + len(out) > self.limit:
                self._z = before  # as if never offered
                return 0
        if self.size + len(out) > self.limit:
            return 0
        self._parts.append(out)
        self.size += len(out)
        return len(out)

    @property
    def room(self) -> int:
        """Bytes still free."""
        return self.limit - self.size

    def finish(self) -> bytes:
        """The body's bytes (the zlib stream ended)."""
        if self._z is not None:
            self._parts.append(self._z.flush(zlib.Z_FINISH))
        return b"".join(self._parts)


def _pack_header(header: dict[str, Any]) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def _header(budget_bytes: int, compress: bool, seed: int, include_exported: bool, last_seq: int,
            counts: dict[str, int], sizes: dict[str, int], left: dict[str, int]) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "created_ns": time.time_ns(), "store_schema_version": SCHEMA_VERSION,
            "budget_bytes": budget_bytes, "compression": "zlib" if compress else "none", "seed": seed,
            "include_exported": include_exported, "last_seq": last_seq, "counts": counts, "bytes": sizes,
            "left": left}


def _payload(data: bytes) -> Any:
    """A stored result as a map (as published); a payload that does not decode goes as its bytes."""
    try:
        return msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException):
        return bytes(data)


_RESULT_COLUMNS = ("r.row, r.seq, r.topic, r.created_ns, r.priority, r.payload, s.row, s.received_ns, s.source, "
                   "s.spectrum_id, s.instrument_id, s.frame, s.frame_bytes, s.truncated")


def _record(kind: str, r: tuple[Any, ...], with_spectrum: bool) -> dict[str, Any]:
    rec: dict[str, Any] = {"kind": kind, "priority": r[4], "result_row": r[0], "topic": r[2], "seq": r[1],
                           "created_ns": r[3], "payload": _payload(r[5])}
    if with_spectrum and r[6] is not None:
        rec["spectrum"] = {"row": r[6], "received_ns": r[7], "source": r[8], "id": r[9], "instrument_id": r[10],
                           "frame": bytes(r[11]), "frame_bytes": r[12], "truncated": bool(r[13])}
    return rec


def _spectrum_id(rec: dict[str, Any]) -> str | None:
    p = rec["payload"]
    sid = p.get("id") if isinstance(p, dict) else None
    return sid if isinstance(sid, str) else None


def _exported(include_exported: bool) -> str:
    return "" if include_exported else " AND r.exported_ns IS NULL"


_WHERE = {"novel": "r.priority = 4", "doubtful": "r.priority = 2", "event": "r.priority = 3 AND r.spectrum_row IS NULL",
          "rejected": "r.priority = 1", "nominal": "r.priority = 0 AND r.topic = 'prediction'"}
"""Which results each kind takes."""


def _candidates(conn: sqlite3.Connection, mine: str) -> dict[str, int]:
    """How many results of each kind wait to go down."""
    return {k: int(conn.execute(f"SELECT count(*) FROM results r WHERE {w}{mine}").fetchone()[0])
            for k, w in _WHERE.items()}


def _rows(conn: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    """Result rows (joined with their spectrum) matching ``where``, oldest first, fetched in chunks."""
    cur = conn.execute(f"SELECT {_RESULT_COLUMNS} FROM results r LEFT JOIN spectra s ON s.row = r.spectrum_row "
                       f"WHERE {where} ORDER BY r.row", args)
    while batch := cur.fetchmany(_CHUNK):
        yield from batch


def plan_downlink(store: str | os.PathLike[str], budget_bytes: int, *, include_exported: bool = False,
                  seed: int = 0, compress: bool = True, max_rejected: int = 100) -> Plan:
    """Choose what goes down, in priority order, within ``budget_bytes``, and encode the package.

    Parameters
    ----------
    store : path
        The daemon's store file (read while the daemon runs: WAL readers never block its writes).
    budget_bytes : int
        The package file's size never exceeds this many bytes (header included).
    include_exported : bool
        Also take results already exported in an earlier package.
    seed : int
        Seed of the nominal sample.
    compress : bool
        zlib-compress the records (the budget counts the bytes on disk).
    max_rejected : int
        At most this many rejected inputs per package.

    Returns
    -------
    Plan

    Raises
    ------
    StoreError
        The file is absent or is not a store of this schema version.
    ConfigError
        ``budget_bytes`` is smaller than the header or above :data:`MAX_BUDGET_BYTES`, or ``max_rejected`` is
        negative.
    """
    if budget_bytes > MAX_BUDGET_BYTES:
        raise ConfigError(f"a budget of {budget_bytes} bytes is above the {MAX_BUDGET_BYTES}-byte limit (a package is "
                          "assembled in memory); write several packages")
    if max_rejected < 0:
        raise ConfigError(f"max_rejected must be ≥ 0, got {max_rejected}")
    conn = open_for_reading(store)
    try:
        conn.execute("BEGIN")  # one snapshot for the whole selection
        return _plan(conn, budget_bytes, include_exported, seed, compress, max_rejected)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot read the store {store}: {exc}") from exc
    finally:
        conn.close()


def _plan(conn: sqlite3.Connection, budget_bytes: int, include_exported: bool, seed: int, compress: bool,
          max_rejected: int) -> Plan:
    mine = _exported(include_exported)
    last = conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
    last_seq = int(last[0]) if last else 0
    # the header's numbers at their largest (a count ≤ the candidates, bytes ≤ the budget): msgpack writes a
    # smaller non-negative integer in no more bytes, so the header written at the end fits in this reserve
    most = _candidates(conn, mine)
    widest = _header(budget_bytes, compress, seed, include_exported, last_seq, most,
                     dict.fromkeys(KINDS, budget_bytes), most)
    reserve = len(_pack_header(widest))
    if budget_bytes < reserve + (_FINISH_RESERVE if compress else 0):
        raise ConfigError(f"a budget of {budget_bytes} bytes does not hold the package header ({reserve} bytes)")
    body = _Body(budget_bytes - reserve, compress)
    plan = Plan({}, b"")
    counts, sizes = dict.fromkeys(KINDS, 0), dict.fromkeys(KINDS, 0)

    def add(kind: str, r: tuple[Any, ...], with_spectrum: bool) -> bool:
        rec = _record(kind, r, with_spectrum)
        n = body.try_add(rec)
        if not n:
            return False
        counts[kind] += 1
        sizes[kind] += n
        plan.result_rows.append(int(r[0]))
        if "spectrum" in rec:
            plan.spectrum_rows.append(int(rec["spectrum"]["row"]))
        plan.items.append((kind, int(r[0]), r[1], _spectrum_id(rec), n))
        return True

    for kind in ("novel", "doubtful", "event", "rejected"):
        for r in _rows(conn, _WHERE[kind] + mine, ()):
            if body.room < _SMALLEST_RECORD or (kind == "rejected" and counts[kind] >= max_rejected):
                break
            add(kind, r, with_spectrum=kind in ("novel", "doubtful"))
    _sample_nominal(conn, mine, seed, body, add)
    left = {k: most[k] - counts[k] for k in KINDS}  # one snapshot: what waits and did not go
    plan.header = _header(budget_bytes, compress, seed, include_exported, last_seq, counts, sizes, left)
    plan.body = body.finish()
    return plan


def _sample_nominal(conn: sqlite3.Connection, mine: str, seed: int, body: _Body,
                    add: Callable[[str, tuple[Any, ...], bool], bool]) -> None:
    """Add a seeded sample of nominal predictions spread over arrival order, in rounds until the budget is used.

    Each round splits the candidates still waiting (oldest first) into as many equal strata as the remaining room
    should hold (at the mean size of what was added so far) and takes one at random from each, in time order.
    """
    rows = np.fromiter((r for (r,) in conn.execute(
        f"SELECT r.row FROM results r WHERE {_WHERE['nominal']}{mine} ORDER BY r.row")),
        dtype=np.int64)
    rng = np.random.default_rng(seed)
    waiting = rows
    est, added_bytes, added = 400.0, 0, 0
    while len(waiting) and body.room >= _SMALLEST_RECORD:
        k = int(min(len(waiting), max(1, body.room // max(est, 1.0))))
        edges = np.linspace(0, len(waiting), k + 1).astype(np.int64)
        picks = edges[:-1] + rng.integers(0, np.maximum(edges[1:] - edges[:-1], 1))
        chosen = waiting[np.unique(picks)]
        got = 0
        for start in range(0, len(chosen), _CHUNK):
            part = [int(v) for v in chosen[start:start + _CHUNK]]
            marks = ",".join("?" * len(part))
            for r in _rows(conn, f"r.row IN ({marks})", tuple(part)):
                before = body.size
                if add("nominal", r, False):
                    got += 1
                    added_bytes += body.size - before
        if not got:  # none of them fits any more
            break
        waiting = np.setdiff1d(waiting, chosen, assume_unique=True)
        added += got
        est = added_bytes / added


def write_package(plan: Plan, out: str | os.PathLike[str]) -> int:
    """Write the package file and fsync it (and its folder); refuses to overwrite an existing file.

    Parameters
    ----------
    plan : Plan
    out : path

    Returns
    -------
    int
        Bytes written.

    Raises
    ------
    ConfigError
        ``out`` exists (a package not yet sent would be lost) or cannot be written.
    """
    p = Path(out)
    if p.exists():
        raise ConfigError(f"{p} exists: a package not yet sent down would be lost; choose another name")
    data = _pack_header(plan.header) + plan.body
    tmp = p.with_name(p.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
        fd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write the package {p}: {exc.strerror or exc}") from exc
    return len(data)


def mark_exported(store: str | os.PathLike[str], plan: Plan, busy_timeout_s: float = 30.0) -> int:
    """Set ``exported_ns`` on the results and spectra the package holds, in one transaction.

    Parameters
    ----------
    store : path
    plan : Plan
    busy_timeout_s : float
        How long to wait for the daemon's write transaction to finish.

    Returns
    -------
    int
        Rows marked (results and spectra).

    Raises
    ------
    StoreError
        The store cannot be written (locked beyond the busy timeout, read-only, full disk).
    """
    open_for_reading(store).close()  # the same checks (exists, is a store) before opening it for writing
    now = time.time_ns()
    try:
        conn = sqlite3.connect(f"file:{Path(store)}?mode=rw", uri=True, isolation_level=None, timeout=busy_timeout_s)
        try:
            conn.execute("BEGIN IMMEDIATE")
            n = conn.executemany("UPDATE results SET exported_ns = ? WHERE row = ?",
                                 [(now, r) for r in plan.result_rows]).rowcount
            n += conn.executemany("UPDATE spectra SET exported_ns = ? WHERE row = ?",
                                  [(now, r) for r in plan.spectrum_rows]).rowcount
            conn.execute("COMMIT")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot mark what was exported in {store}: {exc} (the package is written; the next "
                         "package will carry these items again)") from exc
    return int(n)


def read_package(path: str | os.PathLike[str]) -> Package:
    """Read a downlink package (the ground station's side).

    Parameters
    ----------
    path : path

    Returns
    -------
    Package
        The header and the records, in package order. A record's ``payload`` is the published message (a map);
        ``spectrum.frame`` (novel and doubtful records) is the spectrum message as received
        (:func:`edge.wire.decode_spectrum` decodes it).

    Raises
    ------
    DataError
        The file is absent, not a downlink package, of another version, or damaged.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the package {p}: {exc.strerror or exc}") from exc
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    try:
        header = next(unpacker)
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise DataError(f"{p} is not a raman-edge downlink package")
        if header.get("version") != VERSION:
            raise DataError(f"{p} is a downlink package of version {header.get('version')}; this reads {VERSION}")
        rest = data[unpacker.tell():]
        if header.get("compression") == "zlib":
            rest = zlib.decompress(rest)
        records = list(_unpack_all(rest))
    except DataError:
        raise
    except (StopIteration, ValueError, zlib.error, msgpack.UnpackException) as exc:
        raise DataError(f"{p} is not a readable downlink package: {type(exc).__name__}: {exc}") from exc
    expected = sum(header.get("counts", {}).values())
    if len(records) != expected:
        raise DataError(f"{p} holds {len(records)} records; its header counts {expected} (damaged file)")
    return Package(header, records)


def _unpack_all(data: bytes) -> Iterator[dict[str, Any]]:
    u = msgpack.Unpacker(raw=False, max_buffer_size=max(len(data), 1))
    u.feed(data)
    yield from u
