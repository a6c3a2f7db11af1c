"""Private input validation shared by the preprocessing, loaders and wire decoding.

Kept in one module (as pybaselines does) so that every boundary answers bad input with the same messages.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .errors import PreprocessError


def as_float_array(values: ArrayLike, name: str, *, ndim: tuple[int, ...] = (1, 2),
                   dtype: DTypeLike = np.float32) -> np.ndarray:
    """Return ``values`` as a finite floating array with an allowed number of dimensions.

    Parameters
    ----------
    values : array-like
        Input values. Never modified: a copy is made when a conversion is needed.
    name : str
        Name used in error messages (e.g. ``"intensity"``).
    ndim : tuple of int
        Allowed numbers of dimensions.
    dtype : numpy dtype
        Output dtype.

    Returns
    -------
    numpy.ndarray
        The values as ``dtype``; shares memory with ``values`` only when no conversion was needed.

    Raises
    ------
    PreprocessError
        If the values are not numeric, empty, of the wrong dimensionality, or hold NaN or Inf.
    """
    try:
        arr = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise PreprocessError(f"{name} is not a numeric array: {exc}") from exc
    if arr.ndim not in ndim:
        raise PreprocessError(f"{name} must have {' or '.join(map(str, ndim))} dimension(s), got shape {arr.shape}")
    if arr.size == 0 or arr.shape[-1] == 0:
        raise PreprocessError(f"{name} is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise PreprocessError(f"{name} holds {bad} NaN or Inf value(s)")
    return arr


def check_axis(raman_shift_cm1: ArrayLike, *, min_points: int = 2, name: str = "raman_shift_cm1") -> np.ndarray:
    """Validate a Raman-shift axis.

    Parameters
    ----------
    raman_shift_cm1 : array-like, shape (N,)
        Raman shift in cm⁻¹.
    min_points : int
        Smallest accepted number of points.
    name : str
        Name used in error messages.

    Returns
    -------
    numpy.ndarray, shape (N,), float64
        The axis (float64, so that interpolation onto a grid is exact to well below 1e-3 cm⁻¹).

    Raises
    ------
    PreprocessError
        If the axis is empty, too short, not finite, or not strictly increasing.
    """
    axis = as_float_array(raman_shift_cm1, name, ndim=(1,), dtype=np.float64)
    if axis.size < min_points:
        raise PreprocessError(f"{name} has {axis.size} point(s); at least {min_points} are needed")
    steps = np.diff(axis)
    if np.any(steps <= 0):
        first = int(np.argmax(steps <= 0))
        raise PreprocessError(
            f"{name} must be strictly increasing; it is not at index {first + 1} "
            f"({axis[first]:.3f} -> {axis[first + 1]:.3f} cm⁻¹)"
        )
    return axis
