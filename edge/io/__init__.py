"""Every way a spectrum arrives from a file: one reader API, :func:`read_spectra`.

Readers return :class:`Spectra` (Raman-shift axis in cm⁻¹, intensities, metadata). The format is chosen from
the file's content first (magic bytes, header lines), then its extension:

========================  =====================================  ==========================================
format                    module                                 library
========================  =====================================  ==========================================
RRUFF ``.txt``            :mod:`edge.io.rruff`                   :func:`edge.data.load_rruff_txt`
vendor text / CSV / TSV   :mod:`edge.io.text`                    own code (numpy)
``.npz`` split or cube    :mod:`edge.io.npz`                     numpy
SPC                       :mod:`edge.io.spc`                     ``spc-io`` (extra ``[formats]``)
WDF                       :mod:`edge.io.wdf`                     ``renishaw-wdf`` (extra ``[formats]``)
JCAMP-DX                  :mod:`edge.io.jcamp`                   ``jcamp`` (extra ``[formats]``)
Andor SIF                 :mod:`edge.io.andor`                   ``sif-parser`` (extra ``[formats]``)
Princeton SPE             :mod:`edge.io.spe`                     ``spexread`` (extra ``[formats]``)
========================  =====================================  ==========================================

The vendor libraries are imported only when such a file is read (the onboard install has none of them).
"""

from __future__ import annotations

import fnmatch
import glob
import inspect
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ._common import Spectra, nm_to_raman_shift

__all__ = ["SKIP_NAMES", "ReadResult", "Spectra", "detect_format", "nm_to_raman_shift", "read_file", "read_spectra",
           "read_spectrum"]

#: File names a folder read passes over (documentation and label tables next to the spectra).
SKIP_NAMES = ("README*", "*.md", "MANIFEST.tsv", "labels.csv", ".*")
_MAGIC = ((b"WDF1", "wdf"), (b"Andor Technology Multi-Channel File", "sif"), (b"PK\x03\x04", "npz"),
          (b"LabSpec6", "labspec6"))
_EXT = {".spc": "spc", ".wdf": "wdf", ".jdx": "jcamp", ".dx": "jcamp", ".jcamp": "jcamp", ".sif": "sif",
        ".spe": "spe", ".npz": "npz", ".l6s": "labspec6"}


@dataclass
class ReadResult:
    """What a read of files, folders or globs gave.

    Attributes
    ----------
    spectra : list of Spectra
        One entry per file read, in path order.
    failures : list of (str, str)
        (file, reason) of every file that could not be read.
    """

    spectra: list[Spectra] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def __iter__(self) -> Iterator[Spectra]:
        """Iterate over the files' spectra."""
        return iter(self.spectra)

    def __len__(self) -> int:
        """Return the number of files read."""
        return len(self.spectra)

    @property
    def n_spectra(self) -> int:
        """Total number of spectra over all files."""
        return sum(len(s) for s in self.spectra)


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name the format of a file from its first bytes, then its extension.

    Returns
    -------
    str
        One of ``rruff``, ``jcamp``, ``text``, ``spc``, ``wdf``, ``sif``, ``spe``, ``npz``, ``labspec6``.

    Raises
    ------
    DataError
        If the file cannot be opened, or is binary and of no known format.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise DataError(f"{p}: cannot read: {exc}") from exc
    if not head.strip():
        raise DataError(f"{p}: empty file")
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    ext = p.suffix.lower()
    if ext in _EXT:
        return _EXT[ext]
    if b"\x00" in head:
        raise DataError(f"{p}: unrecognised binary file (known: {', '.join(sorted(set(_EXT)))})")
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"##"):
        return "jcamp" if b"##JCAMP-DX" in head.upper() or b"##JCAMPDX" in head.upper() else "rruff"
    return "text"


def _readers() -> dict[str, Callable[..., Spectra]]:
    from . import andor, jcamp, npz, rruff, spc, spe, text, wdf

    return {"rruff": rruff.read_rruff, "text": text.read_text, "npz": npz.read_npz, "spc": spc.read_spc,
            "wdf": wdf.read_wdf, "jcamp": jcamp.read_jcamp, "sif": andor.read_sif, "spe": spe.read_spe}


def _options_of(reader: Callable[..., Spectra]) -> set[str]:
    return {n for n, prm in inspect.signature(reader).parameters.items() if prm.kind is prm.KEYWORD_ONLY}


def read_spectrum(path: str | os.PathLike[str], **options: Any) -> tuple[np.ndarray, np.ndarray]:
    """Read a file that holds one spectrum (a calibration standard, a lamp): its axis and intensities.

    Parameters
    ----------
    path : path-like
    **options
        :func:`read_file` options.

    Returns
    -------
    raman_shift_cm1 : numpy.ndarray, shape (M,), float64
        Strictly increasing Raman shift, cm⁻¹.
    intensity : numpy.ndarray, shape (M,), float64

    Raises
    ------
    DataError
        If the file is unreadable or holds more than one spectrum.
    """
    s = read_file(path, **options)
    if len(s) != 1:
        raise DataError(f"{path}: holds {len(s)} spectra; one was expected")
    return np.asarray(s.raman_shift_cm1, dtype=np.float64), np.asarray(s.intensities[0], dtype=np.float64)


def read_file(path: str | os.PathLike[str], **options: Any) -> Spectra:
    """Read one spectrum file of any supported format.

    Parameters
    ----------
    path : path-like
    **options
        Reader options: ``laser_nm`` (nm axes: SIF, SPE, text), ``axis_unit``, ``delimiter``, ``decimal``,
        ``x_column``, ``y_column``, ``encoding`` (text), ``map_shape`` (SPC maps), ``allow_non_raman``
        (JCAMP-DX). Options a format does not use are ignored for it (so one call can read a mixed folder);
        an option no reader knows is an error.

    Returns
    -------
    Spectra

    Raises
    ------
    DataError
        If the file is unreadable or unsupported (one line naming what), or an option is unknown.
    """
    readers = _readers()
    known = set().union(*(_options_of(r) for r in readers.values()))
    unknown = set(options) - known
    if unknown:
        raise DataError(f"unknown reader option(s) {sorted(unknown)}; known: {sorted(known)}")
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "labspec6":
        raise DataError(f"{p}: Horiba LabSpec 6 binary (.l6s) is not supported (no maintained reader); "
                        "export the spectrum as text from LabSpec")
    reader = readers[fmt]
    accepted = _options_of(reader)
    return reader(p, **{k: v for k, v in options.items() if k in accepted})


def _skipped(p: Path) -> bool:
    return any(fnmatch.fnmatch(p.name, pat) for pat in SKIP_NAMES)


def _expand(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    files: list[Path] = []
    for item in paths:
        s = str(item)
        p = Path(s)
        if any(c in s for c in "*?[") and not p.exists():
            matches = sorted(Path(m) for m in glob.glob(s, recursive=True))
            if not matches:
                raise DataError(f"{s}: no file matches this pattern")
            files += [m for m in matches if m.is_file() and not _skipped(m)]
        elif p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and not _skipped(f)
                            and not any(part.startswith(".") for part in f.relative_to(p).parts))
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{s}: no such file or folder")
    return files


def read_spectra(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, strict: bool = False,
                 **options: Any) -> ReadResult:
    """Read files, folders (recursively) and glob patterns.

    Parameters
    ----------
    paths : path-like or iterable of them
    strict : bool
        Refuse the whole read at the first unreadable file instead of reporting it.
    **options
        Reader options (see :func:`read_file`).

    Returns
    -------
    ReadResult
        The spectra of every readable file, and (file, reason) for each unreadable one. Files named like
        :data:`SKIP_NAMES` (README, labels.csv ...) are passed over in folders.

    Raises
    ------
    DataError
        If a path does not exist, nothing at all could be read, or (``strict``) any file is unreadable.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = _expand(items)
    if not files:
        raise DataError(f"{', '.join(map(str, items))}: no files to read")
    result = ReadResult()
    for f in files:
        try:
            result.spectra.append(read_file(f, **options))
        except DataError as exc:
            if strict or len(files) == 1:
                raise
            reason = str(exc)
            if reason.startswith(str(f)):
                reason = reason[len(str(f)):].lstrip(": ")
            result.failures.append((str(f), reason))
    if not result.spectra:
        raise DataError(f"none of the {len(files)} file(s) could be read; first: {result.failures[0][0]}: "
                        f"{result.failures[0][1]}")
    return result
