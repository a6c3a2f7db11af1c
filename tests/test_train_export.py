"""Training on real data (short), export parity torch ↔ ONNX FP32 ↔ INT8, and the INT8 accuracy gate."""

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

import itertools

from edge.bundle import Bundle
from edge.data import load_spectra
from edge.preprocess import Preprocessor
from export.errors import AccuracyGateError
from export.quantize import score_onnx
from trainer.bundle_io import load_model
from trainer.model import ModelConfig, RamanCNN, count_parameters
from trainer.train import class_weights, encode_labels, predict_proba


def test_class_weights_follow_the_paper():
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    np.testing.assert_allclose(w, [4 / (3 * 3), 4 / (3 * 1), 0.0])


@pytest.mark.parametrize("m,n", [(2, 3), (64, 1), (2, 10), (16, 2)])
def test_pooling_settings_build_and_stay_compact(m, n):
    model = RamanCNN(1392, 63, ModelConfig(pool_size=m, n_pool=n))
    assert model(torch.zeros(3, 1392)).shape == (3, 63)
    assert count_parameters(model) <= 100_000


def test_default_config_is_compact_and_two_channel():
    from trainer.cli import DEFAULT_CONFIG
    from trainer.settings import TrainerSettings

    s = TrainerSettings.from_toml(DEFAULT_CONFIG)
    assert s.preprocessing.n_channels == 2
    model = RamanCNN(1392, 63, ModelConfig.from_dict({**s.model.to_dict(), "in_channels": 2}))
    assert model(torch.zeros(3, 2, 1392)).shape == (3, 63)
    assert count_parameters(model) <= 100_000


def test_blur_pooling_matches_max_pool_shapes_and_tracks_shifts_smoothly():
    """Anti-aliased pooling (ModelConfig.pool_blur): same output length as MaxPool1d(ceil_mode); a line moving
    one grid point at a time moves the pooled response smoothly instead of jumping between cells."""
    from trainer.model import BlurMaxPool1d

    for length in (1392, 348, 87, 22):
        x = torch.randn(2, 3, length)
        assert BlurMaxPool1d(3, 4, 3)(x).shape == torch.nn.MaxPool1d(4, ceil_mode=True)(x).shape
    grid = torch.arange(256.0)
    jumps = {}
    for name, pool in (("max", torch.nn.MaxPool1d(4, ceil_mode=True)), ("blur", BlurMaxPool1d(1, 4, 3))):
        outs = [pool(torch.exp(-0.5 * ((grid - 100 - s) / 1.0) ** 2).view(1, 1, -1))[0, 0] for s in range(8)]
        jumps[name] = max(float((b - a).abs().max()) for a, b in itertools.pairwise(outs))
    assert jumps["blur"] < 0.8 * jumps["max"]  # 0.37 vs 0.47 for a line 1 grid point wide
    with pytest.raises(Exception, match="pool_blur"):
        ModelConfig(pool_blur=4)


def test_blur_pooling_model_trains_and_exports_to_onnx_and_int8_on_real_data(tmp_path, soysal):
    """A model with anti-aliased pooling, trained briefly on the real 40 % split: the bundle records the
    setting and reloads, the FP32 ONNX matches torch, and INT8 passes the accuracy gate."""
    from export.cli import export_bundle
    from trainer.bundle_io import save_model
    from trainer.cli import DEFAULT_CONFIG
    from trainer.settings import TrainerSettings
    from trainer.train import fit

    s = TrainerSettings.from_toml(DEFAULT_CONFIG)
    s.model.pool_blur, s.training.steps = 3, 120
    r = fit(load_spectra(soysal / "raw_train_labeled_40pct.npz"), s.preprocessing, s.model, s.training,
            s.augmentation, progress=False)
    b = save_model(tmp_path / "blur", r.model, r.labels, s, {"epochs": r.epochs,
                   "train_source": str(soysal / "raw_train_labeled_40pct.npz"), "test_source": str(soysal / "raw_test.npz")})
    assert b.manifest["model"]["settings"]["pool_blur"] == 3
    gate = export_bundle(b, int8=True, max_accuracy_drop=5.0)
    x = Preprocessor(b.preprocessing)(load_spectra(soysal / "raw_test.npz").intensities)
    np.testing.assert_allclose(predict_proba(load_model(b), x), predict_proba(r.model, x), atol=1e-6)
    np.testing.assert_allclose(score_onnx(b.file("model.onnx"), x), predict_proba(r.model, x), atol=1e-4)
    assert gate["passed"] and gate["fp32_top1"] > 30.0  # 120 steps; chance is 1.6 %


def test_ensemble_members_are_independent_networks_with_one_linear_head():
    cfg = ModelConfig(in_channels=2, members=2, pointwise_channels=16, batch_norm=True, dropout=0.3)
    model = RamanCNN(1392, 63, cfg).eval()
    single = RamanCNN(1392, 63, ModelConfig(in_channels=2, pointwise_channels=16, batch_norm=True, dropout=0.3))
    # Two backbones, one head on the concatenated embeddings: twice the backbone, twice the head inputs.
    assert model.embedding_size == 2 * single.embedding_size
    assert count_parameters(model) == 2 * count_parameters(single) - 63
    x = torch.randn(4, 2, 1392)
    with torch.no_grad():
        members = torch.stack([model.member_logits(x, i) for i in range(2)])
        np.testing.assert_allclose(members.mean(0).numpy(), model(x).numpy(), atol=1e-5)
        # Member 1 is a separate network: its logits do not depend on member 0's weights.
        before = model.member_logits(x, 1).clone()
        for p in model.features.parameters():
            p.add_(1.0)
        np.testing.assert_allclose(model.member_logits(x, 1).numpy(), before.numpy(), atol=1e-6)
        assert not torch.allclose(members[0], model.member_logits(x, 0))
    # Single-member models keep the old state-dict names (bundles written before members existed still load).
    assert set(single.state_dict()) == {k for k in model.state_dict() if not k.startswith("extra_members.")}


def test_ensemble_config_exports_to_onnx_and_int8_on_real_data(tmp_path, soysal):
    """configs/model_ensemble.toml: trained briefly on the real 40 % split, the bundle records two members,
    reloads, and exports to FP32 ONNX with torch parity and to INT8 through the accuracy gate."""
    from export.cli import export_bundle
    from trainer.bundle_io import save_model
    from trainer.cli import DEFAULT_CONFIG
    from trainer.settings import TrainerSettings
    from trainer.train import fit

    s = TrainerSettings.from_toml(DEFAULT_CONFIG.with_name("model_ensemble.toml"))
    s.training.steps = 120
    r = fit(load_spectra(soysal / "raw_train_labeled_40pct.npz"), s.preprocessing, s.model, s.training,
            s.augmentation, progress=False)
    b = save_model(tmp_path / "ens", r.model, r.labels, s, {"epochs": r.epochs,
                   "train_source": str(soysal / "raw_train_labeled_40pct.npz"), "test_source": str(soysal / "raw_test.npz")})
    assert b.manifest["model"]["settings"]["members"] == 2 and b.manifest["model"]["n_parameters"] <= 100_000
    model = load_model(b)
    gate = export_bundle(b, int8=True, max_accuracy_drop=5.0)
    test = load_spectra(soysal / "raw_test.npz")
    x = Preprocessor(b.preprocessing)(test.intensities)
    np.testing.assert_allclose(score_onnx(b.file("model.onnx"), x), predict_proba(model, x), atol=1e-4)
    assert gate["passed"] and gate["int8_bytes"] <= 150_000
    assert gate["fp32_top1"] > 30.0  # 120 steps; chance is 1.6 %


def test_mixup_and_members_train_on_real_data(soysal):
    from edge.preprocess import PreprocessConfig
    from trainer.augment import AugmentConfig
    from trainer.train import TrainConfig, fit

    train = load_spectra(soysal / "raw_train_labeled_10pct.npz")
    pcfg = PreprocessConfig.from_dict({"normalisation": "max"})
    r = fit(train, pcfg, ModelConfig(members=2, pool_size=4, batch_norm=True),
            TrainConfig(schedule="onecycle", steps=60, lr=3e-3, mixup_alpha=0.4, seed=0),
            AugmentConfig(max_shift_cm1=5.0), progress=False)
    assert r.model.config.members == 2 and np.isfinite(r.history[-1]["loss"])
    p = predict_proba(r.model, Preprocessor(pcfg)(train.intensities))
    assert float(np.mean(p.argmax(1) == encode_labels(train.labels, r.labels))) > 0.3  # chance: 1/63
    with pytest.raises(Exception, match="mixup_alpha"):
        TrainConfig(mixup_alpha=-1.0)


def test_short_training_on_real_data_learns(rruff_bundle, soysal):
    b = Bundle.load(rruff_bundle)
    assert b.manifest["model"]["n_parameters"] <= 100_000
    test = load_spectra(soysal / "raw_test.npz")
    p = predict_proba(load_model(b), Preprocessor(b.preprocessing)(test.intensities))
    top1 = float(np.mean(p.argmax(1) == encode_labels(test.labels, b.labels)))
    assert top1 > 0.6  # half the default steps; chance is 1/63. The full run reaches 85 % (README).


def test_onnx_fp32_matches_torch_and_int8_passed_the_gate(rruff_bundle, soysal):
    b = Bundle.load(rruff_bundle)
    test = load_spectra(soysal / "raw_test.npz")
    x = Preprocessor(b.preprocessing)(test.intensities)
    p_torch = predict_proba(load_model(b), x)
    p32 = score_onnx(b.file("model.onnx"), x)
    np.testing.assert_allclose(p32, p_torch, atol=1e-4)
    p8 = score_onnx(b.file("model.int8.onnx"), x)
    assert np.mean(p8.argmax(1) == p32.argmax(1)) >= 0.9
    e = b.metrics["export"]
    assert e["passed"] and e["drop_points"] <= 2.0 and e["size_ratio"] <= 0.30
    assert b.manifest["files"]["model.int8.onnx"]["format"] == "QDQ"


def test_int8_model_is_qdq(rruff_bundle):
    import onnx

    ops = {n.op_type for n in onnx.load(str(Bundle.load(rruff_bundle).file("model.int8.onnx"))).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_gate_failure_refuses_to_ship_and_keeps_the_previous_int8(rruff_bundle, tmp_path, monkeypatch):
    import shutil

    import export.cli as export_cli
    from edge.bundle import sha256_file

    copy = tmp_path / "b"
    shutil.copytree(rruff_bundle, copy)
    before = sha256_file(copy / "model.int8.onnx")
    real_compare = export_cli.compare_models

    def failing_compare(*args, **kwargs):  # the real comparison, judged by an impossible rule
        res = real_compare(*args, **kwargs)
        res["passed"] = False
        return res

    monkeypatch.setattr(export_cli, "compare_models", failing_compare)
    b = Bundle.load(copy)
    with pytest.raises(AccuracyGateError, match=r"NOT shipped.*previously shipped INT8 model is kept"):
        export_cli.export_bundle(b, int8=True, max_accuracy_drop=0.0)
    b = Bundle.load(copy)  # hashes verified: the old INT8 model is listed, present and unchanged
    assert b.has_file("model.int8.onnx") and sha256_file(copy / "model.int8.onnx") == before
    assert b.metrics["export"]["passed"] is False and b.metrics["export"]["kept_previous_int8"] is True
    assert not list(copy.glob(".candidate.*")), "the rejected candidate must be removed"
    # without a previous INT8 model, nothing is shipped
    b.manifest["files"].pop("model.int8.onnx")
    (copy / "model.int8.onnx").unlink()
    b.save()
    with pytest.raises(AccuracyGateError, match="NOT shipped"):
        export_cli.export_bundle(b, int8=True, max_accuracy_drop=0.0)
    assert not (copy / "model.int8.onnx").exists() and not Bundle.load(copy).has_file("model.int8.onnx")


def test_gate_refuses_negative_drop_and_foreign_validation_labels(rruff_bundle, tmp_path):
    import shutil

    from edge.bundle import sha256_file
    from export.cli import export_bundle
    from export.errors import ExportError

    copy = tmp_path / "b"
    shutil.copytree(rruff_bundle, copy)
    before = sha256_file(copy / "model.int8.onnx")
    with pytest.raises(ExportError, match="≥ 0"):
        export_bundle(Bundle.load(copy), int8=True, max_accuracy_drop=-1.0)
    with pytest.raises(ExportError, match="validation labels do not match the bundle's: 0 of 120"):
        export_bundle(Bundle.load(copy), int8=True, val="synthetic:test")
    assert sha256_file(copy / "model.int8.onnx") == before
    r = subprocess.run([sys.executable, "-m", "export", str(copy), "--int8", "--max-accuracy-drop", "-1"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "must be a number ≥ 0" in r.stderr and "Traceback" not in r.stderr


def test_tensorrt_check_flags_asymmetric_int8_and_passes_the_tensorrt_export(synthetic_bundle, tmp_path):
    import shutil

    from export.cli import export_bundle
    from export.quantize import QuantConfig
    from export.tensorrt_check import check_tensorrt_qdq

    default = check_tensorrt_qdq(Bundle.load(synthetic_bundle).file("model.int8.onnx"))
    assert not default["meets_rules"]  # onnxruntime's CPU defaults: asymmetric activations, int32 bias
    assert any("non-zero zero points" in v for v in default["violations"])
    assert any("int32" in v for v in default["violations"])
    assert not check_tensorrt_qdq(Bundle.load(synthetic_bundle).file("model.onnx"))["meets_rules"]  # no Q/DQ at all
    copy = tmp_path / "b"
    shutil.copytree(synthetic_bundle, copy)
    b = Bundle.load(copy)
    res = export_bundle(b, int8=True, max_accuracy_drop=5.0, quant=QuantConfig(tensorrt=True))
    assert res["tensorrt"]["meets_rules"], res["tensorrt"]["violations"]
    saved = Bundle.load(copy)
    assert saved.metrics["export"]["tensorrt"]["meets_rules"] is True
    assert saved.manifest["files"]["model.int8.onnx"]["activation_symmetric"] is True
    umask = os.umask(0)
    os.umask(umask)
    for f in ("model.int8.onnx", "manifest.json"):  # the process umask, not mkstemp's 0600
        assert (copy / f).stat().st_mode & 0o777 == 0o666 & ~umask


def test_report_is_written(tmp_path, soysal):
    r = subprocess.run([sys.executable, "-m", "trainer", "--train", "synthetic:train", "--test", "synthetic:test",
                        "--out", str(tmp_path / "b"), "--steps", "30", "--no-progress", "-q"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    b = Bundle.load(tmp_path / "b")
    for f in ("report/metrics.json", "report/confusion_matrix.png", "report/training_curve.png"):
        assert b.has_file(f) and (tmp_path / "b" / f).stat().st_size > 1000
    t = b.metrics["test"]
    assert {"top1", "top3", "macro_f1", "confidence_gap"} <= set(t) and t["top3"] >= t["top1"]


def test_user_errors_exit_1_without_traceback(tmp_path):
    for cmd in (["trainer", "--train", "no/such.npz", "--out", str(tmp_path / "x")],
                ["export", str(tmp_path)], ["edge", "--bundle", str(tmp_path)]):
        r = subprocess.run([sys.executable, "-m", *cmd], capture_output=True, text=True)
        assert r.returncode == 1 and "error:" in r.stderr and "Traceback" not in r.stderr, (cmd, r.stderr)


def test_shift_tolerance_dial_sets_augmentation_and_pooling():
    from trainer.cli import DEFAULT_CONFIG
    from trainer.errors import TrainerError
    from trainer.settings import TrainerSettings, apply_shift_tolerance

    s = apply_shift_tolerance(TrainerSettings.from_toml(DEFAULT_CONFIG), 10)
    assert s.augmentation.max_shift_cm1 == 10 and s.augmentation.shift_small_cm1 == 0 and s.model.n_pool == 3
    assert s.augmentation.band_ratio == 0.3  # calibrated instrument: band-ratio augmentation on
    s = apply_shift_tolerance(s, 60)
    assert s.augmentation.max_shift_cm1 == 60 and s.augmentation.shift_small_cm1 == 5 and s.model.n_pool == 4
    assert s.augmentation.band_ratio == 0.0
    two_channel = RamanCNN(1392, 5, ModelConfig.from_dict({**s.model.to_dict(), "in_channels": 2}))
    assert two_channel(torch.zeros(1, 2, 1392)).shape == (1, 5)
    with pytest.raises(TrainerError):
        apply_shift_tolerance(s, -1)


def test_shift_curve_on_real_data_degrades_gracefully(rruff_bundle, soysal):
    from trainer.report import shift_curve

    b = Bundle.load(rruff_bundle)
    curve = shift_curve(load_model(b), Preprocessor(b.preprocessing), load_spectra(soysal / "raw_test.npz"), b.labels)
    top = {c["shift_cm1"]: c["top1"] for c in curve}
    assert list(top) == [float(s) for s in range(0, 45, 5)]
    assert top[30.0] > 0.5 * top[0.0]  # trained with ±30 cm⁻¹ shift augmentation


def test_grad_cam_curves(rruff_bundle, soysal, tmp_path):
    from trainer.explain import grad_cam

    b = Bundle.load(rruff_bundle)
    test = load_spectra(soysal / "raw_test.npz")
    x = Preprocessor(b.preprocessing)(test.intensities[:4])
    curves, cls = grad_cam(load_model(b), x)
    assert curves.shape == (4, 1392) and np.all(curves >= 0) and np.allclose(curves.max(1), 1.0)
    np.testing.assert_array_equal(cls, predict_proba(load_model(b), x).argmax(1))
    r = subprocess.run([sys.executable, "-m", "trainer", "explain", "--bundle", str(rruff_bundle), "--data",
                        str(soysal / "raw_test.npz"), "--index", "3", "--out", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "gradcam_0003.png").stat().st_size > 5000


def test_augmentation_keeps_spectra_valid_for_preprocessing(soysal):
    """Strong augmentation never produces a spectrum the preprocessing would reject."""
    from edge.preprocess import PreprocessConfig
    from trainer.augment import AugmentConfig, augment_batch

    x = load_spectra(soysal / "raw_train_labeled_40pct.npz").intensities
    cfg = AugmentConfig(max_shift_cm1=40, shift_small_cm1=5, baseline=0.4, noise_std=0.01, probability=1.0)
    rng = np.random.default_rng(0)
    pre = Preprocessor(PreprocessConfig())
    for _ in range(20):
        out = augment_batch(x, cfg, rng)
        assert out.shape == x.shape and out.dtype == np.float32
        pre(out)  # raises PreprocessError on a row without positive maximum
    assert not np.allclose(out, x)


def test_band_ratio_augmentation_changes_band_ratios_not_band_positions(soysal):
    """``band_ratio``: a smooth positive gain. Clear narrow lines of real spectra stay where they are (over
    90 % exactly, 95 % within one grid point: flat tops), ratios between distant bands change, the gain
    stays within exp(±2), and 0 leaves spectra untouched."""
    from scipy.signal import find_peaks

    from trainer.augment import AugmentConfig, augment_batch

    x = load_spectra(soysal / "raw_train_labeled_40pct.npz").intensities[:64]
    off = dict(max_shift_cm1=0.0, fluorescence=0.0, noise_std=0.0, intensity_scale=0.0, probability=1.0)
    np.testing.assert_array_equal(augment_batch(x, AugmentConfig(**off, band_ratio=0.0), np.random.default_rng(0)), x)
    out = augment_batch(x, AugmentConfig(**off, band_ratio=0.5), np.random.default_rng(0))
    gain = out / np.where(np.abs(x) > 1e-6, x, np.nan)
    assert np.nanmin(gain) > np.exp(-2.0) and np.nanmax(gain) < np.exp(2.0)
    moved, ratio_change = [], []
    for a, b in zip(x, out, strict=True):
        peaks, _ = find_peaks(a, prominence=0.3 * a.max(), width=(None, 15))  # clear, narrow lines
        moved += [abs(int(np.argmax(b[max(0, q - 3):q + 4])) - (q - max(0, q - 3))) for q in peaks]
        if len(peaks) >= 2:
            ratio_change.append(abs(np.log((b[peaks[0]] / b[peaks[-1]]) / (a[peaks[0]] / a[peaks[-1]]))))
    assert len(moved) > 30 and np.mean(np.array(moved) == 0) > 0.9 and np.percentile(moved, 95) <= 1
    assert np.median(ratio_change) > 0.05
