"""Spectral resolution: Gaussian broadening of spectra on a uniform Raman-shift grid.

Every spectrometer convolves the Raman lines with its instrument function (slit, grating, pixel pitch); to first
order a Gaussian whose full width at half maximum (FWHM) is the instrument's resolution. Broadening by a
Gaussian of FWHM ``w`` turns a line of FWHM ``f`` into one of about ``sqrt(f² + w²)``: the narrow lines of a
high-resolution instrument move towards the broad lines of a low-resolution one, while broad lines barely
change. Two uses (issue #14), one implementation:

* **a resolution floor** in preprocessing (:class:`edge.preprocess.PreprocessConfig` ``resolution_fwhm_cm1``):
  every spectrum, in training and onboard, is broadened by the same fixed width, so a sharper instrument than
  the training library's (CHARISMA's BWTek and Horiba 633 nm calcite lines are 6–10 cm⁻¹ wide, RRUFF's 14–26)
  no longer shows the network line widths it never saw;
* **resolution augmentation** in training (:class:`trainer.augment.AugmentConfig` ``resolution_fwhm_cm1``): a
  random extra width per training spectrum, applied before noise (an instrument blurs the signal, not its
  detector noise).

The convolution is :func:`scipy.ndimage.gaussian_filter1d` with edge-replicate padding (``mode="nearest"``: the
grid's ends are continued with their edge values, as :func:`edge.preprocess.resample` extends a partial range).
"""

from __future__ import annotations

import math

import numpy as np

from ._validation import as_float_array
from .errors import PreprocessError

__all__ = ["FWHM_PER_SIGMA", "broaden"]

#: FWHM of a Gaussian in units of its standard deviation, 2·sqrt(2·ln 2).
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def broaden(spectra: np.ndarray, fwhm_cm1: float | np.ndarray, step_cm1: float = 1.0) -> np.ndarray:
    """Convolve spectra on a uniform grid with a Gaussian of the given FWHM.

    Parameters
    ----------
    spectra : numpy.ndarray, shape (N,) or (B, N)
        Intensities on a uniform Raman-shift grid (any units). Never modified.
    fwhm_cm1 : float or numpy.ndarray of shape (B,)
        Full width at half maximum of the Gaussian, cm⁻¹: one value for all rows or one per row; 0 leaves a
        row unchanged. Must be finite and ≥ 0.
    step_cm1 : float
        Grid spacing, cm⁻¹ (> 0).

    Returns
    -------
    numpy.ndarray, same shape as ``spectra``, float32
        Broadened spectra (a new array). The area under each row is kept, except for what the edge padding
        adds or removes within a few widths of the grid's ends.

    Raises
    ------
    PreprocessError
        If the spectra are empty or hold NaN/Inf, if a width is negative or not finite, if the number of widths
        does not match the number of rows, or if ``step_cm1`` is not positive.
    """
    from scipy.ndimage import gaussian_filter1d

    x = as_float_array(spectra, "spectra")
    if not (math.isfinite(step_cm1) and step_cm1 > 0):
        raise PreprocessError(f"step_cm1 must be a positive number, got {step_cm1!r}")
    w = np.asarray(fwhm_cm1, dtype=np.float64)
    if not (np.all(np.isfinite(w)) and np.all(w >= 0)):
        raise PreprocessError(f"resolution FWHM must be finite and ≥ 0 cm⁻¹, got {fwhm_cm1!r}")
    rows = x.reshape(-1, x.shape[-1]).astype(np.float32, copy=True)
    sigma = w / FWHM_PER_SIGMA / step_cm1  # in grid points
    if sigma.ndim == 0:
        if sigma > 0:
            rows = gaussian_filter1d(rows, float(sigma), axis=-1, mode="nearest")
        return rows.reshape(x.shape)
    if sigma.shape != (rows.shape[0],):
        raise PreprocessError(f"got {sigma.size} FWHM values for {rows.shape[0]} spectra")
    for i in np.flatnonzero(sigma > 0):
        rows[i] = gaussian_filter1d(rows[i], float(sigma[i]), mode="nearest")
    return rows.reshape(x.shape)
