"""Raman-shift offsets: the project's one shift function (shifted test sets, augmentation, drift streams)."""

from __future__ import annotations

import numpy as np

from ._validation import as_float_array

__all__ = ["shift_spectra"]


def shift_spectra(spectra: np.ndarray, shift_cm1, step_cm1: float = 1.0) -> np.ndarray:
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
