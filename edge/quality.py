"""The spectrum-quality gate: is this a usable Raman spectrum of a sample at all (saturated, flat, low SNR, not Raman).

Every spectrum gets a :class:`Quality` (``ok`` and the ``reasons`` when not ok) before its labels are
trusted. The reasons:

- ``saturated``: a flat run of ``saturation_run`` or more points at the spectrum's maximum (a clipped
  detector), or any count at or above the detector's full scale ``saturation_counts`` when it is known;
- ``empty``: every intensity is zero; ``flat``: no dynamic range at all;
- ``low_snr``: no band stands ``snr_min`` local noise units above the broad background, and the whole
  signal is weak (range < ``signal_min`` noise units; noise from the first difference, as in
  :mod:`edge.spikes`);
- ``not_raman``: (a) a broad luminescence or LED hump without Raman band structure: a strong signal (range
  ≥ ``signal_min`` noise units) whose narrow component (spectrum minus its broad component, a cubic
  Savitzky-Golay smoothing over ``broad_window_cm1``) nowhere stands ``snr_min`` local noise units above it
  (a weak one is ``low_snr``); (b) emission lines: with the laser wavelength known, at least
  ``emission_min_lines`` of the strongest peaks, and ``emission_match`` of them, sit on neon lines
  (:data:`edge.calibration.NEON_NIST_AIR_NM`) under one common axis offset (±15 cm⁻¹);
- ``standard``: a calibration standard, not a sample: a silicon wafer, recognised when at least
  ``standard_fraction`` of the narrow component's energy (in the band range) lies in silicon's signature:
  within ±10 cm⁻¹ of its line (``silicon_cm1``), plus its second-order band (930-990 cm⁻¹) when the line
  itself holds ≥ 5 % (phosphates, whose main band is there, have nothing at 520); no nominal mineral comes
  close (feldspars, main band ~513 cm⁻¹, reach 0.79 at most on the 40 % training split).

The thresholds are set from nominal data only — training spectra, with simulated faults (lamps, LEDs,
clipping; :func:`synthetic_faults`) as the check that they fire — by :func:`nominal_thresholds`; the shipped
defaults are its result on the 40 % training split. They travel in the instrument configuration
(``[instrument.quality]``, :meth:`QualityConfig.from_dict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = ["REASONS", "Quality", "QualityConfig", "assess", "nominal_thresholds", "quality_features",
           "synthetic_faults"]

REASONS = ("saturated", "empty", "flat", "low_snr", "not_raman", "standard")
_SIGMA_FROM_MEDIAN_ABS_DIFF = 1.0 / (0.6744897501960817 * np.sqrt(2.0))
_SG_CACHE: dict[int, np.ndarray] = {}
_SILICON_2TO_CM1 = (930.0, 990.0)  # silicon's second-order (2TO) band, strong on some 785 nm instruments


def _median_rows(a: np.ndarray) -> np.ndarray:
    """Upper median of each row of ``a`` (B, M), shape (B, 1): one partition, a third of np.median's cost."""
    mid = a.shape[-1] // 2
    return np.partition(a, mid, axis=-1)[:, mid:mid + 1]


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the quality gate (``[instrument.quality]`` of the daemon configuration).

    Parameters
    ----------
    saturation_run : int
        Points of a flat run at the maximum that mean a clipped detector (≥ 2).
    saturation_counts : float or None
        Detector full scale, counts (None: only the flat-run test).
    snr_min : float
        Smallest band signal-to-noise ratio of a usable spectrum.
    signal_min : float
        Range of the spectrum, in noise units, above which a spectrum without bands (band SNR below
        ``snr_min``) is a luminescence or LED emission (``not_raman``) rather than a weak read-out
        (``low_snr``). A fixed physical setting: 50 sigma is no read-out noise.
    broad_window_cm1 : float
        Width of the broad-component filter, cm⁻¹ (wider than Raman bands, narrower than luminescence).
    laser_nm : float or None
        Laser wavelength, nm: enables the emission-line test (None: skipped).
    emission_match : float
        Fraction of the strongest peaks that must sit on lamp lines for ``not_raman``.
    emission_min_lines : int
        Smallest number of peaks on lamp lines for ``not_raman``.
    standard_fraction : float
        Share of the band energy within ±10 cm⁻¹ of ``silicon_cm1`` above which a spectrum is the silicon
        standard (:func:`nominal_thresholds`: the largest nominal share + 0.1).
    silicon_cm1 : float
        Silicon's line, cm⁻¹ (520.7; 520.45 in some tools).
    source : str
        Where the thresholds come from (recorded with the results).
    """

    saturation_run: int = 3
    saturation_counts: float | None = None
    snr_min: float = 3.877
    signal_min: float = 50.0
    broad_window_cm1: float = 75.0
    laser_nm: float | None = None
    emission_match: float = 0.8
    emission_min_lines: int = 3
    standard_fraction: float = 0.894
    silicon_cm1: float = 520.7
    source: str = "nominal_thresholds(raw_train_labeled_40pct, quantile 0.005)"

    def __post_init__(self) -> None:
        """Validate the thresholds (:class:`ConfigError` when out of range)."""
        if int(self.saturation_run) != self.saturation_run or self.saturation_run < 2:
            raise ConfigError(f"quality saturation_run must be an integer ≥ 2, got {self.saturation_run!r}")
        for name in ("snr_min", "signal_min", "broad_window_cm1"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ConfigError(f"quality {name} must be a positive number, got {v!r}")
        if not 0 < self.standard_fraction <= 1 or not (np.isfinite(self.silicon_cm1) and self.silicon_cm1 > 0):
            raise ConfigError("quality standard_fraction must be in (0, 1] and silicon_cm1 a positive number")
        if not 0 < self.emission_match <= 1 or self.emission_min_lines < 1:
            raise ConfigError("quality emission_match must be in (0, 1] and emission_min_lines ≥ 1")
        for name in ("saturation_counts", "laser_nm"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v > 0):
                raise ConfigError(f"quality {name} must be a positive number or absent, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return the thresholds as a JSON/TOML-ready dict (None values left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QualityConfig:
        """Build from a mapping; unknown keys or bad values raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown quality setting(s): {sorted(unknown)}; known: {sorted(known)}")
        try:
            return cls(**dict(d))
        except TypeError as exc:
            raise ConfigError(f"invalid quality settings {dict(d)!r}: {exc}") from exc


@dataclass(frozen=True)
class Quality:
    """The gate's verdict on one spectrum.

    Attributes
    ----------
    ok : bool
        True when no reason applies.
    reasons : tuple of str
        Reasons from :data:`REASONS`, in that order.
    metrics : dict
        The measured band SNR, contrast and (with a laser wavelength) emission-line matches.
    """

    ok: bool
    reasons: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"ok", "reasons"}`` as published with a prediction."""
        return {"ok": self.ok, "reasons": list(self.reasons)}



def _broad(y: np.ndarray, window: int) -> np.ndarray:
    """Broad component of rows of ``y`` (B, N): a cubic Savitzky-Golay smoothing over ``window`` points.

    A cubic over 75 cm⁻¹ follows a luminescence hump (FWHM ≥ 150 cm⁻¹) closely and passes little of a Raman
    band (FWHM 3-30 cm⁻¹), which stays in the narrow component. Edge-replicate padding; one ``np.convolve``
    over the padded rows laid end to end, keeping each row's own outputs (five times faster than
    ``scipy.ndimage.correlate1d`` for one 1 400-point row; every output is the same dot product of the same
    ``window`` points as a convolution row by row, so the values are those of a per-row loop; the kernel is
    symmetric, so convolution and correlation agree).
    """
    coeffs = _SG_CACHE.get(window)
    if coeffs is None:
        from scipy.signal import savgol_coeffs

        coeffs = _SG_CACHE[window] = savgol_coeffs(window, 3, use="dot")
    b, n = y.shape
    if b == 0:
        return np.empty_like(y)
    h = window // 2
    width = n + 2 * h
    padded = np.empty((b, width), dtype=y.dtype)
    padded[:, :h] = y[:, :1]
    padded[:, h:h + n] = y
    padded[:, h + n:] = y[:, -1:]
    full = np.convolve(padded.reshape(-1), coeffs, mode="valid")  # row i's outputs: full[i·width : i·width + n]
    return np.lib.stride_tricks.as_strided(full, (b, n), (width * full.itemsize, full.itemsize)).copy()


def quality_features(intensity: np.ndarray, step_cm1: float, window_cm1: float = 75.0,
                     raman_shift_cm1: np.ndarray | None = None, silicon_cm1: float = 520.7) -> dict[str, np.ndarray]:
    """Band SNR and band contrast of spectra on a uniform axis.

    Parameters
    ----------
    intensity : numpy.ndarray, shape (N,) or (B, N)
        Spectra on a uniform Raman-shift axis (the measured part only: no zero fill).
    step_cm1 : float
        Axis step, cm⁻¹.
    window_cm1 : float
        Broad-component window, cm⁻¹.
    raman_shift_cm1 : numpy.ndarray, shape (N,), optional
        The axis, cm⁻¹ (for ``silicon_fraction``; default: ``step_cm1`` steps from 200 cm⁻¹).
    silicon_cm1 : float
        Silicon's line, cm⁻¹.

    Returns
    -------
    dict of numpy.ndarray, each shape () or (B,)
        ``snr``: largest narrow-component value / local noise sigma; ``contrast``: largest narrow-component
        value / the spectrum's range (0 for a flat spectrum); ``signal``: the range in noise units;
        ``silicon_fraction``: share of the positive narrow component's energy in silicon's signature: within
        ±10 cm⁻¹ of its line, plus its second-order band (930-990 cm⁻¹) when the line itself holds ≥ 5 %.
    """
    y = np.atleast_2d(np.asarray(intensity, dtype=np.float64))
    window = max(5, round(window_cm1 / step_cm1) | 1)
    window = min(window, (y.shape[-1] - 1) | 1 if y.shape[-1] % 2 == 0 else y.shape[-1])
    from scipy.ndimage import uniform_filter1d

    residual = _broad(y, window)
    np.subtract(y, residual, out=residual)  # (in place: the same values as y - broad, without another array)
    narrow = residual.max(axis=-1)
    span = y.max(axis=-1) - y.min(axis=-1)
    # local noise sigma (shot noise grows with the signal): moving mean of |first difference| over the window,
    # E|d| = sigma * 2 / sqrt(pi) for Gaussian noise; floored by the spectrum's median noise
    absdiff = np.diff(y, axis=-1)
    np.abs(absdiff, out=absdiff)
    local = uniform_filter1d(absdiff, window, axis=-1, mode="nearest")
    local *= np.sqrt(np.pi) / 2.0
    floor = _median_rows(absdiff) * _SIGMA_FROM_MEDIAN_ABS_DIFF
    np.maximum(local, floor, out=local)
    np.maximum(local, 1e-12 * np.maximum(span[:, None], 1e-300), out=local)
    z = np.divide(residual[:, 1:], local, out=local)
    snr = z.max(axis=-1)
    contrast = np.where(span > 0, narrow / np.where(span > 0, span, 1.0), 0.0)
    x = (200.0 + step_cm1 * np.arange(y.shape[-1])) if raman_shift_cm1 is None else np.asarray(raman_shift_cm1)
    np.maximum(residual, 0.0, out=residual)
    energy = np.multiply(residual, residual, out=residual)
    total = np.maximum(energy.sum(axis=-1), 1e-300)
    a, b, c, d = np.searchsorted(x, (silicon_cm1 - 10.0, silicon_cm1 + 10.0, *_SILICON_2TO_CM1))  # x is sorted
    first = energy[:, a:b].sum(axis=-1) / total
    second = energy[:, c:d].sum(axis=-1) / total
    silicon = np.where(first >= 0.05, first + second, first)  # the overtone counts only with the line itself
    out = {"snr": snr, "contrast": contrast, "signal": span / np.maximum(floor[:, 0], 1e-300),
           "silicon_fraction": silicon}
    return {k: (v[0] if np.ndim(intensity) == 1 else v) for k, v in out.items()}


def _longest_runs_at_max(y: np.ndarray) -> np.ndarray:
    """Longest run of points at each row's maximum (within 1e-7 of it), shape (B,), int; 1 when fewer than two
    points are there (the usual case: only those rows are searched). ``y`` shape (B, M), float64.
    """
    b, m = y.shape
    peak = y.max(axis=1, keepdims=True)
    top = y >= peak - 1e-7 * np.abs(peak)
    runs = np.ones(b, dtype=np.int64)
    many = np.flatnonzero(np.count_nonzero(top, axis=1) >= 2)
    if many.size:
        padded = np.zeros((many.size, m + 2), dtype=np.int8)  # a 0 either side: runs start at +1, end at -1
        padded[:, 1:-1] = top[many]
        edges = np.diff(padded, axis=1).reshape(-1)  # (k, M + 1) flattened: a row's runs never cross into the next
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        longest = np.zeros(many.size, dtype=np.int64)
        np.maximum.at(longest, starts // (m + 1), ends - starts)
        runs[many] = longest
    return runs


_NEON_CACHE: dict[float, np.ndarray] = {}


def _emission_lines(x: np.ndarray, y: np.ndarray, cfg: QualityConfig, span: float) -> tuple[int, int]:
    """Strongest peaks that sit on neon lines under one common offset: (matched, considered)."""
    from scipy.signal import find_peaks

    laser = float(cfg.laser_nm or 0.0)
    lines = _NEON_CACHE.get(laser)
    if lines is None:
        from .calibration import reference_lines

        lines = _NEON_CACHE[laser] = reference_lines("neon", laser_nm=laser)
    lo, hi = int(np.searchsorted(lines, x[0], side="right")), int(np.searchsorted(lines, x[-1]))
    lines = lines[lo:hi]
    sigma = float(_median_rows(np.abs(np.diff(y))[None, :])[0, 0]) * _SIGMA_FROM_MEDIAN_ABS_DIFF + 1e-12
    peaks, props = find_peaks(y, prominence=max(20.0 * sigma, 0.02 * span))
    if peaks.size < cfg.emission_min_lines or lines.size == 0:
        return 0, int(peaks.size)
    strongest = peaks[np.argsort(-props["prominences"], kind="stable")[:12]]
    px = x[strongest]
    tol = max(2.0, 1.5 * float(x[-1] - x[0]) / (x.size - 1))
    d = px[:, None] - lines[None, :]  # peak - line: a common offset makes many of these equal
    candidates = d[np.abs(d) <= 15.0]
    if candidates.size == 0:
        return 0, int(px.size)
    hits = (np.abs(d[None, :, :] - candidates[:, None, None]) <= tol).any(axis=2).sum(axis=1)
    return int(hits.max()), int(px.size)


def assess(intensity: np.ndarray, raman_shift_cm1: np.ndarray, config: QualityConfig | None = None,
           band_range_cm1: tuple[float, float] | None = (200.0, 1591.0)) -> list[Quality]:
    """Judge spectra with the quality gate.

    Parameters
    ----------
    intensity : numpy.ndarray, shape (M,) or (B, M)
        Spectra on their own axis, the detector's pixels (after spike removal), counts or any linear unit.
    raman_shift_cm1 : numpy.ndarray, shape (M,)
        Their Raman-shift axis, cm⁻¹, strictly increasing (need not be uniform).
    config : QualityConfig, optional
        Thresholds (default :class:`QualityConfig`).
    band_range_cm1 : (float, float) or None
        Range the band tests (``low_snr``, luminescence) look at: the model grid's, where the nominal
        thresholds were set (None: the whole axis). They run on the detector's own points, never on a
        resampled copy: interpolation correlates the noise and would fool the noise estimate. Saturation and
        the emission-line test use the whole spectrum.

    Returns
    -------
    list of Quality
        One per spectrum, in order.
    """
    cfg = config or QualityConfig()
    y = np.atleast_2d(np.asarray(intensity, dtype=np.float64))
    x = np.asarray(raman_shift_cm1, dtype=np.float64)
    lo, hi = 0, x.size
    if band_range_cm1 is not None:  # the axis is sorted: the band is one slice
        lo, hi = int(np.searchsorted(x, band_range_cm1[0])), int(np.searchsorted(x, band_range_cm1[1], side="right"))
    feats = None
    if hi - lo >= 5:
        xb = x[lo:hi]
        feats = quality_features(y[:, lo:hi], float(xb[-1] - xb[0]) / (xb.size - 1), cfg.broad_window_cm1, xb,
                                 cfg.silicon_cm1)
    top, bottom = y.max(axis=1), y.min(axis=1)
    spans = top - bottom
    scale = np.maximum(np.abs(top), np.abs(bottom))
    runs = _longest_runs_at_max(y).tolist()  # (one vectorised pass; used only where the span is > 0, as before)
    f = {k: v.tolist() for k, v in feats.items()} if feats is not None else None  # Python floats, once
    out = []
    for i, row in enumerate(y):
        reasons: list[str] = []
        metrics: dict[str, float] = {}
        span = float(spans[i])
        if (cfg.saturation_counts is not None and top[i] >= cfg.saturation_counts) or (
                span > 0 and runs[i] >= cfg.saturation_run):
            reasons.append("saturated")
        if scale[i] == 0:
            reasons.append("empty")
        elif span <= 1e-9 * float(scale[i]):
            reasons.append("flat")
        elif f is not None:
            snr, signal, silicon = f["snr"][i], f["signal"][i], f["silicon_fraction"][i]
            metrics.update(snr=round(snr, 2), contrast=round(f["contrast"][i], 4),
                           signal=round(signal, 1), silicon_fraction=round(silicon, 3))
            if snr < cfg.snr_min:  # no band above the noise: a strong smooth signal is luminescence
                reasons.append("not_raman" if signal >= cfg.signal_min else "low_snr")
            elif silicon >= cfg.standard_fraction:
                reasons.append("standard")
        if cfg.laser_nm is not None and "not_raman" not in reasons and span > 0:
            matched, considered = _emission_lines(x, row, cfg, span)
            metrics.update(emission_lines=matched)
            if matched >= cfg.emission_min_lines and matched >= cfg.emission_match * considered:
                reasons.append("not_raman")
        out.append(Quality(not reasons, tuple(reasons), metrics))
    return out


def nominal_thresholds(nominal: np.ndarray, step_cm1: float = 1.0, quantile: float = 0.005,
                       base: QualityConfig | None = None) -> QualityConfig:
    """Set ``snr_min`` and ``standard_fraction`` from nominal spectra (nominal data only).

    ``snr_min`` is the ``quantile`` of their band SNR; ``standard_fraction`` the largest share of band energy
    near silicon's line among them plus 0.1 (no nominal mineral is taken for the standard).

    Parameters
    ----------
    nominal : numpy.ndarray, shape (B, N)
        Nominal Raman spectra on a uniform grid starting at 200 cm⁻¹ (training spectra; zero-filled ends
        are cut off per row).
    step_cm1 : float
        Grid step, cm⁻¹.
    quantile : float
        Share of nominal spectra allowed below each threshold.
    base : QualityConfig, optional
        The other settings.

    Returns
    -------
    QualityConfig
    """
    cfg = base or QualityConfig()
    snr, silicon = [], []
    for row in np.asarray(nominal, dtype=np.float64):
        nz = np.flatnonzero(row)
        if nz.size < 5:
            continue
        axis = 200.0 + step_cm1 * np.arange(nz[0], nz[-1] + 1)
        f = quality_features(row[nz[0]:nz[-1] + 1], step_cm1, cfg.broad_window_cm1, axis, cfg.silicon_cm1)
        snr.append(float(f["snr"]))
        silicon.append(float(f["silicon_fraction"]))
    return replace(cfg, snr_min=round(float(np.quantile(snr, quantile)), 3),
                   standard_fraction=round(min(0.99, max(silicon) + 0.1), 3),
                   source=f"nominal_thresholds({len(snr)} nominal spectra, quantile {quantile:g})")


def synthetic_faults(nominal: np.ndarray, raman_shift_cm1: np.ndarray, rng: np.random.Generator,
                     laser_nm: float = 785.0) -> dict[str, np.ndarray]:
    """Build simulated faulty read-outs from nominal spectra (the gate's check, never its tuning).

    Parameters
    ----------
    nominal : numpy.ndarray, shape (B, N)
        Nominal spectra on ``raman_shift_cm1`` (max-normalised, any counts).
    raman_shift_cm1 : numpy.ndarray, shape (N,)
        Their axis, cm⁻¹.
    rng : numpy.random.Generator
        Random source.
    laser_nm : float
        Laser wavelength that places the simulated neon lamp's lines.

    Returns
    -------
    dict of numpy.ndarray, each shape (B, N), counts
        ``lamp``: neon lines (instrument width 2-6 cm⁻¹, random relative intensities) on a dark offset with
        shot noise; ``led``: one broad Gaussian emission (FWHM 150-900 cm⁻¹) with shot noise; ``clipped``: the
        nominal spectra scaled 2-5x over a 16-bit detector's full scale and clipped there.
    """
    from .calibration import reference_lines

    x = np.asarray(raman_shift_cm1, dtype=np.float64)
    y = np.asarray(nominal, dtype=np.float64)
    b = y.shape[0]
    lines = reference_lines("neon", laser_nm=laser_nm)
    lines = lines[(lines > x[0]) & (lines < x[-1])]
    lamp = np.full(y.shape, 500.0)
    for i in range(b):
        width = rng.uniform(2.0, 6.0)
        amp = rng.uniform(0.05, 1.0, lines.size) * rng.uniform(5e3, 6e4)
        lamp[i] += (amp[:, None] * np.exp(-4 * np.log(2) * ((x[None, :] - lines[:, None]) / width) ** 2)).sum(0)
    centre = rng.uniform(x[0], x[-1], (b, 1))
    fwhm = rng.uniform(150.0, 900.0, (b, 1))
    led = 300.0 + rng.uniform(2e3, 5e4, (b, 1)) * np.exp(-4 * np.log(2) * ((x[None, :] - centre) / fwhm) ** 2)
    top = 65535.0
    scaled = 1000.0 + np.clip(y, 0, None) / np.maximum(y.max(axis=1, keepdims=True), 1e-12) * top \
        * rng.uniform(2.0, 5.0, (b, 1))
    clipped = np.minimum(rng.poisson(scaled).astype(np.float64), top)
    return {"lamp": rng.poisson(lamp).astype(np.float64), "led": rng.poisson(led).astype(np.float64),
            "clipped": clipped}
