"""Append-only journal: every received spectrum and every result the daemon publishes, so none is lost.

File format: a sequence of records, each a 4-byte little-endian length followed by that many bytes of
msgpack (a map with ``kind`` = ``"spectrum"`` | ``"prediction"`` | ``"error"`` and the record's fields;
spectra keep their original input frame in ``frame``). A torn last record (power loss) is ignored on read.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack

from .errors import EdgeError

__all__ = ["Journal", "read_journal"]
_LEN = struct.Struct("<I")


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

    def append(self, kind: str, **fields: Any) -> None:
        data = msgpack.packb({"kind": kind, **fields}, use_bin_type=True)
        self._f.write(_LEN.pack(len(data)) + data)
        self.records += 1

    def flush(self) -> None:
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self.flush()
            self._f.close()


def read_journal(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield the records of a journal in order (a torn final record is skipped)."""
    data = Path(path).read_bytes()
    pos = 0
    while pos + 4 <= len(data):
        (n,) = _LEN.unpack_from(data, pos)
        if pos + 4 + n > len(data):
            break
        yield msgpack.unpackb(data[pos + 4:pos + 4 + n], raw=False)
        pos += 4 + n
