"""Physically valid augmentation of raw spectra on the model grid (applied before preprocessing).

Each transform mimics a nuisance of a real instrument: a Raman-shift offset (calibration or temperature
drift; edge padding as :func:`edge.shift.shift_spectra`), another instrument's resolution (Gaussian
broadening, :func:`edge.resolution.broaden`), a small axis stretch (resample-and-interpolate:
calibration scale error), intensity scaling (laser power, focus), a smooth fluorescence background
(scaled tanh and cosine terms), Gaussian noise, and a shorter measured range (another instrument's range:
the spectrum is cut and extended past its new ends exactly as :func:`edge.preprocess.resample` extends a
partial-range spectrum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edge.preprocess import RamanGrid, resample
from edge.resolution import broaden
from edge.shift import shift_spectra, truncate_spectra

from ._settings import SettingsMixin
from .errors import TrainerError

__all__ = ["AugmentConfig", "augment_batch"]


@dataclass
class AugmentConfig(SettingsMixin):
    """Augmentation strengths; 0 disables a transform.

    Parameters
    ----------
    max_shift_cm1 : float
        Uniform Raman-shift offset in ±``max_shift_cm1`` cm⁻¹.
    max_stretch : float
        Relative axis stretch in ±``max_stretch`` about the grid centre (e.g. 0.005 = 0.5 %).
    intensity_scale : float
        Multiplicative scale in [1 − s, 1 + s].
    fluorescence : float
        Largest background amplitude, relative to each spectrum's maximum.
    noise_std : float
        Largest Gaussian noise standard deviation, relative to each spectrum's maximum.
    shift_small_cm1 : float
        With probability ``p_small`` the shift is drawn from ±``shift_small_cm1`` instead (a mixture keeps
        accuracy on unshifted spectra while covering large drifts).
    p_small : float
        Weight of the small-shift component (used when ``shift_small_cm1`` > 0).
    band_ratio : float
        Relative band intensities: each spectrum is multiplied by ``exp(σ·u(ν))``, ``u`` a smooth random
        curve of unit standard deviation (4 cosines, periods 170–2 800 grid points), ``σ`` uniform in
        [0, ``band_ratio``]. Crystal orientation and laser polarisation change the ratios of a mineral's
        Raman bands (RRUFF holds several orientations per mineral), not their positions.
    baseline : float
        Amplitude of a signed smooth baseline a·tanh((t − c)/w) + b·t + q·t² (t in [−1, 1]), relative to the
        spectrum's maximum: residual fluorescence of either sign, as left by imperfect background handling.
    probability : float
        Probability that a spectrum of the batch is augmented at all.
    resolution_fwhm_cm1 : float
        Another instrument's resolution: each augmented spectrum is convolved with a Gaussian whose FWHM is
        uniform in [0, ``resolution_fwhm_cm1``] cm⁻¹ (:func:`edge.resolution.broaden`), before background and
        noise (the instrument blurs the Raman signal, not its detector noise).
    range_probability : float
        Probability that an augmented spectrum is cut to a shorter measured range (a random start, end, or
        both, keeping at least the preprocessing's ``min_coverage`` of the grid) and extended past its new
        ends by :func:`edge.preprocess.resample` (the daemon's own handling of a partial range).
    """

    _kind: ClassVar[str] = "augmentation"

    max_shift_cm1: float = 3.0
    max_stretch: float = 0.0
    intensity_scale: float = 0.1
    fluorescence: float = 0.2
    noise_std: float = 0.01
    shift_small_cm1: float = 0.0
    p_small: float = 0.5
    band_ratio: float = 0.0
    baseline: float = 0.0
    probability: float = 0.9
    range_probability: float = 0.0
    resolution_fwhm_cm1: float = 0.0


def augment_batch(x: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator, step_cm1: float = 1.0,
                  min_coverage: float = 0.0, floor_fwhm_cm1: float = 0.0) -> np.ndarray:
    """Augment a batch of spectra.

    Parameters
    ----------
    x : numpy.ndarray, shape (B, N), float32
        Spectra on the model grid, before preprocessing. Not modified.
    cfg : AugmentConfig
        Strengths.
    rng : numpy.random.Generator
        Source of randomness (seeded by the trainer).
    step_cm1 : float
        Grid spacing, cm⁻¹.
    min_coverage : float
        Smallest fraction of the grid a cut range keeps (``range_probability``; the bundle's recorded
        ``min_coverage``).
    floor_fwhm_cm1 : float
        The preprocessing's resolution floor (``PreprocessConfig.resolution_fwhm_cm1``), cm⁻¹: a background is
        kept only if the spectrum still has a positive maximum after that broadening (0: no floor).

    Returns
    -------
    numpy.ndarray, shape (B, N), float32
        Augmented copy.

    Raises
    ------
    TrainerError
        If range augmentation is on without a ``min_coverage`` in (0, 1).
    """
    b, n = int(x.shape[0]), int(x.shape[1])  # ints, so numpy's stubs see array draws below
    on = rng.random(b) < cfg.probability
    out = x.astype(np.float32, copy=True)
    if not on.any():
        return out
    if cfg.max_shift_cm1 > 0 or cfg.max_stretch > 0:
        shift = rng.uniform(-cfg.max_shift_cm1, cfg.max_shift_cm1, b)
        if cfg.shift_small_cm1 > 0:
            small = rng.uniform(-cfg.shift_small_cm1, cfg.shift_small_cm1, b)
            shift = np.where(rng.random(b) < cfg.p_small, small, shift)
        shift = shift * on
        if cfg.max_stretch > 0:
            # A stretch about the centre is a position-dependent shift; apply it as a resampling.
            stretch = rng.uniform(-cfg.max_stretch, cfg.max_stretch, b) * on
            pos = np.arange(n)[None, :] - shift[:, None] / step_cm1
            pos = (pos - n / 2) / (1.0 + stretch[:, None]) + n / 2
            pos = np.clip(pos, 0, n - 1)
            lo = np.floor(pos).astype(np.intp)
            hi = np.minimum(lo + 1, n - 1)
            f = (pos - lo).astype(np.float32)
            r = np.arange(b)[:, None]
            out = out[r, lo] * (1 - f) + out[r, hi] * f
        else:
            out = shift_spectra(out, shift, step_cm1)
    if cfg.band_ratio > 0:
        t = np.linspace(0.0, 1.0, n)[None, None, :]
        freq = rng.uniform(0.5, 8.0, (b, 4, 1))
        u = np.cos(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi, (b, 4, 1))).sum(axis=1)
        u = (u - u.mean(axis=1, keepdims=True)) / np.maximum(u.std(axis=1, keepdims=True), 1e-6)
        sigma = rng.uniform(0.0, cfg.band_ratio, (b, 1)) * on[:, None]
        out = (out * np.exp(sigma * u)).astype(np.float32)
    if cfg.resolution_fwhm_cm1 > 0:
        fwhm = rng.uniform(0.0, cfg.resolution_fwhm_cm1, b) * on
        out = broaden(out, fwhm, step_cm1)
    if cfg.range_probability > 0:  # the instrument's range first: background and noise are then measured on it
        out = _cut_ranges(out, rng.random(b) < cfg.range_probability * on, rng, step_cm1, min_coverage)
    peak = np.abs(out).max(axis=1, keepdims=True) + 1e-12
    if cfg.fluorescence > 0:
        tf = np.linspace(0.0, 1.0, n, dtype=np.float32)[None, :]
        amp = (rng.uniform(0, cfg.fluorescence, (b, 1)) * on[:, None]).astype(np.float32)
        centre = rng.uniform(0.0, 1.0, (b, 1))
        slope = rng.uniform(1.0, 5.0, (b, 1))
        bg = 0.5 * (1 + np.tanh(slope * (tf - centre))) + rng.uniform(-0.5, 0.5, (b, 1)) * np.cos(np.pi * tf)
        bg = bg - bg.min(axis=1, keepdims=True)
        bg = bg / np.maximum(bg.max(axis=1, keepdims=True), 1e-6)
        out = out + (amp * peak * bg).astype(np.float32)
    if cfg.baseline > 0:
        tb = np.linspace(-1.0, 1.0, n, dtype=np.float32)[None, :]
        a, lin, quad = (rng.uniform(-cfg.baseline, cfg.baseline, (3, b, 1)) * on[None, :, None]).astype(np.float32)
        c = rng.uniform(-0.8, 0.8, (b, 1)).astype(np.float32)
        w = rng.uniform(0.2, 1.2, (b, 1)).astype(np.float32)
        with_bg = out + peak * (a * np.tanh((tb - c) / w) + lin * tb + quad * tb * tb)
        # A background that drags the whole spectrum to (almost) nothing positive is no spectrum an
        # instrument delivers, and max normalisation rightly rejects it: keep those rows without it.
        seen = broaden(with_bg, floor_fwhm_cm1, step_cm1) if floor_fwhm_cm1 else with_bg  # what preprocessing sees
        valid = seen.max(axis=1, keepdims=True) > 0.05 * peak
        out = np.where(valid, with_bg, out)
    if cfg.noise_std > 0:
        sd = rng.uniform(0, cfg.noise_std, (b, 1)) * on[:, None] * peak
        out = out + (rng.standard_normal((b, n)) * sd).astype(np.float32)
    if cfg.intensity_scale > 0:
        out = (out * (1.0 + rng.uniform(-cfg.intensity_scale, cfg.intensity_scale, (b, 1)) * on[:, None])).astype(np.float32)
    return out.astype(np.float32)


def _cut_ranges(x: np.ndarray, rows: np.ndarray, rng: np.random.Generator, step_cm1: float,
                min_coverage: float) -> np.ndarray:
    """Cut the ``rows`` of ``x`` (B, N) to random shorter ranges and extend them as the daemon would.

    At least ``min_coverage`` of the N points are kept: a third of the rows lose the start, a third the end,
    a third both.
    """
    if not 0.0 < min_coverage < 1.0:
        raise TrainerError(f"range augmentation needs a preprocessing min_coverage in (0, 1), got {min_coverage}")
    n = x.shape[1]
    grid = RamanGrid(0.0, step_cm1, n)
    axis = grid.axis
    out = x.copy()
    for i in np.flatnonzero(rows):
        drop = int(rng.uniform(0.0, 1.0 - min_coverage) * n)
        where = rng.integers(3)
        head = drop if where == 0 else (0 if where == 1 else int(rng.integers(drop + 1)))
        stop = n - 1 - (drop - head)
        ax, cut = truncate_spectra(x[i], axis, axis[head], axis[stop])
        if cut.max() > 0.05 * x[i].max():  # a cut that keeps no band (only the zero fill of the data): skip it
            out[i] = resample(cut, ax, grid)
    return out
