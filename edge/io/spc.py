"""Thermo Galactic SPC through ``spc-io`` (extra ``[formats]``).

``spc-io`` is maintained (2025) and reads new-format little-endian files, single and multi-subfile; it does not
read the old 0x4D format, which is refused with a clear error (no permissively licensed reader does).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._common import Spectra, finish, require

__all__ = ["read_spc"]
_X_UNITS = {"XRAMANS": "cm-1", "XNMETR": "nm"}


def read_spc(path: str | Path, *, laser_nm: float | None = None, map_shape: tuple[int, int] | None = None) -> Spectra:
    """Read an SPC file (one or several subfiles on a shared axis).

    Parameters
    ----------
    path : str or pathlib.Path
    laser_nm : float, optional
        Needed when the x axis is in nm.
    map_shape : (rows, cols), optional
        Arrange a multi-subfile map (the file's subfile positions are often zero) as a raster.

    Raises
    ------
    DataError
        Old-format (0x4D) or big-endian files, unsupported x units, or a corrupt file.
    """
    p = Path(path)
    spc_io = require("spc_io", "SPC", "spc-io")
    raw = p.read_bytes()
    if len(raw) < 2 or raw[1] not in (0x4B,):
        version = f"0x{raw[1]:02X}" if len(raw) > 1 else "?"
        raise DataError(f"{p}: SPC version {version} is not supported (only new-format little-endian 0x4B files "
                        "are read; old-format 0x4D files have no maintained reader)")
    logging.getLogger("spc_io").setLevel(logging.ERROR)
    try:
        spc = spc_io.SPC.from_bytes_io(io.BytesIO(raw))
        subs = list(spc)
        x = np.asarray(subs[0].xarray, dtype=np.float64)
        y = np.stack([np.asarray(s.yarray, dtype=np.float64) for s in subs])
        xtype = str(spc.xtype).split(".")[-1]
        text = dict(getattr(spc.log_book, "text", {}) or {})
    except Exception as exc:  # a foreign library's parse failure, wrapped at the boundary
        raise DataError(f"{p}: cannot read as SPC: {type(exc).__name__}: {exc}") from exc
    unit = _X_UNITS.get(xtype)
    if unit is None:
        raise DataError(f"{p}: SPC x unit {xtype} is not a Raman shift or wavelength")
    meta = {"format": "SPC", "header": text, "x_type": xtype}
    if text.get("Laser"):
        meta["laser"] = text["Laser"]
    if map_shape is not None and map_shape[0] * map_shape[1] != len(subs):
        raise DataError(f"{p}: map_shape {map_shape} does not hold the file's {len(subs)} spectra")
    if map_shape is None and len(subs) > 1 and "map" in str(text.get("Measurement_type", "")).lower():
        meta["map_note"] = f"{len(subs)} map spectra without positions; pass map_shape=(rows, cols) to arrange them"
    return finish(p, x, y, meta, unit=unit, laser_nm=laser_nm, map_shape=map_shape)
