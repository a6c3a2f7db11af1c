"""The accuracy benchmark's peer feature extractors and classifiers on real RRUFF spectra (no CNN training)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bench.bench_accuracy import (
    PEAK_BIN_CM1,
    knn_scores,
    lr_scores,
    peak_count_features,
    peak_positions,
    snv_derivative,
)
from edge.data import load_npz
from edge.shift import shift_spectra

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def test_set(soysal):
    return load_npz(soysal / "raw_test.npz")


@pytest.fixture(scope="module")
def eight(test_set):
    x = test_set.intensities[:8]
    return x, test_set.raman_shift_cm1, peak_count_features(x, test_set.raman_shift_cm1)


def test_peak_count_features_shape_and_counts(eight):
    x, axis, f = eight
    span = axis[-1] - axis[0] + (axis[1] - axis[0])  # 1392 cm⁻¹
    assert f.shape == (8, int(np.ceil(span / PEAK_BIN_CM1)))  # 116 bins of 12 cm⁻¹
    assert f.dtype == np.float32 and np.all(f >= 0) and np.all(f == np.round(f))
    # every peak find_peaks_cwt reports lands in exactly one bin
    assert f.sum(axis=1).tolist() == [float(len(p)) for p in peak_positions(x)]
    # real mineral spectra have a handful of bands, not none and not hundreds
    assert np.all(f.sum(axis=1) >= 3) and np.all(f.sum(axis=1) <= 60)
    # the tallest band of each spectrum is detected within one bin of where it is
    for row, feats in zip(x, f, strict=True):
        b = int((axis[row.argmax()] - axis[0]) // PEAK_BIN_CM1)
        assert feats[max(0, b - 1):b + 2].sum() >= 1


def test_peak_counts_move_with_a_raman_shift(eight):
    """A +24 cm⁻¹ shift (edge.shift.shift_spectra) moves the peak histogram by two 12 cm⁻¹ bins; only peaks
    near the padded edge or at the detection threshold may differ."""
    x, axis, f = eight
    fs = peak_count_features(shift_spectra(x, 24.0), axis)
    moved = np.roll(f, 2, axis=1)
    diff = np.abs(fs[:, 4:-2] - moved[:, 4:-2]).sum(axis=1)
    assert np.all(diff <= 2)
    assert np.sum(diff == 0) >= 5
    # and it is not trivially so: unshifted features differ from the shifted ones
    assert np.abs(fs - f).sum() > 10


def test_knn_scores_rank_the_nearest_class_first(eight):
    from sklearn.neighbors import KNeighborsClassifier

    x, axis, f = eight
    y = np.arange(8)
    f_test = peak_count_features(shift_spectra(x, 2.0), axis)
    scores = knn_scores(f, y, f_test, 10)
    assert scores.shape == (8, 10)
    assert np.all(np.isneginf(scores[:, 8:]))  # classes without training spectra never win
    with warnings.catch_warnings():  # sklearn: 8 classes for 8 samples "could be a regression problem"
        warnings.simplefilter("ignore", UserWarning)
        pred = KNeighborsClassifier(n_neighbors=1).fit(f, y).predict(f_test)
    assert np.array_equal(scores.argmax(axis=1), pred)
    # several test sets from one fit
    a, b = knn_scores(f, y, [f, f_test], 10)
    assert np.array_equal(a.argmax(axis=1), y) and np.array_equal(b, scores)


def test_snv_derivative_rows_are_standardised(test_set):
    d = snv_derivative(test_set.intensities[:5])
    assert d.shape == (5, 1392) and d.dtype == np.float32
    assert np.allclose(d.mean(axis=1), 0, atol=1e-4) and np.allclose(d.std(axis=1), 1, atol=1e-3)


def test_logistic_regression_on_snv_derivative_beats_chance(soysal, test_set):
    """On the 10 minerals with the most 40 %-split training spectra, far above the 10 % chance level."""
    train = load_npz(soysal / "raw_train_labeled_40pct.npz")
    names, counts = np.unique(train.labels, return_counts=True)
    classes = list(names[np.lexsort((names, -counts))[:10]])
    mtr, mte = np.isin(train.labels, classes), np.isin(test_set.labels, classes)
    ytr = np.array([classes.index(v) for v in train.labels[mtr]])
    yte = np.array([classes.index(v) for v in test_set.labels[mte]])
    assert mte.sum() >= 30
    p = lr_scores(snv_derivative(train.intensities[mtr]), ytr, snv_derivative(test_set.intensities[mte]), 10)
    assert p.shape == (mte.sum(), 10) and np.allclose(p.sum(axis=1), 1.0)
    top1 = float(np.mean(p.argmax(axis=1) == yte))
    assert top1 >= 0.6, top1  # chance: 0.1 (measured: 0.88)


def test_versus_peers_and_dial_matched_targets_read_the_right_cells():
    """The per-column comparison takes the calibrated dial at 0 cm⁻¹ and the default under shifts, and calls
    a column won only when strictly ahead of the best peer."""
    from bench.bench_accuracy import COLUMNS, _targets, _versus_peers

    def method(values):  # values: {(split, shift): mean}
        splits = {}
        for (sp, sh), v in values.items():
            splits.setdefault(str(sp), {"shifts": {}})["shifts"][f"{float(sh):g}"] = {"top1": {"mean": v, "std": 0.0, "n": 3}}
        return {"splits": splits, "label": "x"}

    summary = {"compact": method({c: 70.0 for c in COLUMNS}),
               "compact_calibrated": method({c: (90.0 if c[1] == 0 else 10.0) for c in COLUMNS}),
               "lr_snv_deriv": method({c: (80.0 if c[1] == 0 else 5.0) for c in COLUMNS}),
               "minirocket": method({c: 70.0 for c in COLUMNS})}
    vs = _versus_peers(summary)
    assert vs["10 %"]["best_peer"] == "lr_snv_deriv" and vs["10 %"]["compact_ahead"] is False
    assert vs["10 %"]["compact_dial"] == 90.0 and vs["10 %"]["compact_dial_ahead"] is True
    # Shifted columns: the dial-matched row is the default model (70), tied with MiniRocket: not ahead.
    assert vs["40 % +30"]["compact_dial"] == 70.0 and vs["40 % +30"]["compact_dial_ahead"] is False
    t = _targets(summary, 3, "compact_dial")
    assert t["10%"]["mean"] == 90.0 and t["10%"]["met"] and t["40%+30"]["mean"] == 70.0 and not t["40%+30"]["met"]


def test_cached_cells_survive_settings_added_at_their_neutral_value():
    """A setting added later (``pool_blur``, ``members``) at the value that trains as before keeps the cell
    fingerprint, so cached cells stay valid; any other value is a new method. The compensated row trains the
    same network as ``compact`` but is its own cell."""
    import copy

    from bench.bench_accuracy import CURVE_SHIFTS_CM1 as SHIFTS_CM1
    from bench.bench_accuracy import _fingerprint, build_methods

    methods = {m.key: m for m in build_methods()}
    compact = methods["compact"]
    before = copy.deepcopy(compact)
    for name in ("pool_blur", "members"):
        before.settings["model"].pop(name)
    assert _fingerprint(before, SHIFTS_CM1) == _fingerprint(compact, SHIFTS_CM1)
    blurred = copy.deepcopy(compact)
    blurred.settings["model"]["pool_blur"] = 3
    assert _fingerprint(blurred, SHIFTS_CM1) != _fingerprint(compact, SHIFTS_CM1)
    comp = methods["compact_compensated"]
    assert comp.settings["drift_compensation"]["compensate_offset"] is True
    assert {k: v for k, v in comp.settings.items() if k not in ("drift_compensation", "stream")} == compact.settings
    assert _fingerprint(comp, SHIFTS_CM1) != _fingerprint(compact, SHIFTS_CM1)


def test_recipe_cv_draws_cover_every_class_and_never_touch_the_test_file(soysal):
    from bench.recipe_cv import draw

    pool = load_npz(soysal / "raw_train_labeled_40pct.npz")
    for n in (85, 170, 255):
        tr, va = draw(pool.labels, n, 1000)
        assert len(tr) == n and len(set(tr) | set(va)) == len(pool.labels) and not set(tr) & set(va)
        assert set(pool.labels[tr]) == set(pool.labels)  # every class keeps ≥ 1 training spectrum
    a, _ = draw(pool.labels, 85, 1000)
    b, _ = draw(pool.labels, 85, 1001)
    assert not np.array_equal(np.sort(a), np.sort(b))
    with pytest.raises(ValueError):
        draw(pool.labels, 10, 0)
