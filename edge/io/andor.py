"""Andor Solis ``.sif`` through ``sif-parser`` (extra ``[formats]``): maintained (2025), BSD, numpy only.

The axis comes from the file's calibration polynomial in nm and is converted to Raman shift with the laser
wavelength: ``laser_nm=`` or the file's ``RamanExWavelength``. Frames (kinetic series) become spectra; a
2-D image (several rows per frame) is refused.
"""

from __future__ import annotations

import datetime as _dt
import io
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._common import Spectra, finish, require

__all__ = ["read_sif"]


class _NoReadPastEnd(io.BufferedReader):
    """The open file; reading past the end raises ``EOFError``.

    ``sif-parser`` 0.3.6 loops forever on a truncated file (its word reader never sees the end): it reads
    through this object instead of the open file.
    """

    def read(self, size: int | None = -1, /) -> bytes:
        """Read ``size`` bytes; an empty result for a positive ``size`` raises ``EOFError``."""
        b = super().read(size)
        if size is not None and size > 0 and not b:
            raise EOFError("unexpected end of file (truncated?)")
        return b

    def readline(self, size: int | None = -1, /) -> bytes:
        """Read one line; at the end of the file raise ``EOFError``."""
        b = super().readline(size)
        if not b:
            raise EOFError("unexpected end of file (truncated?)")
        return b


def read_sif(path: str | Path, *, laser_nm: float | None = None) -> Spectra:
    """Read an Andor SIF spectrum (or a series of frames).

    Parameters
    ----------
    path : str or pathlib.Path
    laser_nm : float, optional
        Excitation wavelength in nm; overrides the file's ``RamanExWavelength``.

    Raises
    ------
    DataError
        If the file is not a readable SIF, has no wavelength calibration, is an image, or no laser
        wavelength is known.
    """
    p = Path(path)
    sif = require("sif_parser", "SIF", "sif-parser")
    try:
        with _NoReadPastEnd(io.FileIO(p, "rb")) as f:
            data, info = sif.np_open(f)
        x = sif.utils.extract_calibration(info)
    except Exception as exc:  # the library's parse failures, wrapped at the boundary
        raise DataError(f"{p}: cannot read as SIF: {type(exc).__name__}: {exc}") from exc
    data = np.asarray(data, dtype=np.float64)
    if x is None:
        raise DataError(f"{p}: the SIF file has no wavelength calibration (pixels only)")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise DataError(f"{p}: per-frame calibrations are not supported")
    if data.ndim != 3 or data.shape[1] != 1:
        raise DataError(f"{p}: SIF image of shape {data.shape} (frames, rows, pixels): only spectra (one row per "
                        "frame) are supported")
    file_laser = float(info.get("RamanExWavelength", 0.0) or 0.0)
    laser = laser_nm if laser_nm is not None else (file_laser or None)
    meta = {"format": "SIF", "instrument": f"Andor {info.get('DetectorType', '')}".strip(),
            "exposure_s": float(info.get("ExposureTime", 0.0)), "file_laser_wavelength_nm": file_laser or None,
            "header": {k: v for k, v in info.items() if isinstance(v, (int, float, str)) and k != "offset"}}
    if info.get("ExperimentTime"):
        meta["acquisition_time"] = _dt.datetime.fromtimestamp(int(info["ExperimentTime"]), _dt.UTC).isoformat()
    return finish(p, x, data[:, 0, :], meta, unit="nm", laser_nm=laser)
