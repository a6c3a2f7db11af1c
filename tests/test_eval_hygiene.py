"""The hygiene evaluation rows (trainer.eval_hygiene) through the daemon's per-batch path."""

import json

import pytest

from trainer.eval_hygiene import main

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def rows(rruff_bundle, data_root, tmp_path_factory):
    """The hygiene rows as ``edge-eval instruments`` writes them (merged with its own ``raw_test`` row)."""
    from trainer.evaluate import main as eval_main

    out = tmp_path_factory.mktemp("instruments") / "rows.json"
    assert eval_main(["instruments", "--bundle", str(rruff_bundle), "--json", str(out), "--rows", "raw_test",
                      "--data-dir", str(data_root)]) == 0
    return json.loads(out.read_text())["rows"]


def test_merged_rows_keep_both_measures():
    from trainer.eval_instruments import merge_rows

    rows = {"raw_test": {"n": 150, "top1": 85.0}}
    merge_rows(rows, {"raw_test": {"n": 150, "top1": 84.0, "top1_change_by_spike_removal": 0.0},
                      "raw_test_spikes": {"n": 150, "top1": 84.5}})
    assert rows == {"raw_test": {"n": 150, "top1": 85.0, "hygiene_n": 150, "hygiene_top1": 84.0,
                                 "top1_change_by_spike_removal": 0.0},
                    "raw_test_spikes": {"n": 150, "top1": 84.5}}


def test_spike_rows(rows):
    assert rows["raw_test"]["n"] == rows["raw_test_spikes"]["n"] == 150
    assert abs(rows["raw_test"]["top1_change_by_spike_removal"]) <= 0.5
    assert rows["raw_test_spikes"]["spikes_removed"] >= 290  # 1-3 injected per spectrum (~300 in all)
    assert rows["raw_test_spikes"]["top1"] >= rows["raw_test"]["top1"] - 1.0
    assert rows["raw_test_spikes"]["top1_without_removal"] < rows["raw_test_spikes"]["top1"] - 10


def test_quality_rows(rows):
    assert rows["raw_test_quality"]["not_ok"] <= 2.0
    nr = rows["charisma_not_raman"]
    assert nr["n"] == 18 and nr["quality_not_ok"] >= 90.0  # the gate alone, without a novelty detector
    assert rows["charisma_silicon"]["quality_reasons"].get("standard", 0) >= 25
    assert rows["charisma_calcite"]["quality_not_ok"] == 0.0  # a mineral on six other instruments passes


def test_calibration_rows(rows):
    cal = {k: v for k, v in rows.items() if k.startswith("calibration/")}
    assert len(cal) == 10
    assert all("silicon_before_cm1" in v and "rms_cm1" in v for v in cal.values())
    improved = [abs(v["error_after_cm1"]) < abs(v["error_before_cm1"]) for v in cal.values()]
    assert sum(improved) >= 6
    assert all(v["standard"] in ("polystyrene", "neon", "neon+polystyrene") and v["degree"] in (0, 1, 2)
               and v["cv_rms_cm1"] > 0 for v in cal.values())
    assert sum(v["within_0_5"] for v in cal.values()) >= 7  # 6 with linear polystyrene alone (before #15 neon)
    assert all(v["rms_cm1"] < 2.5 for k, v in rows.items() if k.startswith("neon/"))


def test_runs_alone(rruff_bundle, data_root, tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["--bundle", str(rruff_bundle), "--json", str(out), "--data-dir", str(data_root)]) == 0
    capsys.readouterr()
    assert set(json.loads(out.read_text())["rows"]) >= {"raw_test", "raw_test_spikes", "charisma_not_raman",
                                                        "raw_test_quality", "charisma_silicon", "charisma_polystyrene"}
