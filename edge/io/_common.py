"""What every reader returns (:class:`Spectra`), and the helpers they share: axis checks, nm → cm⁻¹, extras."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .._validation import as_float_array, check_axis
from ..errors import DataError, PreprocessError

__all__ = ["FORMATS_EXTRA", "Spectra", "finish", "nm_to_raman_shift", "require"]

FORMATS_EXTRA = "formats"


@dataclass
class Spectra:
    """Spectra from one file (or one map) on one Raman-shift axis.

    Attributes
    ----------
    raman_shift_cm1 : numpy.ndarray, shape (N,), float64
        Strictly increasing Raman shift, cm⁻¹.
    intensities : numpy.ndarray, shape (B, N), float32
        One row per spectrum (arbitrary units).
    metadata : dict
        File-level metadata: ``source_file``, ``format``, and where the file gives them ``instrument``,
        ``laser_wavelength_nm``, ``acquisition_time`` (ISO 8601), ``axis_unit`` (the file's x unit), the
        header (``header``: dict of key → value as written).
    positions_um : numpy.ndarray, shape (B, 2), float64, or None
        Stage position (x, y) of each spectrum in µm, where the file gives one.
    map_shape : tuple of int (rows, cols), or None
        When the spectra form a raster (rows x cols, row-major), as in a map.
    labels : list of str or None, length B
        Known mineral names (RRUFF files, labelled ``.npz``), else None.
    """

    raman_shift_cm1: np.ndarray
    intensities: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    positions_um: np.ndarray | None = None
    map_shape: tuple[int, int] | None = None
    labels: list[str] | None = None

    def __post_init__(self) -> None:
        b, n = self.intensities.shape
        if n != self.raman_shift_cm1.shape[0]:
            raise DataError(f"{self.source}: axis has {self.raman_shift_cm1.shape[0]} points, spectra {n}")
        if self.map_shape is not None and self.map_shape[0] * self.map_shape[1] != b:
            raise DataError(f"{self.source}: map shape {self.map_shape} does not hold {b} spectra")

    def __len__(self) -> int:
        return int(self.intensities.shape[0])

    @property
    def source(self) -> str:
        """The file the spectra came from."""
        return str(self.metadata.get("source_file", "?"))

    def spectrum_metadata(self, i: int) -> dict[str, Any]:
        """Metadata of spectrum ``i``: the file's plus ``index``, ``map_row``/``map_col`` and ``x_um``/``y_um``."""
        m = {k: v for k, v in self.metadata.items() if k != "header"}
        m["index"] = i
        if self.map_shape is not None:
            m["map_row"], m["map_col"] = divmod(i, self.map_shape[1])
        if self.positions_um is not None:
            m["x_um"], m["y_um"] = float(self.positions_um[i, 0]), float(self.positions_um[i, 1])
        if self.labels is not None:
            m["label"] = self.labels[i]
        return m


def nm_to_raman_shift(wavelength_nm: np.ndarray, laser_nm: float) -> np.ndarray:
    """Convert scattered-light wavelengths to Raman shift: ``1e7/λ_laser - 1e7/λ`` (cm⁻¹; Stokes positive).

    Parameters
    ----------
    wavelength_nm : numpy.ndarray, shape (N,)
        Wavelength in nm (air or vacuum, as the file gives it).
    laser_nm : float
        Excitation wavelength in nm.

    Returns
    -------
    numpy.ndarray, shape (N,), float64
        Raman shift, cm⁻¹.

    Raises
    ------
    DataError
        If the laser wavelength is not a positive finite number.
    """
    if not (np.isfinite(laser_nm) and laser_nm > 0):
        raise DataError(f"laser wavelength must be a positive number of nm, got {laser_nm!r}")
    wl = np.asarray(wavelength_nm, dtype=np.float64)
    return 1e7 / float(laser_nm) - 1e7 / wl


def require(module: str, fmt: str, package: str) -> ModuleType:
    """Import an optional reader library or raise one error naming the extra that installs it.

    Raises
    ------
    DataError
        If ``module`` is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DataError(f"reading {fmt} files needs the [{FORMATS_EXTRA}] extra "
                        f"(pip install 'raman-edge[{FORMATS_EXTRA}]', which installs {package})") from exc


def finish(path: Path, x: np.ndarray, y: np.ndarray, metadata: dict[str, Any], *,
           positions_um: np.ndarray | None = None, map_shape: tuple[int, int] | None = None,
           labels: list[str] | None = None, unit: str = "cm-1", laser_nm: float | None = None) -> Spectra:
    """Build :class:`Spectra` from a reader's raw arrays: convert nm, sort the axis ascending, validate.

    Parameters
    ----------
    path : pathlib.Path
    x : numpy.ndarray, shape (N,)
        The file's axis in ``unit``.
    y : numpy.ndarray, shape (N,) or (B, N)
    metadata : dict
    unit : {"cm-1", "nm"}
        The axis unit; ``"nm"`` is converted with ``laser_nm``.
    laser_nm : float, optional
        Needed when ``unit == "nm"``.

    Raises
    ------
    DataError
        If an nm axis comes without a laser wavelength, or the axis or values are invalid (NaN, repeated
        shifts, too short).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.atleast_2d(np.asarray(y, dtype=np.float32))
    meta = {"source_file": str(path), **metadata, "axis_unit": unit}
    if unit == "nm":
        if laser_nm is None:
            raise DataError(f"{path}: the axis is a wavelength (nm); pass laser_nm=... (--laser-nm) to convert it "
                            "to Raman shift")
        x = nm_to_raman_shift(x, laser_nm)
        meta["laser_wavelength_nm"] = float(laser_nm)
    if x.size >= 2 and x[0] > x[-1]:
        x, y = x[::-1], y[:, ::-1]
    try:
        axis = check_axis(x, name=f"{path.name}: axis")
        y = as_float_array(np.ascontiguousarray(y), f"{path.name}: intensities", ndim=(2,))
    except PreprocessError as exc:
        raise DataError(str(exc)) from exc
    return Spectra(axis, y, meta, positions_um, map_shape, labels)
