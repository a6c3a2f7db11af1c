"""Output a person reads: the demo's compact live view, the confusion matrix of the confused classes, plain
training lines off a terminal, and an export without the torchvision notices."""

import io
import logging
import shutil

import numpy as np
import pytest

from edge.demo_view import LiveView


def _pred(i, ok=True):
    return {"labels": ["Quartz" if ok else "Calcite"], "probabilities": [0.9], "label": "Quartz", "seq": i}


def test_live_view_is_a_few_lines_off_a_terminal():
    out = io.StringIO()
    view = LiveView(300, samples=5, stream=out)
    for i in range(300):
        view.prediction(_pred(i, ok=i % 10 != 0), f"spec-{i:05d}")
    view.lost_spectrum("seq 301: gap")
    view.close()
    lines = out.getvalue().splitlines()
    assert len(lines) <= 12, lines  # 5 samples, 3 quarter lines, the loss, the final line
    assert sum(line.startswith("  ok") or line.startswith("  --") for line in lines) == 5
    assert lines[-1].startswith("[demo] 301/300 answered · top-1 90.0 % · lost 1")
    quiet = io.StringIO()
    muted = LiveView(10, enabled=False, stream=quiet)
    for i in range(10):
        muted.prediction(_pred(i), "x")
    muted.close()
    assert quiet.getvalue() == "" and muted.received == 10 and muted.correct == 10


def test_confusion_png_shows_only_confused_classes(tmp_path):
    pytest.importorskip("matplotlib")
    from trainer.report import confused_classes, plot_confusion

    cm = np.diag(np.full(63, 2))
    cm[3, 40] = 1
    cm[10, 3] = 2
    assert confused_classes(cm).tolist() == [3, 10, 40]
    assert confused_classes(np.diag([1, 2, 3])).size == 0
    classes = [f"mineral-{i}" for i in range(63)]
    few = plot_confusion(cm.tolist(), classes, tmp_path / "cm.png")
    none = plot_confusion(np.diag(np.full(63, 2)).tolist(), classes, tmp_path / "none.png")
    import matplotlib.image

    h, w = matplotlib.image.imread(str(few)).shape[:2]
    assert few.stat().st_size > 5000 and none.stat().st_size > 1000
    assert w < 1000 and h < 1000  # 3 classes drawn, not a 63 × 63 grid


def test_training_prints_a_few_plain_lines_off_a_terminal(caplog):
    pytest.importorskip("torch")
    from edge.data import load_spectra
    from trainer.settings import TrainerSettings
    from trainer.train import fit

    s = TrainerSettings()
    s.training.max_epochs = s.training.min_epochs = 8
    with caplog.at_level(logging.INFO, logger="trainer"):
        fit(load_spectra("synthetic:train").subset(slice(0, 48)), s.preprocessing, s.model, s.training,
            s.augmentation, progress="lines")
    lines = [r.getMessage() for r in caplog.records if r.name == "trainer" and r.getMessage().startswith("epoch")]
    assert [line.split(":")[0] for line in lines] == ["epoch 2/8", "epoch 4/8", "epoch 6/8", "epoch 8/8"]


def test_export_prints_no_torchvision_notices(synthetic_bundle, tmp_path):
    from edge.bundle import Bundle
    from export.onnx_export import _REGISTRATION_LOGGER, export_fp32

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    copy = tmp_path / "b"
    shutil.copytree(synthetic_bundle, copy)
    seen = Collect()
    _REGISTRATION_LOGGER.addHandler(seen)  # the logger's filter runs before any of its handlers
    try:
        export_fp32(Bundle.load(copy))
    finally:
        _REGISTRATION_LOGGER.removeHandler(seen)
    assert not [m for m in seen.messages if "torchvision" in m]
    assert _REGISTRATION_LOGGER.filters[0].filter(logging.makeLogRecord({"msg": "another warning"}))  # narrow
