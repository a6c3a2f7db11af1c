"""Princeton Instruments ``.spe`` (2.x and 3.0) through ``spexread`` (extra ``[formats]``).

Chosen over ``spe2py`` (unmaintained since 2018, SPE 3.0 only): ``spexread`` (2026) also reads SPE 2.x
files written by WinSpec and by Andor software. The wavelength calibration (nm) is converted to Raman shift
with ``laser_nm=`` or the file's laser wavelength when its XML footer gives one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ._common import Spectra, finish, require

__all__ = ["read_spe"]


def _laser_from(calibrations: Any) -> float | None:
    try:
        v = calibrations.get("WavelengthCalib", {}).get("laserWavelength") or calibrations.get("laserWavelength")
        return float(v) if v else None
    except (AttributeError, TypeError, ValueError):
        return None


def read_spe(path: str | Path, *, laser_nm: float | None = None) -> Spectra:
    """Read an SPE file: every frame and row of every region of interest becomes a spectrum.

    Raises
    ------
    DataError
        If the file is not a readable SPE, has no wavelength calibration, or no laser wavelength is known.
    """
    p = Path(path)
    spexread = require("spexread", "SPE", "spexread")
    try:
        ds = spexread.read_spe_file(str(p))
        rois = [k for k in ds.data_vars if str(k).startswith("ROI")]
        if "wavelength" not in ds.coords:
            raise DataError(f"{p}: the SPE file has no wavelength calibration (pixels only)")
        x = np.asarray(ds.coords["wavelength"].values, dtype=np.float64)
        y = np.concatenate([np.asarray(ds[r].values, dtype=np.float64).reshape(-1, x.size) for r in rois])
        attrs = dict(ds.attrs)
    except DataError:
        raise
    except Exception as exc:  # the library's parse failures, wrapped at the boundary
        raise DataError(f"{p}: cannot read as SPE: {type(exc).__name__}: {exc}") from exc
    general = attrs.get("GeneralInfo") or {}
    meta = {"format": f"SPE {attrs.get('version', '')}".strip(), "instrument": "Princeton Instruments",
            "acquisition_time": str(general.get("created")) if isinstance(general, dict) and general.get("created")
            else None}
    laser = laser_nm if laser_nm is not None else _laser_from(attrs.get("Calibrations") or {})
    return finish(p, x, y, meta, unit="nm", laser_nm=laser)
