"""What moves the silicon check of a wavenumber calibration: a measured study on the CHARISMA standards (issue 15).

For each CHARISMA lab instrument + optical setup with polystyrene and silicon spectra (10 setups), this module
measures the levers of the calibration clause and holds the default rule the evaluation rows use:

1. **standards**: polystyrene only (ASTM E1840 lines), neon only (NIST Ne I lines placed with the laser
   wavelength of the file's header, else the nominal one of ``labels.csv``), and neon + polystyrene with the
   laser wavenumber fitted (:func:`edge.calibration.fit_calibration`, ``fit_laser``): a neon lamp calibrates
   the *absolute* wavelength axis, the Raman shift also needs the laser line, which only a Raman standard
   pins;
2. **the check's reader**: the silicon line before any correction by Lorentzian, Gaussian or pseudo-Voigt
   profiles, windows of ±8/15/25 cm⁻¹, a linear or constant baseline; the spread of the silicon files of one
   setup and their fit standard errors;
3. **degree**: offset, linear, quadratic, each with its leave-one-line-out residual on the standard's own
   lines;
4. **sessions**: acquisition dates (BWTek headers), header laser wavelengths, whether the standard and the
   silicon share one axis, and the stitched detector windows of the Horiba spectra.

The default rule (:func:`default_calibration`) never looks at silicon: among polystyrene alone and neon +
polystyrene (laser fitted), degrees 0-2, it takes the candidate whose held-out *polystyrene* lines are best
predicted (leave-one-line-out RMS; ties: fewer standards, lower degree).

Run: ``python -m trainer.calibration_study [--data-dir D] [--json PATH]`` (prints Markdown tables).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import median_filter

from edge.calibration import (
    SILICON_CM1,
    Calibration,
    fit_calibration,
    fit_line_detail,
    leave_one_line_out_rms,
    measure_lines,
)
from edge.errors import CalibrationError
from edge.io import read_file

__all__ = ["Setup", "StandardSpectrum", "charisma_setups", "default_calibration", "read_standard",
           "silicon_reading", "study"]

SILICON_HALF_WINDOW_CM1 = 15.0
"""Half window of the check's reader (Lorentzian + linear baseline), cm⁻¹."""


@dataclass(frozen=True)
class StandardSpectrum:
    """One standard's spectrum as read from its file.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    axis_cm1 : numpy.ndarray, shape (M,), float64
        The file's Raman-shift axis, cm⁻¹.
    intensity : numpy.ndarray, shape (M,), float64
        Intensities.
    laser_nm : float
        Laser wavelength the file's axis was computed with (header), else the nominal one of ``labels.csv``.
    laser_from_header : bool
        Whether ``laser_nm`` comes from the file's header.
    acquired : str
        Acquisition date and time from the header ("" when the file gives none).
    """

    path: Path
    axis_cm1: np.ndarray
    intensity: np.ndarray
    laser_nm: float
    laser_from_header: bool
    acquired: str


@dataclass
class Setup:
    """A CHARISMA lab instrument + optical setup and its standards' files (paths).

    ``neon`` holds the lamp spectra of the same instrument and setup: the ICV neon files name the objective
    ``x50``/``x100``/``x20`` where the Raman files say ``Z050``/``Z100``/``Z020`` (the data README: "appear to
    name the same objectives"); the TOP neon file carries ``Z010`` in its name only.
    """

    lab_instrument: str
    setup: str
    laser_nm: float
    polystyrene: list[Path] = field(default_factory=list)
    silicon: list[Path] = field(default_factory=list)
    neon: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        """``<lab_instrument>/<setup or ->``."""
        return f"{self.lab_instrument}/{self.setup or '-'}"


def _neon_setup(row: dict[str, str]) -> str:
    setup = row["setup"]
    if m := re.fullmatch(r"x(\d+)", setup):
        return f"Z{int(m.group(1)):03d}"
    if not setup and (m := re.search(r"_(Z\d{3})", Path(row["file"]).stem)):
        return m.group(1)
    return setup


def charisma_setups(charisma_dir: str | Path) -> list[Setup]:
    """Group the CHARISMA files by lab instrument + setup (only setups with polystyrene and silicon).

    Parameters
    ----------
    charisma_dir : str or pathlib.Path
        The ``cross_instrument/charisma`` folder (with ``labels.csv``).

    Returns
    -------
    list of Setup
        Sorted by name.

    Raises
    ------
    CalibrationError
        If ``labels.csv`` is missing or lacks a column.
    """
    root = Path(charisma_dir)
    try:
        with open(root / "labels.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        groups: dict[tuple[str, str], Setup] = {}
        for r in rows:
            setup = _neon_setup(r) if r["label"] == "NeonLamp" else r["setup"]
            s = groups.setdefault((r["lab_instrument"], setup), Setup(r["lab_instrument"], setup, float(r["laser_nm"])))
            kind = {"Polystyrene": s.polystyrene, "Silicon": s.silicon, "NeonLamp": s.neon}.get(r["label"])
            if kind is not None:
                kind.append(root / r["file"])
    except (OSError, KeyError, ValueError) as exc:
        raise CalibrationError(f"cannot read the CHARISMA labels in {root}: {exc}") from exc
    return sorted((s for s in groups.values() if s.polystyrene and s.silicon), key=lambda s: s.name)


def read_standard(path: Path, nominal_laser_nm: float) -> StandardSpectrum:
    """Read a standard's file with :func:`edge.io.read_file` (axis, intensities, header laser and date).

    Parameters
    ----------
    path : pathlib.Path
        The file.
    nominal_laser_nm : float
        Laser wavelength to assume when the header gives none, nm.

    Returns
    -------
    StandardSpectrum
    """
    s = read_file(path)
    header_laser = s.metadata.get("laser_wavelength_nm")
    return StandardSpectrum(path, np.asarray(s.raman_shift_cm1, np.float64), np.asarray(s.intensities[0], np.float64),
                            float(header_laser) if header_laser else float(nominal_laser_nm), bool(header_laser),
                            str(s.metadata.get("acquisition_time", "")))


def _on_laser(spec: StandardSpectrum, laser_nm: float) -> np.ndarray:
    """The spectrum's axis re-expressed with another laser wavelength (same pixels, same wavelengths), cm⁻¹."""
    return spec.axis_cm1 + (1e7 / laser_nm - 1e7 / spec.laser_nm)


def silicon_reading(spectra: Sequence[StandardSpectrum], *, silicon_cm1: float = SILICON_CM1,
                    calibration: Calibration | None = None, profile: str = "lorentzian",
                    half_window_cm1: float = SILICON_HALF_WINDOW_CM1, baseline: str = "linear"
                    ) -> dict[str, Any]:
    """Read the silicon line of a setup's silicon spectra (the check), optionally on a corrected axis.

    Parameters
    ----------
    spectra : sequence of StandardSpectrum
        The setup's silicon spectra.
    silicon_cm1 : float
        Reference line, cm⁻¹ (where the fit starts).
    calibration : Calibration, optional
        Correction applied to each axis first.
    profile, half_window_cm1, baseline
        The reader (:func:`edge.calibration.fit_line_detail`); the window is widened to 4 points either side.

    Returns
    -------
    dict
        ``median_cm1`` (None when no spectrum could be read), ``per_file_cm1``, ``stderr_cm1`` (median fit
        standard error of the centres), ``spread_cm1`` (max - min over the files), ``fitted`` (count).
    """
    centres, errs = [], []
    for s in spectra:
        axis = s.axis_cm1 if calibration is None else calibration.apply(s.axis_cm1)
        half = max(half_window_cm1, 4.0 * float(np.median(np.diff(axis))))
        try:
            f = fit_line_detail(axis, s.intensity, silicon_cm1, half_window_cm1=half, profile=profile,
                                baseline=baseline)
        except CalibrationError:
            continue
        centres.append(f.centre_cm1)
        errs.append(f.centre_stderr_cm1)
    if not centres:
        return {"median_cm1": None, "per_file_cm1": [], "stderr_cm1": None, "spread_cm1": None, "fitted": 0}
    return {"median_cm1": float(np.median(centres)), "per_file_cm1": [round(c, 3) for c in centres],
            "stderr_cm1": float(np.nanmedian(errs)), "spread_cm1": float(np.ptp(centres)), "fitted": len(centres)}


def _fit(measurements: list[tuple[str, np.ndarray, np.ndarray]], setup: Setup, laser_nm: float, degree: int | str,
         fit_laser: bool, silicon_cm1: float, sources: list[str]) -> Calibration:
    return fit_calibration(measurements, instrument_id=setup.name, laser_nm=laser_nm, degree=degree,
                           fit_laser=fit_laser, silicon_cm1=silicon_cm1, sources=sources,
                           calibration_id=f"{setup.name}-study")


def _predicts(cal: Calibration, lines: Sequence[Any]) -> float:
    """RMS error of a calibration on lines it was not fitted to (reference - corrected measured), cm⁻¹."""
    m = np.array([ln.measured_cm1 for ln in lines])
    r = np.array([ln.reference_cm1 for ln in lines])
    return float(np.sqrt(np.mean((r - cal.apply(m)) ** 2))) if m.size else float("inf")


def default_calibration(setup: Setup, *, silicon_cm1: float = SILICON_CM1) -> tuple[Calibration, dict[str, Any]]:
    """The default rule: the standard(s) and degree whose held-out polystyrene lines are best predicted.

    Candidates, each at degree 0, 1, 2: polystyrene alone; for each neon spectrum of the setup, neon alone
    (lines placed with the polystyrene file's laser wavelength: the neon axis is re-expressed with it when
    the headers differ) and neon + polystyrene with the laser wavenumber fitted. Score: the RMS error on
    polystyrene lines the candidate was not fitted to — leave-one-line-out for the candidates that use
    polystyrene (:func:`edge.calibration.leave_one_line_out_rms` with ``scored=("polystyrene",)``), all
    polystyrene lines for neon alone. Ties go to fewer standards, then the lower degree. Silicon is never
    looked at.

    Parameters
    ----------
    setup : Setup
        The instrument + setup (its first polystyrene file is the standard).
    silicon_cm1 : float
        Silicon's reference line, cm⁻¹ (recorded only).

    Returns
    -------
    calibration : Calibration
        The chosen fit.
    info : dict
        ``standard`` ("polystyrene", "neon" or "neon+polystyrene"), ``degree``, ``cv_rms_cm1`` (the score),
        ``candidates`` (name → score), ``neon_file`` and (laser fitted) ``laser_nm_fitted`` when neon is used.

    Raises
    ------
    CalibrationError
        If no candidate can be fitted.
    """
    ps = read_standard(setup.polystyrene[0], setup.laser_nm)
    ps_lines = measure_lines(ps.axis_cm1, ps.intensity, "polystyrene")
    ps_meas = [("polystyrene", ps.axis_cm1, ps.intensity)]
    cands: list[tuple[float, int, int, str, StandardSpectrum | None]] = []
    scores: dict[str, float] = {}
    for d in (0, 1, 2):
        cv = leave_one_line_out_rms(ps_lines, d)
        cands.append((cv, 1, d, "polystyrene", None))
        scores[f"polystyrene/{d}"] = round(cv, 3)
    for path in setup.neon:
        lamp = read_standard(path, setup.laser_nm)
        axis = _on_laser(lamp, ps.laser_nm)
        try:
            ne_lines = measure_lines(axis, lamp.intensity, "neon", laser_nm=ps.laser_nm)
        except CalibrationError:
            continue
        for d in (0, 1, 2):
            try:
                alone = _fit([("neon", axis, lamp.intensity)], setup, ps.laser_nm, d, False, silicon_cm1, [path.name])
                cv = _predicts(alone, ps_lines)
            except CalibrationError:
                cv = float("inf")
            cands.append((cv, 1, d, "neon", lamp))
            scores[f"neon/{d}/{path.name}"] = round(cv, 3)
            cv = leave_one_line_out_rms(ps_lines + ne_lines, d, fit_laser=True, scored=("polystyrene",))
            cands.append((cv, 2, d, "neon+polystyrene", lamp))
            scores[f"neon+polystyrene/{d}/{path.name}"] = round(cv, 3)
    finite = [c for c in cands if np.isfinite(c[0])]
    if not finite:
        raise CalibrationError(f"{setup.name}: too few polystyrene lines to score any candidate")
    cv, _, degree, standard, chosen = min(finite, key=lambda c: (c[0], c[1], c[2]))
    ne = chosen
    if ne is None:
        cal = _fit(ps_meas, setup, ps.laser_nm, degree, False, silicon_cm1, [ps.path.name])
    elif standard == "neon":
        cal = _fit([("neon", _on_laser(ne, ps.laser_nm), ne.intensity)], setup, ps.laser_nm, degree, False,
                   silicon_cm1, [ne.path.name])
    else:
        cal = _fit([("neon", _on_laser(ne, ps.laser_nm), ne.intensity), *ps_meas], setup, ps.laser_nm, degree,
                   True, silicon_cm1, [ne.path.name, ps.path.name])
    info: dict[str, Any] = {"standard": standard, "degree": degree, "cv_rms_cm1": round(cv, 3), "candidates": scores,
                            "rule": "min RMS on held-out polystyrene lines over {polystyrene, neon, "
                                    "neon+polystyrene} x degree 0-2"}
    if ne is not None:
        info["neon_file"] = ne.path.name
        if "laser_nm_fitted" in cal.fit:
            info["laser_nm_fitted"] = cal.fit["laser_nm_fitted"]
    return cal, info


def _after(cal: Calibration | None, silicon: Sequence[StandardSpectrum], silicon_cm1: float) -> float | None:
    if cal is None:
        return None
    r = silicon_reading(silicon, silicon_cm1=silicon_cm1, calibration=cal)["median_cm1"]
    return None if r is None else round(r - silicon_cm1, 2)


def _try(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except CalibrationError:
        return None


def study(charisma_dir: str | Path, *, silicon_cm1: float = SILICON_CM1) -> dict[str, dict[str, Any]]:
    """Measure every lever per setup (see the module docstring).

    Parameters
    ----------
    charisma_dir : str or pathlib.Path
        The ``cross_instrument/charisma`` folder.
    silicon_cm1 : float
        Silicon's reference line, cm⁻¹.

    Returns
    -------
    dict of str to dict
        Per setup name: ``sessions``, ``reader`` (silicon before by reader), ``methods`` (per method: lines,
        cv_rms_cm1, rms_cm1, silicon error after, cm⁻¹), ``consistency`` (correction the silicon needs vs what
        the standards give near it), ``default`` (the rule's choice and its silicon error before/after).
    """
    out: dict[str, dict[str, Any]] = {}
    for setup in charisma_setups(charisma_dir):
        ps = read_standard(setup.polystyrene[0], setup.laser_nm)
        si = [read_standard(p, setup.laser_nm) for p in setup.silicon]
        neons = [read_standard(p, setup.laser_nm) for p in setup.neon]
        before = silicon_reading(si, silicon_cm1=silicon_cm1)
        b = before["median_cm1"]
        row: dict[str, Any] = {"silicon_before_error_cm1": None if b is None else round(b - silicon_cm1, 2)}
        # 4. sessions
        step = np.diff(ps.axis_cm1)  # a stitched (multi-window) spectrum has a short step at each seam
        windows = int(np.sum(step < 0.6 * median_filter(step, size=15, mode="nearest")))
        row["sessions"] = {
            "polystyrene": ps.acquired, "silicon": sorted({s.acquired for s in si if s.acquired}),
            "neon": sorted({n.acquired for n in neons if n.acquired}),
            "laser_nm": {"polystyrene": ps.laser_nm, "silicon": sorted({s.laser_nm for s in si}),
                         "neon": sorted({n.laser_nm for n in neons}), "from_header": ps.laser_from_header},
            "silicon_on_standard_axis": sum(bool(s.axis_cm1.shape == ps.axis_cm1.shape
                                                 and np.allclose(s.axis_cm1, ps.axis_cm1, atol=0.01)) for s in si),
            "stitched_windows": windows + 1}
        # 2. the check's reader, before any correction
        reader: dict[str, Any] = {}
        for prof, half, base in (("lorentzian", 15.0, "linear"), ("lorentzian", 8.0, "linear"),
                                 ("lorentzian", 25.0, "linear"), ("lorentzian", 15.0, "constant"),
                                 ("gaussian", 15.0, "linear"), ("pseudo_voigt", 15.0, "linear"),
                                 ("pseudo_voigt", 25.0, "linear")):
            r = silicon_reading(si, silicon_cm1=silicon_cm1, profile=prof, half_window_cm1=half, baseline=base)
            reader[f"{prof}/{half:g}/{base}"] = None if r["median_cm1"] is None else round(r["median_cm1"] - silicon_cm1, 2)
        reader.update(spread_cm1=round(before["spread_cm1"] or 0.0, 2), stderr_cm1=round(before["stderr_cm1"] or 0.0, 3),
                      per_file_error_cm1=[round(c - silicon_cm1, 2) for c in before["per_file_cm1"]],
                      per_file_sample=[s.path.stem.split("_")[0][:3] for s in si][:len(before["per_file_cm1"])])
        row["reader"] = reader
        # 1 + 3. standards and degree
        methods: dict[str, Any] = {}
        ps_meas = [("polystyrene", ps.axis_cm1, ps.intensity)]
        ps_lines = _try(measure_lines, ps.axis_cm1, ps.intensity, "polystyrene")
        for d in (0, 1, 2):
            cal = _try(_fit, ps_meas, setup, ps.laser_nm, d, False, silicon_cm1, [ps.path.name])
            methods[f"polystyrene/{d}"] = {
                "lines": None if cal is None else len(cal.lines), "rms_cm1": None if cal is None else round(cal.rms_cm1, 2),
                "cv_rms_cm1": None if ps_lines is None else round(leave_one_line_out_rms(ps_lines, d), 2),
                "silicon_after_error_cm1": _after(cal, si, silicon_cm1)}
        for ne in neons:
            for d in (0, 1, 2):
                on = _on_laser(ne, ps.laser_nm)  # the silicon and polystyrene files share this laser value
                alone = _try(_fit, [("neon", on, ne.intensity)], setup, ps.laser_nm, d, False, silicon_cm1,
                             [ne.path.name])
                ne_lines = _try(measure_lines, on, ne.intensity, "neon", laser_nm=ps.laser_nm)
                methods[f"neon/{d}/{ne.path.name}"] = {
                    "lines": None if alone is None else len(alone.lines),
                    "rms_cm1": None if alone is None else round(alone.rms_cm1, 2),
                    "cv_rms_cm1": None if ne_lines is None else round(leave_one_line_out_rms(ne_lines, d), 2),
                    "polystyrene_rms_cm1": None if (alone is None or not ps_lines) else round(
                        _predicts(alone, ps_lines), 2),
                    "laser_nm": ps.laser_nm, "silicon_after_error_cm1": _after(alone, si, silicon_cm1)}
                both = _try(_fit, [("neon", on, ne.intensity), *ps_meas], setup, ps.laser_nm, d, True, silicon_cm1,
                            [ne.path.name, ps.path.name])
                nl = ne_lines
                methods[f"neon+polystyrene/{d}/{ne.path.name}"] = {
                    "lines": None if both is None else len(both.lines),
                    "rms_cm1": None if both is None else round(both.rms_cm1, 2),
                    "cv_rms_cm1": None if (nl is None or ps_lines is None) else round(leave_one_line_out_rms(
                        ps_lines + nl, d, fit_laser=True, scored=("polystyrene",)), 2),
                    "laser_nm_fitted": None if both is None else both.fit.get("laser_nm_fitted"),
                    "silicon_after_error_cm1": _after(both, si, silicon_cm1)}
        row["methods"] = methods
        # consistency: the correction silicon needs at its line vs the polystyrene lines nearest to it
        if b is not None and ps_lines:
            near = sorted(ps_lines, key=lambda ln: abs(ln.reference_cm1 - silicon_cm1))[:2]
            row["consistency"] = {
                "silicon_needs_cm1": round(silicon_cm1 - b, 2),
                "polystyrene_lines_cm1": {f"{ln.reference_cm1:g}": round(ln.reference_cm1 - ln.measured_cm1, 2)
                                          for ln in near}}
        try:
            cal, info = default_calibration(setup, silicon_cm1=silicon_cm1)
            info["silicon_after_error_cm1"] = _after(cal, si, silicon_cm1)
            info["lines"] = len(cal.lines)
            info["rms_cm1"] = round(cal.rms_cm1, 3)
            row["default"] = info
        except CalibrationError as exc:
            row["default"] = {"error": str(exc)}
        out[setup.name] = row
    return out


def _f(v: Any) -> str:
    return "–" if v is None else (f"{v:+.2f}" if isinstance(v, float) else str(v))


def markdown(result: dict[str, dict[str, Any]]) -> str:
    """Format :func:`study`'s result as the Markdown tables of docs/hygiene.md."""
    lines = ["| setup | PS date | Si dates | neon date | laser nm PS / Si / neon | Si on PS axis | windows |",
             "|---|---|---|---|---|---|---|"]
    for name, r in result.items():
        s = r["sessions"]
        las = s["laser_nm"]
        lines.append(f"| {name} | {s['polystyrene'][:10] or '–'} | "
                     f"{', '.join(sorted({d[:10] for d in s['silicon']})) or '–'} | "
                     f"{', '.join(sorted({d[:10] for d in s['neon']})) or '–'} | "
                     f"{las['polystyrene']:g}{'' if las['from_header'] else ' (nominal)'} / "
                     f"{', '.join(f'{v:g}' for v in las['silicon'])} / {', '.join(f'{v:g}' for v in las['neon']) or '–'} "
                     f"| {s['silicon_on_standard_axis']}/{len(r['reader']['per_file_error_cm1'])} | "
                     f"{s['stitched_windows']} |")
    keys = list(next(iter(result.values()))["reader"])[:7]
    lines += ["", "| setup | " + " | ".join(k.replace("pseudo_voigt", "pV").replace("lorentzian", "Lor")
                                              .replace("gaussian", "Gau").replace("/linear", "").replace("/constant", " const")
                                              for k in keys) + " | spread | σ fit | per file |",
              "|---|" + "---|" * (len(keys) + 3)]
    for name, r in result.items():
        rd = r["reader"]
        lines.append(f"| {name} | " + " | ".join(_f(rd[k]) for k in keys)
                     + f" | {rd['spread_cm1']:.2f} | {rd['stderr_cm1']:.2f} | "
                     + " ".join(f"{c} {v:+.2f}" for c, v in zip(rd["per_file_sample"], rd["per_file_error_cm1"],
                                                                   strict=True)) + " |")
    lines += ["", "| setup | before | PS d0 | PS d1 | PS d2 | neon only | neon+PS d0 | neon+PS d1 | neon+PS d2 "
              "| fitted laser nm | default (rule) | after |", "|---|" + "---|" * 11]
    for name, r in result.items():
        m = r["methods"]

        def cell(k: str, m: dict[str, Any] = m) -> str:
            v = m.get(k)
            return "–" if not v else f"{_f(v['silicon_after_error_cm1'])} (cv {_f(v['cv_rms_cm1']).lstrip('+')})"

        neon_files = sorted({k.split("/", 2)[2] for k in m if k.startswith("neon/")})
        nf = r["default"].get("neon_file") or (neon_files[0] if neon_files else None)
        best_neon = "–"
        if neon_files:
            cand = [(m[f"neon/{d}/{f}"]["polystyrene_rms_cm1"] or 9e9, d, f) for d in (0, 1, 2) for f in neon_files]
            cv, d, f = min(cand)
            best_neon = (f"{_f(m[f'neon/{d}/{f}']['silicon_after_error_cm1'])} (d{d}, own cv "
                         f"{m[f'neon/{d}/{f}']['cv_rms_cm1']:.2f}, PS {cv:.2f})")
        both = [cell(f"neon+polystyrene/{d}/{nf}") if nf else "–" for d in (0, 1, 2)]
        laser = m.get(f"neon+polystyrene/1/{nf}", {}).get("laser_nm_fitted") if nf else None
        dflt = r["default"]
        lines.append(f"| {name} | {_f(r['silicon_before_error_cm1'])} | " + " | ".join(cell(f"polystyrene/{d}")
                                                                                       for d in (0, 1, 2))
                     + f" | {best_neon} | " + " | ".join(both) + f" | {laser if laser else '–'} | "
                     + f"{dflt.get('standard', '?')} d{dflt.get('degree', '?')} (cv {dflt.get('cv_rms_cm1', '?')}) | "
                     + f"{_f(dflt.get('silicon_after_error_cm1'))} |")
    lines += ["", "| setup | silicon needs (cm⁻¹) | polystyrene gives at its nearest lines (ref − measured) |",
              "|---|---|---|"]
    for name, r in result.items():
        c = r.get("consistency")
        if c:
            lines.append(f"| {name} | {c['silicon_needs_cm1']:+.2f} | "
                         + ", ".join(f"{k}: {v:+.2f}" for k, v in c["polystyrene_lines_cm1"].items()) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trainer.calibration_study``: print the tables (and write the JSON)."""
    from edge.cli_common import add_data_args, run_cli
    from edge.data import data_dir

    def impl(args_: Sequence[str] | None) -> int:
        p = argparse.ArgumentParser(prog="python -m trainer.calibration_study", description=__doc__.split("\n\n")[0])
        p.add_argument("--json", default=None, help="write the per-setup measurements here")
        p.add_argument("--silicon-cm1", type=float, default=SILICON_CM1)
        add_data_args(p)
        a = p.parse_args(args_)
        result = study(data_dir(a.data_dir) / "cross_instrument" / "charisma", silicon_cm1=a.silicon_cm1)
        if a.json:
            Path(a.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(markdown(result))
        return 0

    return run_cli(impl, argv, "calibration_study")


if __name__ == "__main__":
    sys.exit(main())

