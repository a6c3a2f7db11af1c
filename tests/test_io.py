"""edge.io: every real sample file reads, or is refused with one clear line; one acquisition stored in several
formats reads to the same spectrum (tolerances from /work/shared/data/formats/README.md)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edge.errors import DataError
from edge.io import detect_format, nm_to_raman_shift, read_file, read_spectra

pytestmark = pytest.mark.realdata
HAS_FORMATS = all(importlib.util.find_spec(m) for m in ("spc_io", "wdf", "jcamp", "sif_parser", "spexread"))
needs_formats = pytest.mark.skipif(not HAS_FORMATS, reason="needs the [formats] extra")

# The files the formats README says no reader reads, or that need an option: the one-line refusal expected.
REFUSED = {
    "spc/m_ordz.spc": "SPC version 0x4D is not supported",
    "jcamp/jtpolys.jdx": "is not a Raman spectrum (pass allow_non_raman=True",
    "jcamp/jtpolysd.jdx": "is not a Raman spectrum (pass allow_non_raman=True",
    "other/horiba_PST10_iR785_OP01_8000msx8.l6s": "LabSpec 6 binary (.l6s) is not supported",
    "sif/raman1.asc": "pass axis_unit='cm-1' or axis_unit='nm'",
    "spe/S0N_50x.spe": "pass laser_nm=",
    "spe/step_and_glue_v2_Andor.spe": "pass laser_nm=",
}


@pytest.fixture(scope="module")
def formats(data_root: Path) -> Path:
    return data_root / "formats"


@needs_formats
def test_every_format_sample_reads_or_is_refused_in_one_line(formats):
    manifest = [r["local_path"] for r in csv.DictReader(open(formats / "MANIFEST.tsv"), delimiter="\t")]
    assert len(manifest) == 21
    for rel in manifest:
        if rel in REFUSED:
            with pytest.raises(DataError) as info:
                read_file(formats / rel)
            msg = str(info.value)
            assert REFUSED[rel] in msg and "\n" not in msg, (rel, msg)
            continue
        s = read_file(formats / rel)
        assert len(s) >= 1 and s.intensities.shape[1] == s.raman_shift_cm1.size > 500, rel
        assert np.all(np.diff(s.raman_shift_cm1) > 0) and np.isfinite(s.intensities).all(), rel
        assert s.metadata["source_file"].endswith(Path(rel).name)


@needs_formats
def test_shapes_and_ranges_match_the_readme(formats):
    cases = {"spc/PST10_iR532_Probe_100_3000msx7.spc": (1, 3808, 175, 3982),
             "spc/raman-sion.spc": (36, 1015, 1218.43, 2801.46),
             "wdf/line.wdf": (235, 1015, 1226.27, 2787.51),
             "wdf/nCal_Qontor785_z005H12_100_1x3s.wdf": (1, 1021, -154.50, 1111.11),
             "jcamp/tannic_acid.jdx": (1, 1949, 100.60, 2854.71),
             "text/bwtek_PST10_iR532_Probe_100_3000msx7.txt": (1, 1801, 145.99, 4010.28),
             "text/neegala_PST_532_SEX139.txt": (1, 2048, -1118.29, 4751.54),
             "text/lightnovo_polystyrene_aritficially_worsened.tsv": (1, 2290, 100, 2389)}
    for rel, (b, n, lo, hi) in cases.items():
        s = read_file(formats / rel)
        assert s.intensities.shape == (b, n), rel
        assert s.raman_shift_cm1[0] == pytest.approx(lo, abs=0.01), rel
        assert s.raman_shift_cm1[-1] == pytest.approx(hi, abs=0.01), rel


@needs_formats
def test_ncal_wdf_txt_spc_are_one_acquisition(formats):
    w = read_file(formats / "wdf/nCal_Qontor785_z005H12_100_1x3s.wdf")
    t = read_file(formats / "text/renishaw_nCal_Qontor785_z005H12_100_1x3s.txt")  # x descending in the file
    s = read_file(formats / "spc/nCal_Qontor785_z005H12_100_1x3s.spc")
    np.testing.assert_allclose(t.raman_shift_cm1, w.raman_shift_cm1, atol=5e-7)
    np.testing.assert_allclose(t.intensities, w.intensities, rtol=5e-7)
    # The SPC was resampled by WiRE onto an even grid: equal to the WDF interpolated there, to about 1 count.
    wi = np.interp(s.raman_shift_cm1, w.raman_shift_cm1, w.intensities[0])
    assert np.abs(wi - s.intensities[0]).max() < 1.5
    assert w.metadata["laser_wavelength_nm"] == pytest.approx(785.0, abs=0.1)


@needs_formats
def test_sif_and_its_ascii_export_agree_after_nm_conversion(formats):
    a = read_file(formats / "sif/raman1.asc", axis_unit="nm", laser_nm=405.0)
    s = read_file(formats / "sif/raman1.sif", laser_nm=405.0)
    # x within 2e-5 nm: at 405-455 nm that is ≤ 0.0012 cm⁻¹; counts rounded to 6 significant digits
    np.testing.assert_allclose(a.raman_shift_cm1, s.raman_shift_cm1, atol=2e-3)
    np.testing.assert_allclose(a.intensities, s.intensities, rtol=1e-5)
    assert s.metadata["axis_unit"] == "nm" and s.metadata["laser_wavelength_nm"] == 405.0


@needs_formats
def test_nm_axes_convert_with_the_laser_wavelength(formats):
    si = read_file(formats / "spe/S0N_50x.spe", laser_nm=532.0)  # CHARISMA silicon sample S0N at 532 nm
    assert si.raman_shift_cm1[np.argmax(si.intensities[0])] == pytest.approx(520.7, abs=2.0)
    fe = read_file(formats / "sif/DD58_785_1_Fe2O3_5x10s.sif")  # laser from the file: 785 nm
    assert fe.metadata["laser_wavelength_nm"] == 785.0
    # the file's strongest band (hematite/iron-oxide region ~400 cm⁻¹)
    assert 380 < fe.raman_shift_cm1[np.argmax(fe.intensities[0])] < 420
    assert nm_to_raman_shift(np.array([547.1]), 532.0)[0] == pytest.approx(518.8, abs=0.1)


@needs_formats
def test_jcamp_comment_after_yfactor_is_read_when_allowed(formats):
    j = read_file(formats / "jcamp/jtpolys.jdx", allow_non_raman=True)  # jcamp 1.3.2 alone crashes on it
    d = read_file(formats / "jcamp/jtpolysd.jdx", allow_non_raman=True)
    np.testing.assert_allclose(j.raman_shift_cm1, d.raman_shift_cm1, atol=1e-3)
    # same integers, YFACTOR 2.3884e-9 vs 2.384185791e-9 (a typo in jtpolysd): a constant ratio
    np.testing.assert_allclose(d.intensities / j.intensities, 2.3884185791 / 2.384185791, rtol=1e-6)


@needs_formats
def test_wdf_line_map_has_positions_and_shape(formats):
    m = read_file(formats / "wdf/line.wdf")
    assert m.map_shape == (1, 235) and m.positions_um.shape == (235, 2)
    assert np.diff(m.positions_um[:, 0]).mean() == pytest.approx(0.2316, abs=1e-3)
    md = m.spectrum_metadata(3)
    assert md["map_col"] == 3 and md["x_um"] == pytest.approx(m.positions_um[3, 0])


@needs_formats
@pytest.mark.parametrize("rel", ["spc/raman-sion.spc", "wdf/line.wdf", "jcamp/tannic_acid.jdx", "sif/raman1.sif",
                                 "spe/S0N_50x.spe", "text/bwtek_PST10_iR532_Probe_100_3000msx7.txt"])
@pytest.mark.parametrize("keep", [0, 64, 700])
def test_truncated_files_are_refused_in_one_line(formats, tmp_path, rel, keep):
    src = formats / rel
    cut = tmp_path / src.name
    cut.write_bytes(src.read_bytes()[:keep])
    with pytest.raises(DataError) as info:
        read_file(cut, laser_nm=532.0)
    assert "\n" not in str(info.value) and str(cut) in str(info.value)


@needs_formats
def test_spc_map_is_arranged_with_map_shape(formats):
    s = read_file(formats / "spc/raman-sion.spc")
    assert s.map_shape is None and "map_shape" in s.metadata["map_note"]
    m = read_file(formats / "spc/raman-sion.spc", map_shape=(6, 6))
    assert m.map_shape == (6, 6) and m.spectrum_metadata(7)["map_row"] == 1
    with pytest.raises(DataError, match="does not hold"):
        read_file(formats / "spc/raman-sion.spc", map_shape=(5, 6))


def test_charisma_files_read_with_the_readme_columns(data_root):
    root = data_root / "cross_instrument" / "charisma"
    rows = list(csv.DictReader(open(root / "labels.csv")))
    assert len(rows) == 94
    for r in rows:
        s = read_file(root / r["file"])
        assert len(s) == 1 and s.raman_shift_cm1.size > 500, r["file"]
        if "_BW" in r["lab_instrument"]:
            assert s.metadata["columns"] == ["Raman Shift", "Dark Subtracted #1"], r["file"]
            assert s.metadata["delimiter"] == ";"  # decimal comma in most files; two ICV files use a point
            assert s.metadata["laser_wavelength_nm"] == pytest.approx(float(r["laser_nm"]), abs=1.0)
        else:  # Horiba: two tab-separated columns, no header; the axis runs past 2000, so it is a Raman shift
            assert s.metadata["columns"] == [0, 1] and s.metadata["delimiter"] == "\t", r["file"]
    si = [r for r in rows if r["label"] == "Silicon"][:6]
    for r in si:  # the silicon band lands where the README says (518.7-526.2 cm⁻¹)
        s = read_file(root / r["file"])
        band = (s.raman_shift_cm1 > 480) & (s.raman_shift_cm1 < 560)
        assert 515 < s.raman_shift_cm1[band][np.argmax(s.intensities[0, band])] < 528, r["file"]


def test_a_header_value_continued_on_the_next_line_reads(tmp_path):
    f = tmp_path / "X__R000001__Raman__514__0__Raman_Data_RAW__abc.txt"
    f.write_text("##NAMES=X\n##DESCRIPTION=a value that\ncontinues here\n100, 1\n101, 2\n##END=\n")
    s = read_file(f)
    assert s.raman_shift_cm1.tolist() == [100.0, 101.0] and s.intensities[0].tolist() == [1.0, 2.0]


def test_rruff_2026_folder_reads_every_file(data_root):
    folder = data_root / "cross_instrument" / "rruff_2026_oriented"
    r = read_spectra(folder)
    assert len(r) == 384 and not r.failures  # 36 of them continue a header value on the next line
    assert {s.labels[0] for s in r} >= {"Albite", "Actinolite", "Aegirine"}
    assert all(s.metadata["laser_wavelength_nm"] == 514 for s in r)


def test_folder_reports_unreadable_files_and_strict_refuses(tmp_path):
    good = tmp_path / "a.csv"
    good.write_text("Raman Shift,Intensity\n100,1\n200,2\n300,3\n")
    bad = tmp_path / "b.txt"
    bad.write_text("no numbers here\nat all\n")
    (tmp_path / "labels.csv").write_text("file,label\na.csv,Quartz\n")
    r = read_spectra(tmp_path)
    assert len(r) == 1 and r.failures == [(str(bad), "no block of numeric rows found (not a delimited spectrum file)")]
    with pytest.raises(DataError, match=r"b\.txt: no block of numeric rows"):
        read_spectra(tmp_path, strict=True)
    assert len(read_spectra(str(tmp_path / "*.csv"))) == 1


def test_text_detection_rules(tmp_path):
    f = tmp_path / "comma.txt"
    f.write_text("laser;785,0\nx;y;z\n100,5;1,0;7\n101,5;2,0;8\n102,5;3,0;9\n")
    with pytest.raises(DataError, match=r"pass x_column"):
        read_file(f)
    s = read_file(f, x_column="x", y_column=2, axis_unit="cm-1")
    assert s.raman_shift_cm1.tolist() == [100.5, 101.5, 102.5] and s.intensities[0].tolist() == [7, 8, 9]
    assert s.metadata["laser_wavelength_nm"] == 785.0 and s.metadata["decimal"] == ","
    amb = tmp_path / "amb.txt"
    amb.write_text("500\t1\n501\t2\n502\t3\n")  # 500-502: a wavelength or a shift?
    with pytest.raises(DataError, match="axis_unit='cm-1' or axis_unit='nm'"):
        read_file(amb)
    assert read_file(amb, axis_unit="cm-1").raman_shift_cm1[0] == 500
    nm = read_file(amb, axis_unit="nm", laser_nm=480.0)
    assert nm.raman_shift_cm1[0] == pytest.approx(1e7 / 480 - 1e7 / 500)
    with pytest.raises(DataError, match="unknown reader option"):
        read_file(amb, lazer_nm=3)


def test_npz_cube_is_a_map(tmp_path):
    axis = np.linspace(200, 1500, 300)
    cube = np.random.default_rng(0).random((3, 4, 300)).astype(np.float32)
    np.savez(tmp_path / "m.npz", intensities=cube, raman_shift_cm1=axis, step_um=np.array([2.0, 1.0]))
    s = read_file(tmp_path / "m.npz")
    assert s.map_shape == (3, 4) and s.intensities.shape == (12, 300)
    np.testing.assert_array_equal(s.intensities[5], cube[1, 1])
    assert s.spectrum_metadata(5)["x_um"] == 1.0 and s.spectrum_metadata(5)["y_um"] == 2.0
    assert detect_format(tmp_path / "m.npz") == "npz"


def test_missing_extra_names_it(monkeypatch, data_root):
    import sys

    monkeypatch.setitem(sys.modules, "wdf", None)
    with pytest.raises(DataError, match=r"needs the \[formats\] extra .*renishaw-wdf"):
        read_file(data_root / "formats" / "wdf" / "line.wdf")
