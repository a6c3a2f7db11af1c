"""Synthetic Raman spectra: the embedded default for demos and unit tests that need no data.

Each class is a template of Raman lines (position in cm⁻¹, relative amplitude, width). A spectrum is the sum
of its class's lines broadened by a Gaussian, Lorentzian or pseudo-Voigt profile, times a random intensity
scale, plus a smooth fluorescence background, shot-like noise, and a random Raman-shift offset: the same
nuisances a field instrument adds. Everything is drawn from a seeded :class:`numpy.random.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .preprocess import RamanGrid
from .spectra import SpectraSet

__all__ = ["SyntheticConfig", "SyntheticLibrary", "line_profile", "synthetic_split"]

PROFILES = ("gaussian", "lorentzian", "voigt")


def line_profile(raman_shift_cm1: np.ndarray, centre_cm1: float, fwhm_cm1: float, profile: str = "voigt",
                 eta: float = 0.5) -> np.ndarray:
    """Unit-height line shape.

    Parameters
    ----------
    raman_shift_cm1 : numpy.ndarray, shape (N,)
        Axis, cm⁻¹.
    centre_cm1, fwhm_cm1 : float
        Line centre and full width at half maximum, cm⁻¹.
    profile : {"gaussian", "lorentzian", "voigt"}
        ``"voigt"`` is the pseudo-Voigt ``eta·L + (1−eta)·G`` (Thompson–Cox–Hastings approximation family).
    eta : float
        Lorentzian fraction of the pseudo-Voigt, in [0, 1].

    Returns
    -------
    numpy.ndarray, shape (N,), float64
        Profile with maximum 1 at ``centre_cm1``.

    Raises
    ------
    ConfigError
        For an unknown profile or a non-positive width.
    """
    if fwhm_cm1 <= 0:
        raise ConfigError(f"line width must be positive, got {fwhm_cm1}")
    d = (np.asarray(raman_shift_cm1, dtype=np.float64) - centre_cm1) / fwhm_cm1
    gauss = np.exp(-4.0 * np.log(2.0) * d * d)
    lorentz = 1.0 / (1.0 + 4.0 * d * d)
    if profile == "gaussian":
        return gauss
    if profile == "lorentzian":
        return lorentz
    if profile == "voigt":
        return eta * lorentz + (1.0 - eta) * gauss
    raise ConfigError(f"profile must be one of {PROFILES}, got {profile!r}")


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the synthetic mineral library and its acquisition nuisances.

    Widths, shifts and positions are in cm⁻¹; ``fluorescence_max`` is relative to the strongest Raman line;
    ``noise_std`` is relative to the strongest line too.
    """

    n_classes: int = 12
    lines_per_class: tuple[int, int] = (3, 9)
    fwhm_cm1: tuple[float, float] = (4.0, 18.0)
    profile: str = "voigt"
    max_shift_cm1: float = 3.0
    intensity_scale: tuple[float, float] = (200.0, 5000.0)
    fluorescence_max: float = 1.5
    noise_std: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        if self.profile not in (*PROFILES, "mixed"):
            raise ConfigError(f"profile must be one of {(*PROFILES, 'mixed')}, got {self.profile!r}")
        if self.n_classes < 1 or self.lines_per_class[0] < 1 or self.lines_per_class[1] < self.lines_per_class[0]:
            raise ConfigError("synthetic library needs ≥ 1 class and a valid lines_per_class range")


class SyntheticLibrary:
    """A seeded library of synthetic mineral classes on a Raman-shift grid.

    Parameters
    ----------
    config : SyntheticConfig
        Library and nuisance settings.
    grid : RamanGrid
        Axis the spectra are drawn on (default 200–1591 cm⁻¹).

    Examples
    --------
    >>> lib = SyntheticLibrary(SyntheticConfig(n_classes=4, seed=1))
    >>> s = lib.sample(n_per_class=5, seed=2)
    >>> s.intensities.shape
    (20, 1392)
    """

    def __init__(self, config: SyntheticConfig | None = None, grid: RamanGrid | None = None) -> None:
        self.config = config or SyntheticConfig()
        self.grid = grid or RamanGrid()
        rng = np.random.default_rng(self.config.seed)
        lo, hi = self.grid.start_cm1 + 20, self.grid.stop_cm1 - 20
        self.labels = [f"synthite-{i:02d}" for i in range(self.config.n_classes)]
        self.templates = []
        for _ in range(self.config.n_classes):
            n = int(rng.integers(self.config.lines_per_class[0], self.config.lines_per_class[1] + 1))
            centres = np.sort(rng.uniform(lo, hi, n))
            amps = rng.uniform(0.1, 1.0, n)
            amps[rng.integers(n)] = 1.0
            widths = rng.uniform(*self.config.fwhm_cm1, n)
            etas = rng.uniform(0.2, 0.8, n)
            self.templates.append((centres, amps, widths, etas))

    def clean(self, class_index: int, shift_cm1: float = 0.0) -> np.ndarray:
        """Noise-free template of one class, max 1, shape (N,), float64."""
        centres, amps, widths, etas = self.templates[class_index]
        axis = self.grid.axis
        y = np.zeros_like(axis)
        profile = self.config.profile
        for k, (c, a, w, e) in enumerate(zip(centres, amps, widths, etas, strict=True)):
            p = PROFILES[k % 3] if profile == "mixed" else profile
            y += a * line_profile(axis, c + shift_cm1, w, p, e)
        return y / y.max()

    def fluorescence(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Smooth broad backgrounds (scaled tanh and low-order cosine terms), shape (n, N), float64, ≥ 0."""
        t = np.linspace(0.0, 1.0, self.grid.n_points)[None, :]
        amp = rng.uniform(0.0, self.config.fluorescence_max, (n, 1))
        centre = rng.uniform(0.2, 1.2, (n, 1))
        slope = rng.uniform(1.0, 4.0, (n, 1))
        bg = 0.5 * (1.0 + np.tanh(slope * (t - centre))) + 0.3 * rng.uniform(0, 1, (n, 1)) * np.cos(np.pi * t)
        bg -= bg.min(axis=1, keepdims=True)
        return amp * bg / np.maximum(bg.max(axis=1, keepdims=True), 1e-12)

    def sample(self, n_per_class: int, seed: int | None = None, shift_cm1: float | None = None) -> SpectraSet:
        """Draw spectra with nuisances, in counts-like units (not normalised), class-balanced.

        Parameters
        ----------
        n_per_class : int
            Spectra per class.
        seed : int, optional
            Seed of the draw (default: the library seed + 1).
        shift_cm1 : float, optional
            Fixed Raman-shift offset for every spectrum; default draws uniformly in ±``max_shift_cm1``.

        Returns
        -------
        SpectraSet
            ``intensities`` shape (n_classes·n_per_class, N), float32; labels ``synthite-NN``; metadata holds
            the true ``shift_cm1`` and ``fluorescence`` amplitude of each spectrum.
        """
        cfg = self.config
        rng = np.random.default_rng(cfg.seed + 1 if seed is None else seed)
        n = cfg.n_classes * n_per_class
        classes = np.repeat(np.arange(cfg.n_classes), n_per_class)
        rng.shuffle(classes)
        shifts = (rng.uniform(-cfg.max_shift_cm1, cfg.max_shift_cm1, n) if shift_cm1 is None
                  else np.full(n, float(shift_cm1)))
        bg = self.fluorescence(rng, n)
        scale = rng.uniform(*cfg.intensity_scale, n)
        out = np.empty((n, self.grid.n_points), dtype=np.float32)
        for i, (c, s) in enumerate(zip(classes, shifts, strict=True)):
            y = self.clean(int(c), float(s)) + bg[i] + rng.normal(0.0, cfg.noise_std, self.grid.n_points)
            out[i] = scale[i] * y
        meta = [{"shift_cm1": float(s), "fluorescence": float(b.max())} for s, b in zip(shifts, bg, strict=True)]
        return SpectraSet(out, np.asarray([self.labels[c] for c in classes]), self.grid.axis, meta,
                          f"synthetic(seed={cfg.seed}, n_classes={cfg.n_classes})")


#: Spectra per class of the named synthetic splits.
SPLIT_SIZES = {"train": 30, "test": 10, "stream": 25}


def synthetic_split(spec: str, grid: RamanGrid | None = None) -> SpectraSet:
    """A named split of the default synthetic library.

    Parameters
    ----------
    spec : str
        ``"synthetic:train"``, ``"synthetic:test"`` or ``"synthetic:stream"``, optionally followed by
        ``":SEED"``; each split has its own default seed, so train and test never share a spectrum.
    grid : RamanGrid, optional
        Grid of the spectra (default 200–1591 cm⁻¹).

    Raises
    ------
    ConfigError
        For an unknown split name or a non-integer seed.
    """
    parts = spec.split(":")
    name = parts[1] if len(parts) > 1 else "train"
    if parts[0] != "synthetic" or name not in SPLIT_SIZES or len(parts) > 3:
        raise ConfigError(f"unknown synthetic split {spec!r}; use synthetic:train, synthetic:test or synthetic:stream")
    try:
        seed = int(parts[2]) if len(parts) == 3 else 100 + list(SPLIT_SIZES).index(name)
    except ValueError as exc:
        raise ConfigError(f"synthetic split seed must be an integer: {spec!r}") from exc
    out = SyntheticLibrary(grid=grid).sample(SPLIT_SIZES[name], seed=seed)
    out.source = spec  # loadable again by edge.data.load_spectra (the bundle records it)
    return out
