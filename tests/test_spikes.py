"""Cosmic-ray spike removal (edge.spikes): real narrow lines kept, injected spikes removed, batch = single."""

import numpy as np
import pytest

from edge.data import load_spectra
from edge.errors import ConfigError, PreprocessError
from edge.io import read_spectrum
from edge.preprocess import PreprocessConfig, Preprocessor
from edge.spikes import SpikeConfig, remove_spikes

CHARISMA_LINES = [  # (file, line cm-1): silicon 520.7 and polystyrene 1001.4 on four spectrometers
    ("FMNT-M_BW532/Sil10_iR532_Probe_100_60000msx2.txt", 520.7),
    ("ICV_BW785/S0N02_iRPlus785_Z050_100_3200ms.txt", 520.7),
    ("TOP_Ho633/Si_HLR633_Z010_100_40sx5.txt", 520.7),
    ("FMNT-M_Ho785/Sil10_iR785_OP01_6000msx4.txt", 520.7),  # 3 cm-1 per pixel: the line is 2-3 points wide
    ("FMNT-M_BW532/PST10_iR532_Probe_100_3000msx7.txt", 1001.4),
    ("ICV_BW785/PST02_iRPlus785_Z050_100_3200ms.txt", 1001.4),
    ("TOP_Ho633/Pol_HLR633_Z010_100_15sx5.txt", 1001.4),
]


@pytest.fixture(scope="module")
def charisma(data_root):
    return data_root / "cross_instrument" / "charisma"


@pytest.mark.realdata
@pytest.mark.parametrize(("name", "line"), CHARISMA_LINES)
def test_keeps_silicon_and_polystyrene_lines(charisma, name, line):
    axis, intensity = read_spectrum(charisma / name)
    near = np.abs(axis - line) <= 15
    noise = np.median(np.abs(np.diff(intensity)))
    assert intensity[near].max() - np.median(intensity[near]) > 10 * noise  # the line is there
    out, n = remove_spikes(intensity)
    np.testing.assert_array_equal(out[near], intensity[near])
    assert int(n) == 0


@pytest.mark.realdata
def test_keeps_diamond_line(soysal):
    test = load_spectra(soysal / "raw_test.npz")
    diamond = test.intensities[test.labels == "Diamond"]
    assert len(diamond) >= 3
    near = np.abs(test.raman_shift_cm1 - 1332) <= 15
    assert np.all(diamond[:, near].max(axis=1) > 0.5)  # diamond's 1332 cm-1 line dominates
    out, n = remove_spikes(diamond)
    np.testing.assert_array_equal(out, diamond.astype(out.dtype))
    assert n.tolist() == [0] * len(diamond)


@pytest.mark.realdata
def test_training_and_test_spectra_are_left_unchanged(soysal):
    for split in ("raw_train_labeled_40pct.npz", "raw_test.npz"):
        x = load_spectra(soysal / split).intensities
        out, n = remove_spikes(x)
        assert int(n.sum()) == 0
        np.testing.assert_array_equal(out, x.astype(out.dtype))


@pytest.mark.realdata
def test_removes_injected_spikes(soysal):
    x = load_spectra(soysal / "raw_test.npz").intensities[:40].astype(np.float64)
    rng = np.random.default_rng(7)
    spiked = x.copy()
    injected = np.zeros(len(x), dtype=int)
    for i in range(len(x)):
        starts = rng.choice(np.arange(10, x.shape[1] - 10, 8), size=int(rng.integers(1, 4)), replace=False)
        for j in starts:  # 8 points apart: never adjacent
            w = int(rng.integers(1, 3))
            spiked[i, j:j + w] += rng.uniform(0.5, 5.0) * x[i].max()
        injected[i] = len(starts)
    before = spiked.copy()
    out, n = remove_spikes(spiked)
    np.testing.assert_array_equal(spiked, before)  # input unchanged
    assert n.sum() >= 0.97 * injected.sum() and np.all(n <= injected)  # a spike on a steep band flank may stay
    full = n == injected
    assert full.sum() >= 0.95 * len(x)
    assert np.max(np.abs(out[full] - x[full])) < 0.05 * np.max(x)


def test_batch_equals_single_and_dtype(rng):
    axis = np.arange(2000.0)
    y = 100 + 50 * np.exp(-0.5 * ((axis - 700) / 4) ** 2) + rng.normal(0, 1, (5, axis.size))
    y[:, 300] += 400
    y[2, 1200:1202] += 900
    batch, nb = remove_spikes(y.astype(np.float32))
    assert batch.dtype == np.float32
    for i in range(5):
        single, ns = remove_spikes(y[i].astype(np.float32))
        np.testing.assert_array_equal(batch[i], single)
        assert int(ns) == nb[i]
    assert nb.tolist() == [1, 1, 2, 1, 1]
    assert np.all(np.abs(batch[:, 300] - 100) < 6)


def test_short_and_bad_input():
    out, n = remove_spikes(np.array([1.0, 5.0, 1.0]))
    assert int(n) == 0 and out.tolist() == [1.0, 5.0, 1.0]
    with pytest.raises(PreprocessError):
        remove_spikes(np.array([1.0, np.nan, 2.0, 3.0, 4.0]))
    with pytest.raises(ConfigError):
        SpikeConfig(max_width=4)
    with pytest.raises(ConfigError):
        SpikeConfig.from_dict({"threshold": 5, "bogus": 1})


def test_preprocessing_records_the_spike_step():
    cfg = PreprocessConfig()
    assert cfg.spikes == SpikeConfig()
    d = cfg.to_dict()
    assert PreprocessConfig.from_dict(d) == cfg
    legacy = {k: v for k, v in d.items() if k != "spikes"}  # a manifest written before the step: on
    assert PreprocessConfig.from_dict(legacy).spikes == SpikeConfig()
    off = PreprocessConfig.from_dict({**d, "spikes": None})
    assert off.spikes is None
    y = np.abs(np.sin(np.arange(1392) / 30.0)) + 0.1
    y[600] += 20.0
    x_on, n_on, _ = Preprocessor(cfg).process(y)
    x_off, n_off, _ = Preprocessor(off).process(y)
    assert int(n_on) == 1 and int(n_off) == 0
    clean = np.abs(np.sin(np.arange(1392) / 30.0)) + 0.1
    np.testing.assert_allclose(x_on, clean / clean.max(), atol=2e-3)  # the spike repaired from its neighbours
    assert float(x_off[600]) == pytest.approx(1.0)
