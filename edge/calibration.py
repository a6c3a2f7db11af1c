"""Wavenumber (Raman-shift axis) calibration of an instrument from spectra of standards.

A standard's reference lines are located in its measured spectrum (coarse common offset search, then each
line's centre by a least-squares fit of a line profile plus a linear background with
:func:`scipy.optimize.curve_fit`, never the highest sample), and a polynomial correction
``Δ(x) = Σ c_k x^k`` (cm⁻¹; degree 0 = offset, 1 = linear, 2 = quadratic) of the measured axis ``x`` is fitted
to ``reference - measured``. The calibrated axis is ``x + Δ(x)``; outside the range spanned by the fitted lines
the correction continues linearly (a quadratic must not run away at the ends of the detector).

Standards (line tables below):

- **silicon**: the first-order optical phonon, 520.7 cm⁻¹ by default (520.45 in some tools: configurable);
  one line, so an offset only;
- **polystyrene**: the ASTM E1840-96 (2022) reference Raman shifts of polystyrene;
- **neon**: Ne I emission lines (NIST Atomic Spectra Database, air wavelengths, nm), placed on the Raman-shift
  axis with the laser wavelength: ``1e7/λ_laser - 1e7/λ_line`` cm⁻¹. A neon lamp calibrates the *absolute*
  wavelength axis; an error of the laser wavelength is a constant offset in cm⁻¹ (0.1 nm at 785 nm ≈
  1.6 cm⁻¹) that only a Raman standard reveals. Given neon together with silicon or polystyrene,
  :func:`fit_calibration` therefore fits the laser wavenumber (one common offset of the neon lines) with the
  polynomial, and records the fitted laser wavelength.

The degree can be chosen by leave-one-line-out cross-validation on the standards' own lines
(``degree="cv"``, :func:`leave_one_line_out_rms`), never on a check spectrum.

The result is written as a versioned JSON *instrument calibration file* (:data:`CALIBRATION_FORMAT`,
:data:`CALIBRATION_VERSION`); :func:`load_calibration` validates one and :meth:`Calibration.apply` corrects an
axis. The daemon applies it before resampling (``[instrument] calibration = FILE``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import CalibrationError

__all__ = [
    "BASELINES",
    "CALIBRATION_FORMAT",
    "CALIBRATION_VERSION",
    "NEON_NIST_AIR_NM",
    "POLYSTYRENE_ASTM_E1840_CM1",
    "SILICON_CM1",
    "STANDARDS",
    "Calibration",
    "FittedLine",
    "LineFit",
    "fit_calibration",
    "fit_line",
    "fit_line_detail",
    "leave_one_line_out_rms",
    "load_calibration",
    "measure_lines",
    "reference_lines",
]

CALIBRATION_FORMAT = "raman-edge-calibration"
CALIBRATION_VERSION = 1

SILICON_CM1 = 520.7
"""Silicon's first-order Raman line, cm⁻¹ (520.45 in some calibration tools; pass ``silicon_cm1``)."""

POLYSTYRENE_ASTM_E1840_CM1 = (620.9, 795.8, 1001.4, 1031.8, 1155.3, 1450.5, 1583.1, 1602.3, 2852.4, 2904.5, 3054.3)
"""Polystyrene reference Raman shifts, cm⁻¹ (ASTM E1840-96, Standard Guide for Raman Shift Standards)."""

NEON_NIST_AIR_NM = (
    540.0562, 585.2488, 588.1895, 594.4834, 597.5534, 602.9997, 607.4338, 609.6163, 614.3063, 616.3594,
    621.7281, 626.6495, 630.4789, 633.4428, 638.2991, 640.2248, 650.6528, 653.2882, 659.8953, 667.8276,
    671.7043, 692.9467, 703.2413, 717.3938, 724.5167, 743.8899, 747.2438, 748.8871, 753.5774, 754.4044,
    794.3181, 808.2458, 811.8549, 812.8907, 813.6406, 825.9379, 826.6077, 830.0326, 836.5747, 837.7606,
    841.8427, 846.3357, 849.5360, 854.4696, 857.1353, 859.1259, 863.4647, 865.4384, 868.1921, 870.4112,
    877.1656, 878.0621, 878.3754, 885.3867, 886.5755, 891.9501, 914.8672, 920.1759, 930.0853, 932.6507,
    942.5379, 953.4164, 966.5420,
)
"""Ne I emission lines, nm in air (NIST Atomic Spectra Database, Kramida et al.; strong lines 540-967 nm)."""

STANDARDS = ("silicon", "polystyrene", "neon")
_DEFAULT_DEGREE = {"silicon": 0, "polystyrene": 1, "neon": 2}
_PROFILE = {"silicon": "lorentzian", "polystyrene": "lorentzian", "neon": "gaussian"}
_HALF_WINDOW_CM1 = {"silicon": 15.0, "polystyrene": 8.0, "neon": 6.0}


def reference_lines(standard: str, *, laser_nm: float | None = None, silicon_cm1: float = SILICON_CM1) -> np.ndarray:
    """Return the reference Raman shifts of a standard, cm⁻¹.

    Parameters
    ----------
    standard : {"silicon", "polystyrene", "neon"}
        The standard.
    laser_nm : float, optional
        Excitation wavelength, nm (air); required for neon.
    silicon_cm1 : float
        Silicon's reference line, cm⁻¹.

    Returns
    -------
    numpy.ndarray, shape (L,), float64
        Sorted reference Raman shifts, cm⁻¹ (neon: only the lines on the Stokes side, > 0 cm⁻¹).

    Raises
    ------
    CalibrationError
        For an unknown standard, or neon without a valid laser wavelength.
    """
    if standard == "silicon":
        return np.array([float(silicon_cm1)])
    if standard == "polystyrene":
        return np.array(POLYSTYRENE_ASTM_E1840_CM1)
    if standard == "neon":
        if laser_nm is None or not (np.isfinite(laser_nm) and 200.0 < laser_nm < 2000.0):
            raise CalibrationError(f"neon lines need the laser wavelength in nm (200-2000), got {laser_nm!r}")
        shifts = 1e7 / float(laser_nm) - 1e7 / np.array(NEON_NIST_AIR_NM)
        return np.sort(shifts[shifts > 0])
    raise CalibrationError(f"unknown standard {standard!r}; known: {', '.join(STANDARDS)}")


def _lorentzian(x: np.ndarray, amp: float, x0: float, fwhm: float, b0: float, b1: float) -> np.ndarray:
    hw = 0.5 * fwhm
    return amp * hw * hw / ((x - x0) ** 2 + hw * hw) + b0 + b1 * (x - x0)


def _gaussian(x: np.ndarray, amp: float, x0: float, fwhm: float, b0: float, b1: float) -> np.ndarray:
    return amp * np.exp(-4.0 * np.log(2.0) * ((x - x0) / fwhm) ** 2) + b0 + b1 * (x - x0)


_PROFILES: dict[str, Callable[..., np.ndarray]] = {"lorentzian": _lorentzian, "gaussian": _gaussian}


@dataclass(frozen=True)
class FittedLine:
    """A line located in a measured spectrum.

    Attributes
    ----------
    standard : str
        Standard the line belongs to.
    reference_cm1 : float
        Tabulated position, cm⁻¹.
    measured_cm1 : float
        Fitted centre on the measured (uncorrected) axis, cm⁻¹.
    fwhm_cm1 : float
        Fitted full width at half maximum, cm⁻¹.
    amplitude : float
        Fitted peak height above the local background (intensity units).
    """

    standard: str
    reference_cm1: float
    measured_cm1: float
    fwhm_cm1: float
    amplitude: float


def _pseudo_voigt(x: np.ndarray, amp: float, x0: float, fwhm: float, b0: float, b1: float, eta: float
                  ) -> np.ndarray:
    """Pseudo-Voigt: ``eta`` x Lorentzian + (1 - eta) x Gaussian of one FWHM (Thompson, Cox & Hastings 1987)."""
    hw = 0.5 * fwhm
    shape = eta * hw * hw / ((x - x0) ** 2 + hw * hw) + (1.0 - eta) * np.exp(-4.0 * np.log(2.0) * ((x - x0) / fwhm) ** 2)
    return amp * shape + b0 + b1 * (x - x0)


_PROFILES["pseudo_voigt"] = _pseudo_voigt
BASELINES = ("linear", "constant")


@dataclass(frozen=True)
class LineFit:
    """One fitted line profile (:func:`fit_line_detail`).

    Attributes
    ----------
    centre_cm1, fwhm_cm1 : float
        Fitted centre and full width at half maximum, cm⁻¹.
    amplitude : float
        Height above the local background (intensity units).
    centre_stderr_cm1 : float
        Standard error of the centre from the fit's covariance, cm⁻¹ (``nan`` when undetermined).
    eta : float
        Lorentzian fraction (1 for a Lorentzian, 0 for a Gaussian, fitted for a pseudo-Voigt).
    """

    centre_cm1: float
    fwhm_cm1: float
    amplitude: float
    centre_stderr_cm1: float
    eta: float


def fit_line_detail(raman_shift_cm1: np.ndarray, intensity: np.ndarray, guess_cm1: float, *,
                    half_window_cm1: float = 10.0, profile: str = "lorentzian",
                    baseline: str = "linear") -> LineFit:
    """Fit one line profile plus a background around ``guess_cm1`` (:func:`scipy.optimize.curve_fit`).

    Parameters
    ----------
    raman_shift_cm1 : numpy.ndarray, shape (M,)
        Strictly increasing axis, cm⁻¹.
    intensity : numpy.ndarray, shape (M,)
        Intensities.
    guess_cm1 : float
        Approximate line position, cm⁻¹.
    half_window_cm1 : float
        Half width of the fitted window, cm⁻¹.
    profile : {"lorentzian", "gaussian", "pseudo_voigt"}
        Line shape (pseudo-Voigt: the Lorentzian fraction is fitted within 0-1).
    baseline : {"linear", "constant"}
        Background under the line within the window.

    Returns
    -------
    LineFit

    Raises
    ------
    CalibrationError
        For an unknown profile or baseline, when the window holds fewer points than the model has parameters
        (at least 5), the fit does not converge, or the fitted line is not a peak inside the window (centre
        outside, width not positive, or amplitude not positive).
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    fn = _PROFILES.get(profile)
    if fn is None:
        raise CalibrationError(f"unknown line profile {profile!r}; known: {', '.join(_PROFILES)}")
    if baseline not in BASELINES:
        raise CalibrationError(f"unknown baseline {baseline!r}; known: {', '.join(BASELINES)}")
    x = np.asarray(raman_shift_cm1, dtype=np.float64)
    y = np.asarray(intensity, dtype=np.float64)
    sel = np.abs(x - guess_cm1) <= half_window_cm1
    xs, ys = x[sel], y[sel]
    pv = profile == "pseudo_voigt"
    n_par = 3 + (2 if baseline == "linear" else 1) + int(pv)
    if xs.size < max(5, n_par):
        raise CalibrationError(f"fewer than {max(5, n_par)} points within ±{half_window_cm1:g} cm⁻¹ of "
                               f"{guess_cm1:.1f} cm⁻¹")
    i = int(np.argmax(ys))
    base = float(min(ys[0], ys[-1]))
    step = float(np.median(np.diff(xs)))
    p0 = [float(ys[i] - base), float(xs[i]), max(3.0 * step, 2.0), base]

    def model(xx: np.ndarray, *q: float) -> np.ndarray:
        b1 = q[4] if baseline == "linear" else 0.0
        if pv:
            return _pseudo_voigt(xx, q[0], q[1], q[2], q[3], b1, q[-1])
        return fn(xx, q[0], q[1], q[2], q[3], b1)

    if baseline == "linear":
        p0.append(0.0)
    lo = [-np.inf] * len(p0)
    hi = [np.inf] * len(p0)
    if pv:
        p0.append(0.5)
        lo.append(0.0)
        hi.append(1.0)
    try:
        with warnings.catch_warnings():  # an undetermined covariance is fine: the centre's error is then nan
            warnings.simplefilter("ignore", OptimizeWarning)
            p, cov = curve_fit(model, xs, ys, p0=p0, bounds=(lo, hi) if pv else (-np.inf, np.inf), maxfev=4000)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CalibrationError(f"line fit near {guess_cm1:.1f} cm⁻¹ failed: {exc}") from exc
    amp, x0, fwhm = float(p[0]), float(p[1]), abs(float(p[2]))
    if not (np.all(np.isfinite(p)) and amp > 0 and xs[0] < x0 < xs[-1] and 0 < fwhm < 2 * half_window_cm1):
        raise CalibrationError(f"no line near {guess_cm1:.1f} cm⁻¹ (fit: centre {x0:.2f}, FWHM {fwhm:.2f}, "
                               f"amplitude {amp:.3g})")
    var = float(np.asarray(cov)[1, 1]) if np.ndim(cov) == 2 else float("nan")
    err = float(np.sqrt(var)) if np.isfinite(var) and var >= 0 else float("nan")
    eta = float(p[-1]) if pv else (1.0 if profile == "lorentzian" else 0.0)
    return LineFit(x0, fwhm, amp, err, eta)


def fit_line(raman_shift_cm1: np.ndarray, intensity: np.ndarray, guess_cm1: float, *,
             half_window_cm1: float = 10.0, profile: str = "lorentzian",
             baseline: str = "linear") -> tuple[float, float, float]:
    """Fit one line profile plus a background around ``guess_cm1``; see :func:`fit_line_detail`.

    Parameters
    ----------
    raman_shift_cm1 : numpy.ndarray, shape (M,)
        Strictly increasing axis, cm⁻¹.
    intensity : numpy.ndarray, shape (M,)
        Intensities.
    guess_cm1 : float
        Approximate line position, cm⁻¹.
    half_window_cm1 : float
        Half width of the fitted window, cm⁻¹.
    profile : {"lorentzian", "gaussian", "pseudo_voigt"}
        Line shape.
    baseline : {"linear", "constant"}
        Background under the line.

    Returns
    -------
    centre_cm1, fwhm_cm1, amplitude : float
        Fitted centre (cm⁻¹), full width at half maximum (cm⁻¹) and height above the background.

    Raises
    ------
    CalibrationError
        As :func:`fit_line_detail`.
    """
    f = fit_line_detail(raman_shift_cm1, intensity, guess_cm1, half_window_cm1=half_window_cm1, profile=profile,
                        baseline=baseline)
    return f.centre_cm1, f.fwhm_cm1, f.amplitude


def _noise(y: np.ndarray) -> float:
    return float(np.median(np.abs(np.diff(y)))) / (0.6745 * np.sqrt(2.0)) + 1e-12


def measure_lines(raman_shift_cm1: np.ndarray, intensity: np.ndarray, standard: str, *,
                  laser_nm: float | None = None, silicon_cm1: float = SILICON_CM1, max_offset_cm1: float = 15.0,
                  min_snr: float = 5.0) -> list[FittedLine]:
    """Locate a standard's reference lines in a measured spectrum.

    Peaks are found with :func:`scipy.signal.find_peaks` (prominence ≥ ``min_snr`` noise units); the common
    offset (within ±``max_offset_cm1``) that brings most reference lines onto a peak is searched on a
    0.25 cm⁻¹ grid; each reference line is then paired with its nearest peak (within 3 cm⁻¹ or 2 points
    after that offset) and its centre fitted with :func:`fit_line`. Reference lines closer than
    2 x the fit's half window to another reference line (unresolved blends) are skipped.

    Parameters
    ----------
    raman_shift_cm1 : numpy.ndarray, shape (M,)
        The instrument's (uncorrected) axis, cm⁻¹, strictly increasing.
    intensity : numpy.ndarray, shape (M,)
        The standard's spectrum.
    standard : {"silicon", "polystyrene", "neon"}
        Which standard it is.
    laser_nm : float, optional
        Laser wavelength, nm (neon only).
    silicon_cm1 : float
        Silicon's reference line, cm⁻¹.
    max_offset_cm1 : float
        Largest axis error searched, cm⁻¹.
    min_snr : float
        Smallest peak prominence, in robust noise units.

    Returns
    -------
    list of FittedLine
        The lines found, in increasing reference position (lines that could not be fitted are left out).

    Raises
    ------
    CalibrationError
        If the axis and intensities do not match or no reference line can be located.
    """
    from scipy.signal import find_peaks

    x = np.asarray(raman_shift_cm1, dtype=np.float64)
    y = np.asarray(intensity, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 10 or np.any(np.diff(x) <= 0):
        raise CalibrationError("a standard's spectrum needs matching 1-D axis and intensities (≥ 10 points, "
                               "strictly increasing axis)")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise CalibrationError("a standard's spectrum holds NaN or Inf")
    refs = reference_lines(standard, laser_nm=laser_nm, silicon_cm1=silicon_cm1)
    step = float(np.median(np.diff(x)))
    half = max(_HALF_WINDOW_CM1[standard], 4.0 * step)
    refs = refs[(refs > x[0] + half) & (refs < x[-1] - half)]
    gaps = np.diff(refs)
    isolated = np.ones(refs.size, dtype=bool)
    isolated[1:] &= gaps > 2.0 * half
    isolated[:-1] &= gaps > 2.0 * half
    refs = refs[isolated]
    if refs.size == 0:
        raise CalibrationError(f"no {standard} reference line within the measured range {x[0]:.0f}-{x[-1]:.0f} cm⁻¹")
    peaks, props = find_peaks(y, prominence=min_snr * _noise(y))
    if peaks.size == 0:
        raise CalibrationError(f"no peak above {min_snr:g} noise units in the {standard} spectrum")
    strongest = np.argsort(-props["prominences"], kind="stable")[:2 * refs.size + 5]  # noise peaks match anything
    peaks = np.sort(peaks[strongest])
    px = x[peaks]
    tol = max(3.0, 2.0 * step)
    offsets = np.arange(-max_offset_cm1, max_offset_cm1 + 1e-9, 0.25)
    dist = np.abs(px[None, None, :] - (refs[None, :, None] + offsets[:, None, None])).min(axis=2)
    score = (dist <= tol).sum(axis=1) - 1e-3 * np.abs(offsets)  # most lines matched; ties: smallest offset
    offset = float(offsets[int(np.argmax(score))])
    profile = _PROFILE[standard]
    lines: list[FittedLine] = []
    for r in refs:
        j = int(np.argmin(np.abs(px - (r + offset))))
        if abs(px[j] - (r + offset)) > tol:
            continue
        try:
            centre, fwhm, amp = fit_line(x, y, float(px[j]), half_window_cm1=half, profile=profile)
        except CalibrationError:
            continue
        if abs(centre - px[j]) <= tol:
            lines.append(FittedLine(standard, float(r), centre, fwhm, amp))
    if not lines:
        raise CalibrationError(f"none of the {refs.size} {standard} reference lines could be fitted")
    return lines


@dataclass
class Calibration:
    """An instrument's Raman-shift axis correction (the instrument calibration file's content).

    Parameters
    ----------
    instrument_id : str
        Instrument (and optical setup) the calibration belongs to.
    laser_nm : float or None
        Laser wavelength used, nm.
    coefficients_cm1 : list of float
        ``c_0 … c_d`` of the correction ``Δ(x) = Σ c_k x^k`` (cm⁻¹, x in cm⁻¹).
    valid_range_cm1 : tuple of float
        Range of the fitted lines' measured positions; outside it the correction continues linearly.
    lines : list of dict
        Per line: standard, reference_cm1, measured_cm1, corrected_cm1, residual_cm1, fwhm_cm1.
    rms_cm1 : float
        Root mean square of the residuals, cm⁻¹.
    standards : list of dict
        Standards used: name, source (file name), reference table.
    calibration_id : str
        Identifier named by every prediction made with it.
    created_utc : str
        ISO 8601 date of the fit.
    sha256 : str
        Hash of the file it was read from ("" before it is saved).
    fit : dict
        How the correction was chosen: ``degree_rule`` ("given", "default", "cv"), ``cv_rms_cm1`` (the
        leave-one-line-out RMS per degree, cm⁻¹) and, when the laser was fitted from neon plus a Raman
        standard, ``laser_offset_cm1`` and ``laser_nm_fitted`` (optional in the file).
    """

    instrument_id: str
    laser_nm: float | None
    coefficients_cm1: list[float]
    valid_range_cm1: tuple[float, float]
    lines: list[dict[str, Any]] = field(default_factory=list)
    rms_cm1: float = 0.0
    standards: list[dict[str, Any]] = field(default_factory=list)
    calibration_id: str = ""
    created_utc: str = ""
    sha256: str = ""
    fit: dict[str, Any] = field(default_factory=dict)

    @property
    def degree(self) -> int:
        """Polynomial degree (0 offset, 1 linear, 2 quadratic)."""
        return len(self.coefficients_cm1) - 1

    def correction(self, raman_shift_cm1: np.ndarray) -> np.ndarray:
        """Correction Δ(x), cm⁻¹, shape of the input; linear continuation outside ``valid_range_cm1``."""
        from numpy.polynomial import polynomial as P

        x = np.asarray(raman_shift_cm1, dtype=np.float64)
        c = np.asarray(self.coefficients_cm1, dtype=np.float64)
        lo, hi = self.valid_range_cm1
        d = P.polyval(np.clip(x, lo, hi), c)
        if c.size > 1:
            dc = P.polyder(c)
            d = (d + np.where(x < lo, (x - lo) * P.polyval(lo, dc), 0.0)
                 + np.where(x > hi, (x - hi) * P.polyval(hi, dc), 0.0))
        return d

    def apply(self, raman_shift_cm1: np.ndarray) -> np.ndarray:
        """Calibrated axis ``x + Δ(x)``.

        Parameters
        ----------
        raman_shift_cm1 : numpy.ndarray, shape (M,)
            The instrument's axis, cm⁻¹, strictly increasing.

        Returns
        -------
        numpy.ndarray, shape (M,), float64
            The corrected axis, cm⁻¹ (a new array).

        Raises
        ------
        CalibrationError
            If the axis is not finite, or the corrected axis is not strictly increasing.
        """
        x = np.asarray(raman_shift_cm1, dtype=np.float64)
        if x.ndim != 1 or not np.all(np.isfinite(x)):
            raise CalibrationError("the axis to calibrate must be a finite 1-D array of cm⁻¹")
        out = x + self.correction(x)
        if np.any(np.diff(out) <= 0):
            raise CalibrationError(f"calibration {self.calibration_id!r} folds the axis over (not monotonic on "
                                   f"{x[0]:.0f}-{x[-1]:.0f} cm⁻¹)")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return the calibration file's JSON object (without ``sha256``, which is the hash of that file)."""
        return {
            "format": CALIBRATION_FORMAT, "version": CALIBRATION_VERSION, "calibration_id": self.calibration_id,
            "instrument_id": self.instrument_id, "laser_nm": self.laser_nm, "created_utc": self.created_utc,
            "standards": self.standards,
            "polynomial": {"degree": self.degree, "coefficients_cm1": [float(c) for c in self.coefficients_cm1],
                           "variable": "measured Raman shift x, cm⁻¹; corrected = x + sum(c_k x^k)",
                           "valid_range_cm1": [float(v) for v in self.valid_range_cm1]},
            "lines": self.lines, "rms_cm1": float(self.rms_cm1), "fit": self.fit,
        }

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the calibration file (JSON); returns and records its SHA-256."""
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        try:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise CalibrationError(f"cannot write calibration file {os.fspath(path)}: {exc}") from exc
        self.sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self.sha256

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], sha256: str = "") -> Calibration:
        """Validate a calibration file's object.

        Raises
        ------
        CalibrationError
            For another format or version, missing keys, or non-finite or inconsistent values.
        """
        if not isinstance(d, Mapping) or d.get("format") != CALIBRATION_FORMAT:
            got = d.get("format") if isinstance(d, Mapping) else type(d).__name__
            raise CalibrationError(f"not a {CALIBRATION_FORMAT} file (format {got!r})")
        if d.get("version") != CALIBRATION_VERSION:
            raise CalibrationError(f"calibration file version {d.get('version')!r} is not supported "
                                   f"(this build reads version {CALIBRATION_VERSION})")
        try:
            poly = d["polynomial"]
            coeffs = [float(c) for c in poly["coefficients_cm1"]]
            lo, hi = (float(v) for v in poly["valid_range_cm1"])
            laser = d.get("laser_nm")
            laser = None if laser is None else float(laser)
            cal = cls(instrument_id=str(d["instrument_id"]), laser_nm=laser, coefficients_cm1=coeffs,
                      valid_range_cm1=(lo, hi), lines=list(d.get("lines") or []),
                      rms_cm1=float(d.get("rms_cm1", 0.0)),
                      standards=list(d.get("standards") or []), calibration_id=str(d["calibration_id"]),
                      created_utc=str(d.get("created_utc", "")), sha256=sha256, fit=dict(d.get("fit") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"malformed calibration file: {type(exc).__name__}: {exc}") from exc
        if not coeffs or len(coeffs) > 4 or int(poly.get("degree", len(coeffs) - 1)) != len(coeffs) - 1:
            raise CalibrationError(f"calibration polynomial needs 1-4 coefficients matching its degree, got {coeffs}")
        if not (np.all(np.isfinite(coeffs)) and np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise CalibrationError("calibration coefficients and valid range must be finite (valid_range low ≤ high)")
        if not cal.calibration_id:
            raise CalibrationError("calibration file without a calibration_id")
        return cal


def load_calibration(path: str | os.PathLike[str]) -> Calibration:
    """Read and validate an instrument calibration file.

    Parameters
    ----------
    path : str or os.PathLike
        The JSON file written by ``edge-calibrate``.

    Returns
    -------
    Calibration
        With ``sha256`` the hash of the file's bytes.

    Raises
    ------
    CalibrationError
        If the file is missing, unreadable, not JSON, or not a valid calibration.
    """
    p = os.fspath(path)
    try:
        with open(p, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise CalibrationError(f"cannot read calibration file {p}: {exc.strerror or exc}") from exc
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"calibration file {p} is not valid JSON: {exc}") from exc
    try:
        return Calibration.from_dict(d, sha256=hashlib.sha256(raw).hexdigest())
    except CalibrationError as exc:
        raise CalibrationError(f"{p}: {exc}") from exc


def _design(m: np.ndarray, neon: np.ndarray, degree: int, fit_laser: bool) -> np.ndarray:
    """Least-squares design matrix: powers of the measured position, plus a neon-only column (laser)."""
    a = np.vander(m, degree + 1, increasing=True)
    return np.column_stack([a, neon.astype(np.float64)]) if fit_laser else a


def _solve(m: np.ndarray, r: np.ndarray, neon: np.ndarray, degree: int, fit_laser: bool
           ) -> tuple[np.ndarray, float, np.ndarray]:
    """Coefficients, laser offset (cm⁻¹, 0 when not fitted) and residuals of ``reference - corrected``."""
    p = np.linalg.lstsq(_design(m, neon, degree, fit_laser), r - m, rcond=None)[0]
    coeffs, laser = (p[:-1], float(p[-1])) if fit_laser else (p, 0.0)
    resid = r - (m + np.vander(m, degree + 1, increasing=True) @ coeffs) - laser * neon
    return coeffs, laser, resid


def leave_one_line_out_rms(lines: Sequence[FittedLine], degree: int, *, fit_laser: bool = False,
                           scored: Sequence[str] | None = None) -> float:
    """Cross-validated residual of a polynomial correction on a standard's own lines, cm⁻¹.

    Each line is predicted by the correction fitted to the other lines (neon lines get the common laser offset
    when ``fit_laser``); the root mean square of those prediction errors judges a degree without looking at
    any check spectrum.

    Parameters
    ----------
    lines : sequence of FittedLine
        Located lines (:func:`measure_lines`).
    degree : int
        Polynomial degree 0-3.
    fit_laser : bool
        Fit a common offset of the neon lines (the laser wavenumber error) besides the polynomial.
    scored : sequence of str, optional
        Standards whose left-out lines are scored (default: all). ``("polystyrene",)`` compares a
        polystyrene-only fit with a neon + polystyrene fit on the same held-out Raman lines.

    Returns
    -------
    float
        RMS of the left-out lines' errors, cm⁻¹; ``inf`` when a subset leaves no residual (too few lines).
    """
    m = np.array([ln.measured_cm1 for ln in lines])
    r = np.array([ln.reference_cm1 for ln in lines])
    neon = np.array([ln.standard == "neon" for ln in lines])
    errors = []
    for i in range(m.size):
        if scored is not None and lines[i].standard not in scored:
            continue
        keep = np.arange(m.size) != i
        if fit_laser and not (neon[keep].any() and (~neon[keep]).any()):
            continue  # without the other kind of line the left-out one's offset is undetermined
        if keep.sum() < degree + 2 + int(fit_laser):
            return float("inf")
        coeffs, laser, _ = _solve(m[keep], r[keep], neon[keep], degree, fit_laser)
        predicted = m[i] + float((np.vander(m[i:i + 1], degree + 1, increasing=True) @ coeffs)[0]) + laser * neon[i]
        errors.append(r[i] - predicted)
    return float(np.sqrt(np.mean(np.square(errors)))) if errors else float("inf")


def fit_calibration(measurements: Sequence[tuple[str, np.ndarray, np.ndarray]], *, instrument_id: str,
                    laser_nm: float | None = None, degree: int | str | None = None,
                    silicon_cm1: float = SILICON_CM1, sources: Sequence[str] | None = None,
                    calibration_id: str = "", max_offset_cm1: float = 15.0,
                    fit_laser: bool | None = None) -> Calibration:
    """Fit an axis correction from one or more standards' spectra.

    A neon lamp calibrates the *absolute* wavelength axis; the Raman shift also needs the laser line, which a
    Raman standard (silicon, polystyrene) pins. When neon is given together with a Raman standard the laser
    wavenumber is therefore fitted by default (``fit_laser``): the neon lines get one common offset
    ``δ`` (cm⁻¹) besides the polynomial, the Raman lines pin ``Δ(x)`` absolutely, and the fitted laser
    wavelength ``1e7 / (1e7/laser_nm + δ)`` nm is recorded. Neon alone places the axis with the nominal
    ``laser_nm`` (0.1 nm at 785 nm ≈ 1.6 cm⁻¹).

    Parameters
    ----------
    measurements : sequence of (standard, raman_shift_cm1, intensity)
        Each standard's spectrum on the instrument's own axis (shape (M,) each, cm⁻¹).
    instrument_id : str
        Instrument (and setup) identifier.
    laser_nm : float, optional
        Laser wavelength, nm (needed for neon).
    degree : int or "cv", optional
        Polynomial degree 0-2, or ``"cv"``: the degree 0-2 with the smallest leave-one-line-out residual on
        the standards' own lines (:func:`leave_one_line_out_rms`; ties go to the lower degree). Default: the
        highest the standards call for (silicon 0, polystyrene 1, neon 2), lowered to (number of lines - 2)
        so that a residual is left. A line whose residual exceeds 1 cm⁻¹ and 3 x the other lines' RMS is
        dropped (worst first) while lines remain to spare.
    silicon_cm1 : float
        Silicon's reference line, cm⁻¹.
    sources : sequence of str, optional
        File names of the measurements (recorded in the file).
    calibration_id : str
        Identifier; default ``"<instrument_id>-<UTC date and time>"``.
    max_offset_cm1 : float
        Largest axis error searched when locating lines, cm⁻¹.
    fit_laser : bool, optional
        Fit the laser wavenumber from neon plus a Raman standard (default: True exactly when both are given).

    Returns
    -------
    Calibration
        With ``laser_offset_cm1`` (δ) and ``laser_nm_fitted`` when the laser was fitted, and
        ``degree_rule`` (``"given"``, ``"default"`` or ``"cv"``, with the cross-validated RMS per degree).

    Raises
    ------
    CalibrationError
        For an empty list, an unknown standard, a bad degree, too few lines for the degree, or ``fit_laser``
        without both neon and a Raman standard.
    """
    from numpy.polynomial import polynomial as P

    if not measurements:
        raise CalibrationError("no standard spectra to calibrate from")
    lines: list[FittedLine] = []
    for standard, x, y in measurements:
        if standard not in STANDARDS:
            raise CalibrationError(f"unknown standard {standard!r}; known: {', '.join(STANDARDS)}")
        lines += measure_lines(x, y, standard, laser_nm=laser_nm, silicon_cm1=silicon_cm1,
                               max_offset_cm1=max_offset_cm1)
    kinds = {s for s, _, _ in measurements}
    both = "neon" in kinds and bool(kinds & {"silicon", "polystyrene"})
    if fit_laser is None:
        fit_laser = both
    elif fit_laser and not both:
        raise CalibrationError("fitting the laser wavelength needs a neon spectrum and a Raman standard "
                               "(silicon or polystyrene): the neon lines alone cannot tell the laser line")
    if fit_laser and not any(ln.standard == "neon" for ln in lines):
        fit_laser = False  # unreachable in practice: measure_lines raises when no neon line is found
    rule = "given"
    cv: dict[str, float] = {}
    if degree == "cv":
        for d in (0, 1, 2):
            cv[str(d)] = round(leave_one_line_out_rms(lines, d, fit_laser=fit_laser), 4)
        finite = [d for d in (0, 1, 2) if np.isfinite(cv[str(d)])]
        if not finite:
            raise CalibrationError(f"{len(lines)} line(s) found: too few to cross-validate a degree")
        degree, rule = min(finite, key=lambda d: (cv[str(d)], d)), "cv"
    elif degree is None:  # at least one line more than coefficients (a residual to judge the fit by)
        degree = max(0, min(max(_DEFAULT_DEGREE[s] for s, _, _ in measurements), len(lines) - 2 - int(fit_laser)))
        rule = "default"
    if degree not in (0, 1, 2):
        raise CalibrationError(f"calibration degree must be 0, 1 or 2 (or 'cv'), got {degree!r}")
    if len(lines) < degree + 1 + int(fit_laser):
        raise CalibrationError(f"{len(lines)} line(s) found: too few for a degree-{degree} correction")
    while True:  # drop the worst line while it is an outlier (> 1 cm⁻¹ and > 3 x the others' RMS)
        m = np.array([ln.measured_cm1 for ln in lines])
        r = np.array([ln.reference_cm1 for ln in lines])
        neon = np.array([ln.standard == "neon" for ln in lines], dtype=np.float64)
        coeffs, laser, resid = _solve(m, r, neon, degree, fit_laser)
        corrected = m + P.polyval(m, coeffs)
        worst = int(np.argmax(np.abs(resid)))
        rest = np.delete(resid, worst)
        kinds_left = {ln.standard for i, ln in enumerate(lines) if i != worst}
        if (len(lines) <= degree + 2 + int(fit_laser) or (fit_laser and not ("neon" in kinds_left
                                                                              and len(kinds_left) > 1))
                or abs(resid[worst]) <= max(1.0, 3.0 * float(np.sqrt(np.mean(rest ** 2))))):
            break
        lines = lines[:worst] + lines[worst + 1:]
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0)
    src = list(sources) if sources is not None else [""] * len(measurements)
    standards = [{"name": s, "source": src[i] if i < len(src) else "",
                  "reference": {"silicon": f"{silicon_cm1:g} cm-1", "polystyrene": "ASTM E1840-96",
                                "neon": "NIST ASD Ne I, air wavelengths"}[s]}
                 for i, (s, _, _) in enumerate(measurements)]
    table = [{"standard": ln.standard, "reference_cm1": ln.reference_cm1,
              "measured_cm1": round(ln.measured_cm1, 4), "corrected_cm1": round(float(c), 4),
              "residual_cm1": round(float(e), 4), "fwhm_cm1": round(ln.fwhm_cm1, 3)}
             for ln, c, e in zip(lines, corrected, resid, strict=True)]
    extra: dict[str, Any] = {"degree_rule": rule}
    if cv:
        extra["cv_rms_cm1"] = cv
    if fit_laser and laser_nm is not None:
        # corrected neon position = nominal reference + δ, δ = ν_laser(true) - ν_laser(nominal)
        delta = -laser
        extra.update(laser_offset_cm1=round(delta, 4), laser_nm_fitted=round(1e7 / (1e7 / float(laser_nm) + delta), 5))
    return Calibration(
        instrument_id=instrument_id, laser_nm=None if laser_nm is None else float(laser_nm),
        coefficients_cm1=[float(c) for c in coeffs], valid_range_cm1=(float(m.min()), float(m.max())),
        lines=table, rms_cm1=float(np.sqrt(np.mean(resid ** 2))), standards=standards,
        calibration_id=calibration_id or f"{instrument_id}-{now.strftime('%Y%m%dT%H%M%SZ')}",
        created_utc=now.isoformat().replace("+00:00", "Z"), fit=extra)
