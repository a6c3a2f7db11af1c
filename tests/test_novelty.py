"""Novelty and drift (issue 4): Page–Hinkley, offset estimation on real spectra, the autoencoder's nominal-only
threshold, its manifest record and its ONNX parity."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from edge.data import load_spectra
from edge.errors import BundleError, ConfigError, PreprocessError
from edge.novelty import (
    LIBRARY_BAND_POWER,
    DriftConfig,
    DriftMonitor,
    PageHinkley,
    SpectralLibrary,
    band_profiles,
    estimate_offsets,
    highpass,
    line_residual_score,
    reconstruction_error,
    reference_line_offset,
)
from edge.preprocess import Preprocessor
from edge.shift import shift_spectra

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_ONNX = importlib.util.find_spec("onnx") is not None


# -- Page–Hinkley ----------------------------------------------------------------------------------------
def test_page_hinkley_quiet_on_stationary_noise():
    rng = np.random.default_rng(0)
    ph = PageHinkley(delta=0.5, threshold=15.0)
    alarms = sum(ph.update(float(v)) for v in rng.standard_normal(50_000))
    assert alarms == 0


def test_page_hinkley_detects_a_step_and_dates_it():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(2000)
    x[1000:] += 1.5
    ph = PageHinkley(delta=0.5, threshold=15.0)
    fired = [i for i, v in enumerate(x) if ph.update(float(v), tag=i)]
    assert fired, "a 1.5 sigma step must be detected"
    assert 1000 <= fired[0] <= 1060  # expected delay ≈ λ / (Δ − δ) = 15 spectra
    assert 990 <= ph.change_tag <= fired[0]  # the change is dated near the step, not at the alarm
    assert len(fired) == 1  # the test resets: a persisting change raises one alarm


def test_page_hinkley_rejects_bad_settings():
    with pytest.raises(ConfigError):
        PageHinkley(delta=-1)
    with pytest.raises(ConfigError):
        DriftConfig.from_dict({"channels": ["novelty", "bogus"]})
    with pytest.raises(ConfigError):
        DriftConfig.from_dict({"warmup": 200, "nonsense": 1})


# -- scores and offsets on real spectra ------------------------------------------------------------------
@pytest.fixture(scope="module")
def real(soysal):
    pre = Preprocessor()
    tr = load_spectra(soysal / "raw_train_labeled_40pct.npz")
    te = load_spectra(soysal / "raw_test.npz")
    classes = tr.classes
    xtr = pre(tr.intensities, tr.raman_shift_cm1)
    refs = np.stack([xtr[tr.labels == c].mean(axis=0) for c in classes])
    y = np.array([classes.index(c) for c in te.labels])
    return {"pre": pre, "test": te, "refs": refs, "y": y, "classes": classes}


def test_scores_are_zero_for_a_perfect_reconstruction_and_grow_with_mismatch(real):
    x = real["pre"](real["test"].intensities[:20])
    assert np.allclose(reconstruction_error(x, x), 0)
    assert np.allclose(line_residual_score(x, x), 0, atol=1e-9)
    shifted = real["pre"](shift_spectra(real["test"].intensities[:20], 8.0))
    assert np.all(line_residual_score(x, shifted) > 0.05)
    # the line residual ignores a smooth background, the plain MSE does not
    bg = x + 0.5 * np.linspace(0, 1, x.shape[1])[None, :]
    assert np.max(line_residual_score(x, bg)) < 0.02
    assert np.min(reconstruction_error(x, bg)) > 0.05
    h = highpass(np.ones((2, 100)))
    assert np.allclose(h, 0)


@pytest.mark.parametrize("shift", [-12.6, 4.3, 17.5])
def test_offset_estimator_recovers_a_known_shift_on_real_spectra(real, shift):
    te = real["test"]
    x = real["pre"](shift_spectra(te.intensities, shift, 1.0))
    off, quality, _ = estimate_offsets(x, real["refs"], real["y"][:, None], max_lag=40)
    good = quality >= 0.5
    assert good.mean() > 0.6
    # single spectra scatter by a few cm⁻¹ (other instruments, other samples); their median does not
    assert abs(np.median(off[good]) - shift) < 1.0
    assert np.mean(np.abs(off[good] - shift) < 2.0) > 0.45
    # without knowing the class (all references as candidates) the median is still within 2 cm⁻¹
    off_all, q_all, _ = estimate_offsets(x, real["refs"], None, max_lag=40)
    assert abs(np.median(off_all[q_all >= 0.5]) - shift) < 2.0


def test_drift_monitor_offset_alarm_and_estimate_on_a_real_stream(real):
    """Nominal real spectra, then a 10 cm⁻¹ step: one offset alarm, soon, dated at the step; the moving-median
    estimate ends within 2 cm⁻¹ of the truth. No class information: every reference is a candidate."""
    te, rng = real["test"], np.random.default_rng(3)
    idx = rng.integers(0, len(te), 400)
    raw = te.intensities[idx].copy()
    raw[250:] = shift_spectra(raw[250:], 10.0)
    x = real["pre"](raw)
    mon = DriftMonitor(DriftConfig(warmup=50, channels=()), real["refs"], 1.0)
    events = []
    for a in range(0, len(x), 8):
        events += mon.update(np.arange(a, a + 8), a, spectra=x[a:a + 8])
    assert [e["kind"] for e in events] == ["offset"]
    assert 250 <= events[0]["detected_seq"] <= 250 + 30
    assert 230 <= events[0]["change_seq"] <= events[0]["detected_seq"]
    assert abs(mon.offset_cm1 - 10.0) < 2.0
    assert mon.status()["offset_cm1"] == pytest.approx(mon.offset_cm1)


def test_compensated_spectra_still_report_the_instruments_own_offset(real):
    """With ``compensate_offset``, spectra reach the monitor already corrected; adding back what was applied
    keeps the estimate on the instrument's offset (+20 cm⁻¹ here, whatever correction was applied), and the
    correction follows it."""
    te = real["test"]
    raw = shift_spectra(te.intensities, 20.0)
    for applied in (0.0, 15.0, 24.0):
        mon = DriftMonitor(DriftConfig(channels=(), compensate_offset=True), real["refs"], 1.0)
        assert mon.correction_cm1 == 0.0  # no estimate yet
        x = real["pre"](raw, None, offset_cm1=applied)
        for a in range(0, len(x), 8):
            mon.update(np.arange(a, min(a + 8, len(x))), a, spectra=x[a:a + 8], applied_offset_cm1=applied)
        assert abs(mon.offset_cm1 - 20.0) < 1.5, applied
        assert mon.correction_cm1 == pytest.approx(mon.offset_cm1)
    off = DriftMonitor(DriftConfig(channels=(), compensate_offset=False), real["refs"], 1.0)  # estimate, no correction
    off.update(np.arange(len(raw)), 0, spectra=real["pre"](raw))
    assert abs(off.offset_cm1 - 20.0) < 1.5 and off.correction_cm1 == 0.0


def test_background_channel_finds_growing_fluorescence_and_stays_quiet_on_nominal(real):
    """Real spectra in random order: 3 000 nominal ones raise no background alarm; a broad background growing
    from 0 to 100 % of the peak height over 600 spectra is found, dated after the growth began, and not long
    after it crossed 20 % (spectrum 420). The default δ = 0.5 of the other statistics would not find it in
    time: the per-channel setting is what makes the difference."""
    te, rng = real["test"], np.random.default_rng(5)
    axis = te.raman_shift_cm1
    bg = np.exp(-0.5 * ((axis - 1400.0) / 500.0) ** 2).astype(np.float32)

    def stream(n, ramp):
        idx = rng.integers(0, len(te), n)
        raw = te.intensities[idx].astype(np.float32)
        peak = np.abs(raw).max(axis=1, keepdims=True)
        raw = raw + rng.standard_normal(raw.shape).astype(np.float32) * 0.01 * peak
        if ramp:
            amp = np.r_[np.zeros(300), np.linspace(1 / 600, 1.0, n - 300)].astype(np.float32)
            raw = raw + amp[:, None] * peak * bg
        return real["pre"](raw)

    def alarms(x, cfg):
        mon = DriftMonitor(cfg, None, 1.0)
        out = []
        for a in range(0, len(x), 16):
            out += mon.update(np.arange(a, min(a + 16, len(x))), a, spectra=x[a:a + 16])
        return out

    cfg = DriftConfig(channels=("background",))
    assert alarms(stream(3000, False), cfg) == []
    ramp = stream(900, True)
    found = alarms(ramp, cfg)
    assert found and found[0]["kind"] == "background"
    assert 300 <= found[0]["change_seq"] and found[0]["detected_seq"] <= 420 + 200
    assert found[0]["delta"] == cfg.background_delta and found[0]["threshold"] == cfg.background_threshold
    slow = alarms(ramp, DriftConfig(channels=("background",), background_delta=0.5, background_threshold=15.0))
    assert not slow or slow[0]["detected_seq"] > found[0]["detected_seq"]


def test_reference_line_offset_on_a_silicon_like_line():
    # No silicon spectrum in the shared data: a Lorentzian line (FWHM 4 cm⁻¹) on a sloped background,
    # sampled on a non-uniform axis as an instrument reports it.
    rng = np.random.default_rng(5)
    axis = np.sort(rng.uniform(300, 800, 900))
    for true in (520.7 + 2.35, 520.7 - 1.2):
        y = 1000 / (1 + ((axis - true) / 2.0) ** 2) + 0.3 * axis + rng.normal(0, 2, axis.size)
        off, prominence = reference_line_offset(y, axis, 520.7)
        assert off == pytest.approx(true - 520.7, abs=0.3)
        assert prominence > 500
    with pytest.raises(PreprocessError):
        reference_line_offset(np.ones(10), np.arange(10.0), 520.7)


# -- spectral library -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def library(soysal, real):
    tr = load_spectra(soysal / "raw_train_labeled_40pct.npz")
    x = real["pre"](tr.intensities, tr.raman_shift_cm1)
    return SpectralLibrary.from_spectra(x, tr.labels, real["classes"], 3.0, 1.0), x, tr


def test_library_spectrum_matches_itself_within_the_shift_tolerance(library):
    lib, x, tr = library
    score, match = lib.scores(x[:40], tr.labels[:40])
    assert np.all(score < 1e-3) and np.array_equal(match, np.arange(40))  # float16 storage: < 1e-3
    for shift, inside in ((2.0, True), (3.0, True), (8.0, False)):
        s, m = lib.scores(shift_spectra(x[:40], shift, 1.0), tr.labels[:40])
        if inside:
            assert np.median(s) < 0.02 and np.mean(m == np.arange(40)) > 0.9
        else:
            assert np.median(s) > 0.1


def test_library_score_is_class_conditional_and_nan_for_an_unknown_class(library, real):
    lib, _x, _tr = library
    te = real["test"]
    xt = real["pre"](te.intensities)
    own, _ = lib.scores(xt, te.labels)
    other = np.array([real["classes"][(real["classes"].index(c) + 1) % 63] for c in te.labels])
    wrong, _ = lib.scores(xt, other)
    # a real test spectrum matches the training spectra of its own mineral far better than of another
    assert np.median(own) < 0.5 < np.median(wrong)
    assert np.mean(own < wrong) > 0.9
    s, m = lib.scores(xt[:3], ["Unobtainium", te.labels[1], "Unobtainium"])
    assert np.isnan(s[[0, 2]]).all() and np.isfinite(s[1]) and list(m[[0, 2]]) == [-1, -1]


def test_library_reuses_the_line_components_of_the_residual_score(library, real):
    from edge.novelty import residual_scores

    lib, _, _ = library
    te = real["test"]
    xt = real["pre"](te.intensities[:30])
    r = np.roll(xt, 2, axis=1)  # any "reconstruction"
    line, mse, unit = residual_scores(xt, r, return_line_components=True)
    assert np.allclose(line, residual_scores(xt, r)[0]) and np.allclose(mse, residual_scores(xt, r)[1])
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    shared, _ = lib.scores(xt, te.labels[:30], unit)
    own, _ = lib.scores(xt, te.labels[:30])
    assert np.allclose(shared, own, atol=1e-5)


def test_library_leave_one_out_calibration_matches_scoring_each_spectrum_against_the_others(library):
    lib, x, tr = library
    calib = lib.leave_one_out_scores()
    assert calib.shape == (len(tr),) and np.all(np.isfinite(calib))  # every class has ≥ 2 spectra
    for i in (0, 57, 200):
        keep = np.arange(len(tr)) != i
        alone = SpectralLibrary(lib.lines[keep], lib.classes[keep], lib.labels, lib.shift_points,
                                band_power=lib.band_power)
        s, _ = alone.scores(x[i:i + 1], [tr.labels[i]])
        # the library query uses the stored float16 line component, the live one the float32 spectrum
        assert s[0] == pytest.approx(calib[i], abs=2e-3)


def test_band_profiles_are_unit_non_negative_and_weigh_a_weak_band_like_a_strong_one():
    axis = np.arange(200.0, 1592.0)
    strong = np.exp(-0.5 * ((axis - 464.0) / 4.0) ** 2)
    weak = 0.15 * np.exp(-0.5 * ((axis - 985.0) / 4.0) ** 2)
    one, two = strong + 0.2, strong + weak + 0.2  # quartz-like, and the same with a weak second band
    bp = band_profiles(np.stack([one, two]))
    assert bp.dtype == np.float64 and np.allclose(np.linalg.norm(bp, axis=1), 1.0) and bp.min() >= 0.0
    lines = band_profiles(np.stack([one, two]), power=None)  # the signed line components
    assert np.allclose(lines, _unit(highpass(np.stack([one, two]))))
    # the weak band barely moves the line-component cosine but halves the band-profile one
    assert lines[0] @ lines[1] > 0.97 and bp[0] @ bp[1] < 0.8
    assert band_profiles(np.zeros(50), window=5).tolist() == [0.0] * 50
    with pytest.raises(ConfigError):
        band_profiles(one, power=1.5)


def _unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def test_library_tells_a_mineral_sharing_one_strong_band_from_the_known_one(library, real):
    """Real RRUFF spectra: sodalite (bands near 265, 465 and 988 cm⁻¹) named quartz (464 cm⁻¹) by a classifier
    that has never seen sodalite. On signed line components it matches quartz better than 40 % of the known
    test spectra match their own mineral; the band profiles flag it above their 95 % nominal threshold."""
    lib, x, tr = library
    te = real["test"]
    sodalite = np.flatnonzero(np.asarray(te.labels) == "Sodalite")
    xs = real["pre"](te.intensities[sodalite])
    old = SpectralLibrary.from_spectra(x, tr.labels, real["classes"], 3.0, 1.0, band_power=None)
    xt = real["pre"](te.intensities)
    for lb in (lib, old):
        threshold = np.quantile(lb.leave_one_out_scores(), 0.95)
        as_quartz, _ = lb.scores(xs, ["Quartz"] * len(sodalite))
        own, _ = lb.scores(xt, te.labels)
        if lb is old:
            assert np.all(as_quartz < np.quantile(own, 0.6)) and np.all(as_quartz < threshold)
        else:
            assert lb.band_power == LIBRARY_BAND_POWER and np.all(as_quartz > threshold)


def test_library_rejects_inconsistent_input(library):
    lib, x, _ = library
    with pytest.raises(BundleError):
        SpectralLibrary(lib.lines[:5], lib.classes[:4], lib.labels, 3)
    with pytest.raises(BundleError):
        SpectralLibrary(lib.lines[:5], np.full(5, 99), lib.labels, 3)
    with pytest.raises(BundleError):
        SpectralLibrary.from_spectra(x[:2], ["Quartz", "Kryptonite"], lib.labels, 3.0, 1.0)
    with pytest.raises(PreprocessError):
        lib.scores(np.zeros((1, 100), np.float32), ["Quartz"])
    with pytest.raises(BundleError):
        SpectralLibrary(lib.lines, lib.classes, lib.labels, 3, band_power=0.0)


def test_library_similarity_matrix_is_what_scores_compare(library):
    lib, _x, tr = library
    sim = lib.similarity_matrix()
    assert sim.shape == (len(tr), len(tr)) and np.allclose(np.diag(sim), 1.0, atol=2e-3)
    # lag +s of a against b is lag -s of b against a, up to the few edge points a lag drops
    assert np.abs(sim - sim.T).max() < 0.01
    calib = lib.leave_one_out_scores()
    for i in (0, 57, 200):
        same = np.flatnonzero((lib.classes == lib.classes[i]) & (np.arange(len(tr)) != i))
        assert 1.0 - sim[i, same].max() == pytest.approx(calib[i], abs=1e-5)


# -- the autoencoder in a bundle -------------------------------------------------------------------------
def test_threshold_comes_from_held_out_nominal_scores_only(novelty_bundle):
    fit = novelty_bundle["fit"]
    # every training spectrum (all classes of the 40 % split have ≥ 3) is held out exactly once
    assert set(np.unique(fit.folds)) == {0, 1, 2}
    assert np.all(np.isfinite(fit.oof["line_cosine"]))
    assert fit.threshold == pytest.approx(float(np.quantile(fit.calibration(), 0.95)))
    assert np.mean(fit.calibration() > fit.threshold) == pytest.approx(0.05, abs=0.01)
    # held-out spectra reconstruct worse than the ones the model was fitted on: the threshold is not in-sample
    assert np.median(fit.oof["mse"]) > np.median(fit.train_scores["mse"])


def test_manifest_records_the_novelty_detector_with_hashes(novelty_bundle):
    from edge.bundle import Bundle, sha256_file

    b = Bundle.load(novelty_bundle["path"])  # verifies every recorded hash
    nov = b.manifest["novelty"]
    assert nov["metric"] == "line_cosine" and nov["quantile"] == 0.95
    assert nov["threshold"] == pytest.approx(novelty_bundle["fit"].threshold)
    assert "out-of-fold" in nov["calibration"]["method"]
    assert nov["calibration"]["metrics"]["line_cosine"]["n"] == 340
    lib = nov["library"]
    assert lib["shift_tolerance_cm1"] == 3.0 and lib["quantile"] == 0.95 and lib["n_spectra"] == 340
    assert lib["band_power"] == LIBRARY_BAND_POWER and "band profile" in lib["definition"]
    assert lib["threshold"] == pytest.approx(novelty_bundle["fit"].library_threshold)
    assert "leave-one-out" in lib["calibration"]["method"]
    for role in ("pytorch", "prototypes", "onnx_fp32", "library"):
        name = nov["files"][role]
        assert b.manifest["files"][name]["sha256"] == sha256_file(b.path / name)
    cs = nov["classifier_scores"]
    assert set(cs["thresholds"]) == {"msp", "energy", "prototype"} and "in-sample" in cs["calibration"]
    assert len(cs["per_class"]) == 63
    with np.load(b.file(nov["files"]["prototypes"])) as d:
        assert d["spectrum_prototypes"].shape == (63, 1392)
        assert d["embedding_prototypes"].shape[0] == 63
    gate = b.metrics["export_novelty"]
    assert gate["n"] == 150 and "disagreement_points" in gate
    assert ("onnx_int8" in nov["files"]) == gate["passed"]
    assert b.has_file("autoencoder.int8.onnx") == gate["passed"]


def test_autoencoder_onnx_matches_pytorch(novelty_bundle, real):
    import torch

    from edge.bundle import Bundle
    from edge.novelty import NoveltyModel
    from trainer.autoencoder import ae_scores, load_autoencoder

    b = Bundle.load(novelty_bundle["path"])
    x = Preprocessor(b.preprocessing)(real["test"].intensities)
    ref = ae_scores(load_autoencoder(b), x)
    m = NoveltyModel(b, precision="fp32")
    m.load()
    try:
        got = m.score(x)
        with torch.no_grad():
            r_t = load_autoencoder(b)(torch.from_numpy(np.ascontiguousarray(x[:, 0]))).numpy()
        r_o = m.backend.infer(np.ascontiguousarray(x[:, 0]))["reconstruction"]
    finally:
        m.close()
    assert np.max(np.abs(r_o - r_t)) < 1e-4
    assert np.allclose(got["novelty_score"], ref["line_cosine"], rtol=1e-3, atol=1e-5)
    assert np.array_equal(got["novel"], ref["line_cosine"] > b.manifest["novelty"]["threshold"])
    # test spectra are of known minerals: the novel rate is a false-alarm rate, near 1 − quantile
    assert got["novel"].mean() <= 0.15


def test_shifted_spectra_score_higher_than_nominal(novelty_bundle, real):
    from edge.bundle import Bundle
    from trainer.autoencoder import ae_scores, load_autoencoder

    b = Bundle.load(novelty_bundle["path"])
    pre, model = Preprocessor(b.preprocessing), load_autoencoder(b)
    base = ae_scores(model, pre(real["test"].intensities))["line_cosine"]
    moved = ae_scores(model, pre(shift_spectra(real["test"].intensities, 20.0)))["line_cosine"]
    assert np.median(moved) > np.median(base)
