"""Append-only journal: every received spectrum and every result the daemon publishes, so none is lost.

File format: a sequence of records, each a 4-byte little-endian length followed by that many bytes of
msgpack: a map ``{"kind": "spectrum" | "prediction" | "error" | "link" | "drift", "payload": map}`` (the
published payload; spectra keep their original input frame in ``payload["frame"]``). A torn last record
(power loss) is ignored on read.

A write that fails (disk full, I/O error) never stops the daemon: the journal stops writing, counts every
later record as not stored, and raises the ``alarm`` of its status entry (``{"journal": {...}}`` in the
daemon's status messages).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgpack

from .errors import EdgeError

__all__ = ["Journal", "read_journal"]
_LEN = struct.Struct("<I")
log = logging.getLogger("edge.journal")


class Journal:
    """Append records; :meth:`flush` once per processed batch (``fsync=True`` also syncs to disk).

    Raises
    ------
    EdgeError
        If the file cannot be opened.
    """

    def __init__(self, path: str | os.PathLike, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "ab")
        except OSError as exc:
            raise EdgeError(f"cannot open journal {self.path}: {exc}") from exc
        self.records = 0
        self.not_stored = 0
        self.error: str | None = None
        self._pending = 0  # appended since the last successful flush

    def append(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Append one record (the payload keeps all its keys, ``kind`` and ``self`` included).

        Parameters
        ----------
        kind : str
            Record kind (``"spectrum"``, ``"prediction"``, ``"error"``, ``"link"``, ``"drift"``).
        payload : Mapping
            msgpack-serialisable fields.
        """
        if self.error is not None:
            self.not_stored += 1
            return
        try:
            data = msgpack.packb({"kind": kind, "payload": dict(payload)}, use_bin_type=True)
            self._f.write(_LEN.pack(len(data)) + data)
        except (OSError, ValueError, TypeError) as exc:
            self._fail(exc, 1)
            return
        self.records += 1
        self._pending += 1

    def flush(self) -> None:
        """Write buffered records to the file (and to disk with ``fsync``); a failure is recorded, not raised."""
        if self.error is not None:
            return
        try:
            self._f.flush()
            if self.fsync:
                os.fsync(self._f.fileno())
        except OSError as exc:
            self._fail(exc, self._pending)
            return
        self._pending = 0

    def _fail(self, exc: Exception, lost: int) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        self.not_stored += lost
        self.records -= min(lost, self.records)
        log.error("journal %s: write failed, records are no longer stored: %s", self.path, self.error)
        try:
            self._f.close()
        except OSError:
            pass  # the buffered records are the ones just counted as not stored

    def status(self) -> dict[str, Any]:
        """Report the journal's state for the daemon's status.

        Returns
        -------
        dict
            ``{"journal": {"path", "records" (written), "not_stored", "alarm" (a write failed), "error"}}``.
        """
        return {"journal": {"path": str(self.path), "records": self.records, "not_stored": self.not_stored,
                            "alarm": self.error is not None, "error": self.error}}

    def close(self) -> None:
        """Flush and close (failures recorded, not raised)."""
        if self.error is None and not self._f.closed:
            self.flush()
            try:
                self._f.close()
            except OSError as exc:
                self._fail(exc, self._pending)


def read_journal(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield the records of a journal in order, ``{"kind", "payload"}`` (a torn final record is skipped)."""
    data = Path(path).read_bytes()
    pos = 0
    while pos + 4 <= len(data):
        (n,) = _LEN.unpack_from(data, pos)
        if pos + 4 + n > len(data):
            break
        yield msgpack.unpackb(data[pos + 4:pos + 4 + n], raw=False)
        pos += 4 + n
