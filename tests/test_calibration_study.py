"""The calibration study's grouping and default rule on the CHARISMA standards (trainer.calibration_study)."""

import dataclasses

import pytest

from edge.calibration import fit_calibration
from trainer.calibration_study import charisma_setups, default_calibration, read_standard, silicon_reading

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def setups(data_root):
    return {s.name: s for s in charisma_setups(data_root / "cross_instrument" / "charisma")}


def test_setups_and_their_neon_lamps(setups):
    assert len(setups) == 10
    assert [len(setups[n].neon) for n in ("ICV_BW532/Z050", "ICV_BW785/Z020", "ICV_BW785/Z050", "TOP_Ho633/Z010")] \
        == [2, 1, 0, 1]  # x50 → Z050, x20 → Z020; the TOP lamp names Z010 in its file name only
    assert all(s.polystyrene and s.silicon for s in setups.values())


def test_the_rule_never_reads_silicon(setups, tmp_path):
    s = setups["FMNT-M_Ho785/OP03"]
    blind = dataclasses.replace(s, silicon=[tmp_path / "no_such_silicon.txt"])
    cal, info = default_calibration(blind)
    cal2, info2 = default_calibration(s)
    assert info == info2 and cal.coefficients_cm1 == cal2.coefficients_cm1
    assert info["standard"] in ("polystyrene", "neon", "neon+polystyrene") and info["cv_rms_cm1"] < 0.5


def test_fitted_laser_agrees_with_the_instruments_record(setups):
    """Neon + polystyrene fit the laser: BWTek headers record it; both Horiba 785 setups share one laser."""
    for name in ("FMNT-M_BW532/-", "ICV_BW532/Z050", "ICV_BW532/Z100"):
        s = setups[name]
        ps = read_standard(s.polystyrene[0], s.laser_nm)
        lamp = read_standard(s.neon[0], s.laser_nm)  # ICV: lamp header 532.14 nm, polystyrene 532.07 nm
        cal = fit_calibration([("neon", lamp.axis_cm1 + 1e7 / ps.laser_nm - 1e7 / lamp.laser_nm, lamp.intensity),
                               ("polystyrene", ps.axis_cm1, ps.intensity)], instrument_id=name,
                              laser_nm=ps.laser_nm, degree=1)
        assert ps.laser_from_header and cal.fit["laser_nm_fitted"] == pytest.approx(ps.laser_nm, abs=0.05)
    lasers = []
    for name in ("FMNT-M_Ho785/OP01", "FMNT-M_Ho785/OP03"):
        cal, info = default_calibration(setups[name])
        assert info["standard"] == "neon+polystyrene"
        lasers.append(info["laser_nm_fitted"])
    assert lasers[0] == pytest.approx(lasers[1], abs=0.02) and abs(lasers[0] - 785.0) > 0.2  # not the nominal


def test_calibration_moves_the_check(setups):
    s = setups["FMNT-M_Ho785/OP03"]  # silicon reads +5.1 cm-1 high on this setup's axis
    silicon = [read_standard(p, s.laser_nm) for p in s.silicon]
    cal, _ = default_calibration(s)
    before = silicon_reading(silicon)["median_cm1"]
    after = silicon_reading(silicon, calibration=cal)["median_cm1"]
    assert before - 520.7 > 4.5 and abs(after - 520.7) < 0.5
