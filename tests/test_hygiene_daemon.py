"""Instrument hygiene in the daemon: calibration refused at start, per-prediction fields, not-ok published."""

import json

import numpy as np
import pytest
from daemon_harness import RunningDaemon

from edge.calibration import Calibration
from edge.cli import daemon_main
from edge.daemon import Daemon, DaemonConfig
from edge.data import load_spectra
from edge.errors import CalibrationError
from edge.hygiene import InstrumentConfig
from edge.quality import synthetic_faults


@pytest.fixture
def calibration_file(tmp_path):
    path = tmp_path / "calibration.json"
    Calibration("probe-1", 785.0, [0.6, 1e-4], (600.0, 1600.0), calibration_id="probe-1-cal").save(path)
    return path


def test_daemon_refuses_a_bad_calibration_file(synthetic_bundle, tmp_path, capsys):
    cfg = DaemonConfig(bundle=str(synthetic_bundle), input="", output="tcp://127.0.0.1:*")
    with pytest.raises(CalibrationError, match="cannot read"):
        Daemon(cfg, instrument=InstrumentConfig(calibration=str(tmp_path / "missing.json")))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "raman-edge-calibration", "version": 1, "instrument_id": "x"}))
    with pytest.raises(CalibrationError, match="malformed"):
        Daemon(cfg, instrument=InstrumentConfig(calibration=str(bad)))
    rc = daemon_main(["--bundle", str(synthetic_bundle), "--input", "", "--output", "tcp://127.0.0.1:*",
                      "--calibration", str(bad), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and err.startswith("edge-daemon: error:") and "bad.json" in err


def test_predictions_carry_hygiene_fields(synthetic_bundle, calibration_file):
    good = load_spectra("synthetic:test").intensities[0].astype(np.float32)
    spiked = good.copy()
    spiked[700] += 4.0 * spiked.max()
    wide = np.arange(100.0, 3200.0, 1.5)
    lamp = synthetic_faults(np.zeros((1, wide.size)), wide, np.random.default_rng(1), laser_nm=785.0)["lamp"][0]
    instrument = InstrumentConfig(calibration=str(calibration_file), laser_nm=785.0)
    with RunningDaemon(synthetic_bundle, instrument=instrument) as d:
        d.tx.send(good, id="good")
        d.tx.send(spiked, id="spiked")
        d.tx.send(lamp.astype(np.float32), wide, id="lamp")
        preds, _ = d.messages(3)
        status = d.daemon.status()
    assert set(preds) == {"good", "spiked", "lamp"}
    for p in preds.values():
        assert p["calibration"]["id"] == "probe-1-cal" and len(p["calibration"]["sha256"]) == 64
    assert preds["good"]["spikes_removed"] == 0 and preds["spiked"]["spikes_removed"] == 1
    assert preds["good"]["quality"] == {"ok": True, "reasons": []} and preds["good"]["labels_trusted"]
    assert preds["spiked"]["labels"][0] == preds["good"]["labels"][0]
    lamp_p = preds["lamp"]
    assert lamp_p["quality"]["ok"] is False and "not_raman" in lamp_p["quality"]["reasons"]
    assert lamp_p["novel"] is True and lamp_p["labels_trusted"] is False and lamp_p["labels"]  # published
    h = status["hygiene"]
    assert h["quality_not_ok"] == 1 and h["quality_reasons"] == {"not_raman": 1} and h["spikes_removed"] == 1
