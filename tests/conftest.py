"""Shared fixtures: the real data folder (tests skip with a reason when it is absent), and small bundles."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edge.data import data_dir
from edge.errors import DataError

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_ONNX = importlib.util.find_spec("onnx") is not None


@pytest.fixture(scope="session")
def data_root() -> Path:
    try:
        return data_dir()
    except DataError as exc:
        pytest.skip(f"real data not available: {exc}")


@pytest.fixture(scope="session")
def soysal(data_root: Path) -> Path:
    return data_root / "rruff_soysal"


@pytest.fixture(scope="session")
def rruff_txt_dir(data_root: Path) -> Path:
    return data_root / "rruff_txt"


def _train_bundle(out: Path, train: str, test: str, steps: int, seed: int = 0):
    """Train the shipped default config (configs/model_compact.toml) for ``steps`` optimiser steps."""
    from edge.data import load_spectra
    from trainer.bundle_io import save_model
    from trainer.cli import DEFAULT_CONFIG
    from trainer.settings import TrainerSettings
    from trainer.train import fit

    s = TrainerSettings.from_toml(DEFAULT_CONFIG)
    s.training.steps = steps
    s.training.seed = seed
    tr = load_spectra(train)
    r = fit(tr, s.preprocessing, s.model, s.training, s.augmentation, progress=False)
    return save_model(out, r.model, r.labels, s, {"train_source": train, "test_source": test, "epochs": r.epochs})


@pytest.fixture(scope="session")
def synthetic_bundle(tmp_path_factory):
    """A bundle trained briefly on the synthetic library, exported to FP32 and INT8 ONNX."""
    if not (HAS_TORCH and HAS_ONNX):
        pytest.skip("needs the [train,export] extras")
    from export.cli import export_bundle

    b = _train_bundle(tmp_path_factory.mktemp("bundles") / "synthetic", "synthetic:train", "synthetic:test", 60)
    export_bundle(b, int8=True, max_accuracy_drop=5.0)
    return b.path


@pytest.fixture(scope="session")
def rruff_bundle(tmp_path_factory, soysal):
    """A bundle trained briefly (330 steps, half the default) on the real 40 % split, exported to FP32
    and INT8 ONNX."""
    if not (HAS_TORCH and HAS_ONNX):
        pytest.skip("needs the [train,export] extras")
    from export.cli import export_bundle

    b = _train_bundle(tmp_path_factory.mktemp("bundles") / "rruff40", str(soysal / "raw_train_labeled_40pct.npz"),
                      str(soysal / "raw_test.npz"), 330)
    export_bundle(b, int8=True, max_accuracy_drop=2.0)
    return b.path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# Five minerals the "base" backbone never sees: they are learnt by head-only transfer (tests/test_transfer.py,
# tests/test_hotswap.py).
TRANSFER_NEW_CLASSES = ["Aegirine", "Grossular", "Opal", "Sillimanite", "Spessartine"]


@pytest.fixture(scope="session")
def transfer_new_classes() -> list[str]:
    return list(TRANSFER_NEW_CLASSES)


@pytest.fixture(scope="session")
def rruff_base58(tmp_path_factory, soysal):
    """A backbone trained briefly (15 epochs) on the 40 % split without :data:`TRANSFER_NEW_CLASSES`
    (58 classes), exported to FP32 and INT8 ONNX (with the ``embedding`` output)."""
    if not (HAS_TORCH and HAS_ONNX):
        pytest.skip("needs the [train,export] extras")
    from edge.data import load_spectra
    from export.cli import export_bundle
    from trainer.bundle_io import save_model
    from trainer.settings import TrainerSettings
    from trainer.train import fit

    train = str(soysal / "raw_train_labeled_40pct.npz")
    tr = load_spectra(train)
    old = ~np.isin(tr.labels, TRANSFER_NEW_CLASSES)
    s = TrainerSettings()
    s.training.max_epochs = s.training.min_epochs = 15
    s.training.threads = 1
    r = fit(tr.subset(old), s.preprocessing, s.model, s.training, s.augmentation, progress=False)
    b = save_model(tmp_path_factory.mktemp("bundles") / "base58", r.model, r.labels, s,
                   {"train_source": train, "test_source": str(soysal / "raw_test.npz"), "epochs": r.epochs})
    export_bundle(b, int8=True, max_accuracy_drop=5.0)
    return b.path


@pytest.fixture(scope="session")
def novelty_bundle(rruff_bundle, tmp_path_factory, soysal):
    """A copy of the session's briefly trained real bundle, with a briefly trained novelty autoencoder
    (12 epochs, 3 folds) and its ONNX export (FP32; INT8 kept only if it passes the parity gate)."""
    if not (HAS_TORCH and HAS_ONNX):
        pytest.skip("needs the [train,export] extras")
    import shutil

    from edge.bundle import Bundle
    from edge.data import load_spectra
    from export.novelty_export import export_novelty
    from trainer.autoencoder import AEConfig, fit_novelty, save_novelty
    from trainer.bundle_io import load_model

    path = tmp_path_factory.mktemp("novelty") / "bundle"
    shutil.copytree(rruff_bundle, path)
    b = Bundle.load(path)
    train = load_spectra(soysal / "raw_train_labeled_40pct.npz")
    cfg = AEConfig(max_epochs=12, folds=3, seed=0, threads=1)
    fit = fit_novelty(train, b.preprocessing, cfg, classes=b.labels)
    save_novelty(b, fit, classifier=load_model(b), train=train)
    gate = export_novelty(b, int8=True)
    return {"path": path, "fit": fit, "gate": gate}
