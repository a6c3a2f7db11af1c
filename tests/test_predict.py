"""edge-predict: the daemon's per-batch path on files, folders and maps (parity with a running daemon), the
synthetic phase map, outputs and user errors, and the Dask path on a 2-worker LocalCluster."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ConfigError, DataError
from edge.io import read_spectra
from edge.predict import Predictor, predict, write_rows

sys.path.insert(0, str(Path(__file__).parent))
from daemon_harness import RunningDaemon
from synthetic_map import build_map, write_map

pytestmark = pytest.mark.realdata
# A Mars-relevant basalt assemblage (olivine, pyroxene, plagioclase, hematite), all among the 63 classes.
MAP_MINERALS = ["Forsterite", "Diopside", "Albite", "Hematite"]
COMPARED = ("labels", "novel", "novelty_detector", "model_id", "model_sha256", "precision", "head_version",
            "spikes_removed", "quality", "labels_trusted", "calibration")  # hygiene fields (edge.hygiene) too


@pytest.fixture(scope="module")
def dev_files(data_root):
    """charisma (94 lab files) + rruff_2026_oriented: the development set, as edge-predict reads it."""
    return [data_root / "cross_instrument" / "charisma", data_root / "cross_instrument" / "rruff_2026_oriented"]


def test_predict_equals_the_daemon_on_the_development_set(novelty_bundle, dev_files):
    bundle = novelty_bundle["path"]
    result = predict(dev_files, bundle)
    read = read_spectra(dev_files)
    assert len(result.rows) == read.n_spectra >= 94 + 300  # one row per spectrum
    assert [r["id"] for r in result.rows] == [f"{Path(s.source).name}#{i}" for s in read for i in range(len(s))]
    assert all(r["status"] == "ok" for r in result.rows)
    # edge-predict classifies each spectrum on its own: a folder of files from several instruments has no one
    # drift to follow, so the daemon it is compared with runs without drift compensation (docs/predict.md)
    with RunningDaemon(bundle, max_batch=64, drift={"compensate_offset": False}) as d:
        for s in read:
            for i in range(len(s)):
                d.tx.send(s.intensities[i], s.raman_shift_cm1, id=f"{Path(s.source).name}#{i}")
        preds, errors = d.collect(len(result.rows), timeout_s=120)
    assert not errors and len(preds) == len(result.rows)
    for row in result.rows:
        p = preds[row["id"]]
        for k in COMPARED:
            assert row[k] == p[k], (row["id"], k)
        np.testing.assert_allclose(row["probabilities"], p["probabilities"], rtol=1e-4, atol=1e-6)
        assert row["novelty_score"] == pytest.approx(p["novelty_score"], rel=1e-4, abs=1e-6)
    summary = result.summary()
    assert summary["spectra"] == len(result.rows) and summary["classified"] + summary["novel"] == len(result.rows)


@pytest.mark.xfail(strict=True, reason=(
    "issue #16 asks >= 95 % away from grain boundaries; the default recipe (band-ratio augmentation; fluorescence "
    "1.0 since the second #14 session) reads 93.3 % with this 330-step fixture and 96.4 / 95.7 / 94.5 % with the "
    "shipped 660 steps (seeds 0-2, python -m bench.bench_instruments --recipe default, row synthetic_map_inner): "
    "39 of the 44 errors are among the 30 inner pixels drawn from one band-less hematite training spectrum "
    "(index 219 of the 40 % split, a smooth rising background) under 1 % noise: open, see docs/instruments.md"))
def test_synthetic_map_phase_map_is_right_away_from_boundaries(rruff_bundle, soysal, tmp_path):
    m = build_map(soysal / "raw_train_labeled_40pct.npz", MAP_MINERALS, shape=(20, 24), seed=0)
    f = write_map(tmp_path / "basalt.npz", m)
    out = tmp_path / "res" / "basalt.csv"
    r = subprocess.run([sys.executable, "-m", "edge.predict_cli", "--bundle", str(rruff_bundle), str(f),
                        "--out", str(out), "--no-progress", "--no-novelty"],
                       capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    png, table = tmp_path / "res" / "basalt.phase.png", tmp_path / "res" / "basalt.pixels.csv"
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(open(table)))
    assert len(rows) == 20 * 24
    grid = np.empty((20, 24), dtype=object)
    for row in rows:
        grid[int(row["map_row"]), int(row["map_col"])] = row["predicted"]
    inner = ~m["boundary"]
    accuracy = float((grid == m["truth"])[inner].mean())
    assert inner.sum() > 200 and accuracy >= 0.95, accuracy
    assert float(rows[25]["x_um"]) == 2.0 and float(rows[25]["y_um"]) == 2.0  # pixel (1, 1), 2 µm pitch
    assert "summary:" in r.stderr and "basalt.phase.png" in r.stderr


def test_wdf_line_map_writes_phase_map_and_table(rruff_bundle, data_root, tmp_path):
    pytest.importorskip("wdf")
    r = subprocess.run([sys.executable, "-m", "edge.predict_cli", "--bundle", str(rruff_bundle),
                        str(data_root / "formats" / "wdf" / "line.wdf"), "--out", str(tmp_path / "line.jsonl"),
                        "--no-progress"], capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (tmp_path / "line.jsonl").read_text().splitlines()]
    assert len(rows) == 235 and rows[7]["map_col"] == 7 and isinstance(rows[7]["x_um"], float)
    assert (tmp_path / "line.phase.png").stat().st_size > 3000
    assert len((tmp_path / "line.pixels.csv").read_text().splitlines()) == 236


def _env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


def test_cli_user_errors_are_one_line(rruff_bundle, tmp_path):
    good = tmp_path / "s.csv"
    good.write_text("Raman Shift,Intensity\n" + "".join(f"{x},{1 + np.sin(x / 30):.4f}\n" for x in range(200, 1500, 2)))
    bad = tmp_path / "b.txt"
    bad.write_text("nothing numeric\n")
    cases = [
        (["--out", str(tmp_path / "r.xlsx"), str(good)], "must end in one of .csv, .jsonl, .parquet"),
        (["--top-k", "99", str(good)], "exceeds the bundle's 63 classes"),
        (["--batch-size", "0", str(good)], "must be a positive integer"),
        ([str(tmp_path / "missing.txt")], "no such file or folder"),
        ([str(tmp_path), "--strict"], "no block of numeric rows"),
    ]
    for extra, message in cases:
        r = subprocess.run([sys.executable, "-m", "edge.predict_cli", "--bundle", str(rruff_bundle), "--no-progress",
                            *extra], capture_output=True, text=True, env=_env())
        assert r.returncode == 1, (extra, r.stderr)
        lines = [x for x in r.stderr.strip().splitlines() if not x.startswith(("usage:", " "))]  # argparse usage
        assert len(lines) == 1 and lines[0].startswith("edge-predict: error:") and message in lines[0], r.stderr
    # a folder with an unreadable file: the good one is classified, the bad one reported with its reason
    r = subprocess.run([sys.executable, "-m", "edge.predict_cli", "--bundle", str(rruff_bundle), "--no-progress",
                        str(tmp_path)], capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    assert len(list(csv.DictReader(r.stdout.splitlines()))) == 1
    assert f"unreadable: {bad}: no block of numeric rows" in r.stderr


def test_parquet_without_pyarrow_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ConfigError, match="needs pyarrow"):
        write_rows([{"file": "a", "predicted": "Quartz"}], tmp_path / "r.parquet")
    with pytest.raises(ConfigError, match="must end in"):
        write_rows([], tmp_path / "r.txt")


def test_rejected_spectra_get_a_row_with_the_reason(rruff_bundle, tmp_path):
    f = tmp_path / "far.csv"  # a spectrum entirely outside the model grid cannot be resampled onto it
    f.write_text("Raman Shift,Intensity\n" + "".join(f"{x},{x % 7}\n" for x in range(5000, 6000, 5)))
    with Predictor(rruff_bundle) as p:
        res = predict([f], p)
    # the bundle records the coverage it was trained for (min_coverage): 0 % of the grid is refused for that
    assert res.rows[0]["status"] == "rejected" and res.rows[0]["reason"] == "coverage"
    assert res.summary()["rejected"] == {"coverage": 1}


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="needs the [distributed] extra")
def test_dask_localcluster_gives_the_single_process_rows(rruff_bundle, data_root):
    from distributed import Client, LocalCluster

    paths = [data_root / "cross_instrument" / "charisma"]
    single = predict(paths, rruff_bundle, batch_size=16)
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      processes=True) as cluster, Client(cluster) as client:
        dist = predict(paths, rruff_bundle, scheduler=client, batch_size=16)
        dist.rows  # noqa: B018
        loaded = client.run(lambda: len(__import__("edge.distributed").distributed._PREDICTORS))
    assert [r["id"] for r in dist.rows] == [r["id"] for r in single.rows]
    for a, b in zip(single.rows, dist.rows, strict=True):
        assert a["labels"] == b["labels"] and a["status"] == b["status"]
        np.testing.assert_allclose(a["probabilities"], b["probabilities"], rtol=1e-5, atol=1e-7)
    assert sum(loaded.values()) >= 1 and all(v <= 1 for v in loaded.values())  # one session per worker


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="needs the [distributed] extra")
def test_dask_retries_a_failing_task(rruff_bundle, data_root):
    from distributed import Client, LocalCluster

    def make_flaky() -> None:  # runs on each worker: the first task there raises, later ones work
        import edge.distributed as ed

        real, state = ed._predictor, {"calls": 0}

        def flaky(*a, **k):
            state["calls"] += 1
            if state["calls"] == 1:
                raise RuntimeError("simulated worker fault")
            return real(*a, **k)

        ed._predictor = flaky

    paths = [data_root / "cross_instrument" / "charisma"]
    single = predict(paths, rruff_bundle, batch_size=8)
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      processes=True) as cluster, Client(cluster) as client:
        client.run(make_flaky)
        dist = predict(paths, rruff_bundle, scheduler=client, batch_size=8)
    assert [r["labels"] for r in dist.rows] == [r["labels"] for r in single.rows]


def test_parquet_round_trip(rruff_bundle, data_root, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    res = predict([data_root / "cross_instrument" / "charisma" / "TOP_Ho633"], rruff_bundle)
    write_rows(res.rows, tmp_path / "r.parquet")
    table = pq.read_table(tmp_path / "r.parquet").to_pylist()
    assert [t["predicted"] for t in table] == [r["predicted"] for r in res.rows]
    assert table[0]["labels"] == res.rows[0]["labels"]


def test_unknown_scheduler_extra_missing(monkeypatch, rruff_bundle, data_root):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ConfigError, match=r"needs the \[distributed\] extra"):
        predict([data_root / "cross_instrument" / "charisma"], rruff_bundle, scheduler="tcp://127.0.0.1:1")


def test_nothing_readable_is_an_error(rruff_bundle, tmp_path):
    (tmp_path / "a.txt").write_text("x\n")
    (tmp_path / "b.txt").write_text("y\n")
    with pytest.raises(DataError, match="none of the 2 file"):
        predict([tmp_path], rruff_bundle)


def test_phase_grid_marks_novel_low_quality_and_rejected(tmp_path):
    from edge.phase_map import LOW_QUALITY, NOVEL, REJECTED, phase_grid, write_phase_map

    rows = [{"map_row": 0, "map_col": 0, "status": "ok", "predicted": "Quartz", "novel": False, "labels_trusted": True},
            {"map_row": 0, "map_col": 1, "status": "ok", "predicted": "Quartz", "novel": True, "labels_trusted": True},
            {"map_row": 1, "map_col": 0, "status": "ok", "predicted": "Quartz", "novel": True, "labels_trusted": False},
            {"map_row": 1, "map_col": 1, "status": "rejected", "reason": "preprocess"}]
    assert phase_grid(rows, (2, 2)).tolist() == [["Quartz", NOVEL], [LOW_QUALITY, REJECTED]]
    counts = write_phase_map(rows, (2, 2), tmp_path / "m.png", step_um=(1.5, 1.5))
    assert counts == {"Quartz": 1, NOVEL: 1, LOW_QUALITY: 1, REJECTED: 1}
    with pytest.raises(DataError, match="have no result"):
        phase_grid(rows[:3], (2, 2))
