"""Training and evaluation of :class:`~trainer.model.RamanCNN` on preprocessed spectra.

Protocol (documented choice, see README "Training protocol"): with 1–5 spectra per class a held-out
validation split starves training (side check on the 40 % split: 61 % vs 72 % top-1), so the learning-rate
schedule and early stopping watch the *training* loss: ReduceLROnPlateau(factor 0.7, patience 3) and early
stopping after ``early_stop_patience`` epochs without a 1 % improvement, after ``min_epochs``. The test set
is never used for selection or stopping. Loss: class-weighted cross-entropy, w_c = N / (K·n_c).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from edge.data import SpectraSet
from edge.errors import EdgeError
from edge.preprocess import PreprocessConfig, Preprocessor, resample

from ._settings import SettingsMixin
from .augment import AugmentConfig, augment_batch
from .errors import TrainerError
from .model import ModelConfig, RamanCNN

log = logging.getLogger("trainer")
__all__ = ["TrainConfig", "TrainResult", "class_weights", "encode_labels", "fit", "predict_proba"]


@dataclass
class TrainConfig(SettingsMixin):
    """Optimisation settings.

    ``schedule="plateau"`` is the paper's (§3): Adam, ReduceLROnPlateau(``lr_factor``, ``lr_patience``) and
    early stopping after ``early_stop_patience`` epochs without a 1 % gain, all on the *training* loss, within
    [``min_epochs``, ``max_epochs``]. ``schedule="onecycle"`` trains a fixed number of optimiser ``steps``
    (so small splits get as many updates as large ones; 0 = ``max_epochs`` epochs) under a one-cycle
    learning rate peaking at ``lr`` after ``warmup_fraction`` of the steps; no early stopping.
    ``optimizer`` is ``"adam"`` or ``"adamw"`` (decoupled ``weight_decay``).

    ``mixup_alpha`` > 0 trains on physical two-mineral mixtures: each augmented raw spectrum is mixed with
    another of the batch, ``λ·a + (1 − λ)·b`` with ``λ ~ Beta(α, α)`` *before* preprocessing (a mixed sample
    is a valid Raman spectrum of a two-phase target), and the loss is ``λ·CE(a) + (1 − λ)·CE(b)``
    (Zhang et al. 2018, "mixup"). 0 disables it.

    Parameters
    ----------
    max_epochs, min_epochs : int
        Epoch bounds of the plateau schedule (``max_epochs`` also when ``steps`` = 0 under one-cycle).
    steps : int
        Optimiser steps of the one-cycle schedule (0: ``max_epochs`` epochs).
    optimizer : {"adam", "adamw"}
        Optimiser; ``adamw`` decouples ``weight_decay``.
    schedule : {"plateau", "onecycle"}
        Learning-rate schedule (see above).
    warmup_fraction : float
        Share of the one-cycle steps spent rising to ``lr``.
    batch_size : int
        Spectra per optimiser step.
    lr : float
        Learning rate (the one-cycle peak).
    weight_decay : float
        L2 (adam) or decoupled (adamw) weight decay.
    lr_factor, lr_patience : float, int
        ReduceLROnPlateau factor and patience in epochs (plateau schedule).
    early_stop_patience : int
        Epochs without a 1 % training-loss gain before stopping (plateau schedule).
    label_smoothing : float
        Cross-entropy label smoothing.
    class_weighted : bool
        Weight each class by N / (K · n_c) in the loss (Soysal et al.: few spectra per mineral).
    seed : int
        Seed of initialisation, batch order and augmentation.
    mixup_alpha : float
        Beta(α, α) of the two-mineral mixtures (0: off).
    threads : int
        torch threads (2 on a busy 2-core machine ran 7× slower: oversubscription).
    """

    _kind: ClassVar[str] = "training"

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "adamw"):
            raise TrainerError(f"optimizer must be adam or adamw, got {self.optimizer!r}")
        if self.schedule not in ("plateau", "onecycle"):
            raise TrainerError(f"schedule must be plateau or onecycle, got {self.schedule!r}")
        if self.batch_size < 1 or self.max_epochs < 1 or self.steps < 0:
            raise TrainerError("batch_size and max_epochs must be ≥ 1, steps ≥ 0")
        if self.mixup_alpha < 0:
            raise TrainerError(f"mixup_alpha must be ≥ 0, got {self.mixup_alpha}")

    max_epochs: int = 150
    min_epochs: int = 30
    steps: int = 0
    optimizer: str = "adam"
    schedule: str = "plateau"
    warmup_fraction: float = 0.1
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_factor: float = 0.7
    lr_patience: int = 3
    early_stop_patience: int = 5
    label_smoothing: float = 0.0
    class_weighted: bool = True
    seed: int = 0
    mixup_alpha: float = 0.0
    threads: int = 1  # 2 threads on a busy 2-core machine ran 7x slower (oversubscription)




@dataclass
class TrainResult:
    """A trained network, its class labels and the per-epoch training history."""

    model: RamanCNN
    labels: list[str]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def epochs(self) -> int:
        """Number of epochs trained."""
        return len(self.history)


def encode_labels(labels: np.ndarray, classes: list[str]) -> np.ndarray:
    """Class indices of ``labels`` in ``classes``; -1 for labels outside it. Shape (B,), int64."""
    lookup = {c: i for i, c in enumerate(classes)}
    return np.asarray([lookup.get(str(x), -1) for x in labels], dtype=np.int64)


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Class weights w_c = N / (K · n_c) (paper §3), shape (K,), float32; 0 for absent classes."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.zeros(n_classes)
    present = counts > 0
    w[present] = len(y) / (n_classes * counts[present])
    return w.astype(np.float32)


def _preprocess(pre: Preprocessor, x: np.ndarray, axis: np.ndarray | None) -> np.ndarray:
    try:
        return pre(x, axis)
    except EdgeError:
        raise
    except Exception as exc:  # pragma: no cover - defensive wrap of foreign errors
        raise TrainerError(f"preprocessing failed: {exc}") from exc


def _loss(loss_fn: nn.Module, logits: torch.Tensor, y: torch.Tensor, lam: float,
          partner: np.ndarray | None) -> torch.Tensor:
    """Cross-entropy of one member's logits; with mixup, ``λ·CE(y) + (1 − λ)·CE(y[partner])``."""
    loss = loss_fn(logits, y)
    if partner is not None:
        loss = lam * loss + (1.0 - lam) * loss_fn(logits, y[torch.from_numpy(partner)])
    return loss


def fit(train: SpectraSet, preprocessing: PreprocessConfig, model_cfg: ModelConfig | None = None,
        train_cfg: TrainConfig | None = None, augment_cfg: AugmentConfig | None = None,
        classes: list[str] | None = None, progress: bool | str = True) -> TrainResult:
    """Train a :class:`RamanCNN` on raw spectra.

    Each batch is augmented on the raw spectra (:func:`~trainer.augment.augment_batch`), then preprocessed
    with the same :class:`edge.preprocess.Preprocessor` the daemon uses.

    Parameters
    ----------
    train : SpectraSet
        Training spectra (any axis; resampled onto ``preprocessing.grid`` once).
    preprocessing : PreprocessConfig
        Preprocessing recorded in the bundle.
    model_cfg, train_cfg, augment_cfg
        Settings; defaults as documented on each class.
    classes : list of str, optional
        Label order (default: sorted training labels).
    progress : bool or {"bar", "lines"}
        ``True``/``"bar"``: a tqdm progress bar (for a terminal); ``"lines"``: four plain log lines (at each
        quarter of the epochs: loss and training top-1), for logs and CI; ``False``: nothing.

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainerError
        If the training set is empty or a label is not in ``classes``.
    """
    model_cfg = model_cfg or ModelConfig()
    train_cfg = train_cfg or TrainConfig()
    augment_cfg = augment_cfg or AugmentConfig()
    if len(train) == 0:
        raise TrainerError("empty training set")
    classes = classes or train.classes
    y = encode_labels(train.labels, classes)
    if np.any(y < 0):
        raise TrainerError(f"training labels not in the class list: {sorted(set(train.labels[y < 0]))[:5]}")
    pre = Preprocessor(preprocessing)
    grid = preprocessing.grid
    # Resample once (identity for data already on the grid); augmentation and the rest run per batch.
    x_raw = resample(train.intensities, train.raman_shift_cm1, grid)
    torch.manual_seed(train_cfg.seed)
    rng = np.random.default_rng(train_cfg.seed)
    torch.set_num_threads(max(1, train_cfg.threads))
    model_cfg = dataclasses.replace(model_cfg, in_channels=preprocessing.n_channels)
    model = RamanCNN(grid.n_points, len(classes), model_cfg)
    weights = torch.from_numpy(class_weights(y, len(classes))) if train_cfg.class_weighted else None
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=train_cfg.label_smoothing)
    opt_cls = torch.optim.AdamW if train_cfg.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    batches = -(-len(y) // train_cfg.batch_size)
    onecycle = train_cfg.schedule == "onecycle"
    epochs = -(-train_cfg.steps // batches) if onecycle and train_cfg.steps else train_cfg.max_epochs
    sched: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau
    if onecycle:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=train_cfg.lr, total_steps=epochs * batches,
                                                    pct_start=train_cfg.warmup_fraction)
    else:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=train_cfg.lr_factor,
                                                           patience=train_cfg.lr_patience)
    history: list[dict[str, float]] = []
    best, stale = float("inf"), 0
    t0 = time.perf_counter()
    bar = None
    quarters = {max(1, round(epochs * q / 4)) for q in (1, 2, 3, 4)} if progress == "lines" else set()
    if progress and progress != "lines":
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc="train", unit="epoch", leave=False)
    yt = torch.from_numpy(y)
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(y))
        total, correct, seen = 0.0, 0, 0
        for start in range(0, len(order), train_cfg.batch_size):
            idx = order[start:start + train_cfg.batch_size]
            # Each ensemble member gets its own augmented (and mixed) draw of the batch: independent members.
            losses, member_logits = [], []
            for member in range(model.config.members):
                xb = augment_batch(x_raw[idx], augment_cfg, rng, grid.step_cm1, preprocessing.min_coverage,
                                   preprocessing.resolution_fwhm_cm1)
                lam, partner = 1.0, None
                if train_cfg.mixup_alpha > 0 and len(idx) > 1:
                    lam = float(rng.beta(train_cfg.mixup_alpha, train_cfg.mixup_alpha))
                    partner = rng.permutation(len(idx))
                    xb = lam * xb + (1.0 - lam) * xb[partner]
                xt = torch.from_numpy(_preprocess(pre, xb.astype(np.float32, copy=False), None))
                member_logits.append(model.member_logits(xt, member))
                losses.append(_loss(loss_fn, member_logits[-1], yt[idx], lam, partner))
            loss = torch.stack(losses).mean()
            logits = member_logits[0] if len(member_logits) == 1 else torch.stack(member_logits).mean(0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if isinstance(sched, torch.optim.lr_scheduler.OneCycleLR):
                sched.step()
            total += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yt[idx]).sum())
            seen += len(idx)
        epoch_loss = total / seen
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(epoch_loss)
        history.append({"epoch": epoch + 1, "loss": epoch_loss, "train_top1": correct / seen,
                        "lr": opt.param_groups[0]["lr"]})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{epoch_loss:.3f}", acc=f"{correct / seen:.2f}")
        if epoch + 1 in quarters:
            log.info("epoch %d/%d: loss %.3f, training top-1 %.1f %%, %.0f s", epoch + 1, epochs, epoch_loss,
                     100 * correct / seen, time.perf_counter() - t0)
        if epoch_loss < best * 0.99:
            best, stale = epoch_loss, 0
        else:
            stale += 1
        if not onecycle and epoch + 1 >= train_cfg.min_epochs and stale >= train_cfg.early_stop_patience:
            break
    if bar is not None:
        bar.close()
    model.eval()
    return TrainResult(model, list(classes), history, time.perf_counter() - t0)


@torch.no_grad()
def predict_proba(model: RamanCNN, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities of preprocessed spectra.

    Parameters
    ----------
    model : RamanCNN
    x : numpy.ndarray, shape (B, N), float32
        Preprocessed spectra.

    Returns
    -------
    numpy.ndarray, shape (B, K), float32
    """
    model.eval()
    out = [torch.softmax(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size]))), 1).numpy()
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float32)
