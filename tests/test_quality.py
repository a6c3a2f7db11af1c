"""The spectrum-quality gate (edge.quality): set from nominal spectra, fires on simulated faults."""

import dataclasses

import numpy as np
import pytest

from edge.data import load_spectra
from edge.errors import ConfigError
from edge.preprocess import RamanGrid
from edge.quality import QualityConfig, assess, nominal_thresholds, synthetic_faults

AXIS = RamanGrid().axis


@pytest.fixture(scope="module")
def train(soysal):
    return load_spectra(soysal / "raw_train_labeled_40pct.npz")


def _judge(rows, cfg):
    out = []
    for row in rows:
        nz = np.flatnonzero(row)  # the measured part (the RRUFF splits are zero-filled outside it)
        sl = slice(nz[0], nz[-1] + 1)
        out.append(assess(row[sl], AXIS[sl], cfg)[0])
    return out


@pytest.mark.realdata
def test_shipped_defaults_are_the_nominal_thresholds(train):
    cfg = nominal_thresholds(train.intensities)
    assert cfg.snr_min == pytest.approx(QualityConfig().snr_min, abs=1e-3)
    assert cfg.standard_fraction == pytest.approx(QualityConfig().standard_fraction, abs=1e-3)


@pytest.mark.realdata
def test_nominal_spectra_pass(train, soysal):
    cfg = QualityConfig(laser_nm=785.0)
    test = load_spectra(soysal / "raw_test.npz")
    assert sum(not q.ok for q in _judge(test.intensities, cfg)) <= 0.02 * len(test.labels)
    assert sum(not q.ok for q in _judge(train.intensities, cfg)) <= 0.01 * len(train.labels)


@pytest.mark.realdata
@pytest.mark.parametrize("laser_nm", [532.0, 785.0])
def test_synthetic_lamps_leds_and_clipping_are_flagged(train, laser_nm):
    faults = synthetic_faults(train.intensities[:60], AXIS, np.random.default_rng(3), laser_nm=laser_nm)
    wide = np.arange(100.0, 4000.0, 2.0)  # a lamp read over the detector's whole range (most neon lines at 532 nm
    lamps = synthetic_faults(np.zeros((60, wide.size)), wide, np.random.default_rng(4), laser_nm=laser_nm)["lamp"]
    cfg = QualityConfig(laser_nm=laser_nm)  # lie above 1 600 cm-1)
    lamp = [assess(row, wide, cfg)[0] for row in lamps]
    led = [assess(row, AXIS, cfg)[0] for row in faults["led"]]
    clipped = [assess(row, AXIS, cfg)[0] for row in faults["clipped"]]
    assert sum("not_raman" in q.reasons for q in lamp) >= 0.95 * len(lamp)
    assert sum("not_raman" in q.reasons for q in led) >= 0.9 * len(led)
    assert sum(("saturated" in q.reasons) or ("flat" in q.reasons) for q in clipped) == len(clipped)
    # without the laser wavelength there is no emission-line test, and a neon spectrum's sharp lines pass
    no_laser = [assess(row, wide, QualityConfig())[0] for row in lamps]
    assert sum("not_raman" in q.reasons for q in no_laser) < 0.5 * len(no_laser)


def test_empty_flat_low_snr_saturated_and_silicon(rng):
    x = np.arange(200.0, 600.0)
    assert assess(np.zeros(x.size), x)[0].reasons == ("empty",)
    assert assess(np.full(x.size, 7.0), x)[0].reasons == ("flat",)
    noise = rng.normal(100.0, 1.0, x.size)
    assert assess(noise, x)[0].reasons == ("low_snr",)
    band = 200.0 * np.exp(-0.5 * ((x - 300.0) / 5.0) ** 2) + 100 * np.exp(-0.5 * ((x - 450.0) / 8.0) ** 2)
    good = assess(noise + band, x)[0]
    assert good.ok and good.reasons == () and good.metrics["snr"] > 10
    clipped = np.minimum(noise + 3 * band, 400.0)
    assert "saturated" in assess(clipped, x)[0].reasons
    assert "saturated" in assess(noise + band, x, QualityConfig(saturation_counts=250.0))[0].reasons
    silicon = noise + 5000 * 2.0 / ((x - 520.7) ** 2 + 4.0)
    q = assess(silicon, x)[0]
    assert q.reasons == ("standard",) and q.metrics["silicon_fraction"] > 0.95


def test_batch_equals_single(rng):
    x = np.arange(200.0, 600.0)
    rows = rng.normal(100.0, 1.0, (4, x.size))
    rows[1] += 300.0 * np.exp(-0.5 * ((x - 400.0) / 6.0) ** 2)
    rows[2] += 4000.0 * np.exp(-0.5 * ((x - 400.0) / 200.0) ** 2)
    batch = assess(rows, x, QualityConfig(laser_nm=785.0))
    assert [q.reasons for q in batch] == [assess(r, x, QualityConfig(laser_nm=785.0))[0].reasons for r in rows]
    assert [q.ok for q in batch] == [False, True, False, False]


def test_config_validation_and_round_trip():
    cfg = QualityConfig(laser_nm=532.0, saturation_counts=65535.0)
    assert QualityConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown quality"):
        QualityConfig.from_dict({"snr_minimum": 3})
    with pytest.raises(ConfigError):
        QualityConfig(snr_min=-1.0)
    with pytest.raises(ConfigError):
        dataclasses.replace(cfg, saturation_run=1)
