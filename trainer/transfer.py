"""Head-only transfer (paper §8): new minerals learnt by retraining only the classifier of a trained bundle.

The backbone of the base bundle's :class:`~trainer.model.RamanCNN` is frozen (its weights, and so
``backbone_sha256``, stay bit-identical). Embeddings of the training spectra are computed once — the
originals plus ``views`` augmented copies of each (:func:`trainer.augment.augment_batch`: shift, intensity,
fluorescence, noise) — and a linear head ``softmax(e @ W.T + b)`` is fitted on them in seconds. Two solvers:

``logistic`` (default)
    Softmax regression: full-batch Adam on standardised embeddings, class-weighted cross-entropy, L2; in
    extend mode the old rows start from the base head.
``lda``
    Linear discriminant analysis with Ledoit–Wolf shrinkage of the pooled covariance and equal class
    priors (closed form, < 1 s): ``W_c = Σ⁻¹ μ_c``, ``b_c = −½ μ_cᵀ Σ⁻¹ μ_c``. In 5-fold cross-validation
    on the *training* spectra of the new classes it beat the logistic head by 4–7 points on two backbones
    of the earlier 1-channel recipe, and on the current default recipe both score within the draw-to-draw
    spread of the Table-11 protocol; but on a briefly trained backbone (15 epochs, 1024-wide embedding)
    it did not even fit its own training spectra (41 % top-1 against 99 % for the logistic head), so it is
    not the default.

Either way the head is one plain linear layer on the embedding.

Two modes:

``new-only``
    The head knows only the new classes (the paper's protocol, Table 11).
``extend``
    Old and new minerals together (what a rover needs): labels = base labels + new ones, old rows start from
    the base head, and the head is trained on the new spectra plus a *replay* of the old classes — the
    spectra of ``--replay``, else the embeddings stored in the base bundle's ``replay.npz``, else the base
    bundle's recorded training set restricted to its labels. The output bundle stores ``replay.npz`` (the
    un-augmented embeddings of old and new training spectra, float16) so it can be extended again without
    the original data.

Outputs: a head file (:mod:`edge.heads` format: int8 weights by default; 63 classes measure 42–43 kB on the
default 704-wide embedding, ~50 kB on a 1024-wide one) to uplink to a running daemon, and a new bundle (new labels,
the same backbone, the head in ``model.pt`` as dequantised weights so bundle and head file predict the same;
``edge-export`` makes its ONNX, or ``--export``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edge.bundle import Bundle
from edge.cli_common import (
    CliParser,
    add_data_args,
    add_logging_args,
    non_negative_int,
    positive_int,
    setup_logging,
)
from edge.data import SpectraSet, load_spectra
from edge.errors import EdgeError, PreprocessError
from edge.heads import HEAD_DTYPES, Head, make_head
from edge.preprocess import Preprocessor, resample

from ._settings import SettingsMixin
from .augment import AugmentConfig, augment_batch
from .bundle_io import backbone_sha256, load_model, save_model
from .errors import TrainerError
from .model import ModelConfig, RamanCNN
from .settings import TrainerSettings
from .train import class_weights, encode_labels

__all__ = [
    "HEAD_FILE",
    "MODES",
    "REPLAY_FILE",
    "SOLVERS",
    "TransferConfig",
    "TransferResult",
    "embed",
    "embed_views",
    "evaluate_head",
    "fit_head",
    "transfer",
    "transfer_main",
    "write_transfer_bundle",
]

log = logging.getLogger("trainer.transfer")
MODES = ("new-only", "extend")
SOLVERS = ("logistic", "lda")
HEAD_FILE = "head.npz"
REPLAY_FILE = "replay.npz"


@dataclass
class TransferConfig(SettingsMixin):
    """Settings of head-only transfer (fixed a priori; the test set is never used to choose them).

    Parameters
    ----------
    mode : {"new-only", "extend"}
        See the module docstring.
    solver : {"logistic", "lda"}
        Head fitting (module docstring). ``logistic`` uses ``steps``, ``lr``, ``weight_decay`` and the base
        head as initialisation; ``lda`` needs training rows for every class (old ones from the replay).
    views : int
        Augmented copies of each training spectrum embedded in addition to the original (0: originals only).
    steps : int
        Full-batch optimisation steps of the head.
    lr : float
        Adam learning rate.
    weight_decay : float
        L2 penalty on the head weights (on standardised embeddings).
    class_weighted : bool
        Class-weighted cross-entropy, w_c = N / (K · n_c) (old and new classes weigh the same).
    head_dtype : {"int8", "float16", "float32"}
        Storage precision of the head file's weight.
    seed : int
        Seed of the augmentation and the optimiser.
    threads : int
        torch CPU threads.
    batch_size : int
        Spectra per backbone forward pass when embedding.
    """

    _kind: ClassVar[str] = "transfer"

    mode: str = "extend"
    solver: str = "logistic"
    views: int = 8
    steps: int = 300
    lr: float = 0.01
    weight_decay: float = 1e-3
    class_weighted: bool = True
    head_dtype: str = "int8"
    seed: int = 0
    threads: int = 1
    batch_size: int = 128

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise TrainerError(f"transfer mode must be one of {MODES}, got {self.mode!r}")
        if self.solver not in SOLVERS:
            raise TrainerError(f"head solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.head_dtype not in HEAD_DTYPES:
            raise TrainerError(f"head dtype must be one of {HEAD_DTYPES}, got {self.head_dtype!r}")
        if self.views < 0 or self.steps < 1 or self.lr <= 0 or self.weight_decay < 0 or self.threads < 1:
            raise TrainerError("views must be ≥ 0, steps and threads ≥ 1, lr > 0 and weight_decay ≥ 0")




@dataclass
class TransferResult:
    """What :func:`transfer` returns.

    Attributes
    ----------
    head : edge.heads.Head
        The new head (quantised as stored).
    model : RamanCNN
        The base model with its classifier replaced by the head's dequantised weights (eval mode).
    labels : list of str
        The head's classes, in order.
    old_labels, new_labels : list of str
        Classes taken over from the base (extend mode) and classes learnt here.
    replay_embeddings : numpy.ndarray, shape (R, D), float32
        Un-augmented embeddings of every training spectrum used (old replay and new), for ``replay.npz``.
    replay_labels : numpy.ndarray, shape (R,), str
    info : dict
        Provenance and timings (seconds spent embedding and fitting).
    """

    head: Head
    model: RamanCNN
    labels: list[str]
    old_labels: list[str]
    new_labels: list[str]
    replay_embeddings: np.ndarray
    replay_labels: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


# -- embeddings -------------------------------------------------------------------------------------------
@torch.no_grad()
def embed(model: RamanCNN, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Backbone embeddings of preprocessed spectra.

    Parameters
    ----------
    model : RamanCNN
    x : numpy.ndarray, shape (B, N), float32
        Preprocessed spectra on the model grid.

    Returns
    -------
    numpy.ndarray, shape (B, D), float32
    """
    model.eval()
    if len(x) == 0:
        return np.zeros((0, model.embedding_size), np.float32)
    out = [model.embedding(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32))).numpy()
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float32)


def embed_views(model: RamanCNN, pre: Preprocessor, spectra: SpectraSet, views: int,
                augment: AugmentConfig, rng: np.random.Generator, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of each spectrum and of ``views`` augmented copies of it.

    Parameters
    ----------
    model : RamanCNN
    pre : Preprocessor
        The bundle's preprocessing.
    spectra : SpectraSet
        Raw spectra (any axis; resampled onto the preprocessing grid).
    views : int
        Augmented copies per spectrum (0: originals only).
    augment : AugmentConfig
    rng : numpy.random.Generator

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Embeddings, shape ((1 + views) · B, D), float32, the B originals first; and for each row the index
        of its source spectrum, shape ((1 + views) · B,), int64.
    """
    grid = pre.config.grid
    x_raw = resample(spectra.intensities, spectra.raman_shift_cm1, grid)
    x_pre = pre(x_raw, None)
    blocks, index = [embed(model, x_pre, batch_size)], [np.arange(len(x_raw))]
    for _ in range(views):
        views_raw = augment_batch(x_raw, augment, rng, grid.step_cm1, pre.config.min_coverage,
                                  pre.config.resolution_fwhm_cm1)
        blocks.append(embed(model, _preprocess_views(pre, views_raw, x_pre), batch_size))
        index.append(np.arange(len(x_raw)))
    return np.concatenate(blocks), np.concatenate(index)


def _preprocess_views(pre: Preprocessor, x_aug: np.ndarray, x_pre: np.ndarray) -> np.ndarray:
    """Preprocess augmented copies; a copy the preprocessing cannot scale (e.g. no positive maximum left
    after a strong negative baseline and a large shift) is replaced by its preprocessed original.
    """
    try:
        return pre(x_aug, None)
    except PreprocessError:
        out = np.array(x_pre, copy=True)
        for i in range(len(x_aug)):
            try:
                out[i] = pre(x_aug[i:i + 1], None)[0]
            except PreprocessError:
                pass
        return out


# -- the head ---------------------------------------------------------------------------------------------
def fit_head(emb: np.ndarray, y: np.ndarray, n_classes: int, cfg: TransferConfig | None = None,
             init_weight: np.ndarray | None = None, init_bias: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fit a linear softmax head on fixed embeddings (solver ``cfg.solver``, see the module docstring).

    Both solvers work on standardised embeddings z = (e − μ) / σ (μ, σ from ``emb``, σ floored at 10 % of
    the mean standard deviation) and fold the result back, ``W = W_z / σ``, ``b = b_z − W_z · (μ / σ)``, so it
    applies to raw embeddings. The LDA solver ignores ``init_weight``/``init_bias``.

    Parameters
    ----------
    emb : numpy.ndarray, shape (B, D), float32
        Training embeddings.
    y : numpy.ndarray, shape (B,), int
        Class indices in [0, n_classes).
    n_classes : int
        Rows of the head (logistic: classes without training rows keep their initial weights, shrunk by L2;
        LDA: every class needs training rows).
    cfg : TransferConfig
    init_weight, init_bias : numpy.ndarray, shapes (K0, D) and (K0,), optional
        Initial rows for the first K0 ≤ n_classes classes (a base head, on raw embeddings); other rows
        start at zero.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``W`` shape (n_classes, D) and ``b`` shape (n_classes,), float32.

    Raises
    ------
    TrainerError
        On empty input, mismatched shapes, labels outside [0, n_classes), or (LDA) a class without rows.
    """
    cfg = cfg or TransferConfig()
    emb = np.asarray(emb, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if emb.ndim != 2 or len(emb) == 0 or len(y) != len(emb):
        raise TrainerError(f"fit_head needs embeddings (B, D) with B ≥ 1 and B labels, got {emb.shape} and {y.shape}")
    if y.min() < 0 or y.max() >= n_classes:
        raise TrainerError(f"labels must lie in [0, {n_classes}), got {y.min()}..{y.max()}")
    if cfg.solver == "lda":
        return _fit_lda(emb, y, n_classes, cfg)
    d = emb.shape[1]
    mu, sigma = _standardiser(emb)
    z = ((emb - mu) / sigma).astype(np.float32)
    w0 = np.zeros((n_classes, d))
    b0 = np.zeros(n_classes)
    if init_weight is not None:
        k0 = len(init_weight)
        if init_weight.shape != (k0, d) or init_bias is None or init_bias.shape != (k0,) or k0 > n_classes:
            raise TrainerError(f"initial head must have shape (K0 ≤ {n_classes}, {d}), got {init_weight.shape}")
        w0[:k0] = init_weight * sigma          # the same function on standardised inputs
        b0[:k0] = init_bias + init_weight @ mu
        b0[k0:] = np.mean(b0[:k0]) if k0 else 0.0
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    lin = nn.Linear(d, n_classes)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w0.astype(np.float32)))
        lin.bias.copy_(torch.from_numpy(b0.astype(np.float32)))
    weights = torch.from_numpy(class_weights(y, n_classes)) if cfg.class_weighted else None
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    opt = torch.optim.Adam(lin.parameters(), lr=cfg.lr)
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)
    for _ in range(cfg.steps):
        loss = loss_fn(lin(zt), yt) + cfg.weight_decay * lin.weight.pow(2).sum() / n_classes
        opt.zero_grad()
        loss.backward()
        opt.step()
    wz = lin.weight.detach().double().numpy()
    bz = lin.bias.detach().double().numpy()
    w = wz / sigma
    b = bz - wz @ (mu / sigma)
    return w.astype(np.float32), b.astype(np.float32)


def _fit_lda(emb: np.ndarray, y: np.ndarray, n_classes: int, cfg: TransferConfig) -> tuple[np.ndarray, np.ndarray]:
    """Shrinkage LDA as a linear head: W_c = Σ⁻¹ μ_c, b_c = −½ μ_cᵀ Σ⁻¹ μ_c + log π_c (π equal when
    ``class_weighted``), Σ the Ledoit–Wolf-shrunk pooled within-class covariance.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from threadpoolctl import threadpool_limits

    counts = np.bincount(y, minlength=n_classes)
    if (counts == 0).any():
        raise TrainerError(f"the LDA head needs training rows for every class; {int((counts == 0).sum())} have "
                           "none (extend mode: the replay lacks them). Use the logistic solver")
    if n_classes < 2:
        raise TrainerError("a head needs at least two classes")
    priors = np.full(n_classes, 1.0 / n_classes) if cfg.class_weighted else counts / counts.sum()
    # Standardise with a variance floor first (as the logistic solver): a feature almost constant on the
    # training rows would otherwise get a near-zero variance, a huge inverse, and dominate at test time.
    mu, sigma = _standardiser(emb)
    z = (emb - mu) / sigma
    with threadpool_limits(cfg.threads):
        lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto", priors=priors).fit(z, y)
        means = lda.means_.astype(np.float64)
        wz = np.linalg.lstsq(lda.covariance_, means.T, rcond=None)[0].T
    bz = -0.5 * np.einsum("kd,kd->k", means, wz) + np.log(priors)
    w = wz / sigma
    b = bz - wz @ (mu / sigma)
    return w.astype(np.float32), b.astype(np.float32)


def _standardiser(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and floored standard deviation per feature, shapes (D,): σ = √(var + 0.01 · mean var)."""
    mu = emb.mean(axis=0)
    var = emb.var(axis=0)
    return mu, np.sqrt(var + 1e-2 * max(float(var.mean()), 1e-12))


def _base_head(model: RamanCNN) -> tuple[np.ndarray, np.ndarray]:
    return (model.classifier.weight.detach().numpy().astype(np.float32).copy(),
            model.classifier.bias.detach().numpy().astype(np.float32).copy())


def _replay_from_bundle(
    base: Bundle, data_dir: str | None
) -> tuple[str, SpectraSet | None, tuple[np.ndarray, np.ndarray] | None]:
    """Old-class replay of a base bundle: stored embeddings, else its recorded training set."""
    if base.has_file(REPLAY_FILE):
        with np.load(base.file(REPLAY_FILE), allow_pickle=False) as z:
            emb, labels = z["embeddings"].astype(np.float32), z["labels"].astype(str)
        return f"{base.path / REPLAY_FILE}", None, (emb, labels)
    src = base.manifest.get("training", {}).get("train_source")
    if not src:
        raise TrainerError(f"{base.path}: extend mode needs old-class spectra to replay: the bundle has no "
                           f"{REPLAY_FILE} and records no training set; pass --replay PATH")
    try:
        return src, load_spectra(src, base.grid, data_dir), None
    except EdgeError as exc:
        raise TrainerError(f"cannot load the base bundle's training set {src!r} for replay ({exc}); "
                           "pass --replay PATH") from exc


def transfer(base: Bundle, new: SpectraSet, cfg: TransferConfig | None = None, *,
             replay: SpectraSet | None = None, augment: AugmentConfig | None = None,
             version: str | None = None, data_dir: str | None = None, model: RamanCNN | None = None) -> TransferResult:
    """Train a new head on a frozen backbone.

    Parameters
    ----------
    base : Bundle
        Bundle with the trained backbone (``model.pt``).
    new : SpectraSet
        Training spectra of the new classes (in extend mode, spectra of base classes are welcome too: they
        add to that class).
    cfg : TransferConfig
    replay : SpectraSet, optional
        Old-class spectra to replay in extend mode (labels outside the base's are ignored); default: the
        base bundle's ``replay.npz``, else its recorded training set.
    augment : AugmentConfig, optional
        Augmentation of the views (default: the base bundle's recorded augmentation).
    version : str, optional
        Head version (default: ``"<mode>-<K>c-<first 10 hex of the weights' SHA-256>"``).
    data_dir : str, optional
        Data folder for the recorded training set.
    model : RamanCNN, optional
        The base model already loaded (skips reading ``model.pt``).

    Returns
    -------
    TransferResult

    Raises
    ------
    TrainerError
        Empty training set, new-only mode without new classes, no replay available in extend mode.
    BundleError
        If the base bundle has no loadable weights.
    """
    cfg = cfg or TransferConfig()
    if len(new) == 0:
        raise TrainerError("no training spectra for the new head")
    t0 = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    model = model if model is not None else load_model(base)
    sha = backbone_sha256(model)
    recorded = base.manifest["model"].get("backbone_sha256")
    if recorded and recorded != sha:
        raise TrainerError(f"{base.path}: model.pt does not match the recorded backbone_sha256")
    pre = Preprocessor(base.preprocessing)
    if augment is None:
        augment = AugmentConfig.from_dict(base.manifest.get("training", {}).get("settings", {}).get("augmentation", {}))
    rng = np.random.default_rng(cfg.seed)
    base_labels = base.labels
    new_classes = sorted(set(new.labels.tolist()))
    if cfg.mode == "new-only":
        labels, old = new_classes, []
    else:
        old = list(base_labels)
        labels = old + [c for c in new_classes if c not in set(old)]
    learnt = [c for c in labels if c not in set(old)]
    if not learnt and cfg.mode == "new-only":
        raise TrainerError("new-only mode needs at least one class")
    emb_new, idx_new = embed_views(model, pre, new, cfg.views, augment, rng, cfg.batch_size)
    y_new = encode_labels(new.labels[idx_new], labels)
    blocks, ys = [emb_new], [y_new]
    orig_emb, orig_lab = [emb_new[: len(new)]], [new.labels.astype(str)]
    replay_source = None
    if cfg.mode == "extend":
        stored = None
        if replay is None:
            replay_source, replay, stored = _replay_from_bundle(base, data_dir)
        else:
            replay_source = replay.source
        if replay is not None:
            keep = np.isin(replay.labels, np.asarray(old))
            replay = replay.subset(keep)
            if len(replay):
                e, i = embed_views(model, pre, replay, cfg.views, augment, rng, cfg.batch_size)
                blocks.append(e)
                ys.append(encode_labels(replay.labels[i], labels))
                orig_emb.append(e[: len(replay)])
                orig_lab.append(replay.labels.astype(str))
        if stored is not None:
            keep = np.isin(stored[1], np.asarray(old))
            blocks.append(stored[0][keep])
            ys.append(encode_labels(stored[1][keep], labels))
            orig_emb.append(stored[0][keep])
            orig_lab.append(stored[1][keep])
        n_replay = sum(len(b) for b in blocks[1:])
        if n_replay == 0:
            raise TrainerError("extend mode found no old-class spectra to replay (the replay set holds none of "
                               "the base labels); pass --replay PATH")
    t_embed = time.perf_counter() - t0
    emb, y = np.concatenate(blocks), np.concatenate(ys)
    init_w = init_b = None
    if cfg.mode == "extend" and cfg.solver == "logistic":
        init_w, init_b = _base_head(model)
    w, b = fit_head(emb, y, len(labels), cfg, init_w, init_b)
    t_fit = time.perf_counter() - t0 - t_embed
    if not version:
        version = f"{cfg.mode}-{len(labels)}c-{hashlib.sha256(w.tobytes() + b.tobytes()).hexdigest()[:10]}"
    info = {"mode": cfg.mode, "solver": cfg.solver, "base_model_id": base.model_id,
            "base_head_version": (base.manifest.get("head") or {}).get("version") or base.model_id,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "new_labels": learnt,
            "train_source": new.source, "replay_source": replay_source}
    head = make_head(w, b, labels, sha, version, cfg.head_dtype, **info)
    new_model = _with_head(model, head)
    info.update(seconds_embedding=round(t_embed, 3), seconds_fit=round(t_fit, 3), n_train_rows=len(y),
                n_new_spectra=len(new), config=cfg.to_dict())
    return TransferResult(head, new_model, list(labels), old, learnt, np.concatenate(orig_emb),
                          np.concatenate(orig_lab), info)


def _with_head(model: RamanCNN, head: Head) -> RamanCNN:
    """A copy of ``model`` whose classifier is ``head`` (dequantised weights); the backbone is shared."""
    import copy

    m = copy.deepcopy(model)
    m.classifier = nn.Linear(head.embedding_size, head.n_classes)
    with torch.no_grad():
        m.classifier.weight.copy_(torch.from_numpy(head.weight))
        m.classifier.bias.copy_(torch.from_numpy(head.bias))
    m.n_classes = head.n_classes
    return m.eval()


def evaluate_head(head: Head, test_emb: np.ndarray, test_labels: np.ndarray,
                  new_labels: Sequence[str] = ()) -> dict[str, Any]:
    """Top-1 of a head on test embeddings, overall and split into new and old classes.

    Parameters
    ----------
    head : Head
    test_emb : numpy.ndarray, shape (B, D), float32
    test_labels : numpy.ndarray, shape (B,), str
        True minerals; a label the head does not know counts as an error.
    new_labels : sequence of str
        Classes counted as "new" (the rest of the head's classes are "old").

    Returns
    -------
    dict
        ``n``, ``top1``, ``top3``, and ``n_new``, ``top1_new``, ``n_old``, ``top1_old`` (None when empty);
        top-1 values are fractions in [0, 1].
    """
    labels = np.asarray(head.labels)
    if len(test_emb) == 0:
        return {"n": 0, "top1": None, "top3": None, "n_new": 0, "top1_new": None, "n_old": 0, "top1_old": None}
    proba = head.predict_proba(test_emb)
    order = np.argsort(-proba, axis=1, kind="stable")
    truth = np.asarray(test_labels).astype(str)
    hit = labels[order[:, 0]] == truth
    hit3 = np.any(labels[order[:, :3]] == truth[:, None], axis=1)
    is_new = np.isin(truth, np.asarray(list(new_labels), dtype=str))

    def frac(mask: np.ndarray) -> float | None:
        return float(hit[mask].mean()) if mask.any() else None

    return {"n": len(truth), "top1": float(hit.mean()), "top3": float(hit3.mean()),
            "n_new": int(is_new.sum()), "top1_new": frac(is_new), "n_old": int((~is_new).sum()), "top1_old": frac(~is_new)}


def _settings_of(base: Bundle) -> TrainerSettings:
    recorded = base.manifest.get("training", {}).get("settings")
    if recorded:
        return TrainerSettings.from_dict(recorded)
    s = TrainerSettings()
    s.preprocessing = base.preprocessing
    s.model = ModelConfig.from_dict(base.manifest["model"]["settings"])
    return s


def write_transfer_bundle(out: str | Path, base: Bundle, result: TransferResult, *, train_source: str,
                          test_source: str | None = None, metrics: dict[str, Any] | None = None) -> Bundle:
    """Write the transferred model as a new bundle: ``model.pt`` (same backbone, new classifier), the head
    file ``head.npz`` and ``replay.npz`` (un-augmented float16 embeddings with labels), and a ``head``
    section in the manifest (version, mode, base model, backbone hash, head file size).

    Raises
    ------
    TrainerError
        If ``out`` is the base bundle's own folder.
    BundleError
        If the bundle cannot be written.
    """
    out = Path(out)
    if out.resolve() == base.path.resolve():
        raise TrainerError("--out must differ from the base bundle (the base stays as it is)")
    base_training = base.manifest.get("training", {})
    bundle = save_model(out, result.model, result.labels, _settings_of(base), {
        "train_source": train_source, "test_source": test_source, "n_train": result.info["n_new_spectra"],
        "protocol": f"head-only transfer ({result.head.info['mode']}) on the frozen backbone of {base.model_id}",
        "base_train_source": base_training.get("train_source"), "transfer": result.info,
    }, name=str(base.manifest.get("name", "raman-cnn")))
    if bundle.manifest["model"]["backbone_sha256"] != result.head.backbone_sha256:  # pragma: no cover - invariant
        raise TrainerError("internal error: the written backbone differs from the base backbone")
    head_path = result.head.save(bundle.path / HEAD_FILE)
    bundle.add_file(HEAD_FILE, role="head", version=result.head.version, dtype=result.head.dtype)
    np.savez_compressed(bundle.path / REPLAY_FILE, embeddings=result.replay_embeddings.astype(np.float16),
                        labels=result.replay_labels.astype(str))
    bundle.add_file(REPLAY_FILE, role="replay-embeddings")
    bundle.manifest["head"] = {"version": result.head.version, "file": HEAD_FILE, "bytes": head_path.stat().st_size,
                               "dtype": result.head.dtype, "mode": result.head.info["mode"],
                               "base_model_id": base.model_id, "backbone_sha256": result.head.backbone_sha256,
                               "new_labels": result.new_labels}
    if metrics:
        bundle.metrics["transfer_test"] = metrics
    bundle.save()
    return bundle


# -- CLI --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="edge-train transfer",
        description="Head-only transfer: learn new minerals on the frozen backbone of a bundle; writes an "
                    "uplinkable head file and a new bundle.")
    p.add_argument("--base", required=True, help="bundle with the trained backbone")
    p.add_argument("--train", required=True, help="training spectra of the new minerals (.npz, RRUFF folder ...)")
    p.add_argument("--test", default=None, help="held-out spectra to score (reported only)")
    p.add_argument("--out", required=True, help="new bundle folder")
    p.add_argument("--mode", choices=MODES, default="extend",
                   help="extend: old + new classes (default); new-only: the new classes alone (paper §8)")
    p.add_argument("--replay", default=None, help="old-class spectra to replay in extend mode "
                                                  "(default: base bundle's replay.npz or recorded training set)")
    p.add_argument("--head-out", default=None, help="also write the head file here (it is always OUT/head.npz)")
    p.add_argument("--head-version", default=None, help="version string the predictions will name")
    p.add_argument("--head-dtype", choices=HEAD_DTYPES, default="int8", help="storage of the head weights")
    p.add_argument("--solver", choices=SOLVERS, default="logistic",
                   help="logistic: softmax regression, old rows from the base head (default); lda: shrinkage "
                        "LDA, closed form")
    p.add_argument("--views", type=positive_int, default=TransferConfig.views, help="augmented views per spectrum")
    p.add_argument("--steps", type=positive_int, default=TransferConfig.steps, help="head optimisation steps")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--export", action="store_true", help="run edge-export on the new bundle")
    p.add_argument("--int8", action="store_true", help="with --export: also the INT8 model (accuracy-gated)")
    add_data_args(p)
    add_logging_args(p)
    return p


def transfer_main(argv: Sequence[str] | None = None) -> int:
    """Run head-only transfer (``edge-train transfer``) from the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args)
    base = Bundle.load(args.base)
    grid = base.grid
    cfg = TransferConfig(mode=args.mode, solver=args.solver, views=args.views, steps=args.steps, seed=args.seed,
                         threads=args.threads, head_dtype=args.head_dtype)
    new = load_spectra(args.train, grid, args.data_dir)
    replay = load_spectra(args.replay, grid, args.data_dir) if args.replay else None
    result = transfer(base, new, cfg, replay=replay, version=args.head_version, data_dir=args.data_dir)
    metrics, test = None, None
    if args.test:
        test = load_spectra(args.test, grid, args.data_dir)
        x = Preprocessor(base.preprocessing)(test.intensities, test.raman_shift_cm1)
        metrics = evaluate_head(result.head, embed(result.model, x), test.labels, result.new_labels)
        metrics["source"] = test.source
    bundle = write_transfer_bundle(args.out, base, result, train_source=new.source,
                                   test_source=test.source if test is not None else None,
                                   metrics=metrics)
    head_path = bundle.path / HEAD_FILE
    if args.head_out:
        result.head.save(args.head_out)
        head_path = Path(args.head_out)
    h = result.head
    print(f"head {h.version}: {h.n_classes} classes ({len(result.new_labels)} new, mode {h.info['mode']}), "
          f"{h.dtype} weights, {head_path.stat().st_size} bytes -> {head_path}; backbone {h.backbone_sha256[:12]}; "
          f"embedding {result.info['seconds_embedding']:.1f} s, fit {result.info['seconds_fit']:.1f} s")
    if metrics:
        parts = [f"test top-1 {100 * metrics['top1']:.1f} % (n={metrics['n']})"]
        for k in ("new", "old"):
            if metrics[f"top1_{k}"] is not None:
                parts.append(f"{k} classes {100 * metrics[f'top1_{k}']:.1f} % (n={metrics[f'n_{k}']})")
        print("; ".join(parts))
    print(f"bundle {bundle.path} ({bundle.model_id})")
    if args.export:
        # export depends on trainer, not the reverse: run it as its own program.
        cmd = [sys.executable, "-m", "export", str(bundle.path)] + (["--int8"] if args.int8 else [])
        cmd += ["-q"] if args.quiet else ["-v"] * args.verbose
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        if subprocess.run(cmd, check=False).returncode != 0:
            raise TrainerError(f"edge-export failed on {bundle.path} (command: {' '.join(cmd)})")
    if metrics:
        log.debug("metrics %s", json.dumps(metrics))
    return 0
