"""Wavenumber calibration (edge.calibration, edge-calibrate): synthetic distortions recovered, file checks."""

import importlib.util
import json

import numpy as np
import pytest

from edge.calibrate_cli import main as calibrate_main
from edge.calibration import (
    POLYSTYRENE_ASTM_E1840_CM1,
    Calibration,
    fit_calibration,
    fit_line,
    fit_line_detail,
    leave_one_line_out_rms,
    load_calibration,
    measure_lines,
    reference_lines,
)
from edge.errors import CalibrationError
from edge.io import read_spectrum


def _spectrum(true_axis, lines, rng, fwhm=6.0, noise=5.0, profile="lorentzian"):
    """Lines (cm-1, true positions) on a sloped background, sampled at the instrument's pixels."""
    y = 500.0 + 0.05 * (true_axis - true_axis[0])
    amps = rng.uniform(2000, 20000, len(lines))
    for a, c in zip(amps, lines, strict=True):
        if profile == "lorentzian":
            y = y + a * (fwhm / 2) ** 2 / ((true_axis - c) ** 2 + (fwhm / 2) ** 2)
        else:
            y = y + a * np.exp(-4 * np.log(2) * ((true_axis - c) / fwhm) ** 2)
    return y + rng.normal(0, noise, true_axis.size)


def _distortion(x):
    return 3.0 + 2.0e-3 * (x - 1000.0) - 1.5e-6 * (x - 1000.0) ** 2  # what the instrument reads minus the truth


@pytest.mark.parametrize("standard", ["polystyrene", "neon"])
def test_recovers_a_known_quadratic_axis_distortion(standard, rng):
    true_axis = np.linspace(150.0, 3200.0, 2400)
    measured_axis = true_axis + _distortion(true_axis)  # each pixel is labelled with a wrong Raman shift
    lines = reference_lines(standard, laser_nm=785.0)
    lines = lines[(lines > 200) & (lines < 3150)]
    y = _spectrum(true_axis, lines, rng, fwhm=6.0 if standard == "polystyrene" else 3.0,
                  profile="lorentzian" if standard == "polystyrene" else "gaussian")
    cal = fit_calibration([(standard, measured_axis, y)], instrument_id="synthetic", laser_nm=785.0, degree=2)
    assert len(cal.lines) >= 6
    assert cal.rms_cm1 < 0.2
    lo, hi = cal.valid_range_cm1
    inside = (measured_axis >= lo) & (measured_axis <= hi)
    err = cal.apply(measured_axis)[inside] - true_axis[inside]
    assert np.max(np.abs(err)) < 0.2
    before = measured_axis[inside] - true_axis[inside]
    assert np.max(np.abs(before)) > 2.0  # the distortion was real


def test_neon_plus_polystyrene_fits_the_laser_and_recovers_the_axis(rng):
    """Neon on an axis computed with a wrong laser wavelength + polystyrene: the laser is fitted, axis < 0.2."""
    true_axis = np.linspace(150.0, 3200.0, 2400)
    measured_axis = true_axis + _distortion(true_axis)
    true_laser, nominal = 784.70, 785.0  # 0.3 nm off: neon lines sit 4.9 cm-1 away from where 785.0 puts them
    neon = reference_lines("neon", laser_nm=true_laser)
    neon = neon[(neon > 200) & (neon < 3150)]
    ps = np.array(POLYSTYRENE_ASTM_E1840_CM1)
    y_neon = _spectrum(true_axis, neon, rng, fwhm=3.0, profile="gaussian")
    y_ps = _spectrum(true_axis, ps, rng, fwhm=6.0)
    both = [("neon", measured_axis, y_neon), ("polystyrene", measured_axis, y_ps)]
    cal = fit_calibration(both, instrument_id="synthetic", laser_nm=nominal, degree=2)
    assert cal.fit["laser_nm_fitted"] == pytest.approx(true_laser, abs=0.01)
    assert cal.fit["laser_offset_cm1"] == pytest.approx(1e7 / true_laser - 1e7 / nominal, abs=0.15)
    lo, hi = cal.valid_range_cm1
    inside = (measured_axis >= lo) & (measured_axis <= hi)
    assert np.max(np.abs(cal.apply(measured_axis)[inside] - true_axis[inside])) < 0.2
    assert cal.rms_cm1 < 0.2
    # the same data with the laser held at its nominal value cannot place the axis: the neon lines pull it off
    held = fit_calibration(both, instrument_id="synthetic", laser_nm=nominal, degree=2, fit_laser=False)
    assert np.max(np.abs(held.apply(measured_axis)[inside] - true_axis[inside])) > 1.0
    # neon alone cannot tell the laser line: asking for it is an error, not a silent fallback
    with pytest.raises(CalibrationError, match="Raman standard"):
        fit_calibration(both[:1], instrument_id="s", laser_nm=nominal, fit_laser=True)
    # the file records how the fit was made and reads back
    assert "fit" in cal.to_dict() and Calibration.from_dict(cal.to_dict()).fit == cal.fit


@pytest.mark.parametrize(("curvature", "expected"), [(0.0, 0), (-3.0e-6, 2)])
def test_degree_chosen_by_leave_one_line_out(curvature, expected, rng):
    """'cv' picks the lowest degree whose held-out line error is smallest: offset for a shift, 2 for a bend."""
    true_axis = np.linspace(150.0, 3200.0, 2400)
    measured_axis = true_axis + 2.0 + curvature * (true_axis - 1600.0) ** 2
    neon = reference_lines("neon", laser_nm=785.0)
    neon = neon[(neon > 200) & (neon < 3150)]
    y = _spectrum(true_axis, neon, rng, fwhm=3.0, profile="gaussian")
    cal = fit_calibration([("neon", measured_axis, y)], instrument_id="s", laser_nm=785.0, degree="cv")
    assert cal.degree == expected and cal.fit["degree_rule"] == "cv"
    cv = cal.fit["cv_rms_cm1"]
    assert cv[str(expected)] == min(cv.values())
    lines = measure_lines(measured_axis, y, "neon", laser_nm=785.0)
    assert leave_one_line_out_rms(lines, expected) == pytest.approx(cv[str(expected)], abs=1e-4)
    assert leave_one_line_out_rms(lines[:2], 1) == float("inf")  # no residual left to judge by


def test_silicon_offset_and_configurable_reference(rng):
    true_axis = np.linspace(100.0, 1000.0, 600)
    y = _spectrum(true_axis, [520.7], rng, fwhm=4.0)
    measured = true_axis + 2.4
    cal = fit_calibration([("silicon", measured, y)], instrument_id="si")
    assert cal.degree == 0
    assert cal.coefficients_cm1[0] == pytest.approx(-2.4, abs=0.1)
    cal2 = fit_calibration([("silicon", measured, y)], instrument_id="si", silicon_cm1=520.45)
    assert cal2.coefficients_cm1[0] == pytest.approx(-2.65, abs=0.1)


def test_fit_line_uses_a_profile_not_the_highest_sample(rng):
    x = np.arange(500.0, 540.0, 2.0)  # coarse pixels: the highest sample is 1 cm-1 off the centre
    y = 1000 * 4 / ((x - 521.0) ** 2 + 4) + 10
    centre, fwhm, _ = fit_line(x, y, 520.0, half_window_cm1=15.0)
    assert x[np.argmax(y)] != pytest.approx(521.0, abs=0.5)
    assert centre == pytest.approx(521.0, abs=0.01) and fwhm == pytest.approx(4.0, abs=0.05)
    with pytest.raises(CalibrationError):
        fit_line(x, np.full_like(x, 3.0), 520.0)


@pytest.mark.parametrize("baseline", ["linear", "constant"])
def test_pseudo_voigt_recovers_centre_and_shape(baseline, rng):
    x = np.arange(480.0, 560.0, 1.7)
    lor = 4 / ((x - 521.3) ** 2 + 4)
    gau = np.exp(-4 * np.log(2) * ((x - 521.3) / 4.0) ** 2)
    for eta in (0.0, 0.6, 1.0):
        y = 1000 * (eta * lor + (1 - eta) * gau) + 50 + (0.5 * (x - 520) if baseline == "linear" else 0.0)
        y = y + rng.normal(0, 2.0, x.size)
        f = fit_line_detail(x, y, 520.0, half_window_cm1=20.0, profile="pseudo_voigt", baseline=baseline)
        assert f.centre_cm1 == pytest.approx(521.3, abs=0.05) and f.eta == pytest.approx(eta, abs=0.1)
        assert 0 < f.centre_stderr_cm1 < 0.05 and f.fwhm_cm1 == pytest.approx(4.0, abs=0.1)
    with pytest.raises(CalibrationError, match="baseline"):
        fit_line_detail(x, y, 520.0, baseline="cubic")


def test_file_round_trip_and_refusals(tmp_path, rng):
    cal = Calibration("inst-1", 785.0, [0.5, 1e-4, -2e-8], (600.0, 1600.0), calibration_id="cal-1")
    path = tmp_path / "cal.json"
    sha = cal.save(path)
    back = load_calibration(path)
    assert back.sha256 == sha and back.calibration_id == "cal-1" and back.degree == 2
    x = np.linspace(100, 3000, 50)
    np.testing.assert_allclose(back.apply(x), cal.apply(x))
    # outside the fitted lines the correction continues linearly
    d = back.correction(np.array([500.0, 600.0, 3000.0, 1600.0]))
    slope_lo = 1e-4 + 2 * -2e-8 * 600.0
    assert d[0] == pytest.approx(d[1] - 100.0 * slope_lo)
    with pytest.raises(CalibrationError, match="cannot read"):
        load_calibration(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CalibrationError, match="not valid JSON"):
        load_calibration(tmp_path / "bad.json")
    good = json.loads(path.read_text())
    for change, message in [({"version": 99}, "version"), ({"format": "other"}, "not a raman-edge-calibration"),
                            ({"polynomial": {**good["polynomial"], "coefficients_cm1": [float("nan"), 1, 2]}},
                             "finite"),
                            ({"polynomial": {**good["polynomial"], "degree": 1}}, "degree")]:
        (tmp_path / "x.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(CalibrationError, match=message):
            load_calibration(tmp_path / "x.json")
    folding = Calibration("i", None, [0.0, -1.5], (0.0, 10.0), calibration_id="f")
    with pytest.raises(CalibrationError, match="folds"):
        folding.apply(np.linspace(0, 10, 11))


def test_needs_enough_lines(rng):
    x = np.linspace(150, 3200, 2000)
    y = _spectrum(x, [1001.4], rng)
    with pytest.raises(CalibrationError, match="too few"):
        fit_calibration([("polystyrene", x, y)], instrument_id="p", degree=2)
    with pytest.raises(CalibrationError, match="laser"):
        reference_lines("neon")
    assert len(POLYSTYRENE_ASTM_E1840_CM1) == 11


@pytest.mark.realdata
def test_charisma_polystyrene_moves_silicon_to_its_line(data_root):
    """TOP Horiba 633: polystyrene calibration brings that setup's silicon from ~518.8 to within 0.5 of 520.7."""
    root = data_root / "cross_instrument" / "charisma" / "TOP_Ho633"
    pst_axis, pst = read_spectrum(root / "Pol_HLR633_Z010_100_15sx5.txt")
    cal = fit_calibration([("polystyrene", pst_axis, pst)], instrument_id="TOP_Ho633/Z010")
    assert len(cal.lines) >= 5 and cal.rms_cm1 < 1.0
    before, after = [], []
    for name in ("S0B_HLR633_Z010_100_40sx5.txt", "S0N_HLR633_Z010_100_15sx5.txt", "Si_HLR633_Z010_100_40sx5.txt"):
        si_axis, si = read_spectrum(root / name)
        before.append(fit_line(si_axis, si, 520.7, half_window_cm1=15)[0])
        after.append(fit_line(cal.apply(si_axis), si, 520.7, half_window_cm1=15)[0])
    assert abs(np.median(before) - 520.7) > 1.0
    assert abs(np.median(after) - 520.7) < 0.5


@pytest.mark.realdata
def test_edge_calibrate_cli(data_root, tmp_path, capsys):
    root = data_root / "cross_instrument" / "charisma"
    out = tmp_path / "cal.json"
    png = tmp_path / "cal.png"
    plot = ["--plot", str(png)] if importlib.util.find_spec("matplotlib") else []
    rc = calibrate_main(["--instrument", "ICV_BW532-x50", "--laser-nm", "532",
                         "--neon", str(root / "ICV_BW532" / "Ne_532nm_x50_25ms.txt"), "--out", str(out), "-q", *plot])
    text = capsys.readouterr().out
    assert rc == 0 and "neon" in text and "RMS residual" in text
    if plot:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cal = load_calibration(out)
    assert cal.degree == 2 and len(cal.lines) >= 10 and cal.rms_cm1 < 0.5 and cal.laser_nm == 532.0
    rc = calibrate_main(["--instrument", "x", "--neon", str(root / "ICV_BW532" / "Ne_532nm_x50_25ms.txt"),
                         "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and err.strip().count("\n") == 0 and "error:" in err and "--laser-nm" in err


@pytest.mark.realdata
def test_edge_calibrate_cli_neon_plus_polystyrene(data_root, tmp_path, capsys):
    """Horiba 785 OP03: the laser is fitted from neon + polystyrene, the degree by cross-validation."""
    root = data_root / "cross_instrument" / "charisma" / "FMNT-M_Ho785"
    out = tmp_path / "cal.json"
    rc = calibrate_main(["--instrument", "HO785-OP03", "--laser-nm", "785", "--neon",
                         str(root / "NeonSNQ043_iR785_OP03.txt"), "--polystyrene",
                         str(root / "PST10_iR785_OP03_8000msx2.txt"), "--degree", "cv", "--out", str(out), "-q"])
    text = capsys.readouterr().out
    assert rc == 0 and "laser fitted" in text and "leave-one-line-out" in text
    cal = load_calibration(out)
    assert cal.fit["degree_rule"] == "cv" and 784.5 < cal.fit["laser_nm_fitted"] < 784.9  # not the nominal 785
    assert {ln["standard"] for ln in cal.lines} == {"neon", "polystyrene"}
    rc = calibrate_main(["--instrument", "x", "--laser-nm", "785", "--neon", str(root / "NeonSNQ043_iR785_OP03.txt"),
                         "--fit-laser", "--out", str(out)])
    assert rc == 1 and "Raman standard" in capsys.readouterr().err
    assert calibrate_main(["--instrument", "x", "--polystyrene", "p.txt", "--degree", "3", "--out", str(out)]) == 1
    assert "must be 0, 1, 2 or cv" in capsys.readouterr().err
