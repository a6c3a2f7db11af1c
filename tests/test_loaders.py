"""Loaders: the paper's .npz splits, every original RRUFF text file, folders, synthetic splits, errors."""


import numpy as np
import pytest

from edge.data import DATA_ENV_VAR, data_dir, load_npz, load_rruff_txt, load_spectra
from edge.errors import DataError
from edge.preprocess import RamanGrid

SPLITS = {"raw_train_labeled_10pct": 85, "raw_train_labeled_20pct": 170, "raw_train_labeled_30pct": 255,
          "raw_train_labeled_40pct": 340, "raw_test": 150, "clean_train": 164, "clean_test": 30}


@pytest.mark.parametrize("name,n", SPLITS.items())
def test_npz_splits(soysal, name, n):
    s = load_npz(soysal / f"{name}.npz")
    assert s.intensities.shape == (n, 1392) and s.intensities.dtype == np.float32
    assert RamanGrid().matches(s.raman_shift_cm1)
    np.testing.assert_allclose(s.intensities.max(axis=1), 1.0, atol=1e-6)  # divided by the maximum
    assert len(s.classes) == (17 if name.startswith("clean") else 63)


def test_every_rruff_txt_file(rruff_txt_dir):
    files = sorted(rruff_txt_dir.glob("*.txt"))
    assert len(files) == 16
    for f in files:
        s = load_rruff_txt(f)
        assert s.raman_shift_cm1.ndim == 1 and s.raman_shift_cm1.size == s.intensity.size > 500, f.name
        assert np.all(np.diff(s.raman_shift_cm1) > 0), f.name
        assert s.metadata["RRUFFID"].startswith("R"), f.name
        assert s.metadata["laser_wavelength_nm"] in (514.0, 532.0, 780.0), f.name
        assert s.metadata["data_kind"] in ("RAW", "Processed"), f.name
        assert s.label == f.name.split("__")[0]  # the file-name spelling, as in the .npz splits


def test_rruff_txt_details(rruff_txt_dir):
    raw = load_rruff_txt(next(rruff_txt_dir.glob("Adamite*RAW*.txt")))
    proc = load_rruff_txt(next(rruff_txt_dir.glob("Adamite*Processed*.txt")))
    assert raw.metadata["data_kind"] == "RAW" and proc.metadata["data_kind"] == "Processed"
    assert raw.metadata["PIN_ID"] == "S00040"  # a 2026-scheme header key
    assert raw.intensity.min() > 1000  # the raw file keeps its fluorescence baseline
    rose = load_rruff_txt(next(rruff_txt_dir.glob("roselitebeta*.txt")))
    assert rose.metadata["NAMES"] != rose.label  # non-ASCII-free header name kept in metadata
    conich = load_rruff_txt(next(rruff_txt_dir.glob("Conichalcite*.txt")))
    assert conich.raman_shift_cm1[0] < 100  # axis starting below 100 cm⁻¹


def test_folder_is_resampled_onto_the_grid(rruff_txt_dir):
    s = load_spectra(rruff_txt_dir)
    assert s.intensities.shape == (16, 1392)
    quartz = s.intensities[list(s.labels).index("Quartz")]
    assert abs(np.argmax(quartz) + 200 - 464) <= 3  # quartz's strongest line near 464 cm⁻¹


def test_relative_paths_resolve_in_the_data_folder(soysal):
    assert len(load_spectra("rruff_soysal/raw_test.npz")) == 150


def test_missing_folder_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(DataError, match=DATA_ENV_VAR):
        data_dir()
    with pytest.raises(DataError, match="no such file"):
        load_spectra("rruff_soysal/raw_test.npz")


@pytest.mark.parametrize("text,match", [
    ("##NAMES=X\n##END=\n", "no data lines"),
    ("##NAMES=X\n1.0, 2.0\nabc, 3\n##END=\n", "not numbers"),
    ("##NAMES=X\n1.0, 2.0, 3.0\n2.0, 1.0\n##END=\n", "expected"),
])
def test_bad_txt_files(tmp_path, text, match):
    f = tmp_path / "bad.txt"
    f.write_text(text)
    with pytest.raises(DataError, match=match):
        load_rruff_txt(f)


def test_bad_npz(tmp_path):
    f = tmp_path / "x.npz"
    np.savez(f, X=np.zeros((2, 3)))
    with pytest.raises(DataError, match="missing key"):
        load_npz(f)


def test_synthetic_splits_are_seeded_and_disjoint():
    a, b = load_spectra("synthetic:train"), load_spectra("synthetic:train")
    np.testing.assert_array_equal(a.intensities, b.intensities)
    t = load_spectra("synthetic:test")
    assert a.classes == t.classes and not np.allclose(a.intensities[:5], t.intensities[:5])
    assert a.source == "synthetic:train"
