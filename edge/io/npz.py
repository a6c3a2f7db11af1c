"""``.npz`` files: the paper's splits (``X``, ``y``, ``raman_shift_cm1``) and map cubes.

A map cube is ``intensities`` of shape (rows, cols, points) with ``raman_shift_cm1`` (points,); optional
``step_um`` (dy, dx in µm) gives the physical scale, ``laser_wavelength_nm`` the laser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ._common import Spectra, finish

__all__ = ["read_npz"]


def read_npz(path: str | Path) -> Spectra:
    """Read an ``.npz`` split or map cube.

    Returns
    -------
    Spectra
        Split: B labelled spectra. Cube: rows x cols spectra, row-major, ``map_shape`` (rows, cols) and
        ``positions_um`` when ``step_um`` is given.

    Raises
    ------
    DataError
        If the file is unreadable or holds neither layout.
    """
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as d:
            arrays = {k: d[k] for k in d.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{p}: cannot read as .npz: {exc}") from exc
    if "raman_shift_cm1" not in arrays:
        raise DataError(f"{p}: no 'raman_shift_cm1' array (keys: {sorted(arrays)}); expected X, y, raman_shift_cm1 "
                        "or intensities (rows, cols, points), raman_shift_cm1")
    axis = arrays["raman_shift_cm1"]
    meta: dict[str, Any] = {"format": "npz"}
    if "laser_wavelength_nm" in arrays:
        meta["laser_wavelength_nm"] = float(arrays["laser_wavelength_nm"])
    if "X" in arrays:
        labels = [str(v) for v in arrays["y"]] if "y" in arrays else None
        return finish(p, axis, arrays["X"], meta, labels=labels)
    cube = arrays.get("intensities")
    if cube is None or cube.ndim != 3:
        raise DataError(f"{p}: expected 'X' (B, points) or 'intensities' (rows, cols, points); keys {sorted(arrays)}")
    rows, cols, n = cube.shape
    positions = None
    if "step_um" in arrays:
        dy, dx = (float(v) for v in np.broadcast_to(arrays["step_um"], (2,)))
        r, c = np.divmod(np.arange(rows * cols), cols)
        positions = np.stack([c * dx, r * dy], axis=1).astype(np.float64)
        meta["step_um"] = [dy, dx]
    return finish(p, axis, cube.reshape(rows * cols, n), meta, positions_um=positions, map_shape=(rows, cols))
