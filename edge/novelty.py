"""Onboard novelty and drift: "this spectrum is not like anything I know" and "the instrument is drifting".

numpy and onnxruntime only (no torch, no river): the trainer fits the autoencoder and writes it into the
bundle (:mod:`trainer.autoencoder`), the exporter converts it to ONNX, and this module runs it.

Novelty score (per spectrum)
----------------------------
The bundle's autoencoder reconstructs the preprocessed spectrum ``x`` (shape (N,)) as ``r``. The score is
the **line residual** (``metric = "line_cosine"``)::

    score = 1 - cos(hp(x), hp(r))         in [0, 2], dimensionless

where ``hp`` subtracts a centred moving average of :data:`HIGHPASS_POINTS` (31) grid points, i.e. keeps the
Raman lines and drops the smooth (fluorescence) component. It is half the squared distance between the
unit-normalised line components of the spectrum and of its reconstruction. It was chosen over the plain mean
squared error (``metric = "mse"``, also computed and published as ``reconstruction_mse``) on a class-held-out
split of the *training* spectra: the plain MSE is dominated by each sample's own background, which says
little about the mineral. A spectrum is ``novel`` when its score exceeds the bundle's threshold: a quantile
of the scores of held-out nominal training spectra (``manifest["novelty"]``; never set from anomalies).

Drift (per stream), :class:`DriftMonitor`
-----------------------------------------
Page–Hinkley tests (:class:`PageHinkley`) watch four per-spectrum statistics, each standardised by the
mean and standard deviation of the first ``warmup`` spectra the daemon sees (assumed nominal: an instrument
is started calibrated) and clipped to ±``clip``:

- ``novelty``: log of the novelty score;
- ``residual``: log of the reconstruction MSE (everything the autoencoder misses, background included);
- ``confidence``: 1 − maximum softmax probability of the classifier;
- ``background``: median of the max-normalised spectrum, i.e. the level of the smooth background relative
  to the strongest line (a growing fluorescence raises it; the line residual ignores it by construction and
  the classifier is trained to), minus the same level of the predicted class's mean training spectrum when
  the references are known. Weak on its own: nominal raw spectra already differ widely in background, so it
  has its own, more sensitive Page–Hinkley settings (``background_delta``, ``background_threshold``).

A Raman-shift offset is estimated for every spectrum (:func:`estimate_offsets`: normalised
cross-correlation of the line component against the mean training spectra of the classifier's top
candidates, with parabolic sub-point interpolation); the monitor publishes the median over the last
``offset_window`` estimates and raises an ``offset`` alarm when its magnitude exceeds ``offset_alarm_cm1``
(default 3 cm⁻¹: a calibration tolerance of the instrument, a configuration value). Single estimates scatter
by a few cm⁻¹ (RRUFF samples of one mineral were measured on different instruments; solid solutions move
lines), the moving median does not. When the instrument measures a
standard (a spectrum labelled ``reference_label``, default ``"silicon"``), :func:`reference_line_offset`
measures the offset of its line against ``reference_line_cm1`` (default 520.7 cm⁻¹; some calibration tools
use 520.45: a configuration value).

Each alarm is one message on the ``drift`` topic (see :meth:`DriftMonitor.update`) with the statistic, the
threshold, the sequence number and time at which it fired and those at which the change began.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import as_float_array, check_axis
from .errors import BundleError, ConfigError, PreprocessError

__all__ = [
    "AE_FILE_STEM",
    "AE_FP32_FILE",
    "AE_INT8_FILE",
    "DETECTORS",
    "HIGHPASS_POINTS",
    "LIBRARY_BAND_POWER",
    "LIBRARY_FILE",
    "LIBRARY_SHIFT_TOLERANCE_CM1",
    "METRICS",
    "NOVELTY_SCHEMA",
    "PROTOTYPES_FILE",
    "DriftConfig",
    "DriftMonitor",
    "NoveltyModel",
    "NoveltyService",
    "PageHinkley",
    "SpectralLibrary",
    "band_profiles",
    "class_mean_spectra",
    "estimate_offsets",
    "highpass",
    "line_residual_score",
    "novelty_scores",
    "offset_reference_fft",
    "parabolic_peak",
    "primary_channel",
    "reconstruction_error",
    "reference_line_offset",
]
log = logging.getLogger("edge.novelty")

NOVELTY_SCHEMA = 1
AE_FILE_STEM = "autoencoder"
AE_FP32_FILE = f"{AE_FILE_STEM}.onnx"
AE_INT8_FILE = f"{AE_FILE_STEM}.int8.onnx"
PROTOTYPES_FILE = "novelty_prototypes.npz"
LIBRARY_FILE = "novelty_library.npz"
#: Raman-shift offset a library match tolerates, cm⁻¹: the calibration tolerance (DriftConfig.offset_alarm_cm1).
LIBRARY_SHIFT_TOLERANCE_CM1 = 3.0
#: Power applied to the positive line component in library band profiles (:func:`band_profiles`). Chosen on the
#: 40 % *training* split alone (``python -m bench.library_profile_cv``: classes held out of the library,
#: nearest-neighbour stand-in for the classifier), where it ties with 0.1 for the best AUROC (0.891 at k = 10,
#: 40 draws) among 1, 0.5, 0.35, 0.25, 0.15, 0.1 and 0.05; no test spectrum was used.
LIBRARY_BAND_POWER = 0.15
HIGHPASS_POINTS = 31
METRICS = ("line_cosine", "mse")
CHANNELS = ("novelty", "residual", "confidence", "background")
#: Which score decides ``novel``: "auto" = the spectral library when the bundle has one, else the autoencoder.
DETECTORS = ("auto", "library", "autoencoder")


# -- scores ----------------------------------------------------------------------------------------------
def primary_channel(x: np.ndarray) -> np.ndarray:
    """Channel 0 of preprocessed spectra: shape (B, N) from (B, N) or (B, C, N) (multi-channel bundles)."""
    return x[:, 0, :] if x.ndim == 3 else x


def highpass(x: np.ndarray, window: int = HIGHPASS_POINTS, dtype=np.float64) -> np.ndarray:
    """Line component: spectra minus their centred moving average.

    Parameters
    ----------
    x : numpy.ndarray, shape (N,) or (B, N)
        Spectra on a uniform grid.
    window : int
        Moving-average width in grid points (odd, ≥ 3); edges are padded with the edge values.
    dtype : numpy dtype
        Precision of the computation and the result (float32 on the daemon's hot paths).

    Returns
    -------
    numpy.ndarray, same shape, ``dtype``
    """
    if window < 3 or window % 2 == 0:
        raise ConfigError(f"high-pass window must be an odd number of points ≥ 3, got {window}")
    from scipy.ndimage import uniform_filter1d

    a = np.asarray(x, dtype=dtype)
    return a - uniform_filter1d(a, window, axis=-1, mode="nearest")


def reconstruction_error(x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Mean squared error over the grid, shape (B,), float64, of spectra ``x`` and reconstructions ``r``
    (both shape (B, N)).
    """
    d = np.asarray(x, dtype=np.float64) - np.asarray(r, dtype=np.float64)
    return np.mean(d * d, axis=-1)


def line_residual_score(x: np.ndarray, r: np.ndarray, window: int = HIGHPASS_POINTS) -> np.ndarray:
    """``1 − cos(hp(x), hp(r))`` per spectrum, shape (B,), float64, in [0, 2] (see the module docstring)."""
    hx, hr = highpass(np.stack([x, r]), window)  # one filter call for both (the daemon calls this per batch)
    num = np.einsum("...i,...i->...", hx, hr)
    den = np.sqrt(np.einsum("...i,...i->...", hx, hx) * np.einsum("...i,...i->...", hr, hr))
    return 1.0 - num / np.maximum(den, 1e-12)


def residual_scores(x: np.ndarray, r: np.ndarray, window: int = HIGHPASS_POINTS,
                    return_line_components: bool = False) -> tuple[np.ndarray, ...]:
    """Both scores at once, as the daemon needs them: ``(line_residual_score, reconstruction_error)``.

    Same values as the two functions (to ~1e-9), computed with one filter call on float32 data and float64
    sums: about 45 µs for one 1392-point spectrum.

    Parameters
    ----------
    x, r : numpy.ndarray, shape (B, N)
        Spectra and reconstructions.
    return_line_components : bool
        Also return the unit line components of ``x``, shape (B, N), float32 (what
        :meth:`SpectralLibrary.scores` compares).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Each shape (B,), float64 (and the line components when asked).
    """
    from scipy.ndimage import uniform_filter1d

    x = np.asarray(x, dtype=np.float32)
    r = np.asarray(r, dtype=np.float32)
    a = np.concatenate([x, r])
    h = a - uniform_filter1d(a, window, axis=-1, mode="nearest")
    hx, hr = h[: len(x)], h[len(x):]
    num = np.einsum("ij,ij->i", hx, hr, dtype=np.float64)
    hxx = np.einsum("ij,ij->i", hx, hx, dtype=np.float64)
    den = np.sqrt(hxx * np.einsum("ij,ij->i", hr, hr, dtype=np.float64))
    d = x - r
    mse = np.einsum("ij,ij->i", d, d, dtype=np.float64) / x.shape[1]
    if return_line_components:  # unit line components of x, for SpectralLibrary.scores (no second filter)
        return 1.0 - num / np.maximum(den, 1e-12), mse, hx / np.maximum(np.sqrt(hxx), 1e-12)[:, None].astype(np.float32)
    return 1.0 - num / np.maximum(den, 1e-12), mse


def novelty_scores(x: np.ndarray, r: np.ndarray, metric: str = "line_cosine",
                   window: int = HIGHPASS_POINTS) -> np.ndarray:
    """The novelty score named ``metric`` (``"line_cosine"`` or ``"mse"``), shape (B,), float64.

    Raises
    ------
    ConfigError
        For an unknown metric.
    """
    if metric == "line_cosine":
        return line_residual_score(x, r, window)
    if metric == "mse":
        return reconstruction_error(x, r)
    raise ConfigError(f"unknown novelty metric {metric!r}; known: {METRICS}")


# -- Raman-shift offset --------------------------------------------------------------------------------------
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


def _unit_lines(x: np.ndarray, window: int, dtype=np.float64) -> np.ndarray:
    """Line components (:func:`highpass`) scaled to unit norm, in ``dtype``."""
    h = highpass(x, window, dtype)
    return h / np.maximum(np.linalg.norm(h, axis=-1, keepdims=True), 1e-12)


def band_profiles(x: np.ndarray, window: int = HIGHPASS_POINTS, power: float | None = LIBRARY_BAND_POWER,
                  dtype=np.float64) -> np.ndarray:
    """Unit band profiles: where a spectrum has Raman bands, with their heights compressed.

    ``profile = normalise(max(hp(x), 0) ** power)``: the positive part of the line component (:func:`highpass`;
    the negative part is the moving average's undershoot beside each band) raised to ``power`` < 1, so that a
    weak band weighs almost as much as a strong one. A mineral is identified by *which* bands it has (the
    principle of Raman library search); their relative heights change with crystal orientation,
    polarisation and the instrument, between RRUFF samples of one mineral as much as between related
    minerals. With the plain line component (``power=None``) one strong shared band makes two minerals look
    alike: a sodalite spectrum (bands near 265, 465 and 988 cm⁻¹) matches quartz (464 cm⁻¹) at cos 0.93.

    Parameters
    ----------
    x : numpy.ndarray, shape (N,) or (B, N)
        Spectra on a uniform grid.
    window : int
        High-pass width in grid points (odd, ≥ 3).
    power : float or None
        Compression power in (0, 1]; None gives the signed unit line component instead (libraries of bundles
        written before band profiles).
    dtype : numpy dtype
        Precision of the computation and the result.

    Returns
    -------
    numpy.ndarray, same shape, ``dtype``
        Rows of unit norm (zero for a spectrum without any positive line component).

    Raises
    ------
    ConfigError
        On an even or too small window, or a power outside (0, 1].
    """
    if power is None:
        return _unit_lines(x, window, dtype)
    return _profiles_from_lines(highpass(x, window, dtype), power)


def _profiles_from_lines(h: np.ndarray, power: float | None) -> np.ndarray:
    """:func:`band_profiles` from line components ``h`` (unit or not: their scale cancels); ``h`` itself
    when ``power`` is None (then it must be unit already).
    """
    if power is None:
        return h
    if not 0.0 < power <= 1.0:
        raise ConfigError(f"band-profile power must be in (0, 1], got {power}")
    p = np.maximum(h, 0)
    np.power(p, p.dtype.type(power), out=p)
    p /= np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-12)
    return p


def estimate_offsets(x: np.ndarray, references: np.ndarray, candidates: np.ndarray | None = None,
                     max_lag: int = 40, window: int = HIGHPASS_POINTS,
                     references_fft: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    nfft = 1 << math.ceil(math.log2(n + max_lag + 1))
    rf = references_fft if references_fft is not None else offset_reference_fft(references, n, max_lag, window)
    if candidates is None:
        candidates = np.broadcast_to(np.arange(len(references)), (b, len(references)))
    candidates = np.asarray(candidates, dtype=np.int64)
    xf = np.fft.rfft(_unit_lines(x, window), n=nfft, axis=-1)            # (B, F)
    corr = np.fft.irfft(xf[:, None, :] * rf[candidates], n=nfft, axis=-1)  # (B, k, nfft): c[l] = Σ x[i+l] p[i]
    lags = np.concatenate([corr[..., nfft - max_lag:], corr[..., : max_lag + 1]], axis=-1)  # lags −L … L
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


def offset_reference_fft(references: np.ndarray, n_points: int, max_lag: int, window: int = HIGHPASS_POINTS) -> np.ndarray:
    """Conjugate FFTs of the unit line components of ``references`` (R, N), as :func:`estimate_offsets`
    needs them (cache them: they depend on the bundle only). Shape (R, nfft // 2 + 1), complex128.
    """
    nfft = 1 << math.ceil(math.log2(n_points + max_lag + 1))
    return np.conj(np.fft.rfft(_unit_lines(np.asarray(references, dtype=np.float64), window), n=nfft, axis=-1))


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


# -- spectral library match ------------------------------------------------------------------------------
class SpectralLibrary:
    """The training spectra as a library: "is this spectrum really like the spectra of the mineral the
    classifier names?"

    The classic Raman library search (hit quality index, HQI: the correlation of a spectrum with library
    spectra) asked of the predicted class only. Each library row is the unit band profile
    (:func:`band_profiles` of channel 0: positive line component, heights compressed by ``band_power``) of one
    preprocessed training spectrum, stored as float16 (half the bytes; the scores move by < 1e-3). The library
    score of a spectrum ``x`` predicted as class ``c`` is::

        score = 1 - max over library rows l of class c, over lags |s| <= S of cos(bp(x) shifted by s, l)

    a reconstruction error with the spectrum "reconstructed" by its best match among the known spectra of its
    predicted mineral, allowing ``S`` = ``shift_tolerance_cm1`` / grid step points of Raman-shift offset
    (default :data:`LIBRARY_SHIFT_TOLERANCE_CM1`, the calibration tolerance). A known mineral finds a close
    relative; a mineral the classifier has never seen is named after its nearest known relative but lacks
    some of its bands or has others. Higher = more novel, in [0, 1] (in [0, 2] for a library of signed line
    components, ``band_power=None``: bundles written before band profiles, where the score is the
    autoencoder's line-residual metric, :func:`line_residual_score`).

    Parameters
    ----------
    lines : numpy.ndarray, shape (L, N)
        Unit band profiles of the library spectra (:meth:`from_spectra` computes them).
    classes : numpy.ndarray of int, shape (L,)
        Class index of each row, into ``labels``.
    labels : sequence of str
        Class names.
    shift_points : int
        Largest lag tried, grid points (≥ 0).
    window : int
        High-pass window, grid points (:data:`HIGHPASS_POINTS`).
    band_power : float or None
        Compression power of the band profiles (:data:`LIBRARY_BAND_POWER`); None for signed line components.

    Raises
    ------
    BundleError
        On inconsistent shapes, classes outside the label list, a negative lag or a power outside (0, 1].
    """

    def __init__(self, lines: np.ndarray, classes: np.ndarray, labels, shift_points: int,
                 window: int = HIGHPASS_POINTS, band_power: float | None = None) -> None:
        self.lines = np.asarray(lines, dtype=np.float16)
        self.classes = np.asarray(classes, dtype=np.int64)
        self.labels = [str(x) for x in labels]
        self.shift_points, self.window = int(shift_points), int(window)
        self.band_power = None if band_power is None else float(band_power)
        if self.lines.ndim != 2 or self.classes.shape != (len(self.lines),) or not len(self.lines):
            raise BundleError(f"library lines {self.lines.shape} and classes {self.classes.shape} do not match")
        if self.classes.min() < 0 or self.classes.max() >= len(self.labels) or self.shift_points < 0:
            raise BundleError("library classes must index its labels, and its lag must be ≥ 0")
        if self.band_power is not None and not 0.0 < self.band_power <= 1.0:
            raise BundleError(f"library band power must be in (0, 1], got {self.band_power}")
        self._lines32 = self.lines.astype(np.float32)
        self._rows = {name: np.flatnonzero(self.classes == c) for c, name in enumerate(self.labels)}
        self._blocks: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_spectra(cls, x: np.ndarray, labels, classes, shift_tolerance_cm1: float, step_cm1: float,
                     window: int = HIGHPASS_POINTS, band_power: float | None = LIBRARY_BAND_POWER) -> SpectralLibrary:
        """Library of preprocessed spectra ``x`` (B, N) or (B, C, N) with class names ``labels`` (B,), class
        order ``classes``; lag ``round(shift_tolerance_cm1 / step_cm1)`` points; band profiles with
        ``band_power`` (None: signed line components).

        Raises
        ------
        BundleError
            If a label is not in ``classes``.
        """
        names = [str(c) for c in classes]
        index = {c: i for i, c in enumerate(names)}
        try:
            y = np.array([index[str(v)] for v in np.asarray(labels)], dtype=np.int64)
        except KeyError as exc:
            raise BundleError(f"library label {exc} is not a class") from exc
        lines = band_profiles(primary_channel(np.asarray(x)), window, band_power, np.float32)
        return cls(lines, y, names, round(shift_tolerance_cm1 / step_cm1), window, band_power)

    def _lagged(self, u: np.ndarray) -> np.ndarray:
        """Unit rows ``u`` (B, N) at every lag, re-normalised: shape (B, 2S + 1, N), float32 (zero fill at the
        edges).
        """
        b, n = u.shape
        s = self.shift_points
        out = np.zeros((b, 2 * s + 1, n), dtype=np.float32)
        for j, lag in enumerate(range(-s, s + 1)):
            if lag >= 0:
                out[:, j, lag:] = u[:, :n - lag]
            else:
                out[:, j, :lag] = u[:, -lag:]
        return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)

    def _class_block(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Library rows of a class and their lagged copies flattened to ((2S + 1)·rows, N), cached."""
        if name not in self._blocks:
            rows = self._rows.get(name)
            if rows is None or not rows.size:
                return None
            self._blocks[name] = (rows, self._lagged(self._lines32[rows]).reshape(-1, self.lines.shape[1]))
        return self._blocks[name]

    def scores(self, x: np.ndarray, predicted, unit_lines: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Library scores of preprocessed spectra against the library rows of their predicted classes.

        Parameters
        ----------
        x : numpy.ndarray, shape (B, N) or (B, C, N)
            Preprocessed spectra (channel 0 is used).
        predicted : sequence of str, length B
            Class name the classifier gives each spectrum.
        unit_lines : numpy.ndarray, shape (B, N), optional
            The unit line components of ``x`` when already computed (:func:`residual_scores` with
            ``return_line_components``; same window): the band profiles are made from them.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            ``score`` shape (B,), float64, in [0, 1] ([0, 2] for signed line components): NaN where the class
            has no library spectra (a mineral added after training, e.g. by head-only transfer); ``match``
            shape (B,), int64: the best library row (-1 with a NaN score).

        Raises
        ------
        PreprocessError
            If the spectra are not on the library's grid.
        """
        x0 = primary_channel(np.asarray(x))
        if x0.shape[-1] != self.lines.shape[1]:
            raise PreprocessError(f"spectra have {x0.shape[-1]} points, the library {self.lines.shape[1]}")
        if unit_lines is None:
            u = band_profiles(x0, self.window, self.band_power, np.float32)
        else:
            u = _profiles_from_lines(unit_lines, self.band_power)
        score = np.full(len(x0), np.nan)
        match = np.full(len(x0), -1, dtype=np.int64)
        lags = 2 * self.shift_points + 1
        for i, name in enumerate(predicted):
            block = self._class_block(str(name))
            if block is None:
                continue
            rows, lagged = block
            sim = lagged @ u[i]  # ((2S + 1)·rows,): row-major by library row, then lag
            j = int(np.argmax(sim))
            score[i], match[i] = 1.0 - float(sim[j]), int(rows[j // lags])
        return score, match

    def similarity_matrix(self) -> np.ndarray:
        """Similarity of every library row with every other, the way :meth:`scores` compares: the largest
        cosine over lags |s| ≤ ``shift_points``, shape (L, L), float32 (diagonal ≈ 1). For studies of the
        library itself (``bench.library_profile_cv``).
        """
        return self._lag_max(self._lines32, self._lagged(self._lines32).reshape(-1, self.lines.shape[1]))

    def _lag_max(self, queries: np.ndarray, lagged: np.ndarray) -> np.ndarray:
        """Largest cosine over lags of unit ``queries`` (B, N) with library rows given as their lagged copies
        flattened row-major by row, then lag (:meth:`_class_block`): shape (B, rows), float32.
        """
        lags = 2 * self.shift_points + 1
        return (queries @ lagged.T).reshape(len(queries), -1, lags).max(axis=2)

    def leave_one_out_scores(self) -> np.ndarray:
        """Nominal calibration: each library spectrum scored (as :meth:`scores` scores a spectrum) against the
        *other* spectra of its class, shape (L,), float64; NaN for a class with one spectrum. A threshold is
        a quantile of these.
        """
        out = np.full(len(self.lines), np.nan)
        for name, rows in self._rows.items():
            if rows.size < 2:
                continue
            sim = self._lag_max(self._lines32[rows], self._class_block(name)[1])
            np.fill_diagonal(sim, -np.inf)
            out[rows] = 1.0 - sim.max(axis=1).astype(np.float64)
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """What a bundle stores (:data:`LIBRARY_FILE`): ``lines`` float16, ``classes`` int64, ``labels``."""
        return {"lines": self.lines, "classes": self.classes, "labels": np.array(self.labels, dtype=str)}

    @classmethod
    def from_bundle(cls, bundle) -> tuple[SpectralLibrary, float] | None:
        """The bundle's library and its threshold (``manifest["novelty"]["library"]``), or None without one.

        Raises
        ------
        BundleError
            If the section is there but its file is missing, unreadable or not on the bundle's grid.
        """
        nov = bundle.manifest.get("novelty") or {}
        section = nov.get("library")
        if not section:
            return None
        name = nov.get("files", {}).get("library")
        if not name or not bundle.has_file(name):
            raise BundleError(f"{bundle.path}: the novelty section names a spectral library but has no file")
        try:
            threshold = float(section["threshold"])
            power = section.get("band_power")  # absent: a bundle written before band profiles
            lib = cls.load(bundle.file(name), int(section["shift_points"]),
                           int(section.get("highpass_points", HIGHPASS_POINTS)),
                           None if power is None else float(power))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{bundle.path}: invalid spectral-library section: {exc}") from exc
        if lib.lines.shape[1] != bundle.grid.n_points:
            raise BundleError(f"{bundle.path}: the spectral library has {lib.lines.shape[1]} points, "
                              f"the grid {bundle.grid.n_points}")
        return lib, threshold

    @classmethod
    def load(cls, path, shift_points: int, window: int = HIGHPASS_POINTS,
             band_power: float | None = None) -> SpectralLibrary:
        """Read :meth:`arrays` back (the settings are the manifest's).

        Raises
        ------
        BundleError
            If the file is unreadable or inconsistent.
        """
        try:
            with np.load(path, allow_pickle=False) as d:
                return cls(d["lines"], d["classes"], d["labels"].tolist(), shift_points, window, band_power)
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"{path}: unreadable spectral library: {exc}") from exc


# -- change detection -------------------------------------------------------------------------------------
class PageHinkley:
    """Page–Hinkley test for an increase of the mean of a stream (Page 1954; Hinkley 1971).

    With ``x̄_t`` the running mean since the last reset, the cumulative statistic and its minimum are::

        m_T = Σ_{t ≤ T} (x_t − x̄_t − δ),    M_T = min_{t ≤ T} m_t,

    and an alarm is raised when ``PH_T = m_T − M_T > λ`` (after at least ``min_instances`` values). ``δ``
    is the size of a mean change that is tolerated, ``λ`` trades detection delay (≈ λ / (Δ − δ) values for a
    step of Δ) against false alarms (for i.i.d. values of unit variance the rate falls roughly as
    exp(−2δλ)). The change is estimated to have begun just after the last time ``m`` reached its minimum.
    After an alarm the test resets, so a persisting change raises one alarm, not one per value.

    Parameters
    ----------
    delta : float
        δ, in the units of the values (≥ 0).
    threshold : float
        λ (> 0).
    min_instances : int
        Values seen before an alarm is possible.
    """

    def __init__(self, delta: float = 0.5, threshold: float = 15.0, min_instances: int = 30) -> None:
        if delta < 0 or threshold <= 0 or min_instances < 1:
            raise ConfigError(f"Page–Hinkley needs delta ≥ 0, threshold > 0, min_instances ≥ 1; got "
                              f"{delta}, {threshold}, {min_instances}")
        self.delta, self.threshold, self.min_instances = float(delta), float(threshold), int(min_instances)
        self.change_tag: Any = None
        self.alarm_statistic = 0.0
        self.reset()

    def reset(self) -> None:
        """Forget the stream (the running mean too)."""
        self.n, self.mean, self.sum, self.min_sum = 0, 0.0, 0.0, 0.0
        self.min_at: Any = None
        self.after_min: Any = None
        self.first: Any = None

    @property
    def statistic(self) -> float:
        """Current ``m_T − M_T`` (≥ 0)."""
        return self.sum - self.min_sum

    def update(self, x: float, tag: Any = None) -> bool:
        """Add one value; True when it raises an alarm (the test then resets).

        ``tag`` (e.g. a (sequence number, time) pair) is remembered so :attr:`change_tag` can say when the
        change began: the tag of the first value after the minimum of ``m``.
        """
        self.n += 1
        if self.n == 1:
            self.first = tag
        self.mean += (x - self.mean) / self.n
        self.sum += x - self.mean - self.delta
        if self.sum <= self.min_sum:
            self.min_sum, self.min_at, self.after_min = self.sum, tag, None
        elif self.after_min is None:
            self.after_min = tag
        if self.n >= self.min_instances and self.statistic > self.threshold:
            self.change_tag = self.after_min
            self.alarm_statistic = self.statistic
            self.reset()
            return True
        return False


@dataclass
class DriftConfig:
    """Settings of the drift monitor (``[daemon.drift]`` in ``configs/daemon.toml``).

    Parameters
    ----------
    warmup : int
        Spectra used to standardise each statistic (assumed nominal); no alarm before.
    ph_delta, ph_threshold : float
        Page–Hinkley δ and λ, in standard deviations of the warm-up values. λ = 15 with δ = 0.5: for
        Gaussian values fewer than one false alarm in 10⁶ spectra per statistic; a 1.5 σ step is found after
        about 15 spectra.
    background_delta, background_threshold : float
        Page–Hinkley δ and λ of the ``background`` statistic. A fluorescence background of 20 % of the peak
        height moves it by only ≈ 0.4 warm-up standard deviations (nominal raw spectra differ widely in
        background), below the general δ, so it gets a smaller δ and a larger λ: δ = 0.2, λ = 25 raised no
        false alarm in 20 000 nominal real spectra and found a 0 → 100 % ramp a median of ≈ 100 spectra
        after it crossed 20 % (δ = 0.5: 200–400 spectra or never).
    clip : float
        Standardised values are clipped to ±clip (one odd spectrum moves a statistic by at most this much).
    channels : list of str
        Statistics watched by Page–Hinkley tests (``novelty``, ``residual``, ``confidence``, ``background``).
    offset_window : int
        Spectra in the moving median of the offset estimate.
    offset_alarm_cm1 : float
        Alarm when the moving-median offset exceeds this magnitude, cm⁻¹.
    offset_max_lag_cm1 : float
        Largest offset searched, cm⁻¹.
    offset_top_k : int
        Reference spectra (the classifier's top classes) correlated with each spectrum; 0: every class's
        reference (needed with a precise network: under a large drift its top classes are wrong, so their
        references cannot measure the drift).
    offset_fallback_all : bool
        Also correlate each spectrum with every class's reference, and take that match instead of the top
        classes' when its peak correlation is higher by more than ``offset_all_margin``: under a drift larger
        than a precise network tolerates its top classes are wrong and match poorly, while without drift the
        top classes keep the estimate (the best match over all references alone can be another mineral at a
        large lag, e.g. calcite read as cerussite 34 cm⁻¹ away).
    offset_all_margin : float
        Margin of peak normalised correlation for ``offset_fallback_all`` (≥ 0).
    offset_fallback_max : int
        At most this many spectra of an offset block (the worst top-k matches) are searched against every
        reference: the search costs ~1.5 to 3 ms per spectrum on one core, so this bounds it under a backlog
        (micro-batches of up to ``max_batch`` spectra) while spectra arriving one by one are all searched.
    offset_min_classes : int
        Drift compensation applies the estimate only when the estimates in the window matched the references
        of at least this many different classes: an offset belongs to the instrument and shows on every
        mineral, while a stream of one mineral can match another mineral's reference at a large lag just as
        well (calcite as cerussite 31 cm⁻¹ away, as dolomite 8 cm⁻¹ away: CHARISMA calcite, docs/instruments.md).
        The estimate and its alarm are unaffected. 1: no such condition.
    offset_min_estimates : int
        Offset estimates needed before the moving median (and the compensation) exists; 0: half the window
        (at least 3).
    offset_min_quality : float
        Offset estimates whose peak normalised correlation is below this are ignored.
    offset_batch : int
        Spectra collected before their offsets are estimated together (one vectorised correlation per block;
        an offset alarm can come up to this many spectra later).
    reference_line_cm1 : float
        Line of the calibration standard, cm⁻¹ (silicon 520.7; some tools use 520.45).
    reference_label : str
        Spectra labelled so (``label`` field) are treated as measurements of the standard ("" disables).
    compensate_offset : bool
        Drift compensation: preprocess every spectrum with the current moving-median offset estimate
        (``offset_cm1``) removed (:class:`edge.preprocess.Preprocessor` ``offset_cm1``); each prediction
        states the correction it used (``offset_correction_cm1``). The estimate keeps measuring the
        instrument's own offset (correction + what remains), so offset alarms still fire. Needs the bundle's
        novelty section (its class-mean reference spectra).
    """

    warmup: int = 200
    ph_delta: float = 0.5
    ph_threshold: float = 15.0
    background_delta: float = 0.2
    background_threshold: float = 25.0
    clip: float = 3.0
    channels: tuple[str, ...] = ("novelty", "residual", "confidence", "background")
    offset_window: int = 25
    offset_alarm_cm1: float = 3.0
    offset_max_lag_cm1: float = 40.0
    offset_top_k: int = 3
    offset_fallback_all: bool = True
    offset_all_margin: float = 0.2
    offset_fallback_max: int = 4
    offset_min_estimates: int = 5
    offset_min_classes: int = 3
    offset_batch: int = 1
    offset_min_quality: float = 0.5
    reference_line_cm1: float = 520.7
    reference_label: str = "silicon"
    compensate_offset: bool = True

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        bad = set(self.channels) - set(CHANNELS)
        if bad:
            raise ConfigError(f"unknown drift channel(s) {sorted(bad)}; known: {', '.join(CHANNELS)}")
        if self.warmup < 10 or self.offset_window < 1 or self.offset_top_k < 0 or self.offset_batch < 1 or self.clip <= 0:
            raise ConfigError("drift warmup must be ≥ 10; offset_window, offset_batch ≥ 1; offset_top_k ≥ 0; clip > 0")
        if not isinstance(self.offset_fallback_all, bool) or not self.offset_all_margin >= 0 or \
                self.offset_fallback_max < 1:
            raise ConfigError("offset_fallback_all must be true or false, offset_all_margin ≥ 0 and "
                              f"offset_fallback_max ≥ 1, got {self.offset_fallback_all!r}, "
                              f"{self.offset_all_margin!r}, {self.offset_fallback_max!r}")
        if not 1 <= self.offset_min_classes <= self.offset_window:
            raise ConfigError(f"offset_min_classes must be in [1, offset_window = {self.offset_window}], got "
                              f"{self.offset_min_classes!r}")
        if not 0 <= self.offset_min_estimates <= self.offset_window:
            raise ConfigError(f"offset_min_estimates must be in [0, offset_window = {self.offset_window}], got "
                              f"{self.offset_min_estimates!r}")
        if self.offset_alarm_cm1 <= 0 or self.offset_max_lag_cm1 <= 0:
            raise ConfigError("offset_alarm_cm1 and offset_max_lag_cm1 must be > 0")
        if not isinstance(self.compensate_offset, bool):
            raise ConfigError(f"compensate_offset must be true or false, got {self.compensate_offset!r}")
        for channel in ("novelty", "background"):  # validates both settings pairs
            self.page_hinkley(channel)

    def page_hinkley(self, channel: str) -> PageHinkley:
        """A fresh Page–Hinkley test with the δ and λ of ``channel``."""
        if channel == "background":
            return PageHinkley(self.background_delta, self.background_threshold, min_instances=30)
        return PageHinkley(self.ph_delta, self.ph_threshold, min_instances=30)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> DriftConfig:
        d = dict(d or {})
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown drift setting(s): {sorted(unknown)}")
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"invalid drift settings: {exc}") from exc


class _Standardiser:
    """Mean and standard deviation of the first ``n`` values, then (x − mean) / std clipped to ±clip."""

    def __init__(self, n: int, clip: float) -> None:
        self.n, self.clip, self.values, self.mean, self.std = n, clip, [], None, None

    def __call__(self, x: float) -> float | None:
        if self.mean is None:
            self.values.append(x)
            if len(self.values) >= self.n:
                v = np.asarray(self.values)
                self.mean, self.std = float(v.mean()), float(max(v.std(), 1e-9))
                self.values = []
            return None
        return float(np.clip((x - self.mean) / self.std, -self.clip, self.clip))


class DriftMonitor:
    """Stream-level drift detection over the daemon's predictions (see the module docstring).

    Parameters
    ----------
    config : DriftConfig
    references : numpy.ndarray, shape (R, N), optional
        Reference spectra for the offset estimate (the bundle's class-mean training spectra); None disables
        the offset estimate.
    step_cm1 : float
        Grid spacing, cm⁻¹.
    """

    def __init__(self, config: DriftConfig | None = None, references: np.ndarray | None = None,
                 step_cm1: float = 1.0) -> None:
        self.config = cfg = config or DriftConfig()
        self.step_cm1 = float(step_cm1)
        self.tests = {c: cfg.page_hinkley(c) for c in cfg.channels}
        self.std = {c: _Standardiser(cfg.warmup, cfg.clip) for c in cfg.channels}
        self.references = None if references is None else np.asarray(references, dtype=np.float64)
        self.max_lag = max(1, round(cfg.offset_max_lag_cm1 / self.step_cm1))
        self._ref_fft = None
        if self.references is not None:
            self.max_lag = min(self.max_lag, self.references.shape[1] - 1)
            self._ref_fft = offset_reference_fft(self.references, self.references.shape[1], self.max_lag)
        # Expected background level of each class: the same statistic on its mean training spectrum.
        self._ref_background = None if self.references is None else np.median(self.references, axis=-1)
        self.offsets: deque[tuple[int, float, int]] = deque(maxlen=cfg.offset_window)  # (seq, cm⁻¹, reference)
        self._pending: list[tuple[int, np.ndarray, np.ndarray, float]] = []
        self.offset_cm1: float | None = None
        self.offset_alarmed = False
        self._offset_run_start: tuple[int, int] | None = None
        self.reference_offset_cm1: float | None = None
        self.alarms = 0
        self.seen = 0
        self.last_alarm: dict[str, Any] | None = None

    # -- per batch ------------------------------------------------------------------------------------------
    def update(self, seq: np.ndarray, time_ns: int, *, novelty: np.ndarray | None = None,
               residual: np.ndarray | None = None, msp: np.ndarray | None = None,
               spectra: np.ndarray | None = None, proba: np.ndarray | None = None,
               applied_offset_cm1: float = 0.0) -> list[dict[str, Any]]:
        """Feed one batch of predictions, in arrival order; return the alarms it raised.

        Parameters
        ----------
        seq : numpy.ndarray of int, shape (B,)
            Daemon sequence numbers of the predictions.
        time_ns : int
            Time of the batch (``time.time_ns()``).
        novelty, residual, msp : numpy.ndarray, shape (B,), optional
            Novelty score, reconstruction MSE and maximum softmax probability of each spectrum.
        spectra : numpy.ndarray, shape (B, N), optional
            Preprocessed spectra (for the offset estimate).
        proba : numpy.ndarray, shape (B, K), optional
            Class probabilities (the top ``offset_top_k`` classes pick the reference spectra).
        applied_offset_cm1 : float
            Offset already removed from ``spectra`` in preprocessing (drift compensation), cm⁻¹: added back
            to what is measured on them, so the estimate stays the instrument's offset.

        Returns
        -------
        list of dict
            Drift payloads (``type`` "drift"): ``kind`` (a channel name or "offset"),
            ``statistic``, ``threshold``, ``detected_seq``, ``detected_ns``, ``change_seq``, ``change_ns``,
            ``offset_cm1`` (current moving-median estimate or None), plus per-kind details.
        """
        cfg = self.config
        seq = np.asarray(seq)
        values = {"novelty": None if novelty is None else np.log(np.maximum(novelty, 1e-12)),
                  "residual": None if residual is None else np.log(np.maximum(residual, 1e-12)),
                  "confidence": None if msp is None else 1.0 - np.asarray(msp, dtype=np.float64),
                  "background": None if spectra is None or "background" not in self.tests
                  else self._background(spectra, proba)}
        events: list[dict[str, Any]] = []
        for i in range(len(seq)):
            s = int(seq[i])
            self.seen += 1
            for name, test in self.tests.items():
                v = values[name]
                if v is None:
                    continue
                z = self.std[name](float(v[i]))
                if z is not None and test.update(z, (s, time_ns)):
                    events.append(self._event(name, test.alarm_statistic, test.threshold, s, time_ns,
                                              test.change_tag, {"delta": test.delta, "units": "warm-up standard deviations"}))
        if spectra is not None and self._ref_fft is not None:
            # Offsets are estimated in blocks of ``offset_batch`` spectra: one vectorised FFT correlation per
            # block instead of per spectrum (the daemon's micro-batches hold one spectrum at low rates).
            k = min(cfg.offset_top_k, len(self.references))
            cand = (np.argsort(-proba, axis=1, kind="stable")[:, :k] if proba is not None and k > 0
                    else np.broadcast_to(np.arange(len(self.references)), (len(seq), len(self.references))))
            x0 = primary_channel(spectra)
            for i in range(len(seq)):
                self._pending.append((int(seq[i]), x0[i], cand[i], float(applied_offset_cm1)))
            if len(self._pending) >= cfg.offset_batch:
                events += self._flush_offsets(time_ns)
        self.alarms += len(events)
        if events:
            self.last_alarm = events[-1]
        return events

    def _background(self, spectra: np.ndarray, proba: np.ndarray | None) -> np.ndarray:
        """Background level of each spectrum: the median of its max-normalised spectrum, minus that of the
        predicted class's mean training spectrum when the classes are known (removes most of the spread
        between minerals: +25 % effect size for a 20 % background on the real test spectra).
        """
        level = np.median(primary_channel(spectra), axis=-1)
        if proba is not None and self._ref_background is not None and proba.shape[-1] == len(self._ref_background):
            level = level - self._ref_background[np.argmax(proba, axis=-1)]
        return level

    def _flush_offsets(self, time_ns: int) -> list[dict[str, Any]]:
        cfg = self.config
        seqs = [p[0] for p in self._pending]
        x = np.stack([p[1] for p in self._pending])
        cand = np.stack([p[2] for p in self._pending])
        applied = np.array([p[3] for p in self._pending])
        self._pending = []
        off, quality, best = estimate_offsets(x, self.references, cand, self.max_lag, references_fft=self._ref_fft)
        # Every reference only where it can win (peak correlations are ≤ 1): the all-reference search costs
        # ~20 times the top-k one, and good top-k matches (the usual case once the offset is compensated) skip it.
        # Under a backlog, at most ``offset_fallback_max`` per block, the worst top-k matches first.
        # The others that could have lost to it are left out of this block's estimates rather than trusted.
        rows = np.flatnonzero(quality < 1.0 - cfg.offset_all_margin) if cfg.offset_fallback_all and \
            cand.shape[1] < len(self.references) else np.zeros(0, dtype=np.intp)
        rows, unsearched = np.split(rows[np.argsort(quality[rows], kind="stable")], [cfg.offset_fallback_max])
        quality[unsearched] = -np.inf
        if rows.size:
            off_all, q_all, best_all = estimate_offsets(x[rows], self.references, None, self.max_lag,
                                                        references_fft=self._ref_fft)
            better = q_all > quality[rows] + cfg.offset_all_margin
            off[rows] = np.where(better, off_all, off[rows])
            quality[rows] = np.where(better, q_all, quality[rows])
            best[rows] = np.where(better, best_all, best[rows])
        per_offset = np.where(quality >= cfg.offset_min_quality, off * self.step_cm1 + applied, np.nan)
        events = []
        for s, o, r in zip(seqs, per_offset, best):
            if np.isfinite(o):
                self.offsets.append((s, float(o), int(r)))
                ev = self._offset_step(s, time_ns)
                if ev is not None:
                    events.append(ev)
        return events

    def _offset_step(self, s: int, time_ns: int) -> dict[str, Any] | None:
        cfg = self.config
        if len(self.offsets) < (cfg.offset_min_estimates or max(3, cfg.offset_window // 2)):
            return None
        self.offset_cm1 = float(np.median([o for _, o, _ in self.offsets]))
        mag = abs(self.offset_cm1)
        if mag > cfg.offset_alarm_cm1 / 2 and self._offset_run_start is None:
            self._offset_run_start = (s, time_ns)
        elif mag <= cfg.offset_alarm_cm1 / 2:
            self._offset_run_start = None
            self.offset_alarmed = False  # re-arm once the offset is back within half the limit
        if mag > cfg.offset_alarm_cm1 and not self.offset_alarmed:
            self.offset_alarmed = True
            return self._event("offset", mag, cfg.offset_alarm_cm1, s, time_ns, self._offset_run_start,
                               {"units": "cm-1", "window": len(self.offsets)})
        return None

    def _event(self, kind: str, statistic: float, threshold: float, s: int, time_ns: int, change, extra) -> dict[str, Any]:
        change_seq, change_ns = change if change else (None, None)
        return {"type": "drift", "kind": kind, "statistic": float(statistic), "threshold": float(threshold),
                "detected_seq": s, "detected_ns": int(time_ns), "change_seq": change_seq, "change_ns": change_ns,
                "offset_cm1": self.offset_cm1, **extra}

    def reference(self, intensity: np.ndarray, raman_shift_cm1: np.ndarray, seq: int | None, time_ns: int) -> dict[str, Any]:
        """Measure the calibration standard's line; returns a drift payload of kind ``"reference"``.

        Raises
        ------
        PreprocessError
            If the spectrum does not cover the reference line.
        """
        cfg = self.config
        off, prom = reference_line_offset(intensity, raman_shift_cm1, cfg.reference_line_cm1)
        self.reference_offset_cm1 = off
        return {"type": "drift", "kind": "reference", "statistic": abs(off), "threshold": cfg.offset_alarm_cm1,
                "alarm": bool(abs(off) > cfg.offset_alarm_cm1), "reference_offset_cm1": off,
                "reference_line_cm1": cfg.reference_line_cm1, "prominence": prom, "detected_seq": seq,
                "detected_ns": int(time_ns), "change_seq": None, "change_ns": None, "offset_cm1": self.offset_cm1}

    @property
    def correction_cm1(self) -> float:
        """Offset to remove from the next spectra (cm⁻¹): the moving-median estimate when
        ``compensate_offset`` is on (0 until the estimate exists), else 0.
        """
        cfg = self.config
        if not cfg.compensate_offset or self.offset_cm1 is None:
            return 0.0
        if len({r for _, _, r in self.offsets}) < cfg.offset_min_classes:
            return 0.0  # one mineral's stream cannot tell an instrument offset from another mineral's lines
        return float(self.offset_cm1)

    def status(self) -> dict[str, Any]:
        """Current state for the daemon's status messages."""
        return {"offset_cm1": self.offset_cm1, "correction_cm1": self.correction_cm1, "offset_n": len(self.offsets),
                "reference_offset_cm1": self.reference_offset_cm1, "alarms": self.alarms, "seen": self.seen,
                "warming_up": any(s.mean is None for s in self.std.values()),
                "statistics": {c: t.statistic for c, t in self.tests.items()},
                "last_alarm": None if self.last_alarm is None else {k: self.last_alarm[k] for k in
                                                                     ("kind", "detected_seq", "change_seq")}}


# -- the autoencoder at run time -------------------------------------------------------------------------
class NoveltyModel:
    """The bundle's novelty autoencoder (run with onnxruntime), spectral library, thresholds and reference
    spectra.

    Parameters
    ----------
    bundle : edge.bundle.Bundle
        A bundle with ``manifest["novelty"]`` and the autoencoder exported to ONNX.
    precision : {"auto", "int8", "fp32"}
        ``"auto"`` (and ``"int8"``) serve the INT8 autoencoder when the bundle has it, else FP32.
    threads : int
        onnxruntime intra-op threads.
    detector : {"auto", "library", "autoencoder"}
        Which score decides ``novel`` (:data:`DETECTORS`): the spectral-library match
        (:class:`SpectralLibrary`, the better detector on the real leave-classes-out evaluation, README
        "Novelty") or the autoencoder's reconstruction error; ``"auto"`` = the library when the bundle has
        one. Both are always computed (see :meth:`decide` for when).

    Raises
    ------
    BundleError
        If the bundle has no novelty section, an unknown metric or schema, no autoencoder ONNX file, or an
        unreadable spectral library.
    ConfigError
        For an unknown detector, or ``"library"`` with a bundle without a library.
    """

    def __init__(self, bundle, precision: str = "auto", threads: int = 1, detector: str = "auto") -> None:
        from .backends import OnnxRuntimeBackend

        if detector not in DETECTORS:
            raise ConfigError(f"novelty_detector must be one of {DETECTORS}, got {detector!r}")

        nov = bundle.manifest.get("novelty")
        if not nov:
            raise BundleError(f"{bundle.path}: no novelty detector in this bundle (edge-train --novelty)")
        if nov.get("schema") != NOVELTY_SCHEMA:
            raise BundleError(f"{bundle.path}: novelty schema {nov.get('schema')!r} not supported ({NOVELTY_SCHEMA})")
        self.metric = str(nov.get("metric", ""))
        if self.metric not in METRICS:
            raise BundleError(f"{bundle.path}: unknown novelty metric {self.metric!r}")
        self.window = int(nov.get("highpass_points", HIGHPASS_POINTS))
        self.threshold = float(nov["threshold"])
        self.quantile = float(nov["quantile"])
        files = nov.get("files", {})
        name = files.get("onnx_int8") if precision in ("auto", "int8") and files.get("onnx_int8") else files.get("onnx_fp32")
        if not name or not bundle.has_file(name):
            raise BundleError(f"{bundle.path}: the novelty autoencoder has no ONNX export; run edge-export {bundle.path}")
        self.precision = "int8" if name == files.get("onnx_int8") else "fp32"
        self.model_path = bundle.file(name)
        self.backend = OnnxRuntimeBackend(self.model_path, intra_op_threads=threads, precision=self.precision,
                                          required_outputs=("reconstruction",))
        self.references = None
        if files.get("prototypes") and bundle.has_file(files["prototypes"]):
            try:
                with np.load(bundle.file(files["prototypes"]), allow_pickle=False) as d:
                    self.references = np.asarray(d["spectrum_prototypes"], dtype=np.float32)
            except (OSError, ValueError, KeyError) as exc:
                raise BundleError(f"{bundle.path}: unreadable novelty prototypes: {exc}") from exc
        self.library, self.library_threshold = SpectralLibrary.from_bundle(bundle) or (None, math.nan)
        if detector == "library" and self.library is None:
            raise ConfigError(f"{bundle.path}: novelty_detector = \"library\" but this bundle has no spectral library "
                              "(retrain with edge-train --novelty, or use \"autoencoder\")")
        self.detector = "library" if detector == "auto" and self.library is not None else \
            ("autoencoder" if detector == "auto" else detector)

    def load(self) -> None:
        self.backend.load()

    def close(self) -> None:
        self.backend.close()

    def score(self, x: np.ndarray, predicted=None) -> dict[str, np.ndarray]:
        """Novelty of a batch of preprocessed spectra: :meth:`decide`, then :meth:`complete`.

        Parameters
        ----------
        x : numpy.ndarray, shape (B, N) or (B, C, N), float32
            Preprocessed spectra (channel 0 is used).
        predicted : sequence of str, length B, optional
            The classifier's top-1 class names: needed by the library detector. Without them (or for a class
            the library does not hold) a spectrum is judged by the autoencoder, and ``novelty_detector`` says
            so.

        Returns
        -------
        dict
            Each shape (B,): ``reconstruction_error`` (the autoencoder's thresholded metric) and
            ``reconstruction_mse``, float64; ``library_score`` float64 (NaN without a library or a match);
            ``novelty_score`` and ``novelty_threshold`` float64, of the detector that decided; ``novel`` bool
            (score > threshold); ``novelty_detector`` str (``"library"`` or ``"autoencoder"``).

        Raises
        ------
        BackendError
            If onnxruntime fails.
        """
        return self.complete(x, self.decide(x, predicted))

    def decide(self, x: np.ndarray, predicted=None) -> dict[str, np.ndarray]:
        """What a prediction needs before it is published: the :meth:`score` keys, except that the autoencoder
        runs here only when it decides for a spectrum of the batch (detector ``"autoencoder"``, no
        ``predicted``, or a class the library does not hold). Otherwise ``reconstruction_error`` and
        ``reconstruction_mse`` are left out, for :meth:`complete` to add after the predictions are out (the
        daemon does so: the drift monitor needs them, the decision does not).
        """
        x0 = np.ascontiguousarray(primary_channel(x), dtype=np.float32)
        use_library = self.detector == "library" and self.library is not None and predicted is not None
        out: dict[str, np.ndarray] = {}
        unit = None
        if not use_library:  # the autoencoder decides: run it first, and share its line components
            out, unit = self._autoencoder(x0)
        lib = np.full(len(x0), np.nan)
        if self.library is not None and predicted is not None:
            lib = self.library.scores(x0, predicted, unit if self.library.window == self.window else None)[0]
        use_lib = np.isfinite(lib) if use_library else np.zeros(len(x0), dtype=bool)
        if not use_lib.all() and not out:  # a class without library spectra: the autoencoder decides for it
            out, _ = self._autoencoder(x0)
        ae = out["reconstruction_error"] if out else lib  # (unused where the library decides)
        score = np.where(use_lib, lib, ae)
        thr = np.where(use_lib, self.library_threshold, self.threshold)
        out.update({"library_score": lib, "novelty_score": score, "novelty_threshold": thr, "novel": score > thr,
                    "novelty_detector": np.where(use_lib, "library", "autoencoder")})
        return out

    def complete(self, x: np.ndarray, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Add the autoencoder's ``reconstruction_error`` and ``reconstruction_mse`` to a :meth:`decide`
        result of the same ``x`` that lacks them (in place); returns ``out``.

        Raises
        ------
        BackendError
            If onnxruntime fails.
        """
        if "reconstruction_error" not in out:
            out.update(self._autoencoder(np.ascontiguousarray(primary_channel(x), dtype=np.float32))[0])
        return out

    def _autoencoder(self, x0: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The autoencoder's scores of channel-0 spectra (B, N), and their unit line components."""
        r = self.backend.infer(x0)["reconstruction"]
        line, mse, unit = residual_scores(x0, r, self.window, return_line_components=True)
        return {"reconstruction_error": mse if self.metric == "mse" else line, "reconstruction_mse": mse}, unit

    def describe(self) -> dict[str, Any]:
        d = {"metric": self.metric, "threshold": self.threshold, "quantile": self.quantile,
             "precision": self.precision, "model": Path(self.model_path).name, "detector": self.detector}
        if self.library is not None:
            d["library"] = {"threshold": self.library_threshold, "spectra": len(self.library.lines),
                            "shift_points": self.library.shift_points, "band_power": self.library.band_power}
        return d


class NoveltyService:
    """What the daemon runs per micro-batch: the autoencoder's scores, then the drift monitor.

    Parameters
    ----------
    model : NoveltyModel
    drift : DriftConfig
    step_cm1 : float
        Grid spacing, cm⁻¹.
    grid_axis : numpy.ndarray, shape (N,)
        The model grid (axis of spectra sent without one, for the reference-line measurement).
    """

    def __init__(self, model: NoveltyModel, drift: DriftConfig, step_cm1: float, grid_axis: np.ndarray) -> None:
        self.model = model
        self.monitor = DriftMonitor(drift, model.references, step_cm1)
        self.grid_axis = np.asarray(grid_axis, dtype=np.float64)
        self.reference_label = drift.reference_label.strip().lower()

    @classmethod
    def from_bundle(cls, bundle, drift: Mapping[str, Any] | DriftConfig | None = None, precision: str = "auto",
                    threads: int = 1, detector: str = "auto") -> NoveltyService | None:
        """The bundle's novelty service, or None when the bundle has no novelty section.

        Raises
        ------
        BundleError
            If the section is there but unusable (no ONNX export, unknown metric, corrupt file).
        ConfigError
            For invalid drift settings.
        """
        if not bundle.manifest.get("novelty"):
            return None
        cfg = drift if isinstance(drift, DriftConfig) else DriftConfig.from_dict(drift)
        return cls(NoveltyModel(bundle, precision, threads, detector), cfg, bundle.grid.step_cm1, bundle.grid.axis)

    def load(self, warmup_shape: tuple[int, ...] | None = None) -> None:
        """Load the autoencoder (and run a dummy batch of ``warmup_shape`` = (B, N) when given)."""
        self.model.load()
        if warmup_shape is not None:
            self.model.score(np.zeros(warmup_shape, dtype=np.float32) + 1e-3)

    def close(self) -> None:
        self.model.close()

    def score(self, x: np.ndarray, predicted=None) -> dict[str, np.ndarray]:
        """Per-spectrum novelty of a preprocessed micro-batch (see :meth:`NoveltyModel.score`)."""
        return self.model.score(x, predicted)

    def decide(self, x: np.ndarray, predicted=None) -> dict[str, np.ndarray]:
        """The novelty fields a prediction is published with (:meth:`NoveltyModel.decide`); :meth:`observe`
        adds the autoencoder's scores afterwards when the decision did not need them.
        """
        return self.model.decide(x, predicted)

    def correction_cm1(self) -> float:
        """The drift compensation for the next spectra, cm⁻¹ (:attr:`DriftMonitor.correction_cm1`)."""
        return self.monitor.correction_cm1

    def fields(self, out: Mapping[str, np.ndarray], i: int) -> dict[str, Any]:
        """The novelty fields of prediction ``i`` of a batch: ``novelty_score``, ``novelty_threshold``,
        ``novel``, ``novelty_detector`` (which detector decided), ``library_score`` (None without a library
        match), and ``reconstruction_error`` and ``reconstruction_mse`` when the autoencoder ran before
        publishing.
        """
        lib = float(out["library_score"][i])
        f = {"novelty_score": float(out["novelty_score"][i]), "novelty_threshold": float(out["novelty_threshold"][i]),
             "novel": bool(out["novel"][i]), "novelty_detector": str(out["novelty_detector"][i]),
             "library_score": lib if math.isfinite(lib) else None}
        if "reconstruction_error" in out:  # computed before publishing (see NoveltyModel.decide)
            f["reconstruction_error"] = float(out["reconstruction_error"][i])
            f["reconstruction_mse"] = float(out["reconstruction_mse"][i])
        return f

    def observe(self, seqs: np.ndarray, time_ns: int, spectra: list, x: np.ndarray,
                out: Mapping[str, np.ndarray], applied_offset_cm1: float = 0.0) -> list[dict[str, Any]]:
        """Feed a published batch to the drift monitor; return the drift payloads to publish.

        Parameters
        ----------
        seqs : numpy.ndarray of int, shape (B,)
            Sequence numbers of the batch's predictions.
        time_ns : int
        spectra : list of edge.wire.SpectrumIn
            The decoded inputs (their ``label`` marks measurements of the calibration standard).
        x : numpy.ndarray, shape (B, N) or (B, C, N)
            Preprocessed batch.
        out : dict
            Classifier outputs (``probabilities``) merged with :meth:`decide`'s; the autoencoder's scores are
            added to it here when missing.
        applied_offset_cm1 : float
            The drift compensation ``x`` was preprocessed with (:meth:`correction_cm1`), cm⁻¹.
        """
        self.model.complete(x, out)
        events: list[dict[str, Any]] = []
        is_ref = np.array([bool(self.reference_label) and (s.label or "").strip().lower() == self.reference_label
                           for s in spectra])
        for i in np.flatnonzero(is_ref):
            s = spectra[i]
            axis = self.grid_axis if s.raman_shift_cm1 is None else s.raman_shift_cm1
            try:
                events.append(self.monitor.reference(s.intensity, axis, int(seqs[i]), time_ns))
            except PreprocessError as exc:
                log.warning("reference spectrum %s: %s", s.id, exc)
        keep = ~is_ref
        if keep.any():
            proba = out["probabilities"][keep]
            events += self.monitor.update(np.asarray(seqs)[keep], time_ns, novelty=out["reconstruction_error"][keep],
                                          residual=out["reconstruction_mse"][keep], msp=proba.max(axis=1),
                                          spectra=x[keep], proba=proba, applied_offset_cm1=applied_offset_cm1)
        return events

    def status(self) -> dict[str, Any]:
        """``{"novelty": {...}, "drift": {...}}`` for the daemon's status messages."""
        return {"novelty": self.model.describe(), "drift": self.monitor.status()}
