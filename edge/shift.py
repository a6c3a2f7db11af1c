"""Raman-shift offsets and measured-range truncation of spectra.

The project's shift function (shifted test sets, augmentation, drift streams) and its partial-range
counterpart (spectra another instrument measured over a shorter range).
"""

from __future__ import annotations

import numpy as np

from ._validation import as_float_array, check_axis
from .errors import PreprocessError

__all__ = ["shift_spectra", "truncate_spectra"]


def shift_spectra(spectra: np.ndarray, shift_cm1: float | np.ndarray, step_cm1: float = 1.0) -> np.ndarray:
    """Move spectra along the Raman-shift axis, padding with each row's own edge value.

    A positive shift moves peaks to higher Raman shift (to the right), as the paper's shifted test sets do
    (Soysal et al., §5: +15 and +30 cm⁻¹); the left edge is padded with the row's first value, the right edge
    (for negative shifts) with its last value. Fractional shifts interpolate linearly.

    Parameters
    ----------
    spectra : numpy.ndarray, shape (N,) or (B, N)
        Spectra on a uniform grid. Never modified.
    shift_cm1 : float or numpy.ndarray of shape (B,)
        Shift in cm⁻¹: one value for all rows, or one per row.
    step_cm1 : float
        Grid spacing in cm⁻¹.

    Returns
    -------
    numpy.ndarray, same shape as ``spectra``, float32
        Shifted spectra (a new array).

    Raises
    ------
    PreprocessError
        If the spectra are empty or hold NaN/Inf.
    """
    x = as_float_array(spectra, "spectra")
    rows = x.reshape(-1, x.shape[-1])
    n = rows.shape[1]
    s = np.asarray(shift_cm1, dtype=np.float64) / step_cm1
    if s.ndim:  # one shift per row
        s = np.broadcast_to(s, (rows.shape[0],))[:, None]
    pos = np.clip(np.arange(n, dtype=np.float64) - s, 0.0, n - 1.0)  # source position of each output point
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    frac = (pos - lo).astype(np.float32)
    # One shift for all rows (pos shape (N,), e.g. the daemon's drift compensation) gathers whole columns.
    r = slice(None) if pos.ndim == 1 else np.arange(rows.shape[0])[:, None]
    out = rows[r, lo] * (1.0 - frac) + rows[r, hi] * frac
    return out.reshape(x.shape).astype(np.float32)


def truncate_spectra(spectra: np.ndarray, raman_shift_cm1: np.ndarray, start_cm1: float | None = None,
                     stop_cm1: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Keep only the part of spectra measured within [``start_cm1``, ``stop_cm1``]: a partial-range copy.

    The result is what an instrument with that range would send: its own (shorter) axis and the values on it,
    nothing outside. Preprocess it with that axis (:class:`edge.preprocess.Preprocessor`) to see how a
    model handles the missing range.

    Parameters
    ----------
    spectra : numpy.ndarray, shape (N,) or (B, N)
        Spectra on ``raman_shift_cm1``. Never modified.
    raman_shift_cm1 : numpy.ndarray, shape (N,)
        Strictly increasing Raman shift, cm⁻¹.
    start_cm1, stop_cm1 : float, optional
        Measured range to keep, cm⁻¹ (inclusive); None keeps that end.

    Returns
    -------
    axis : numpy.ndarray, shape (M,), float64
        The kept part of the axis, cm⁻¹.
    truncated : numpy.ndarray, shape (M,) or (B, M), float32
        The kept values (a new array).

    Raises
    ------
    PreprocessError
        If the inputs are invalid, ``start_cm1`` ≥ ``stop_cm1``, or fewer than 2 points remain.
    """
    x = as_float_array(spectra, "spectra")
    axis = check_axis(raman_shift_cm1)
    if x.shape[-1] != axis.size:
        raise PreprocessError(f"spectra have {x.shape[-1]} points but raman_shift_cm1 has {axis.size}")
    lo = -np.inf if start_cm1 is None else float(start_cm1)
    hi = np.inf if stop_cm1 is None else float(stop_cm1)
    if np.isnan(lo) or np.isnan(hi) or lo >= hi:
        raise PreprocessError(f"truncation range must have start < stop, got {start_cm1!r} to {stop_cm1!r} cm⁻¹")
    keep = (axis >= lo) & (axis <= hi)
    if np.count_nonzero(keep) < 2:
        raise PreprocessError(f"fewer than 2 points of the axis ({axis[0]:.1f} to {axis[-1]:.1f} cm⁻¹) lie "
                              f"within {lo:g} to {hi:g} cm⁻¹")
    return axis[keep].copy(), x[..., keep].astype(np.float32, copy=True)
