"""Novelty and drift through the daemon, end to end over ZeroMQ on 127.0.0.1 (random ports, bounded waits,
linger 0), with a real bundle and real test spectra."""

from __future__ import annotations

import numpy as np
import pytest
from daemon_harness import RunningDaemon

from edge.bundle import Bundle
from edge.daemon import Daemon, DaemonConfig
from edge.data import load_spectra
from edge.errors import ConfigError
from edge.novelty import NoveltyModel
from edge.preprocess import Preprocessor
from edge.shift import shift_spectra


def _Daemon(bundle, **kw) -> RunningDaemon:
    return RunningDaemon(bundle, topics=("prediction", "drift", "error"), **kw)


def _collect(d: RunningDaemon, n_pred: int, timeout_s: float = 30.0):
    """Predictions by id, and the drift messages (drift follows its batch's predictions)."""
    preds, other = d.messages(n_pred, timeout_s=timeout_s, trailing_s=0.3)
    return preds, other["drift"]


@pytest.fixture(scope="module")
def test_set(soysal):
    return load_spectra(soysal / "raw_test.npz")


def _offline(bundle: Bundle, test_set, predicted=None, detector: str = "auto"):
    m = NoveltyModel(bundle, precision="auto", detector=detector)
    m.load()
    try:
        return m.score(Preprocessor(bundle.preprocessing)(test_set.intensities, test_set.raman_shift_cm1), predicted)
    finally:
        m.close()


def test_predictions_carry_novelty_fields_matching_offline_scores(novelty_bundle, test_set):
    """Default ``novelty_detector = "auto"``: the bundle's spectral library decides ``novel``; the
    autoencoder's reconstruction error is published next to it, both as scored offline."""
    path = novelty_bundle["path"]
    b = Bundle.load(path)
    with _Daemon(path, drift={"warmup": 50, "compensate_offset": False}) as d:
        for i in range(len(test_set)):
            d.tx.send(test_set.intensities[i], test_set.raman_shift_cm1, id=f"s{i}")
        preds, _ = _collect(d, len(test_set))
        status = d.daemon.status()
    assert len(preds) == len(test_set)
    top1 = [preds[f"s{i}"]["labels"][0] for i in range(len(test_set))]
    offline = _offline(b, test_set, top1)
    lib_thr = b.manifest["novelty"]["library"]["threshold"]
    for i in range(len(test_set)):
        p = preds[f"s{i}"]
        assert p["novelty_detector"] == "library"
        assert p["novelty_threshold"] == pytest.approx(lib_thr)
        assert p["novelty_score"] == p["library_score"] == pytest.approx(float(offline["library_score"][i]), abs=1e-6)
        # the autoencoder does not decide here: it runs after publishing, for the drift monitor only
        assert "reconstruction_error" not in p and "reconstruction_mse" not in p
        assert p["novel"] is bool(offline["novel"][i])
        assert p["novel"] == (p["novelty_score"] > lib_thr)
    flagged = np.mean([preds[f"s{i}"]["novel"] for i in range(len(test_set))])
    assert 0.0 < flagged < 0.25  # known minerals: about 1 − quantile of them, and never all
    assert status["novelty"]["metric"] == "line_cosine" and status["novelty"]["detector"] == "library"
    assert status["drift"]["seen"] == len(test_set)
    # ... and the drift monitor's novelty and residual channels were fed the autoencoder's scores (a channel
    # never fed would keep the monitor warming up)
    assert status["drift"]["warming_up"] is False
    assert status["counters"]["drift_errors"] == 0


def test_autoencoder_can_decide_novel_instead(novelty_bundle, test_set):
    path = novelty_bundle["path"]
    b = Bundle.load(path)
    # Compared with offline scores of the uncorrected spectra: drift compensation off (its estimates depend on how
    # the messages fall into batches, which the machine's load decides; an applied correction moves the score).
    with _Daemon(path, novelty_detector="autoencoder", drift={"compensate_offset": False}) as d:
        for i in range(20):
            d.tx.send(test_set.intensities[i], test_set.raman_shift_cm1, id=f"s{i}")
        preds, _ = _collect(d, 20)
    offline = _offline(b, test_set)  # no predictions: the autoencoder decides
    thr = b.manifest["novelty"]["threshold"]
    for i in range(20):
        p = preds[f"s{i}"]
        assert p["novelty_detector"] == "autoencoder" and p["novelty_threshold"] == pytest.approx(thr)
        assert p["novelty_score"] == p["reconstruction_error"] and p["reconstruction_mse"] > 0
        assert p["novelty_score"] == pytest.approx(float(offline["novelty_score"][i]), rel=1e-5, abs=1e-7)
        assert p["library_score"] is not None  # still computed and published
        assert p["novel"] == (p["novelty_score"] > thr)


def test_a_class_without_library_spectra_is_judged_by_the_autoencoder(novelty_bundle, test_set):
    """A mineral added onboard by head-only transfer has no library spectra: the autoencoder decides for that
    spectrum (and its scores are then in the published fields), the library for the others."""
    b = Bundle.load(novelty_bundle["path"])
    m = NoveltyModel(b, precision="auto")
    m.load()
    try:
        x = Preprocessor(b.preprocessing)(test_set.intensities[:4], test_set.raman_shift_cm1)
        known = list(test_set.labels[:4])
        only_library = m.decide(x, known)
        mixed = m.decide(x, ["Transferite", *known[1:]])
        full = m.score(x, known)
    finally:
        m.close()
    assert "reconstruction_error" not in only_library and list(only_library["novelty_detector"]) == ["library"] * 4
    assert list(mixed["novelty_detector"]) == ["autoencoder", "library", "library", "library"]
    assert np.isnan(mixed["library_score"][0])
    assert mixed["novelty_score"][0] == mixed["reconstruction_error"][0] == pytest.approx(full["reconstruction_error"][0])
    assert mixed["novelty_threshold"][0] == b.manifest["novelty"]["threshold"]
    assert np.allclose(mixed["novelty_score"][1:], only_library["novelty_score"][1:])
    assert np.allclose(full["novelty_score"], only_library["novelty_score"])


def test_bad_novelty_detector_settings_are_config_errors(novelty_bundle, tmp_path):
    import shutil

    with pytest.raises(ConfigError, match="novelty_detector"):
        DaemonConfig.from_dict({"bundle": "x", "novelty_detector": "oracle"})
    no_lib = tmp_path / "bundle"
    shutil.copytree(novelty_bundle["path"], no_lib)
    b = Bundle.load(no_lib)
    del b.manifest["novelty"]["library"]
    b.save()
    with pytest.raises(ConfigError, match="no spectral library"):
        Daemon(DaemonConfig(bundle=str(no_lib), novelty_detector="library"))
    assert NoveltyModel(Bundle.load(no_lib), detector="auto").detector == "autoencoder"


def test_a_bundle_from_before_band_profiles_keeps_its_signed_line_library(novelty_bundle, test_set, soysal,
                                                                          tmp_path):
    """A library section without ``band_power`` holds signed line components and is scored as such."""
    import shutil

    from edge.novelty import LIBRARY_FILE, SpectralLibrary

    old = tmp_path / "bundle"
    shutil.copytree(novelty_bundle["path"], old)
    b = Bundle.load(old)
    x = Preprocessor(b.preprocessing)(test_set.intensities, test_set.raman_shift_cm1)
    new_lib, _ = SpectralLibrary.from_bundle(b)
    assert new_lib.band_power is not None
    with np.load(b.file(LIBRARY_FILE)) as d:
        labels = d["labels"][d["classes"]]
    train = load_spectra(soysal / "raw_train_labeled_40pct.npz")
    legacy = SpectralLibrary.from_spectra(Preprocessor(b.preprocessing)(train.intensities, train.raman_shift_cm1),
                                          train.labels, b.labels, 3.0, b.grid.step_cm1, band_power=None)
    assert [str(v) for v in labels] == [str(v) for v in train.labels]
    np.savez(old / LIBRARY_FILE, **legacy.arrays())
    del b.manifest["novelty"]["library"]["band_power"]
    b.add_file(LIBRARY_FILE, role="novelty-spectral-library")  # re-hash the replaced file
    b.save()
    lib, _ = SpectralLibrary.from_bundle(Bundle.load(old))
    assert lib.band_power is None
    s, _ = lib.scores(x, test_set.labels)
    assert np.allclose(s, legacy.scores(x, test_set.labels)[0])
    assert not np.allclose(s, new_lib.scores(x, test_set.labels)[0], atol=0.05)


def test_drift_alarm_and_reference_line_over_zeromq(novelty_bundle, test_set):
    """200 nominal spectra, then the same spectra offset by 12 cm⁻¹: an ``offset`` alarm on the drift topic,
    dated after the change, with the estimated offset; a silicon-like reference spectrum is measured."""
    rng = np.random.default_rng(7)
    idx = rng.integers(0, len(test_set), 320)
    raw = test_set.intensities[idx].copy()
    raw[200:] = shift_spectra(raw[200:], 12.0)
    axis = np.linspace(300, 800, 501)
    silicon = 1000 / (1 + ((axis - 521.9) / 2.0) ** 2) + 50.0
    with _Daemon(novelty_bundle["path"], drift={"warmup": 50, "offset_window": 15}) as d:
        for i in range(len(raw)):
            d.tx.send(raw[i], test_set.raman_shift_cm1, id=f"s{i}")
        d.tx.send(silicon, axis, id="si", label="silicon")
        preds, drift = _collect(d, len(raw) + 1)
        status = d.daemon.status()
    assert len(preds) == len(raw) + 1
    offset = [e for e in drift if e["kind"] == "offset"]
    assert len(offset) == 1, drift
    e = offset[0]
    first_shifted = preds["s200"]["seq"]
    assert first_shifted <= e["detected_seq"] <= first_shifted + 30
    assert e["change_seq"] is not None and first_shifted - 10 <= e["change_seq"] <= e["detected_seq"]
    assert e["threshold"] == 3.0 and e["statistic"] > 3.0 and e["detected_ns"] > 0
    assert abs(status["drift"]["offset_cm1"] - 12.0) < 2.0
    ref = [e for e in drift if e["kind"] == "reference"]
    assert len(ref) == 1 and ref[0]["reference_offset_cm1"] == pytest.approx(1.2, abs=0.3)
    assert ref[0]["detected_seq"] == preds["si"]["seq"]
    assert status["drift"]["reference_offset_cm1"] == pytest.approx(1.2, abs=0.3)


def test_daemon_without_novelty_has_no_novelty_fields(novelty_bundle, test_set):
    with _Daemon(novelty_bundle["path"], novelty=False) as d:
        d.tx.send(test_set.intensities[0], test_set.raman_shift_cm1, id="s0")
        preds, drift = _collect(d, 1)
    assert "novelty_score" not in preds["s0"] and drift == []


def test_drift_compensation_corrects_a_30_cm1_offset_over_zeromq(novelty_bundle, test_set):
    """Every real test spectrum offset by +30 cm⁻¹, sent twice in random order, with ``compensate_offset``:
    once the moving-median estimate exists, predictions are preprocessed with it removed and say so
    (``offset_correction_cm1`` ≈ 30), the estimate still reports the instrument's own offset (so the offset
    alarm fires), and the corrected predictions beat the same spectra classified uncorrected."""
    b = Bundle.load(novelty_bundle["path"])
    labels = b.labels
    rng = np.random.default_rng(3)
    idx = rng.permutation(np.tile(np.arange(len(test_set)), 2))
    raw = shift_spectra(test_set.intensities[idx], 30.0)
    with _Daemon(novelty_bundle["path"], drift={"compensate_offset": True, "offset_window": 15}) as d:
        for i in range(len(raw)):
            d.tx.send(raw[i], test_set.raman_shift_cm1, id=f"s{i}")
        preds, drift = _collect(d, len(raw))
        status = d.daemon.status()
    corr = np.array([preds[f"s{i}"]["offset_correction_cm1"] for i in range(len(raw))])
    # Before the estimate exists nothing is corrected; a first micro-batch large enough to bring the compensation in
    # is corrected from its first spectrum (the daemon's start-up step), else the estimate comes within a few batches
    first = int(np.flatnonzero(corr)[0])
    assert first <= 80  # micro-batches under this backlog hold up to max_batch
    if first == 0:  # only a first micro-batch of at least offset_min_estimates (5) spectra can bring it in itself
        assert preds["s0"]["batch_size"] >= 5
    late = np.arange(len(raw)) >= first + 30
    assert np.all(np.abs(corr[late] - 30.0) < 3.0), corr[late]
    assert abs(status["drift"]["offset_cm1"] - 30.0) < 3.0
    assert [e["kind"] for e in drift].count("offset") == 1
    y = np.array([labels.index(c) for c in test_set.labels[idx]])
    top1 = np.array([preds[f"s{i}"]["labels"][0] == labels[y[i]] for i in range(len(raw))])
    with _Daemon(novelty_bundle["path"], drift={"compensate_offset": False}) as d:  # the same spectra, uncorrected
        for i in np.flatnonzero(late):
            d.tx.send(raw[i], test_set.raman_shift_cm1, id=f"s{i}")
        plain, _ = _collect(d, int(late.sum()))
    top1_plain = np.array([plain[f"s{i}"]["labels"][0] == labels[y[i]] for i in np.flatnonzero(late)])
    assert "offset_correction_cm1" in plain[f"s{np.flatnonzero(late)[0]}"]
    assert top1[late].mean() > top1_plain.mean() + 0.03, (top1[late].mean(), top1_plain.mean())


def test_drift_compensation_is_refused_without_novelty(novelty_bundle):
    with pytest.raises(ConfigError, match="compensate_offset"):
        Daemon(DaemonConfig(bundle=str(novelty_bundle["path"]), novelty=False, drift={"compensate_offset": True}))
    with pytest.raises(ConfigError, match="compensate_offset"):
        Daemon(DaemonConfig(bundle=str(novelty_bundle["path"]), drift={"compensate_offset": "yes"}))


def test_a_foreign_exception_in_drift_bookkeeping_costs_only_that_batch(novelty_bundle, test_set):
    """Drift bookkeeping runs after a batch's predictions are out; a library bug there (here a ZeroDivisionError
    injected into the novelty service) is counted in ``drift_errors`` and the daemon keeps classifying. Before,
    only the project's own errors were caught and a foreign one stopped the daemon."""
    with _Daemon(novelty_bundle["path"]) as d:
        real_observe = d.daemon.novelty.observe
        calls = []

        def failing_once(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise ZeroDivisionError("injected")
            return real_observe(*args, **kwargs)

        d.daemon.novelty.observe = failing_once
        d.tx.send(test_set.intensities[0], test_set.raman_shift_cm1, id="first")
        first, _ = _collect(d, 1)
        for i in range(1, 6):
            d.tx.send(test_set.intensities[i], test_set.raman_shift_cm1, id=f"s{i}")
        later, _ = _collect(d, 5)
        status = d.daemon.status()
    assert set(first) == {"first"} and set(later) == {f"s{i}" for i in range(1, 6)}
    assert status["counters"]["drift_errors"] == 1
    assert len(calls) >= 2  # the drift monitor went on with the next batches
