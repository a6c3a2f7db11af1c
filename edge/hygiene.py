"""Instrument hygiene on the daemon's per-batch path: axis calibration, quality gate, per-prediction fields.

The ``[instrument]`` table of the daemon configuration (:class:`InstrumentConfig`) names the instrument's
calibration file (:mod:`edge.calibration`), its laser wavelength and the quality-gate thresholds
(:mod:`edge.quality`). :class:`Hygiene` holds them at run time:

1. :meth:`Hygiene.calibrate` puts each spectrum on the calibrated axis *before* resampling (a spectrum sent
   on the model grid is on the instrument's uncorrected grid: it is moved too);
2. the preprocessing removes cosmic-ray spikes and counts them (:meth:`edge.preprocess.Preprocessor.process`);
3. :meth:`Hygiene.judge` runs the quality gate on the despiked spectra, on their own pixels;
4. :meth:`Hygiene.fields` gives each prediction ``spikes_removed``, ``quality`` {ok, reasons},
   ``labels_trusted`` and ``calibration`` {id, sha256}; a spectrum that is not ok is published with
   ``novel = true`` and counted (:meth:`Hygiene.status`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .calibration import Calibration, load_calibration
from .errors import ConfigError
from .preprocess import RamanGrid
from .quality import Quality, QualityConfig, assess
from .wire import SpectrumIn

__all__ = ["Hygiene", "InstrumentConfig"]


@dataclass(frozen=True)
class InstrumentConfig:
    """The ``[instrument]`` table of the daemon configuration.

    Parameters
    ----------
    calibration : str
        Instrument calibration file written by ``edge-calibrate`` (``""``: the axis is used as sent).
    laser_nm : float or None
        Laser wavelength, nm (enables the quality gate's emission-line test).
    quality : dict
        Quality-gate thresholds (``[instrument.quality]``, :class:`edge.quality.QualityConfig`).
    grid : dict or None
        The instrument's Raman-shift grid (``[instrument.grid]``; checked against the bundle by the daemon).
    """

    calibration: str = ""
    laser_nm: float | None = None
    quality: Mapping[str, Any] = field(default_factory=dict)
    grid: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InstrumentConfig:
        """Build from the ``[instrument]`` table; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown instrument setting(s): {sorted(unknown)}; known: {sorted(known)}")
        laser = d.get("laser_nm")
        try:
            laser = None if laser is None else float(laser)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"instrument laser_nm must be a number of nm, got {laser!r}") from exc
        if not isinstance(d.get("calibration", ""), str):
            raise ConfigError("instrument calibration must be a file path")
        return cls(str(d.get("calibration", "")), laser, dict(d.get("quality") or {}), d.get("grid"))


def _same_axis(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is b or (a is not None and b is not None and np.array_equal(a, b))


class Hygiene:
    """Calibration, quality gate and their per-prediction fields for the daemon (and offline prediction).

    Parameters
    ----------
    instrument : InstrumentConfig
        The instrument settings.
    grid : RamanGrid
        The model's grid (spectra sent without an axis are on it).

    Raises
    ------
    CalibrationError
        At construction, when the calibration file is missing or malformed.
    ConfigError
        For invalid quality settings.
    """

    def __init__(self, instrument: InstrumentConfig | None, grid: RamanGrid) -> None:
        inst = instrument or InstrumentConfig()
        self.grid = grid
        self.calibration: Calibration | None = load_calibration(inst.calibration) if inst.calibration else None
        q = dict(inst.quality)
        if inst.laser_nm is not None:
            q.setdefault("laser_nm", inst.laser_nm)
        self.quality_config = QualityConfig.from_dict(q)
        self.counters = {"quality_not_ok": 0, "spikes_removed": 0}
        self.reasons: dict[str, int] = {}
        self._cal_fields = None if self.calibration is None else {
            "id": self.calibration.calibration_id, "sha256": self.calibration.sha256}
        self._axis_cache: tuple[bytes, np.ndarray] | None = None

    def calibrate(self, spectrum: SpectrumIn) -> SpectrumIn:
        """Return ``spectrum`` on the calibrated axis (unchanged without a calibration).

        Raises
        ------
        CalibrationError
            If the calibration folds this spectrum's axis over.
        """
        if self.calibration is None:
            return spectrum
        axis = self.grid.axis if spectrum.raman_shift_cm1 is None else spectrum.raman_shift_cm1
        key = np.ascontiguousarray(axis).tobytes()
        if self._axis_cache is None or self._axis_cache[0] != key:  # one axis per instrument: computed once
            self._axis_cache = (key, self.calibration.apply(axis))
        return dataclasses.replace(spectrum, raman_shift_cm1=self._axis_cache[1])

    def judge(self, spectra: Sequence[SpectrumIn], despiked: np.ndarray | Sequence[np.ndarray]) -> list[Quality]:
        """Quality of each spectrum of a batch.

        Parameters
        ----------
        spectra : sequence of SpectrumIn
            The batch (on the calibrated axis).
        despiked : numpy.ndarray, shape (B, M), or sequence of arrays (M_i,)
            The same spectra after spike removal, on their own axes (:meth:`Preprocessor.process`).

        Returns
        -------
        list of Quality
        """
        band = (self.grid.start_cm1, self.grid.stop_cm1)
        out: list[Quality] = []
        i = 0
        while i < len(spectra):  # one vectorised call per run of spectra sharing their axis
            axis = spectra[i].raman_shift_cm1
            x = self.grid.axis if axis is None else axis
            j = i + 1
            while j < len(spectra) and np.shape(despiked[j]) == np.shape(despiked[i]) and _same_axis(
                    spectra[j].raman_shift_cm1, axis):
                j += 1
            out += assess(np.stack([np.asarray(despiked[k]) for k in range(i, j)]), x, self.quality_config, band)
            i = j
        return out

    def fields(self, quality: Quality, spikes_removed: int) -> dict[str, Any]:
        """Return the fields a prediction is published with; count the spectrum in the status."""
        self.counters["spikes_removed"] += int(spikes_removed)
        if not quality.ok:
            self.counters["quality_not_ok"] += 1
            for r in quality.reasons:
                self.reasons[r] = self.reasons.get(r, 0) + 1
        return {"spikes_removed": int(spikes_removed), "quality": quality.to_dict(), "labels_trusted": quality.ok,
                "calibration": self._cal_fields}

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """A copy of the status counters (to :meth:`restore_counts` when a batch is classified again)."""
        return dict(self.counters), dict(self.reasons)

    def restore_counts(self, counts: tuple[dict[str, int], dict[str, int]]) -> None:
        """Set the status counters back to what :meth:`counts` returned."""
        self.counters, self.reasons = dict(counts[0]), dict(counts[1])

    def status(self) -> dict[str, Any]:
        """Status-message fields: counters, not-ok reasons and the calibration in use."""
        return {"hygiene": {**self.counters, "quality_reasons": dict(self.reasons), "calibration": self._cal_fields}}
