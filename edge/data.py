"""Spectra in: one loader API for the paper's ``.npz`` splits, original RRUFF ``.txt`` files and folders.

The shared data folder is found through one setting: the ``data_dir`` argument, else the ``RAMAN_EDGE_DATA``
environment variable, else ``../shared/data`` (relative to the working directory, then to the project root).
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import as_float_array, check_axis
from .errors import DataError, PreprocessError
from .preprocess import RamanGrid, resample
from .spectra import SpectraSet  # (re-exported: it lived here; edge.synthetic imports it from .spectra)

__all__ = [
    "DATA_ENV_VAR",
    "RamanSpectrum",
    "SpectraSet",
    "data_dir",
    "load_npz",
    "load_rruff_folder",
    "load_rruff_txt",
    "load_spectra",
    "resolve_data_path",
]

log = logging.getLogger("edge.data")

DATA_ENV_VAR = "RAMAN_EDGE_DATA"
_PROJECT_ROOT = Path(__file__).resolve().parent.parent
_NUMBER_LINE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?[,;\s]")
_FILETYPE_KIND = re.compile(r"\b(RAW|Processed)\b", re.IGNORECASE)
_RRUFF_NAME = re.compile(
    r"^(?P<name>[^_]+(?:_[^_]+)*?)__(?P<rruff_id>[RX]\d+(?:-\d+)?)__Raman__(?P<laser_nm>\d+(?:\.\d+)?)__"
    r".*?Raman_Data_(?P<kind>RAW|Processed)__"
)


@dataclass
class RamanSpectrum:
    """One measured spectrum on its own axis.

    Attributes
    ----------
    raman_shift_cm1 : numpy.ndarray, shape (M,), float64
        Strictly increasing Raman shift, cm⁻¹.
    intensity : numpy.ndarray, shape (M,), float32
        Intensity (arbitrary units; may be negative).
    label : str
        Mineral name.
    metadata : dict
        Header keys (``NAMES``, ``RRUFFID``, ...) plus ``laser_wavelength_nm``, ``data_kind``
        (``"RAW"`` or ``"Processed"``) and ``source_path`` where known.
    """

    raman_shift_cm1: np.ndarray
    intensity: np.ndarray
    label: str
    metadata: dict[str, Any] = field(default_factory=dict)


def data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Locate the shared data folder.

    Parameters
    ----------
    override : path-like, optional
        Explicit folder; wins over the environment.

    Returns
    -------
    pathlib.Path
        An existing folder.

    Raises
    ------
    DataError
        If the folder does not exist, with the places looked at and how to set it.
    """
    if override is not None:
        candidates = [Path(override)]
    elif os.environ.get(DATA_ENV_VAR):
        candidates = [Path(os.environ[DATA_ENV_VAR])]
    else:
        candidates = [Path.cwd() / ".." / "shared" / "data", _PROJECT_ROOT / ".." / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    raise DataError(
        "data folder not found (looked at: " + ", ".join(str(c) for c in candidates) + "); pass --data-dir or "
        f"set {DATA_ENV_VAR} to the folder that holds rruff_soysal/ and rruff_txt/"
    )


def resolve_data_path(path: str | os.PathLike[str], data_root: str | os.PathLike[str] | None = None) -> Path:
    """Return ``path`` if it exists, else ``path`` looked up inside the data folder.

    Raises
    ------
    DataError
        If neither exists.
    """
    p = Path(path)
    if p.exists():
        return p
    if not p.is_absolute():
        try:
            q = data_dir(data_root) / p
        except DataError:
            q = None
        if q is not None and q.exists():
            return q
    raise DataError(f"{path}: no such file or folder (also looked inside the data folder; see {DATA_ENV_VAR})")


def load_npz(path: str | os.PathLike[str]) -> SpectraSet:
    """Load one of the paper's ``.npz`` splits (keys ``X``, ``y``, ``raman_shift_cm1``).

    Raises
    ------
    DataError
        If the file is missing, unreadable, lacks a key, or holds invalid values.
    """
    p = Path(path)
    if p.is_file() and not zipfile.is_zipfile(p):  # np.load would answer with an allow_pickle hint
        raise DataError(f"{p}: not an .npz archive (numpy.savez writes a zip with X, y, raman_shift_cm1)")
    try:
        with np.load(p, allow_pickle=False) as d:
            missing = {"X", "y", "raman_shift_cm1"} - set(d.files)
            if missing:
                raise DataError(f"{p}: missing key(s) {sorted(missing)}; expected X, y, raman_shift_cm1")
            x, y, axis = d["X"], d["y"], d["raman_shift_cm1"]
    except (OSError, ValueError) as exc:
        raise DataError(f"{p}: cannot read as .npz: {exc}") from exc
    try:
        x = as_float_array(x, f"{p.name}: X", ndim=(2,))
        axis = check_axis(axis, name=f"{p.name}: raman_shift_cm1")
    except PreprocessError as exc:
        raise DataError(str(exc)) from exc
    return SpectraSet(x, np.asarray(y).astype(str), axis, source=str(p))


def _parse_rruff_filename(name: str) -> dict[str, Any]:
    m = _RRUFF_NAME.match(name)
    if not m:
        return {}
    return {
        "laser_wavelength_nm": float(m["laser_nm"]),
        "data_kind": m["kind"],
        "file_rruff_id": m["rruff_id"],
        "file_name_mineral": m["name"],
    }


def load_rruff_txt(path: str | os.PathLike[str]) -> RamanSpectrum:
    """Read one original RRUFF text file (the classic and the 2026 export format).

    Format: ``##KEY=value`` header lines (UTF-8, CRLF or LF), ``shift, intensity`` lines, ``##END=``. A header
    line that does not start with ``##`` and is not a data line continues the previous header's value (the
    2026 export wraps some ``##ORIENTATION`` values). The laser wavelength (nm) and RAW/Processed kind come
    from the file name (after ``Raman__``; R-IDs ``R…`` and ``X…``) and, where the name does not carry them,
    from the ``##RAMAN WAVELENGTH`` and ``##FILETYPE`` headers.

    Parameters
    ----------
    path : path-like
        The ``.txt`` file.

    Returns
    -------
    RamanSpectrum
        Axis shape (M,) float64 cm⁻¹ (sorted, repeated shifts dropped), intensity shape (M,) float32, the
        file-name mineral as label, the header keys plus ``laser_wavelength_nm``, ``data_kind``
        (``"RAW"``/``"Processed"``) and ``source_path`` as metadata.

    Raises
    ------
    DataError
        If the file cannot be read, holds no data lines, or a data line is malformed.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"{p}: cannot read: {exc}") from exc
    meta: dict[str, Any] = {}
    shifts: list[float] = []
    values: list[float] = []
    last_key: str | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("##"):
            key, _, value = line[2:].partition("=")
            if key.strip().upper() == "END":
                break
            last_key = key.strip()
            meta[last_key] = value.strip()
            continue
        if last_key is not None and not shifts and not _NUMBER_LINE.match(line + " "):
            meta[last_key] = f"{meta[last_key]} {line}".strip()  # a header value continued on the next line
            continue
        parts = [s for s in re.split(r"[,\s]+", line) if s]
        if len(parts) != 2:
            raise DataError(f"{p}:{lineno}: expected 'shift, intensity', got {line[:60]!r}")
        try:
            shifts.append(float(parts[0]))
            values.append(float(parts[1]))
        except ValueError as exc:
            raise DataError(f"{p}:{lineno}: not numbers: {line[:60]!r}") from exc
    if len(shifts) < 2:
        raise DataError(f"{p}: no data lines")
    meta.update(_parse_rruff_filename(p.name))
    if "laser_wavelength_nm" not in meta and meta.get("RAMAN WAVELENGTH"):
        try:
            meta["laser_wavelength_nm"] = float(meta["RAMAN WAVELENGTH"])
        except ValueError:
            log.debug("%s: unreadable RAMAN WAVELENGTH %r", p, meta["RAMAN WAVELENGTH"])
    if "data_kind" not in meta and meta.get("FILETYPE"):
        m = _FILETYPE_KIND.search(str(meta["FILETYPE"]))
        if m:
            meta["data_kind"] = "RAW" if m[1].upper() == "RAW" else "Processed"
    meta["source_path"] = str(p)
    x = np.asarray(shifts)
    y = np.asarray(values, dtype=np.float32)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    keep = np.concatenate([[True], np.diff(x) > 0])  # drop repeated shifts (seen in some exports)
    try:
        axis = check_axis(x[keep], name=f"{p.name}: raman shift")
        y = as_float_array(y[keep], f"{p.name}: intensity", ndim=(1,))
    except PreprocessError as exc:
        raise DataError(str(exc)) from exc
    # The file-name spelling is the label, as in the paper's splits (e.g. "AxiniteFe"); NAMES stays in metadata.
    label = meta.get("file_name_mineral") or meta.get("NAMES") or p.stem.split("__")[0]
    return RamanSpectrum(axis, y, str(label), meta)


def load_rruff_folder(path: str | os.PathLike[str], grid: RamanGrid | None = None, strict: bool = False) -> SpectraSet:
    """Read every ``*.txt`` RRUFF file in a folder and resample them onto ``grid`` (no normalisation).

    Past each file's measured range the values extend its edge level (:func:`edge.preprocess.resample`).
    A file that cannot be read or does not overlap the grid is skipped: it is logged (warning) and listed in
    the result's ``skipped`` with its reason, and the rest load. With ``strict`` it is refused instead.

    Parameters
    ----------
    path : path-like
        The folder.
    grid : RamanGrid, optional
        Target grid (default: the paper's 200-1591 cm⁻¹).
    strict : bool
        Raise on the first bad file instead of skipping it.

    Returns
    -------
    SpectraSet
        Intensities shape (B, N) float32 on the grid, labels, metadata per file, ``skipped`` files.

    Raises
    ------
    DataError
        If the folder holds no ``.txt`` file, none loads, or (``strict``) one file is invalid.
    """
    folder = Path(path)
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise DataError(f"{folder}: no RRUFF .txt files")
    grid = grid or RamanGrid()
    rows, labels, metas, skipped = [], [], [], []
    for f in files:
        try:
            s = load_rruff_txt(f)
            try:
                rows.append(resample(s.intensity, s.raman_shift_cm1, grid))
            except PreprocessError as exc:
                raise DataError(f"{f}: {exc}") from exc
        except DataError as exc:
            if strict:
                raise DataError(f"{exc} (strict: the folder is refused)") from exc
            log.warning("skipped %s: %s", f.name, exc)
            skipped.append((str(f), str(exc)))
            continue
        labels.append(s.label)
        metas.append(s.metadata)
    if not rows:
        raise DataError(f"{folder}: none of its {len(files)} .txt files loads; first: {skipped[0][1]}")
    return SpectraSet(np.stack(rows), np.asarray(labels), grid.axis, metas, str(folder), skipped)


def load_spectra(path: str | os.PathLike[str], grid: RamanGrid | None = None,
                 data_root: str | os.PathLike[str] | None = None,
                 labels: str | os.PathLike[str] | None = None, strict: bool = False) -> SpectraSet:
    """Load an ``.npz`` split, a synthetic split, or labelled spectrum files and folders of any format.

    ``synthetic:train`` and ``synthetic:test`` (optionally ``synthetic:test:SEED``) name the embedded
    synthetic library's splits (see :func:`edge.synthetic.synthetic_split`). Other files and folders (read
    recursively) go through :mod:`edge.io` (RRUFF, vendor text, SPC, WDF ...) and are resampled onto ``grid``;
    their labels come from ``labels`` (a ``file,label`` CSV, or ``"subfolders"``) or the files themselves
    (RRUFF names): see :func:`edge.io.labelled.load_labelled`. A file that names no mineral is refused.

    Relative paths that do not exist are looked up in the data folder (see :func:`data_dir`), so
    ``rruff_soysal/raw_test.npz`` works from anywhere. A folder with an unreadable file loads the rest and
    lists the file with its reason in the result's ``skipped`` (logged); ``strict`` refuses it instead.

    Raises
    ------
    DataError
        If the path cannot be found or read, nothing in it reads, (``strict``) a file is unreadable, or a
        spectrum has no label.
    """
    if str(path).startswith("synthetic"):
        from .synthetic import synthetic_split

        return synthetic_split(str(path), grid)
    p = resolve_data_path(path, data_root)
    if p.is_file() and p.suffix == ".npz" and labels is None:
        return load_npz(p)
    # Everything else: the edge.io readers (issue #16), imported here because edge.io.rruff imports this module.
    from .io.labelled import load_labelled

    return load_labelled(p, labels, grid, strict=strict)
