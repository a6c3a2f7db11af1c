"""``edge-eval novelty`` (trainer/evaluate.py): detector metrics, the deep nearest-neighbour score, and a short
leave-classes-out run on the real splits."""

import argparse

import numpy as np
import pytest

pytest.importorskip("torch")

from trainer.autoencoder import AEConfig, nearest_neighbour_distance
from trainer.evaluate import DETECTORS, detector_metrics, leave_classes_out, library_diagnostics


def test_detector_metrics_on_separable_and_overlapping_scores():
    m = detector_metrics(np.arange(10.0), np.arange(10.0) + 10, threshold=8.5)
    assert m["auroc"] == 1.0 and m["false_alarm_rate"] == pytest.approx(0.1) and m["detection_rate"] == 1.0
    m = detector_metrics(np.arange(10.0), np.arange(10.0), threshold=8.5)
    assert m["auroc"] == pytest.approx(0.5) and m["fpr_at_95tpr"] >= 0.9


def _bands(centres_cm1, axis=None):
    axis = np.arange(200.0, 1000.0) if axis is None else axis
    return sum(np.exp(-0.5 * ((axis - c) / 4.0) ** 2) for c in centres_cm1)


def test_library_diagnostics_separate_classifier_errors_from_detector_errors():
    """Three known minerals and one unknown: a known spectrum the classifier names wrongly is a false alarm
    that a perfect classifier removes (AUROC with the true class = 1); a novel spectrum with the bands of a
    known mineral is a miss, reported with the mineral it was named after."""
    from edge.novelty import SpectralLibrary

    known = {"A": [300, 520, 800], "B": [400, 650], "C": [350, 700, 900]}
    lib_x = np.stack([_bands(c) for c in known.values()])
    lib = SpectralLibrary.from_spectra(lib_x, list(known), list(known), 3.0, 1.0)
    x = np.stack([_bands(known["A"]), _bands(known["B"]), _bands(known["C"]),  # seen; C named as A
                  _bands([330, 600, 750]),                                       # novel, unlike anything
                  _bands([301, 519, 801])])                                      # novel, A's twin
    labels = np.array(["A", "B", "C", "N1", "N2"])
    predicted = np.array(["A", "B", "A", "B", "A"])
    novel = np.array([False, False, False, True, True])
    score = lib.scores(x, predicted)[0]
    g = library_diagnostics(lib, x, score, predicted, labels, novel, threshold=0.3)
    # the twin N2 scores below the misclassified C: one pair of six out of order
    assert detector_metrics(score[~novel], score[novel], 0.3)["auroc"] == pytest.approx(5 / 6)
    assert g["auroc_true_class"] == 1.0 and g["auroc_correct_only"] == 1.0
    assert [(m["label"], m["predicted"]) for m in g["misses"]] == [("N2", "A")]
    assert [(f["label"], f["predicted"], f["correct"]) for f in g["false_alarms"]] == [("C", "A", False)]


def test_nearest_neighbour_distance_skips_self_only_when_asked():
    lib = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    assert np.allclose(nearest_neighbour_distance(lib, lib), 0.0)
    loo = nearest_neighbour_distance(lib, lib, leave_one_out=True)
    norm = np.hypot(0.9, 0.1)
    np.testing.assert_allclose(loo, [1 - 0.9 / norm, 1 - 0.9 / norm, 1 - 0.1 / norm])
    # Scale does not matter (cosine); a query orthogonal to the whole library is at distance 1.
    np.testing.assert_allclose(nearest_neighbour_distance(np.array([[0.0, 5.0]]), lib[:2] * 3), [1 - 0.1 / norm])
    np.testing.assert_allclose(nearest_neighbour_distance(np.array([[0.0, -2.0]]), lib[:1]), [1.0])
    with pytest.raises(ValueError, match="leave_one_out"):
        nearest_neighbour_distance(lib[:2], lib, leave_one_out=True)


def test_leave_classes_out_short_run_on_real_data(soysal):
    """k = 5 classes withheld from the real 40 % split, one draw, short training: every detector is scored,
    withheld classes never reach training, and the deep nearest-neighbour and spectral-library detectors
    already separate novel from nominal spectra better than chance."""
    from edge.data import load_spectra
    from trainer.cli import settings_from_args

    train = load_spectra(soysal / "raw_train_labeled_40pct.npz")
    test = load_spectra(soysal / "raw_test.npz")

    def settings():
        return settings_from_args(argparse.Namespace(config=None, seed=0, epochs=None, steps=200, pool_size=None,
                                                     n_pool=None, head=None, threads=1))

    out = leave_classes_out(train, test, settings, AEConfig(max_epochs=3, folds=2, threads=1), ks=[5], draws=1,
                            epochs=None, seed=0)
    (run,) = out["runs"]
    assert run["n_train"] == int(np.sum(~np.isin(train.labels, run["withheld"]))) < len(train)
    assert set(run["detectors"]) == set(DETECTORS)
    for m in run["detectors"].values():
        assert 0.0 <= m["auroc"] <= 1.0 and m["n_novel"] == int(np.isin(test.labels, run["withheld"]).sum()) > 0
    assert run["detectors"]["knn"]["auroc"] > 0.6
    # the spectral library (the daemon's default detector) too, with its threshold from training spectra only
    assert run["detectors"]["library"]["auroc"] > 0.6
    assert run["detectors"]["library"]["threshold"] > 0.0
    assert out["summary"]["5"]["knn"]["auroc_per_draw"] == [run["detectors"]["knn"]["auroc"]]
    # where the library loses: its misses and false alarms are exactly the counted ones
    lib, g = run["detectors"]["library"], run["library_diagnostics"]
    assert len(g["misses"]) == round((1 - lib["detection_rate"]) * lib["n_novel"])
    assert len(g["false_alarms"]) == round(lib["false_alarm_rate"] * lib["n_nominal"])
    assert set(m["label"] for m in g["misses"]) <= set(run["withheld"])
    assert all(m["score"] <= lib["threshold"] < f["score"] for m in g["misses"] for f in g["false_alarms"])
    assert 0.0 <= g["auroc_true_class"] <= 1.0 and 0.0 <= g["auroc_correct_only"] <= 1.0
    assert out["summary"]["5"]["library"]["diagnostics"]["seen_top1"] == run["seen_top1"]


def test_step_stream_behind_drift_compensation(novelty_bundle, soysal):
    """edge-eval's drift stream with a 10 cm⁻¹ step, through a bundle's models: uncompensated, the offset
    estimate finds the step; compensated, the correction converges on it, the alarm still fires, and top-1
    after the step does not fall below the uncompensated run's."""
    import dataclasses

    from edge.bundle import Bundle
    from edge.data import load_spectra
    from edge.novelty import DriftConfig
    from edge.preprocess import Preprocessor
    from trainer.evaluate import _models_from_bundle, _stream_top1, make_stream, run_stream

    models = _models_from_bundle(str(novelty_bundle["path"]))
    test = load_spectra(soysal / "raw_test.npz")
    pre = Preprocessor(Bundle.load(novelty_bundle["path"]).preprocessing)
    s = make_stream(test, "step", np.random.default_rng(0), noise=0.01)
    cfg = DriftConfig()
    plain = run_stream(models, pre, s, cfg, 1.0)
    comp = run_stream(models, pre, s, dataclasses.replace(cfg, compensate_offset=True), 1.0)
    assert abs(plain["offset_estimate"][-1] - 10.0) < 2.0 and np.all(plain["trace"]["correction"] == 0.0)
    assert abs(comp["trace"]["correction"][-1] - 10.0) < 2.0 and abs(comp["offset_estimate"][-1] - 10.0) < 2.0
    assert [a["kind"] for a in comp["alarms"]].count("offset") == 1
    assert _stream_top1(models, test, s, comp, 300) >= _stream_top1(models, test, s, plain, 300) - 0.02
