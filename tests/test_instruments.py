"""Other instruments' spectra (issue #14): partial-range preprocessing, truncation, coverage rejection, the
2026 RRUFF files, a folder with a bad file, and a short ``edge-eval instruments`` run through the daemon."""

import json
import shutil

import numpy as np
import pytest

from edge.data import load_rruff_folder, load_rruff_txt
from edge.errors import ConfigError, CoverageError, DataError, PreprocessError
from edge.preprocess import PreprocessConfig, Preprocessor, RamanGrid, coverage, resample
from edge.shift import truncate_spectra

GRID = RamanGrid()
DEFAULT_2CH = PreprocessConfig(extra_channels=({"derivative": 1, "derivative_window": 11, "normalisation": "snv"},))


def raw_counts(n=3, seed=0):
    """Raw-count-like spectra on the grid: a high sloping fluorescence baseline, a few lines, noise."""
    rng = np.random.default_rng(seed)
    g = GRID.axis
    base = 2000 + 1.5 * (g - 200) + rng.uniform(0, 300, (n, 1))
    lines = sum(rng.uniform(200, 800, (n, 1)) * np.exp(-0.5 * ((g - c) / 4.0) ** 2) for c in (465, 700, 1085, 1380))
    return (base + lines + rng.normal(0, 5, (n, g.size))).astype(np.float32)


# -- truncation ---------------------------------------------------------------------------------------------
def test_truncate_keeps_exactly_the_range_and_leaves_the_input_alone():
    x = raw_counts()
    before = x.copy()
    axis, cut = truncate_spectra(x, GRID.axis, 400.0, 1300.0)
    assert axis[0] == 400.0 and axis[-1] == 1300.0 and axis.size == 901
    np.testing.assert_array_equal(cut, x[:, 200:1101])
    np.testing.assert_array_equal(x, before)
    one_axis, one = truncate_spectra(x[0], GRID.axis, None, 1450.0)
    assert one.shape == (1251,) and one_axis[-1] == 1450.0 and one_axis[0] == 200.0
    with pytest.raises(PreprocessError, match="start < stop"):
        truncate_spectra(x, GRID.axis, 900.0, 800.0)
    with pytest.raises(PreprocessError, match="fewer than 2"):
        truncate_spectra(x, GRID.axis, 2000.0, None)


# -- partial-range preprocessing ----------------------------------------------------------------------------
@pytest.mark.parametrize("start,stop", [(None, 1300.0), (None, 1450.0), (400.0, None), (350.0, 1200.0)])
def test_no_step_at_the_range_edges(start, stop):
    x = raw_counts()
    axis, cut = truncate_spectra(x, GRID.axis, start, stop)
    out = resample(cut, axis, GRID)
    # At each measured end, the jump into the extension is of the order of the noise, not the baseline
    # (thousands of counts): the zero fill the paper's splits used falls off a cliff there.
    for edge_cm1 in (axis[0], axis[-1]):
        i = int(np.searchsorted(GRID.axis, edge_cm1))
        if 0 < i < GRID.n_points - 1:
            jump = np.abs(out[:, i + 1] - out[:, i - 1])
            assert np.all(jump < 60), (edge_cm1, jump)
    zero = resample(cut, axis, GRID, outside_range="zero")
    assert np.any(zero == 0) and np.max(np.abs(np.diff(zero, axis=1))) > 1000  # the cliff the default avoids
    np.testing.assert_array_equal(out[:, (GRID.axis >= axis[0]) & (GRID.axis <= axis[-1])],
                                  x[:, (GRID.axis >= axis[0]) & (GRID.axis <= axis[-1])])  # measured part exact


@pytest.mark.parametrize("config", [PreprocessConfig(), DEFAULT_2CH], ids=["max", "two-channel default"])
def test_partial_range_batch_equals_single_and_input_unchanged(config):
    pre = Preprocessor(config)
    axis, cut = truncate_spectra(raw_counts(4), GRID.axis, 380.0, 1400.0)
    cut_before, axis_before = cut.copy(), axis.copy()
    batch = pre(cut, axis)
    for i in range(len(cut)):
        np.testing.assert_allclose(batch[i], pre(cut[i], axis), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(cut, cut_before)
    np.testing.assert_array_equal(axis, axis_before)
    # the max-normalised channel has no edge feature: past the range it is flat at the edge level
    ch0 = batch[:, 0] if batch.ndim == 3 else batch
    assert np.ptp(ch0[:, GRID.axis > 1400.0], axis=1).max() == 0.0


def test_too_short_coverage_is_refused_with_a_clear_reason():
    pre = Preprocessor(PreprocessConfig(min_coverage=0.6))
    ok_axis, ok = truncate_spectra(raw_counts(1), GRID.axis, None, 1300.0)  # 79 % of the grid
    assert coverage(ok_axis, GRID) == pytest.approx(1101 / 1392)
    assert pre(ok, ok_axis).shape == (1, 1392)
    short_axis, short = truncate_spectra(raw_counts(1), GRID.axis, 600.0, 1200.0)  # 43 %
    with pytest.raises(CoverageError, match=r"600\.0 to 1200\.0 cm⁻¹ covers 43\.2 % .* at least 60\.0 %"):
        pre(short, short_axis)
    assert issubclass(CoverageError, PreprocessError)
    assert pre(raw_counts(1)[0]).shape == (1392,)  # on-grid input covers the grid
    with pytest.raises(ConfigError, match="min_coverage"):
        PreprocessConfig(min_coverage=1.5)
    with pytest.raises(ConfigError, match="outside_range"):
        PreprocessConfig(outside_range="mirror")
    cfg = PreprocessConfig(min_coverage=0.6, outside_range="zero")
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg


# -- RRUFF loader -------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_every_rruff_2026_file_loads(data_root):
    files = sorted((data_root / "cross_instrument" / "rruff_2026_oriented").glob("*.txt"))
    assert len(files) == 384
    kinds = {"RAW": 0, "Processed": 0}
    for f in files:
        s = load_rruff_txt(f)
        assert s.raman_shift_cm1.size == s.intensity.size > 500 and np.all(np.diff(s.raman_shift_cm1) > 0), f.name
        assert s.metadata["laser_wavelength_nm"] == 514.0, f.name
        assert s.metadata["data_kind"] == ("RAW" if "_RAW__" in f.name else "Processed"), f.name
        assert s.metadata["file_rruff_id"] == f.name.split("__")[1], f.name
        kinds[s.metadata["data_kind"]] += 1
    assert kinds == {"RAW": 192, "Processed": 192}
    wrapped = load_rruff_txt(next(f for f in files if f.name.startswith("Aenigmatite__R061088-8")))
    assert wrapped.metadata["PIN_ID"] == "L00919 Fiducial mark perpendicular to laser is parallel to a [1 0 0]"


def test_x_ids_keep_laser_and_kind_and_headers_continue(tmp_path):
    f = tmp_path / "Quartz__X050094-1__Raman__532__0__unoriented__Raman_Data_RAW__123.txt"
    f.write_text("##NAMES=Quartz\n##ORIENTATION=Laser parallel to b*.\n Fiducial mark parallel to c\n"
                 "##RAMAN WAVELENGTH=532\n100.0, 5.0\n101.5, 6.0\n103.0, 7.5\n##END=\n")
    s = load_rruff_txt(f)
    assert s.metadata["laser_wavelength_nm"] == 532.0 and s.metadata["data_kind"] == "RAW"
    assert s.metadata["file_rruff_id"] == "X050094-1" and s.label == "Quartz"
    assert s.metadata["ORIENTATION"] == "Laser parallel to b*. Fiducial mark parallel to c"
    g = tmp_path / "plain.txt"  # no scheme in the name: laser and kind from the headers
    g.write_text("##NAMES=Quartz\n##FILETYPE=Raman Processed\n##RAMAN WAVELENGTH=785\n100.0, 5.0\n101.5, 6.0\n")
    t = load_rruff_txt(g)
    assert t.metadata["laser_wavelength_nm"] == 785.0 and t.metadata["data_kind"] == "Processed"


@pytest.mark.realdata
def test_folder_with_one_bad_file_loads_the_rest_and_strict_refuses(rruff_txt_dir, tmp_path):
    good = sorted(rruff_txt_dir.glob("*.txt"))[:3]
    for f in good:
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "Broken__R000001__Raman__532__0__unoriented__Raman_Data_RAW__1.txt").write_text(
        "##NAMES=Broken\n100.0, 1.0\n101.0, oops\n##END=\n")
    s = load_rruff_folder(tmp_path)
    assert len(s) == 3 and sorted(s.labels.tolist()) == sorted(f.name.split("__")[0] for f in good)
    assert len(s.skipped) == 1 and "Broken" in s.skipped[0][0] and "not numbers" in s.skipped[0][1]
    with pytest.raises(DataError, match=r"not numbers.*strict"):
        load_rruff_folder(tmp_path, strict=True)


# -- range augmentation --------------------------------------------------------------------------------------
def test_range_augmentation_cuts_within_the_recorded_coverage():
    pytest.importorskip("torch")
    from trainer.augment import AugmentConfig, augment_batch
    from trainer.errors import TrainerError

    off = {"max_shift_cm1": 0.0, "intensity_scale": 0.0, "fluorescence": 0.0, "noise_std": 0.0, "probability": 1.0}
    x = raw_counts(64)
    out = augment_batch(x, AugmentConfig(**off, range_probability=1.0), np.random.default_rng(0), 1.0, 0.6)
    flat = np.diff(out, axis=1) == 0
    lead = np.argmin(flat, axis=1)  # length of the flat extension at the start
    trail = np.argmin(flat[:, ::-1], axis=1)
    assert np.all(lead + trail <= 0.4 * 1392 + 2) and (lead + trail).max() > 100
    with pytest.raises(TrainerError, match="min_coverage"):
        augment_batch(x, AugmentConfig(**off, range_probability=1.0), np.random.default_rng(0), 1.0, 0.0)


# -- edge-eval instruments -----------------------------------------------------------------------------------
@pytest.mark.realdata
def test_short_edge_eval_instruments_run(novelty_bundle, tmp_path, data_root):
    from trainer.evaluate import main

    out = tmp_path / "instruments.json"
    rows = ["raw_test", "raw_test_range_end1300", "rruff2026_raw_in63", "rruff2026_novel", "charisma_calcite"]
    assert main(["instruments", "--bundle", str(novelty_bundle["path"]), "--json", str(out), "--rows", *rows,
                 "--data-dir", str(data_root), "--no-hygiene"]) == 0
    result = json.loads(out.read_text())
    r = result["rows"]
    assert list(r) == rows
    assert r["raw_test"]["n"] == 150 and r["rruff2026_raw_in63"]["n"] == 147 and r["rruff2026_novel"]["n"] == 90
    assert r["charisma_calcite"]["n"] == 20
    assert 50.0 < r["raw_test"]["top1"] <= 100.0 and r["rruff2026_novel"]["top1"] is None
    assert r["rruff2026_raw_in63"]["top1"] > 80.0  # the zero cliff gave ~55 % (issue #14)
    assert 0.0 <= r["rruff2026_novel"]["flagged"] <= 100.0
    assert (tmp_path / "instruments.png").exists()


@pytest.mark.realdata
def test_daemon_rejects_too_short_coverage_on_its_error_topic(rruff_bundle, tmp_path):
    from trainer.eval_instruments import Row, score_row

    path = tmp_path / "bundle"
    shutil.copytree(rruff_bundle, path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["preprocessing"]["min_coverage"] = 0.6  # what the bundle was trained for
    (path / "manifest.json").write_text(json.dumps(manifest))
    x = raw_counts(3)
    row = Row("coverage")
    row.add(*truncate_spectra(x[0], GRID.axis, 600.0, 1200.0), "Calcite")  # 43 % of the grid: refused
    row.add(*truncate_spectra(x[1], GRID.axis, None, 1300.0), "Calcite")   # 79 %: served
    row.add(None, x[2], "Calcite")                                        # on the grid: served
    r = score_row(path, row, daemon_settings={"novelty": False})
    assert r["rejected"] == 1 and r["rejections"] == {"coverage": 1} and r["n"] == 3
