"""Spectral resolution (issue #14): Gaussian broadening, the preprocessing's resolution floor and the resolution
augmentation, on real narrow-line spectra (CHARISMA calcite from a Horiba 633 nm instrument)."""

import csv

import numpy as np
import pytest

from edge.errors import ConfigError, PreprocessError
from edge.preprocess import PreprocessConfig, Preprocessor, RamanGrid, resample
from edge.resolution import broaden

GRID = RamanGrid()


def fwhm_cm1(y, axis, lo, hi):
    """FWHM of the band with its maximum in [lo, hi] cm⁻¹, above the window's 5th percentile, interpolated."""
    w = (axis > lo - 80) & (axis < hi + 80)
    base = np.percentile(y[w], 5)
    m = (axis >= lo) & (axis <= hi)
    j = np.flatnonzero(m)[np.argmax(y[m])]
    half = base + (y[j] - base) / 2
    left = j
    while y[left] > half:
        left -= 1
    right = j
    while y[right] > half:
        right += 1
    xl = np.interp(half, [y[left], y[left + 1]], [axis[left], axis[left + 1]])
    xr = np.interp(half, [y[right], y[right - 1]], [axis[right], axis[right - 1]])
    return xr - xl


@pytest.fixture(scope="module")
def sharp_calcite(data_root):
    """The TOP_Ho633 calcite spectra on the model grid: the narrowest lines of the development set."""
    from edge.io import read_spectrum

    root = data_root / "cross_instrument" / "charisma"
    files = [r["file"] for r in csv.DictReader(open(root / "labels.csv"))
             if r["label"] == "Calcite" and r["lab_instrument"] == "TOP_Ho633"]
    assert len(files) == 2
    return np.stack([resample(*read_spectrum(root / f)[::-1], GRID) for f in files])


def test_broadening_widens_a_real_line_as_widths_add_in_quadrature(sharp_calcite):
    y = sharp_calcite[0]
    f0 = fwhm_cm1(y, GRID.axis, 1070, 1100)
    assert 3.0 < f0 < 9.0  # the Horiba 633 nm instrument's calcite line (RRUFF's: 14-26 cm⁻¹)
    for w in (6.0, 12.0):
        f = fwhm_cm1(broaden(y, w, GRID.step_cm1), GRID.axis, 1070, 1100)
        assert f == pytest.approx(np.hypot(f0, w), rel=0.12), (w, f0, f)
    # the band's position and the area under the spectrum stay
    b = broaden(y, 12.0)
    band = (GRID.axis > 1060) & (GRID.axis < 1110)
    assert abs(GRID.axis[band][np.argmax(b[band])] - GRID.axis[band][np.argmax(y[band])]) <= 1.0
    assert b.sum() == pytest.approx(y.sum(), rel=1e-3)


def test_batch_equals_single_per_row_widths_and_input_unchanged(sharp_calcite):
    x = sharp_calcite.copy()
    out = broaden(x, np.array([0.0, 10.0]))
    np.testing.assert_array_equal(x, sharp_calcite)
    np.testing.assert_array_equal(out[0], x[0].astype(np.float32))  # width 0: unchanged
    np.testing.assert_allclose(out[1], broaden(x[1], 10.0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(broaden(x, 10.0)[1], out[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("fwhm, match", [(-1.0, "finite and ≥ 0"), (np.nan, "finite and ≥ 0"),
                                         (np.array([1.0, 2.0, 3.0]), "3 FWHM values for 2 spectra")])
def test_bad_widths_are_refused(sharp_calcite, fwhm, match):
    with pytest.raises(PreprocessError, match=match):
        broaden(sharp_calcite, fwhm)


def test_preprocessing_floor_is_recorded_and_applied_to_any_axis(sharp_calcite, data_root):
    from edge.io import read_spectrum

    assert "resolution_fwhm_cm1" not in PreprocessConfig().to_dict()  # off: manifests as before
    cfg = PreprocessConfig(resolution_fwhm_cm1=10.0)
    again = PreprocessConfig.from_dict(cfg.to_dict())
    assert again.resolution_fwhm_cm1 == 10.0
    # a spectrum on its own axis and the same spectrum already on the grid come out alike
    root = data_root / "cross_instrument" / "charisma" / "TOP_Ho633"
    ax, y = read_spectrum(next(root.glob("nCAL*")))
    on_axis = Preprocessor(cfg)(y, ax)
    on_grid = Preprocessor(cfg)(sharp_calcite[0])
    np.testing.assert_allclose(on_axis, on_grid, atol=1e-5)
    f = fwhm_cm1(on_grid, GRID.axis, 1070, 1100)
    assert f == pytest.approx(np.hypot(fwhm_cm1(sharp_calcite[0], GRID.axis, 1070, 1100), 10.0), rel=0.12)
    with pytest.raises(ConfigError, match="resolution_fwhm_cm1"):
        PreprocessConfig(resolution_fwhm_cm1=-2.0)


def test_resolution_augmentation_broadens_within_the_configured_widths(sharp_calcite):
    pytest.importorskip("torch")
    from trainer.augment import AugmentConfig, augment_batch

    off = dict(max_shift_cm1=0.0, intensity_scale=0.0, fluorescence=0.0, noise_std=0.0, probability=1.0)
    x = np.repeat(sharp_calcite[:1], 64, axis=0)
    out = augment_batch(x, AugmentConfig(**off, resolution_fwhm_cm1=12.0), np.random.default_rng(0))
    f0 = fwhm_cm1(x[0], GRID.axis, 1070, 1100)
    widths = np.array([fwhm_cm1(r, GRID.axis, 1070, 1100) for r in out])
    assert widths.min() >= f0 - 0.5 and widths.max() <= np.hypot(f0, 12.0) * 1.12
    assert np.ptp(widths) > 4.0  # random widths, not one
    np.testing.assert_array_equal(augment_batch(x, AugmentConfig(**off), np.random.default_rng(0)), x)
