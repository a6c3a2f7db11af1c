"""Preprocessing of Raman spectra: the one implementation shared by training and the onboard daemon.

The steps run in a fixed order, each one optional except resampling:

0. **spikes**: cosmic-ray spike removal on the spectrum's own (detector) axis (:mod:`edge.spikes`), on by
   default; the number removed per spectrum is returned by :meth:`Preprocessor.process`;
1. **resample** onto the model's Raman-shift grid by linear interpolation; outside the measured range each
   spectrum is extended with its own edge level (``outside_range = "edge"``, the default: no step at the
   range edges, see :func:`resample`) or zero-filled (``"zero"``, as the RRUFF splits of Soysal et al. were
   built); a spectrum covering less of the grid than ``min_coverage`` is refused (:class:`CoverageError`);
1b. **resolution** floor (``resolution_fwhm_cm1``, off by default): a Gaussian broadening of every spectrum
   on the grid (:func:`edge.resolution.broaden`), so sharper instruments than the training library's look
   alike (issue #14);
2. **baseline** removal (fluorescence) with a :mod:`pybaselines` method;
3. **derivative**: first derivative along the Raman-shift axis (Savitzky–Golay or central differences),
   in intensity units per cm⁻¹;
4. **normalisation**: ``"max"`` (divide by the maximum, as in the paper's data), ``"minmax"``, ``"snv"``
   (standard normal variate) or ``"none"``.

The parameters travel inside the model bundle (:class:`PreprocessConfig` ``to_dict``/``from_dict``), so the
daemon applies exactly what the trainer applied. Train/serve skew is the classic bug of this field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._validation import as_float_array, check_axis
from .errors import ConfigError, CoverageError, PreprocessError
from .resolution import broaden
from .shift import shift_spectra
from .spikes import SpikeConfig, remove_spikes

__all__ = ["BaselineConfig", "ChannelConfig", "PreprocessConfig", "Preprocessor", "RamanGrid", "coverage",
           "preprocess", "resample"]

NORMALISATIONS = ("max", "minmax", "snv", "none")
OUTSIDE_RANGE = ("edge", "zero")
#: Width of the measured range's ends whose mean level extends a spectrum past them, cm⁻¹ (``"edge"``).
EDGE_WINDOW_CM1 = 10.0
_GRID_TOLERANCE_CM1 = 1e-3


@dataclass(frozen=True)
class RamanGrid:
    """A uniform Raman-shift grid.

    Parameters
    ----------
    start_cm1 : float
        First Raman shift, cm⁻¹.
    step_cm1 : float
        Spacing, cm⁻¹ (> 0).
    n_points : int
        Number of points (≥ 2).

    The default is the grid of the paper's RRUFF splits: 200–1591 cm⁻¹, 1 cm⁻¹ step, 1392 points (1401
    points truncated to a multiple of 16).
    """

    start_cm1: float = 200.0
    step_cm1: float = 1.0
    n_points: int = 1392

    def __post_init__(self) -> None:
        if not (np.isfinite(self.start_cm1) and np.isfinite(self.step_cm1) and self.step_cm1 > 0):
            raise ConfigError(f"grid step must be a finite positive number of cm⁻¹, got {self.step_cm1!r}")
        if int(self.n_points) != self.n_points or self.n_points < 2:
            raise ConfigError(f"grid n_points must be an integer ≥ 2, got {self.n_points!r}")

    @property
    def stop_cm1(self) -> float:
        """Last Raman shift of the grid, cm⁻¹."""
        return self.start_cm1 + self.step_cm1 * (self.n_points - 1)

    @property
    def axis(self) -> np.ndarray:
        """The grid as an array, shape (n_points,), float64, cm⁻¹."""
        return self.start_cm1 + self.step_cm1 * np.arange(self.n_points, dtype=np.float64)

    def matches(self, raman_shift_cm1: np.ndarray, tol_cm1: float = _GRID_TOLERANCE_CM1) -> bool:
        """True when ``raman_shift_cm1`` (shape (N,)) equals this grid within ``tol_cm1``."""
        axis = np.asarray(raman_shift_cm1, dtype=np.float64)
        return axis.shape == (self.n_points,) and bool(np.max(np.abs(axis - self.axis)) <= tol_cm1)

    @classmethod
    def from_axis(cls, raman_shift_cm1: np.ndarray) -> RamanGrid:
        """Build a grid from a uniform axis (shape (N,), cm⁻¹).

        Raises
        ------
        PreprocessError
            If the axis is not uniform to within 1e-3 cm⁻¹.
        """
        axis = check_axis(raman_shift_cm1)
        grid = cls(float(axis[0]), float((axis[-1] - axis[0]) / (axis.size - 1)), int(axis.size))
        if not grid.matches(axis):
            raise PreprocessError("Raman-shift axis is not uniform; resample it onto a grid first")
        return grid

    def describe(self) -> str:
        """One line for messages, e.g. ``200–1591 cm⁻¹, 1392 points, 1 cm⁻¹ step``."""
        return f"{self.start_cm1:g}–{self.stop_cm1:g} cm⁻¹, {self.n_points} points, {self.step_cm1:g} cm⁻¹ step"

    def to_dict(self) -> dict[str, Any]:
        """The grid as recorded in the manifest (``start_cm1``, ``step_cm1``, ``n_points``)."""
        return {"start_cm1": float(self.start_cm1), "step_cm1": float(self.step_cm1), "n_points": int(self.n_points)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RamanGrid:
        """Build a grid from its manifest entry (raises ConfigError on a missing or invalid key)."""
        try:
            return cls(float(d["start_cm1"]), float(d["step_cm1"]), int(d["n_points"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid Raman-shift grid {dict(d)!r}: {exc}") from exc


@dataclass(frozen=True)
class BaselineConfig:
    """Baseline (fluorescence) removal with :mod:`pybaselines`.

    Parameters
    ----------
    method : str
        Name of a method of :class:`pybaselines.Baseline`, e.g. ``"asls"``, ``"arpls"``, ``"imodpoly"``,
        ``"snip"``.
    params : dict
        Keyword arguments of that method (e.g. ``{"lam": 1e6, "p": 0.01}``).
    """

    method: str = "asls"
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The baseline settings as recorded in the manifest."""
        return {"method": self.method, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BaselineConfig:
        """Build the baseline settings from their manifest entry (raises ConfigError when invalid)."""
        if "method" not in d:
            raise ConfigError(f"baseline config needs a 'method', got {dict(d)!r}")
        return cls(str(d["method"]), dict(d.get("params") or {}))


@dataclass(frozen=True)
class ChannelConfig:
    """Derivative and normalisation of one input channel (see :class:`PreprocessConfig`).

    Parameters
    ----------
    derivative : int
        0 (none) or 1 (first derivative, per cm⁻¹).
    derivative_window : int
        Savitzky–Golay window in points (odd, ≥ 5); 0 uses central differences.
    normalisation : str
        One of ``"max"``, ``"minmax"``, ``"snv"``, ``"none"``.
    """

    derivative: int = 0
    derivative_window: int = 0
    normalisation: str = "max"

    def validate(self, grid: RamanGrid) -> None:
        """Check the channel's settings against ``grid`` (raises ConfigError, e.g. a window longer than the grid)."""
        if self.normalisation not in NORMALISATIONS:
            raise ConfigError(f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}")
        if self.derivative not in (0, 1):
            raise ConfigError(f"derivative must be 0 or 1, got {self.derivative!r}")
        w = self.derivative_window
        if w and (w < 5 or w % 2 == 0 or w > grid.n_points):
            raise ConfigError(f"derivative_window must be 0 or an odd number of points ≥ 5, got {w!r}")

    def to_dict(self) -> dict[str, Any]:
        """The channel as recorded in the manifest."""
        return {"derivative": self.derivative, "derivative_window": self.derivative_window,
                "normalisation": self.normalisation}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ChannelConfig:
        """Build a channel from its manifest entry (raises ConfigError when invalid)."""
        unknown = set(d) - {"derivative", "derivative_window", "normalisation"}
        if unknown:
            raise ConfigError(f"unknown channel key(s): {sorted(unknown)}")
        try:
            return cls(int(d.get("derivative", 0)), int(d.get("derivative_window", 0)), str(d.get("normalisation", "max")))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid channel config {dict(d)!r}: {exc}") from exc


@dataclass(frozen=True)
class PreprocessConfig:
    """Parameters of :func:`preprocess`; stored in the model bundle's manifest.

    Parameters
    ----------
    grid : RamanGrid
        Target Raman-shift grid.
    baseline : BaselineConfig or None
        Baseline removal, or None for raw spectra (the paper's setting).
    derivative : int
        0 (none) or 1 (first derivative, per cm⁻¹).
    derivative_window : int
        Savitzky–Golay window in points (odd, ≥ 5) for the derivative; 0 uses central differences.
    normalisation : str
        One of ``"max"``, ``"minmax"``, ``"snv"``, ``"none"``.
    extra_channels : tuple of ChannelConfig
        Further input channels computed from the same resampled, baseline-corrected spectrum, each with its
        own derivative and normalisation (e.g. SNV of the Savitzky–Golay first derivative). With extra
        channels the output gains a channel axis: shape (C, N) or (B, C, N), channel 0 being the steps above.
    spikes : SpikeConfig or None
        Cosmic-ray spike removal before resampling (:mod:`edge.spikes`), None for none. On by default: it
        changes none of the RRUFF training or test spectra (0 spikes found in the 40 % split and raw_test),
        so training and instrument spectra go through the same step. A manifest without the key gets the
        default; ``"spikes": null`` turns it off.
    outside_range : {"edge", "zero"}
        What resampling writes where the instrument did not measure (:func:`resample`): each spectrum's own
        edge level (default) or zero (the paper's construction; a raw spectrum on a fluorescence baseline
        then ends in a cliff the network reads as a band).
    min_coverage : float
        Smallest fraction of the grid (0 to 1) a measured range must cover; shorter ranges raise
        :class:`CoverageError` instead of being guessed at (the daemon rejects them on its error topic with
        reason ``coverage``). The trainer records the coverage its range augmentation trained for. 0: off.
    resolution_fwhm_cm1 : float
        Resolution floor: after resampling (and any offset correction) every spectrum is convolved with a
        Gaussian of this FWHM in cm⁻¹ (:func:`edge.resolution.broaden`), so a spectrometer with narrower lines
        than the training library's is seen at a comparable resolution. 0 (default): off. A manifest without the
        key gets 0.
    """

    grid: RamanGrid = field(default_factory=RamanGrid)
    baseline: BaselineConfig | None = None
    derivative: int = 0
    derivative_window: int = 0
    normalisation: str = "max"
    extra_channels: tuple[ChannelConfig, ...] = ()
    spikes: SpikeConfig | None = field(default_factory=SpikeConfig)
    outside_range: str = "edge"
    min_coverage: float = 0.0
    resolution_fwhm_cm1: float = 0.0

    @property
    def n_channels(self) -> int:
        """Number of input channels the model reads."""
        return 1 + len(self.extra_channels)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one preprocessed spectrum: (N,), or (C, N) with extra channels."""
        n = self.grid.n_points
        return (self.n_channels, n) if self.extra_channels else (n,)

    @property
    def channels(self) -> tuple[ChannelConfig, ...]:
        """Every channel's derivative and normalisation, channel 0 first."""
        return (ChannelConfig(self.derivative, self.derivative_window, self.normalisation), *tuple(self.extra_channels))

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_channels", tuple(
            c if isinstance(c, ChannelConfig) else ChannelConfig.from_dict(c) for c in self.extra_channels))
        for c in self.channels:
            c.validate(self.grid)
        if self.baseline is not None:
            _baseline_method(self.baseline.method, self.grid)  # fail at configuration time, not at run time
        if self.outside_range not in OUTSIDE_RANGE:
            raise ConfigError(f"outside_range must be one of {OUTSIDE_RANGE}, got {self.outside_range!r}")
        if not (np.isfinite(self.min_coverage) and 0.0 <= self.min_coverage <= 1.0):
            raise ConfigError(f"min_coverage must be a fraction in [0, 1], got {self.min_coverage!r}")
        if not (np.isfinite(self.resolution_fwhm_cm1) and 0.0 <= self.resolution_fwhm_cm1 <= 100.0):
            raise ConfigError(f"resolution_fwhm_cm1 must lie in [0, 100] cm⁻¹, got {self.resolution_fwhm_cm1!r}")

    def to_dict(self) -> dict[str, Any]:
        """The preprocessing as recorded in the bundle manifest (the contract the daemon reproduces)."""
        return {
            "grid": self.grid.to_dict(),
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "derivative": self.derivative,
            "derivative_window": self.derivative_window,
            "normalisation": self.normalisation,
            "extra_channels": [c.to_dict() for c in self.extra_channels],
            "spikes": None if self.spikes is None else self.spikes.to_dict(),
            "outside_range": self.outside_range,
            "min_coverage": float(self.min_coverage),
            **({"resolution_fwhm_cm1": float(self.resolution_fwhm_cm1)} if self.resolution_fwhm_cm1 else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessConfig:
        """Build the preprocessing from a manifest entry; keys a bundle predates get their documented defaults."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown preprocessing key(s): {sorted(unknown)}")
        try:
            return cls(
                grid=RamanGrid.from_dict(d.get("grid", {})) if "grid" in d else RamanGrid(),
                baseline=BaselineConfig.from_dict(d["baseline"]) if d.get("baseline") else None,
                derivative=int(d.get("derivative", 0)),
                derivative_window=int(d.get("derivative_window", 0)),
                normalisation=str(d.get("normalisation", "max")),
                extra_channels=tuple(ChannelConfig.from_dict(c) for c in d.get("extra_channels") or ()),
                spikes=(SpikeConfig.from_dict(d["spikes"]) if d["spikes"] is not None else None)
                if "spikes" in d else SpikeConfig(),
                outside_range=str(d.get("outside_range", "edge")),
                min_coverage=float(d.get("min_coverage", 0.0)),
                resolution_fwhm_cm1=float(d.get("resolution_fwhm_cm1", 0.0)),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid preprocessing config: {exc}") from exc


def _baseline_method(method: str, grid: RamanGrid) -> Callable[..., tuple[np.ndarray, dict[str, Any]]]:
    try:
        from pybaselines import Baseline
    except ImportError as exc:  # pragma: no cover - pybaselines is a core dependency
        raise ConfigError("baseline removal needs pybaselines (pip install pybaselines)") from exc
    fitter = Baseline(x_data=grid.axis)
    fn = getattr(fitter, method, None)
    if fn is None or method.startswith("_") or not callable(fn):
        raise ConfigError(f"unknown pybaselines method {method!r}")
    return fn


def coverage(raman_shift_cm1: np.ndarray, grid: RamanGrid) -> float:
    """Fraction of the grid's points inside the measured range.

    Parameters
    ----------
    raman_shift_cm1 : numpy.ndarray, shape (M,)
        Strictly increasing Raman shift of the measured spectrum, cm⁻¹.
    grid : RamanGrid
        The model's grid.

    Returns
    -------
    float
        In [0, 1]; 1 when the measured range spans the whole grid.

    Raises
    ------
    PreprocessError
        If the axis is invalid.
    """
    x = check_axis(raman_shift_cm1)
    g = grid.axis
    tol = _GRID_TOLERANCE_CM1
    return float(np.count_nonzero((g >= x[0] - tol) & (g <= x[-1] + tol)) / g.size)


def resample(intensity: np.ndarray, raman_shift_cm1: np.ndarray, grid: RamanGrid,
             outside_range: str = "edge") -> np.ndarray:
    """Resample spectra onto ``grid`` by linear interpolation, extending them past the measured range.

    Past the measured range, ``outside_range = "edge"`` extends each row with the mean of its measured values
    within :data:`EDGE_WINDOW_CM1` of that end (a level, not one noisy point): a raw spectrum that stops on a
    fluorescence baseline keeps its level instead of dropping to zero, so no step appears at the range edge
    (the zero cliff cost 43 points of top-1 on RAW RRUFF files ending before 1591 cm⁻¹, issue #14).
    ``"zero"`` writes 0 there, as the paper's RRUFF splits were built (Soysal et al.).

    Parameters
    ----------
    intensity : numpy.ndarray, shape (M,) or (B, M)
        Intensities on ``raman_shift_cm1`` (any units).
    raman_shift_cm1 : numpy.ndarray, shape (M,)
        Strictly increasing Raman shift, cm⁻¹.
    grid : RamanGrid
        Target grid.
    outside_range : {"edge", "zero"}
        Value past the measured range (see above).

    Returns
    -------
    numpy.ndarray, shape (N,) or (B, N), float32
        Resampled intensities, N = ``grid.n_points``. A new array.

    Raises
    ------
    PreprocessError
        If the axis is invalid, lengths differ, or the axis does not overlap the grid.
    ConfigError
        For an unknown ``outside_range``.
    """
    if outside_range not in OUTSIDE_RANGE:
        raise ConfigError(f"outside_range must be one of {OUTSIDE_RANGE}, got {outside_range!r}")
    y = as_float_array(intensity, "intensity", dtype=np.float64)
    x = check_axis(raman_shift_cm1)
    if y.shape[-1] != x.size:
        raise PreprocessError(f"intensity has {y.shape[-1]} points but raman_shift_cm1 has {x.size}")
    if grid.matches(x):
        return y.astype(np.float32, copy=True)
    g = grid.axis
    if x[-1] < g[0] or x[0] > g[-1]:
        raise PreprocessError(
            f"measured range {x[0]:.1f}–{x[-1]:.1f} cm⁻¹ does not overlap the model grid ({grid.describe()})"
        )
    # One set of indices and weights serves the whole batch (np.interp works on one row only).
    idx = np.clip(np.searchsorted(x, g, side="right") - 1, 0, x.size - 2)
    w = (g - x[idx]) / (x[idx + 1] - x[idx])
    out = y[..., idx] * (1.0 - w) + y[..., idx + 1] * w
    before, after = g < x[0], g > x[-1]
    if outside_range == "zero":
        out[..., before | after] = 0.0
    else:
        if before.any():
            out[..., before] = y[..., x <= x[0] + EDGE_WINDOW_CM1].mean(axis=-1, keepdims=True)
        if after.any():
            out[..., after] = y[..., x >= x[-1] - EDGE_WINDOW_CM1].mean(axis=-1, keepdims=True)
    return out.astype(np.float32)


class Preprocessor:
    """Callable that applies a :class:`PreprocessConfig`; build once, call per spectrum or batch.

    Parameters
    ----------
    config : PreprocessConfig
        The steps and their parameters.
    """

    def __init__(self, config: PreprocessConfig | None = None) -> None:
        self.config = config or PreprocessConfig()
        self._baseline_fn = _baseline_method(self.config.baseline.method, self.config.grid) if self.config.baseline else None
        self._sg_coeffs: dict[int, np.ndarray] = {}

    def __call__(self, intensity: np.ndarray, raman_shift_cm1: np.ndarray | None = None,
                 offset_cm1: float | Callable[[], float] = 0.0) -> np.ndarray:
        """Preprocess one spectrum or a batch (:meth:`process` without its by-products)."""
        return self.process(intensity, raman_shift_cm1, offset_cm1)[0]

    def process(self, intensity: np.ndarray, raman_shift_cm1: np.ndarray | None = None,
                offset_cm1: float | Callable[[], float] = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Preprocess one spectrum or a batch; also return the spike counts and the despiked input.

        Parameters
        ----------
        intensity : numpy.ndarray, shape (M,) or (B, M)
            Intensities. Never modified.
        raman_shift_cm1 : numpy.ndarray, shape (M,), optional
            Raman shift in cm⁻¹ of the intensities. None means they are already on the config's grid
            (M must equal ``grid.n_points``).
        offset_cm1 : float
            Known Raman-shift offset of the instrument, cm⁻¹ (positive: lines read too high). After
            resampling, the spectrum is moved by −``offset_cm1`` with each row's own edge padding
            (:func:`edge.shift.shift_spectra`, the shift the training augmentation applies): the daemon's
            drift compensation (:class:`edge.novelty.DriftConfig` ``compensate_offset``). 0: unchanged. A function
            returning it is called once the spectra are resampled (the daemon's drift bookkeeping of the previous
            batch may still be running until then).

        Returns
        -------
        x : numpy.ndarray, shape (N,) or (B, N), float32; (C, N) or (B, C, N) with extra channels
            Preprocessed spectra on the grid, N = ``grid.n_points``, C = ``config.n_channels``.
        spikes_removed : numpy.ndarray, shape () or (B,), int64
            Cosmic-ray spikes removed per spectrum (zeros when the step is off).
        despiked : numpy.ndarray, shape (M,) or (B, M)
            The input after spike removal, on its own axis (the input itself when the step is off): what the
            quality gate (:mod:`edge.quality`) judges, on the detector's pixels.

        Raises
        ------
        PreprocessError
            For NaN/Inf, empty input, an unsorted or too-short axis, mismatched lengths, or a spectrum the
            normalisation cannot scale (flat, or with no positive maximum for ``"max"``).
        CoverageError
            (a :class:`PreprocessError`) If the measured range covers less of the grid than
            ``config.min_coverage``.
        """
        cfg = self.config
        # -- spikes (edge.spikes): on the detector's own axis, before resampling --
        if cfg.spikes is not None:
            intensity, spikes_removed = remove_spikes(intensity, cfg.spikes)
        else:
            spikes_removed = np.zeros(np.shape(intensity)[:-1], dtype=np.int64)
        # -- end spikes --
        if raman_shift_cm1 is None:
            y = as_float_array(intensity, "intensity")
            if y.shape[-1] != cfg.grid.n_points:
                raise PreprocessError(
                    f"intensity has {y.shape[-1]} points; without a raman_shift_cm1 axis it must be on the "
                    f"model grid ({cfg.grid.describe()})"
                )
            y = y.astype(np.float32, copy=True)
        else:
            if cfg.min_coverage > 0:
                covered = coverage(raman_shift_cm1, cfg.grid)
                if covered < cfg.min_coverage:
                    x = check_axis(raman_shift_cm1)
                    raise CoverageError(
                        f"measured range {x[0]:.1f} to {x[-1]:.1f} cm⁻¹ covers {100 * covered:.1f} % of the model "
                        f"grid ({cfg.grid.describe()}); this model was trained for at least "
                        f"{100 * cfg.min_coverage:.1f} %")
            y = resample(intensity, raman_shift_cm1, cfg.grid, cfg.outside_range)
        if callable(offset_cm1):
            offset_cm1 = offset_cm1()
        if offset_cm1:
            if not np.isfinite(offset_cm1):
                raise PreprocessError(f"offset_cm1 must be finite, got {offset_cm1!r}")
            y = shift_spectra(y, -float(offset_cm1), cfg.grid.step_cm1)
        if cfg.resolution_fwhm_cm1:  # -- resolution floor (edge.resolution) --
            y = broaden(y, cfg.resolution_fwhm_cm1, cfg.grid.step_cm1)
        if self._baseline_fn is not None:
            y = self._remove_baseline(y)
        if not cfg.extra_channels:
            return self._channel(y, cfg.channels[0]), spikes_removed, intensity
        return np.stack([self._channel(y, c) for c in cfg.channels], axis=-2), spikes_removed, intensity

    def _channel(self, y: np.ndarray, c: ChannelConfig) -> np.ndarray:
        if c.derivative:
            y = self._derivative(y, c.derivative_window)
        return _normalise(y, c.normalisation)

    def _remove_baseline(self, y: np.ndarray) -> np.ndarray:
        baseline_cfg, baseline_fn = self.config.baseline, self._baseline_fn
        if baseline_cfg is None or baseline_fn is None:  # the caller checks; kept for the type checker
            return y
        params = dict(baseline_cfg.params)
        rows = y.reshape(-1, y.shape[-1])
        out = np.empty_like(rows)
        for i, row in enumerate(rows):
            try:
                baseline = baseline_fn(row.astype(np.float64), **params)[0]
            except (ValueError, TypeError, np.linalg.LinAlgError) as exc:
                raise PreprocessError(f"baseline removal ({baseline_cfg.method}) failed: {exc}") from exc
            out[i] = row - baseline
        return out.reshape(y.shape)

    def _derivative(self, y: np.ndarray, window: int) -> np.ndarray:
        step = self.config.grid.step_cm1
        if window:
            # Savitzky–Golay first derivative (quadratic) as one convolution with precomputed coefficients and
            # edge-replicate padding: scipy's savgol_filter refits the edges by least squares on every call
            # (~1 ms per spectrum), this costs ~20 µs.
            from scipy.ndimage import correlate1d

            coeffs = self._sg_coeffs.get(window)
            if coeffs is None:
                from scipy.signal import savgol_coeffs

                coeffs = self._sg_coeffs[window] = savgol_coeffs(window, 2, deriv=1, delta=step, use="dot")
            d = correlate1d(y, coeffs, axis=-1, mode="nearest")
        else:
            d = np.gradient(y, step, axis=-1)
        return d.astype(np.float32)


def _normalise(y: np.ndarray, method: str) -> np.ndarray:
    if method == "none":
        return y
    if method == "max":
        scale = y.max(axis=-1, keepdims=True)
        bad = scale <= 0
        offset = 0.0
    elif method == "minmax":
        lo = y.min(axis=-1, keepdims=True)
        scale = y.max(axis=-1, keepdims=True) - lo
        bad = scale <= 0
        offset = lo
    else:  # snv
        offset = y.mean(axis=-1, keepdims=True)
        scale = y.std(axis=-1, keepdims=True)
        bad = scale <= 0
    if np.any(bad):
        rows = np.flatnonzero(bad.ravel()).tolist()
        raise PreprocessError(f"{method!r} normalisation impossible for spectrum row(s) {rows[:10]}: flat or no positive maximum")
    return ((y - offset) / scale).astype(np.float32)


def preprocess(
    intensity: np.ndarray,
    raman_shift_cm1: np.ndarray | None = None,
    config: PreprocessConfig | None = None,
) -> np.ndarray:
    """Preprocess spectra with ``config`` (default: resample to 200–1591 cm⁻¹ and max-normalise).

    Convenience wrapper of :class:`Preprocessor`; build a :class:`Preprocessor` once when calling in a loop.
    See :meth:`Preprocessor.__call__` for shapes, dtypes and errors.
    """
    return Preprocessor(config)(intensity, raman_shift_cm1)
