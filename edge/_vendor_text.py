"""A small private reader for the two CHARISMA text layouts (BWTek and Horiba exports).

TO BE REPLACED by ``edge.io.read_spectra`` (issue #16, the general reader package): this module only serves
``edge-calibrate`` and the hygiene evaluation until then, and reads exactly two layouts:

- **BWTek** (BWSpec/BWRam): a ``key;value`` header, then a ``Pixel;...;Raman Shift;...;Dark Subtracted #1;...``
  table, semicolon-separated with a **decimal comma**; rows without a Raman shift (masked pixels) are skipped.
- **Horiba** (LabSpec export): two tab-separated columns, Raman shift (cm⁻¹) and intensity, LF or CRLF.

Both return the Raman-shift axis sorted increasing (cm⁻¹, float64) and the intensities (float64).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import DataError

__all__ = ["VendorSpectrum", "read_vendor_text"]

_BWTEK_X, _BWTEK_Y = "Raman Shift", "Dark Subtracted #1"


@dataclass(frozen=True)
class VendorSpectrum:
    """One spectrum read from a vendor text file.

    Attributes
    ----------
    raman_shift_cm1 : numpy.ndarray, shape (M,), float64
        Strictly increasing Raman shift, cm⁻¹.
    intensity : numpy.ndarray, shape (M,), float64
        Counts (dark-subtracted for BWTek).
    layout : str
        ``"bwtek"`` or ``"horiba"``.
    """

    raman_shift_cm1: np.ndarray
    intensity: np.ndarray
    layout: str


def _float(text: str) -> float:
    return float(text.strip().replace(",", "."))


def _finish(x: list[float], y: list[float], path: str, layout: str) -> VendorSpectrum:
    if len(x) < 3:
        raise DataError(f"{path}: fewer than 3 spectrum points ({layout} layout)")
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ya))):
        raise DataError(f"{path}: NaN or infinite values")
    order = np.argsort(xa, kind="stable")
    xa, ya = xa[order], ya[order]
    keep = np.concatenate([[True], np.diff(xa) > 0])  # drop repeated shifts (a strictly increasing axis)
    return VendorSpectrum(xa[keep], ya[keep], layout)


def read_vendor_text(path: str | os.PathLike) -> VendorSpectrum:
    """Read a BWTek (semicolon, decimal comma) or Horiba (two tab-separated columns) text file.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    VendorSpectrum

    Raises
    ------
    DataError
        If the file cannot be read or is in neither layout.
    """
    p = os.fspath(path)
    try:
        with open(p, encoding="latin-1", newline=None) as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise DataError(f"cannot read {p}: {exc}") from exc
    for i, line in enumerate(lines):
        if line.startswith("Pixel;") and _BWTEK_X in line:
            cols = [c.strip() for c in line.split(";")]
            if _BWTEK_Y not in cols:
                raise DataError(f"{p}: BWTek table without a {_BWTEK_Y!r} column")
            ix, iy = cols.index(_BWTEK_X), cols.index(_BWTEK_Y)
            x: list[float] = []
            y: list[float] = []
            for row in lines[i + 1:]:
                f = row.split(";")
                if len(f) <= max(ix, iy) or not f[ix].strip():
                    continue
                try:
                    x.append(_float(f[ix]))
                    y.append(_float(f[iy]))
                except ValueError as exc:
                    raise DataError(f"{p}: unreadable BWTek row {row!r}") from exc
            return _finish(x, y, p, "bwtek")
    x, y = [], []
    for row in lines:
        if not row.strip():
            continue
        f = row.split("\t")
        if len(f) != 2:
            raise DataError(f"{p}: neither a BWTek table nor two tab-separated columns (line {row[:60]!r})")
        try:
            x.append(float(f[0]))
            y.append(float(f[1]))
        except ValueError as exc:
            raise DataError(f"{p}: unreadable Horiba row {row[:60]!r}") from exc
    return _finish(x, y, p, "horiba")
