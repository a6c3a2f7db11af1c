"""Evaluation report: metrics (top-1/top-3, macro-F1, per-class precision/recall/F1, confidence gap),
confusion matrix and training curve as PNG, written into the bundle's ``report/`` folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["classification_metrics", "plot_confusion", "plot_training_curve", "write_report"]


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
        "n": int(len(y_true)),
        "top1": float(np.mean(pred == y_true)),
        "top3": float(np.mean(top3)),
        "macro_f1": float(f1_score(yt, pred, labels=labels_present, average="macro", zero_division=0)),
        "confidence_gap": float(np.mean(gap)),
        "unknown_labels": int(np.sum(~known)),
        "per_class": per_class,
        "confusion": confusion_matrix(yt, pred, labels=list(range(k))).tolist(),
    }


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path, title: str = "") -> Path:
    """Confusion matrix (rows: true, columns: predicted) as a PNG."""
    plt = _pyplot()
    cm = np.asarray(confusion)
    n = len(classes)
    size = max(6.0, 0.16 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues", interpolation="nearest")
    ax.set_xticks(range(n), classes, rotation=90, fontsize=max(4, 9 - n // 12))
    ax.set_yticks(range(n), classes, fontsize=max(4, 9 - n // 12))
    ax.set_xlabel("predicted mineral")
    ax.set_ylabel("true mineral")
    ax.set_title(title or "confusion matrix")
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
    test = metrics.get("test")
    if test:
        plot_confusion(test["confusion"], classes, folder / "confusion_matrix.png",
                       f"test top-1 {100 * test['top1']:.1f} %, n = {test['n']}")
        files["confusion_matrix"] = f"{folder.name}/confusion_matrix.png"
    return files
