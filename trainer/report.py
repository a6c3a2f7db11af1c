"""Evaluation report: metrics (top-1/top-3, macro-F1, per-class precision/recall/F1, confidence gap),
confusion matrix and training curve as PNG, written into the bundle's ``report/`` folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "classification_metrics",
    "confused_classes",
    "plot_confusion",
    "plot_shift_curve",
    "plot_training_curve",
    "shift_curve",
    "write_report",
]

#: Raman-shift offsets of the accuracy-versus-shift curve, cm⁻¹ (paper §5 used +15 and +30).
SHIFTS_CM1 = tuple(range(0, 45, 5))


def classification_metrics(proba: np.ndarray, y_true: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Metrics of predicted class probabilities.

    Parameters
    ----------
    proba : numpy.ndarray, shape (B, K), float
        Class probabilities.
    y_true : numpy.ndarray, shape (B,), int
        True class indices; -1 marks a label the model does not know (always counted wrong).
    classes : list of str, length K

    Returns
    -------
    dict
        ``n``, ``top1``, ``top3``, ``macro_f1`` (over classes present in ``y_true`` or predicted),
        ``confidence_gap`` (mean top-1 minus top-2 probability), ``per_class`` (precision, recall, F1,
        support), ``confusion`` (K×K counts, rows true), ``unknown_labels`` (count of y_true == -1).
    """
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    k = proba.shape[1]
    order = np.argsort(-proba, axis=1, kind="stable")
    pred = order[:, 0]
    top3 = np.any(order[:, : min(3, k)] == y_true[:, None], axis=1)
    srt = np.sort(proba, axis=1)
    gap = srt[:, -1] - (srt[:, -2] if k > 1 else 0.0)
    known = y_true >= 0
    # Unknown labels are errors; give them a class index no prediction can take.
    yt = np.where(known, y_true, k)
    labels_present = sorted(set(yt[known].tolist()) | set(pred.tolist()))
    p, r, f, s = precision_recall_fscore_support(yt, pred, labels=list(range(k)), zero_division=0)
    per_class = {classes[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                 for i in range(k) if s[i] > 0 or i in labels_present}
    return {
        "n": len(y_true),
        "top1": float(np.mean(pred == y_true)),
        "top3": float(np.mean(top3)),
        "macro_f1": float(f1_score(yt, pred, labels=labels_present, average="macro", zero_division=0)),
        "confidence_gap": float(np.mean(gap)),
        "unknown_labels": int(np.sum(~known)),
        "per_class": per_class,
        "confusion": confusion_matrix(yt, pred, labels=list(range(k))).tolist(),
    }


def shift_curve(model, preprocessor, test, classes: list[str], shifts_cm1=SHIFTS_CM1) -> list[dict[str, float]]:
    """Top-1 on copies of ``test`` shifted right by each offset (edge-padded, :func:`edge.shift.shift_spectra`).

    Parameters
    ----------
    model : RamanCNN
    preprocessor : edge.preprocess.Preprocessor
    test : edge.data.SpectraSet
        Test spectra on the model grid.
    classes : list of str

    Returns
    -------
    list of dict
        ``{"shift_cm1": s, "top1": accuracy}`` per offset.
    """
    from edge.preprocess import resample
    from edge.shift import shift_spectra

    from .train import encode_labels, predict_proba

    grid = preprocessor.config.grid
    x = resample(test.intensities, test.raman_shift_cm1, grid)
    y = encode_labels(test.labels, classes)
    out = []
    for s in shifts_cm1:
        p = predict_proba(model, preprocessor(shift_spectra(x, s, grid.step_cm1)))
        out.append({"shift_cm1": float(s), "top1": float(np.mean(p.argmax(1) == y))})
    return out


def plot_shift_curve(curves: dict[str, list[dict[str, float]]], path: Path, title: str = "") -> Path:
    """Top-1 versus Raman-shift offset, one line per model (paper Tables 3–4 as a plot)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, curve in curves.items():
        ax.plot([c["shift_cm1"] for c in curve], [100 * c["top1"] for c in curve], marker="o", label=name)
    ax.set_xlabel("Raman-shift offset of the test spectra (cm⁻¹)")
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or "accuracy versus shift")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confused_classes(confusion: np.ndarray) -> np.ndarray:
    """Indices of the classes involved in at least one confusion (an off-diagonal count in their row or column).

    Parameters
    ----------
    confusion : numpy.ndarray, shape (K, K), int
        Counts; rows true class, columns predicted class.

    Returns
    -------
    numpy.ndarray, shape (M,), int
        Sorted class indices, M ≤ K.
    """
    off = np.asarray(confusion).copy()
    np.fill_diagonal(off, 0)
    return np.flatnonzero((off.sum(0) + off.sum(1)) > 0)


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path, title: str = "") -> Path:
    """Confusion matrix (rows: true, columns: predicted) as a PNG, restricted to the confused classes.

    At 63 classes and more the full matrix is a blue diagonal and illegible labels; only the classes involved in
    at least one confusion are drawn (:func:`confused_classes`), each cell with its count, and a colour bar.
    The diagonal of the kept classes shows their correct predictions.
    """
    plt = _pyplot()
    cm = np.asarray(confusion)
    n = len(classes)
    keep = confused_classes(cm)
    n_test, n_correct = int(cm.sum()), int(np.trace(cm))
    head = title or "confusion matrix"
    if keep.size == 0:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{head}\nno confusions: {n_correct} of {n_test} test spectra correct ({n} classes)",
                ha="center", va="center")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path
    sub = cm[np.ix_(keep, keep)]
    m = keep.size
    names = [classes[i] for i in keep]
    size = max(5.0, 0.32 * m + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    im = ax.imshow(sub, cmap="Blues", interpolation="nearest", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="spectra")
    fontsize = 8 if m <= 30 else 6
    dark = sub.max() * 0.6
    for r, c in zip(*np.nonzero(sub), strict=True):
        ax.text(c, r, str(sub[r, c]), ha="center", va="center", fontsize=fontsize,
                color="white" if sub[r, c] > dark else ("black" if r == c else "firebrick"))
    ax.set_xticks(range(m), names, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(m), names, fontsize=fontsize)
    ax.set_xlabel("predicted mineral")
    ax.set_ylabel("true mineral")
    ax.set_title(f"{head}\n{m} of {n} classes involved in a confusion; {n_test - n_correct} of {n_test} spectra wrong",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_training_curve(history: list[dict[str, float]], path: Path) -> Path:
    """Training loss, training top-1 and learning rate per epoch as a PNG."""
    plt = _pyplot()
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(ep, [h["loss"] for h in history], label="training loss (weighted CE)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(ep, [h["train_top1"] for h in history], color="tab:green", label="training top-1")
    ax2.set_ylabel("top-1")
    ax2.set_ylim(0, 1.02)
    fig.legend(loc="upper right")
    ax.set_title("training curve")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(folder: Path, metrics: dict[str, Any], classes: list[str], history: list[dict[str, float]]) -> dict[str, str]:
    """Write ``metrics.json``, ``confusion_matrix.png`` (when test metrics exist) and ``training_curve.png``.

    Returns
    -------
    dict
        Report file names relative to the bundle, by role.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    files = {"metrics": f"{folder.name}/metrics.json"}
    if history:
        plot_training_curve(history, folder / "training_curve.png")
        files["training_curve"] = f"{folder.name}/training_curve.png"
    if metrics.get("shift_curve"):
        plot_shift_curve({"this model": metrics["shift_curve"]}, folder / "shift_curve.png")
        files["shift_curve"] = f"{folder.name}/shift_curve.png"
    test = metrics.get("test")
    if test:
        plot_confusion(test["confusion"], classes, folder / "confusion_matrix.png",
                       f"test top-1 {100 * test['top1']:.1f} %, n = {test['n']}")
        files["confusion_matrix"] = f"{folder.name}/confusion_matrix.png"
    return files
