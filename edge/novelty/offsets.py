"""Raman-shift offsets: of spectra against reference spectra (cross-correlation), and of a calibration
standard's line (e.g. silicon, 520.7 cm⁻¹).
"""

from __future__ import annotations

import math

import numpy as np

from .._validation import as_float_array, check_axis
from ..errors import PreprocessError
from .scores import HIGHPASS_POINTS, _unit_lines, primary_channel

__all__ = ["class_mean_spectra", "estimate_offsets", "offset_reference_fft", "offset_spectra_fft", "parabolic_peak",
           "reference_line_offset"]


def class_mean_spectra(x: np.ndarray, labels: np.ndarray, classes: list[str]) -> np.ndarray:
    """Reference spectra for the offset estimate: the mean preprocessed spectrum (channel 0) of each class.

    Parameters
    ----------
    x : numpy.ndarray, shape (B, N) or (B, C, N)
        Preprocessed training spectra.
    labels : numpy.ndarray of str, shape (B,)
    classes : list of str
        Row order of the result.

    Returns
    -------
    numpy.ndarray, shape (len(classes), N), float32
        A zero row for a class without spectra.
    """
    x0 = primary_channel(np.asarray(x))
    labels = np.asarray(labels).astype(str)
    out = np.zeros((len(classes), x0.shape[-1]), dtype=np.float32)
    for i, c in enumerate(classes):
        sel = labels == c
        if sel.any():
            out[i] = x0[sel].mean(axis=0)
    return out


def parabolic_peak(y_minus: np.ndarray, y0: np.ndarray, y_plus: np.ndarray) -> np.ndarray:
    """Sub-sample position of a peak from three equally spaced samples around the largest one.

    Returns the vertex of the parabola through (−1, y_minus), (0, y0), (+1, y_plus), in [−0.5, 0.5] when
    ``y0`` is the largest; 0 where the samples are collinear.
    """
    den = y_minus - 2.0 * y0 + y_plus
    safe = np.where(np.abs(den) > 1e-12, den, 1.0)
    return np.where(np.abs(den) > 1e-12, 0.5 * (y_minus - y_plus) / safe, 0.0)



#: (spectrum, reference) pairs correlated per FFT block: the block's temporaries (~260 kB) stay in cache and are
#: reused, instead of one (B, k, nfft) array per call (fresh pages of several MB on every micro-batch).
_PAIRS_PER_BLOCK = 16


def estimate_offsets(x: np.ndarray, references: np.ndarray, candidates: np.ndarray | None = None,
                     max_lag: int = 40, window: int = HIGHPASS_POINTS,
                     references_fft: np.ndarray | None = None,
                     spectra_fft: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raman-shift offset of each spectrum against reference spectra, by normalised cross-correlation.

    Both sides are reduced to their unit-norm line component (:func:`highpass`); the correlation is computed
    for integer lags in [−``max_lag``, ``max_lag``] points through a zero-padded FFT (no wrap-around), the
    best lag over the candidate references is refined by parabolic interpolation.

    Parameters
    ----------
    x : numpy.ndarray, shape (B, N)
        Preprocessed spectra on the grid.
    references : numpy.ndarray, shape (R, N)
        Reference spectra on the same grid (e.g. the mean preprocessed training spectrum of each class).
    candidates : numpy.ndarray of int, shape (B, k), optional
        Which references to try for each spectrum (e.g. the classifier's top-k classes); default all.
    max_lag : int
        Largest offset searched, grid points.
    window : int
        High-pass window, grid points.
    references_fft : numpy.ndarray, optional
        Cached ``offset_reference_fft(references, N, max_lag, window)``.
    spectra_fft : numpy.ndarray, shape (B, nfft // 2 + 1), optional
        Cached ``offset_spectra_fft(x, max_lag, window)`` (a second search of the same spectra reuses it).

    Returns
    -------
    offset_points : numpy.ndarray, shape (B,), float64
        Offset in grid points (multiply by the grid step for cm⁻¹); positive = the spectrum's lines sit at a
        higher Raman shift than the reference's (the direction of :func:`edge.shift.shift_spectra`).
    quality : numpy.ndarray, shape (B,), float64
        Peak normalised correlation (≤ 1); low values mean no reference matched.
    best : numpy.ndarray, shape (B,), int64
        Index of the reference that matched best.

    Raises
    ------
    PreprocessError
        If the shapes do not agree or ``max_lag`` is not in [1, N).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or references.ndim != 2 or references.shape[1] != x.shape[1]:
        raise PreprocessError(f"offset estimation needs x (B, N) and references (R, N), got {x.shape} and "
                              f"{references.shape}")
    b, n = x.shape
    if not 1 <= max_lag < n:
        raise PreprocessError(f"max_lag must be in [1, {n}), got {max_lag}")
    rf = references_fft if references_fft is not None else offset_reference_fft(references, n, max_lag, window)
    xf = spectra_fft if spectra_fft is not None else offset_spectra_fft(x, max_lag, window)  # (B, F)
    if xf.shape != (b, rf.shape[1]):
        raise PreprocessError(f"spectra_fft has shape {xf.shape}, expected {(b, rf.shape[1])}")
    if candidates is None:
        candidates = np.broadcast_to(np.arange(len(references)), (b, len(references)))
    candidates = np.asarray(candidates, dtype=np.int64)
    lags = _lag_correlations(xf, rf, candidates, max_lag)  # (B, k, 2L + 1): lags −L … L
    flat = lags.reshape(b, -1)
    arg = np.argmax(flat, axis=1)
    ci, li = np.divmod(arg, 2 * max_lag + 1)
    rows = np.arange(b)
    peak = lags[rows, ci, li]
    inner = (li > 0) & (li < 2 * max_lag)
    lo = lags[rows, ci, np.clip(li - 1, 0, 2 * max_lag)]
    hi = lags[rows, ci, np.clip(li + 1, 0, 2 * max_lag)]
    frac = np.where(inner, parabolic_peak(lo, peak, hi), 0.0)
    return (li - max_lag) + frac, peak, candidates[rows, ci]


def _lag_correlations(xf: np.ndarray, rf: np.ndarray, candidates: np.ndarray, max_lag: int) -> np.ndarray:
    """Correlations ``c[l] = Σ x[i+l] p[i]`` at lags −``max_lag`` … ``max_lag`` of each spectrum with each of its
    candidate references, shape (B, k, 2·max_lag + 1), from their FFTs ``xf`` (B, F) and conjugate ``rf`` (R, F).

    Blocks of :data:`_PAIRS_PER_BLOCK` (spectrum, reference) pairs through reused buffers: the same products and
    inverse FFTs, row for row, as one (B, k, nfft) computation, without its multi-megabyte temporaries.
    """
    b, k = candidates.shape
    nf = rf.shape[1]
    nfft = 2 * (nf - 1)
    width = 2 * max_lag + 1
    out = np.empty((b * k, width))
    pair_rows = np.repeat(np.arange(b), k)
    pair_refs = candidates.reshape(-1)
    size = min(_PAIRS_PER_BLOCK, b * k)
    xs = np.empty((size, nf), dtype=np.complex128)
    rs = np.empty((size, nf), dtype=np.complex128)
    corr = np.empty((size, nfft))
    for start in range(0, b * k, size):
        m = min(size, b * k - start)
        np.take(xf, pair_rows[start:start + m], axis=0, out=xs[:m])
        np.take(rf, pair_refs[start:start + m], axis=0, out=rs[:m])
        np.multiply(xs[:m], rs[:m], out=xs[:m])
        np.fft.irfft(xs[:m], n=nfft, axis=-1, out=corr[:m])  # c[l] at l (l ≥ 0) and nfft + l (l < 0)
        out[start:start + m, :max_lag] = corr[:m, nfft - max_lag:]
        out[start:start + m, max_lag:] = corr[:m, :max_lag + 1]
    return out.reshape(b, k, width)


def _nfft(n_points: int, max_lag: int) -> int:
    """FFT length of the offset search: a power of two ≥ N + max_lag + 1 (zero padding: no wrap-around)."""
    return 1 << math.ceil(math.log2(n_points + max_lag + 1))


def offset_reference_fft(references: np.ndarray, n_points: int, max_lag: int, window: int = HIGHPASS_POINTS) -> np.ndarray:
    """Conjugate FFTs of the unit line components of ``references`` (R, N), as :func:`estimate_offsets`
    needs them (cache them: they depend on the bundle only). Shape (R, nfft // 2 + 1), complex128.
    """
    nfft = _nfft(n_points, max_lag)
    return np.conj(np.fft.rfft(_unit_lines(np.asarray(references, dtype=np.float64), window), n=nfft, axis=-1))


def offset_spectra_fft(x: np.ndarray, max_lag: int, window: int = HIGHPASS_POINTS) -> np.ndarray:
    """FFTs of the unit line components of spectra ``x`` (B, N), as :func:`estimate_offsets` needs them
    (``spectra_fft``). Shape (B, nfft // 2 + 1), complex128.
    """
    x = np.asarray(x, dtype=np.float64)
    return np.fft.rfft(_unit_lines(x, window), n=_nfft(x.shape[-1], max_lag), axis=-1)


def reference_line_offset(intensity: np.ndarray, raman_shift_cm1: np.ndarray, line_cm1: float = 520.7,
                          search_cm1: float = 25.0) -> tuple[float, float]:
    """Offset of a reference line (e.g. silicon, 520.7 cm⁻¹) in a spectrum of the standard.

    The highest point within ±``search_cm1`` of ``line_cm1`` is refined by parabolic interpolation on its two
    neighbours (on the spectrum's own, possibly non-uniform, axis: the vertex of the parabola through the
    three points).

    Parameters
    ----------
    intensity : numpy.ndarray, shape (M,)
        The standard's spectrum (any units; a smooth background is tolerated).
    raman_shift_cm1 : numpy.ndarray, shape (M,)
        Its Raman-shift axis, cm⁻¹, strictly increasing.
    line_cm1 : float
        Nominal position of the reference line, cm⁻¹.
    search_cm1 : float
        Half-width of the search window, cm⁻¹.

    Returns
    -------
    (float, float)
        Measured minus nominal position (cm⁻¹; positive = the instrument reads too high) and the line's
        prominence (peak height above the window's median, in intensity units).

    Raises
    ------
    PreprocessError
        If the axis does not cover the window with at least 3 points, or the inputs are invalid.
    """
    y = as_float_array(intensity, "intensity", ndim=(1,), dtype=np.float64)
    ax = check_axis(raman_shift_cm1)
    if ax.size != y.size:
        raise PreprocessError(f"intensity has {y.size} points but raman_shift_cm1 has {ax.size}")
    sel = np.flatnonzero(np.abs(ax - line_cm1) <= search_cm1)
    if sel.size < 3:
        raise PreprocessError(f"the axis has fewer than 3 points within ±{search_cm1} cm⁻¹ of {line_cm1} cm⁻¹")
    i = int(sel[np.argmax(y[sel])])
    prominence = float(y[i] - np.median(y[sel]))
    if i == 0 or i == y.size - 1:
        return float(ax[i] - line_cm1), prominence
    x0, x1, x2 = ax[i - 1:i + 2]
    y0, y1, y2 = y[i - 1:i + 2]
    den = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / den
    bb = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / den
    pos = -bb / (2 * a) if a < 0 else ax[i]
    return float(pos - line_cm1), prominence

