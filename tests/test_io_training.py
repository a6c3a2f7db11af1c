"""Training reads files the way edge-predict does: labels from a table, sub-folders, or the files themselves;
a file that names no mineral is refused (it used to become a one-class training set)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.data import load_spectra
from edge.errors import DataError
from edge.preprocess import RamanGrid

# A Horiba-like headerless two-column file running to 2972 cm⁻¹ (past any wavelength: read as a Raman shift).
HORIBA = "168.2\t2152.8\n172.3\t2139.9\n" + "".join(f"{176 + 4 * i}\t{2000 + (i % 13)}\n" for i in range(700))


@pytest.mark.realdata
def test_charisma_with_its_labels_table(data_root):
    root = data_root / "cross_instrument" / "charisma"
    s = load_spectra(root, labels=root / "labels.csv")
    truth = {str((root / r["file"]).resolve()): r["label"] for r in csv.DictReader(open(root / "labels.csv"))}
    assert len(s) == 94 and s.intensities.shape[1] == RamanGrid().n_points
    assert all(truth[str(Path(m["source_file"]).resolve())] == lab for m, lab in zip(s.metadata, s.labels, strict=True))
    assert sorted(s.classes) == ["Calcite", "LED", "NIST_SRM", "NeonLamp", "Polystyrene", "Silicon"]


@pytest.mark.realdata
def test_rruff_folder_labels_come_from_the_file_names(rruff_txt_dir):
    s = load_spectra(rruff_txt_dir)
    assert len(s) == 16 and "Quartz" in s.classes


def test_subfolders_name_the_minerals(tmp_path):
    for mineral in ("Quartz", "Calcite"):
        (tmp_path / mineral).mkdir()
        for k in range(2):
            (tmp_path / mineral / f"s{k}.txt").write_text(HORIBA)
    s = load_spectra(tmp_path, labels="subfolders")
    assert sorted(s.labels.tolist()) == ["Calcite", "Calcite", "Quartz", "Quartz"]
    (tmp_path / "loose.txt").write_text(HORIBA)
    with pytest.raises(DataError, match="not in a sub-folder"):
        load_spectra(tmp_path, labels="subfolders")


def test_headerless_tab_file_is_not_a_one_class_training_set(tmp_path):
    f = tmp_path / "PST10_iR785_OP01.txt"
    f.write_text(HORIBA)
    with pytest.raises(DataError, match=r"names no mineral; pass a labels table"):
        load_spectra(f)
    table = tmp_path / "labels.csv"
    table.write_text("file,label\nPST10_iR785_OP01.txt,Polystyrene\n")
    s = load_spectra(f, labels=table)
    assert s.labels.tolist() == ["Polystyrene"] and np.isfinite(s.intensities).all()


def test_edge_train_refuses_unlabelled_folder_in_one_line(tmp_path):
    (tmp_path / "a.txt").write_text(HORIBA)
    r = subprocess.run([sys.executable, "-m", "trainer.cli", "--train", str(tmp_path), "--out", str(tmp_path / "b")],
                       capture_output=True, text=True,
                       env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "--labels" in lines[0], r.stderr


@pytest.mark.realdata
def test_edge_train_reads_a_folder_with_its_labels_table(data_root, tmp_path):
    pytest.importorskip("torch")
    root = data_root / "cross_instrument" / "charisma"
    r = subprocess.run([sys.executable, "-m", "trainer.cli", "--train", str(root), "--labels", str(root / "labels.csv"),
                        "--steps", "2", "--out", str(tmp_path / "b"), "--no-progress"], capture_output=True, text=True,
                       env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert r.returncode == 0, r.stderr
    import json

    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["labels"] == ["Calcite", "LED", "NIST_SRM", "NeonLamp", "Polystyrene", "Silicon"]
    assert "training on 94 spectra, 6 classes" in r.stderr
