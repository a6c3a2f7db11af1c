"""Renishaw WiRE ``.wdf`` through Renishaw's own ``renishaw-wdf`` (extra ``[formats]``).

Chosen over ``renishawWiRE`` (unmaintained since 2023): the vendor maintains it, and it gives the map area
(raster shape, step) and per-spectrum stage positions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from ._common import Spectra, finish, require

__all__ = ["read_wdf"]


def read_wdf(path: str | Path) -> Spectra:
    """Read a WDF file: a single spectrum, a series, or a map (line or area).

    Returns
    -------
    Spectra
        All spectra on the file's axis; for maps, ``map_shape`` (rows, cols) from the map area and
        ``positions_um`` from the spatial origins; ``laser_wavelength_nm`` from the header's laser wavenumber.

    Raises
    ------
    DataError
        If the file is not a readable WDF or its axis is not a Raman shift.
    """
    p = Path(path)
    wdf = require("wdf", "WDF", "renishaw-wdf")
    try:
        with wdf.Wdf(str(p)) as w:
            h = w.hdr
            xl = w.xlist()
            x = np.asarray(xl, dtype=np.float64)
            y = np.stack([np.asarray(w[i], dtype=np.float64) for i in range(len(w))])
            x_unit = getattr(getattr(xl, "units", None), "name", "")
            meta = {"format": "WDF", "instrument": f"Renishaw {h.appname} {h.appversion}", "title": h.title,
                    "acquisition_time": h.time_start.isoformat(), "wdf_type": h.type.name,
                    "scan_type": h.scantype.name}
            if h.laser_wavenumber > 0:
                meta["laser_wavelength_nm"] = round(1e7 / float(h.laser_wavenumber), 3)
            origins = w.origins
            positions = None
            keys = {str(k).split(".")[-1]: k for k in origins.keys()}
            if "Spatial_X" in keys and "Spatial_Y" in keys:
                positions = np.stack([np.asarray(origins[keys["Spatial_X"]], dtype=np.float64),
                                      np.asarray(origins[keys["Spatial_Y"]], dtype=np.float64)], axis=1)
            map_shape = None
            if meta["wdf_type"] == "Map":
                try:
                    area = w.map_area
                    map_shape = (int(area.count.y), int(area.count.x))
                    meta["step_um"] = [float(area.step.y), float(area.step.x)]
                except Exception:  # no map-area block: positions only
                    map_shape = None
                if map_shape is not None and map_shape[0] * map_shape[1] != len(y):
                    map_shape = None  # an interrupted map: positions only
    except DataError:
        raise
    except Exception as exc:  # the library's parse failures, wrapped at the boundary
        raise DataError(f"{p}: cannot read as WDF: {type(exc).__name__}: {exc}") from exc
    if x_unit not in ("RamanShift", ""):
        raise DataError(f"{p}: WDF x unit {x_unit} is not a Raman shift")
    return finish(p, x, y, meta, positions_um=positions, map_shape=map_shape)
