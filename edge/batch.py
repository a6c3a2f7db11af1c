"""One micro-batch, classified: preprocess → infer → novelty → result fields.

The one code path the daemon (:mod:`edge.daemon`, spectra from sockets) and offline prediction
(:mod:`edge.predict`, spectra from files) share, so a spectrum gets the same fields whichever way it arrives.
Sockets, files and clusters only move batches in and results out. Moved out of ``Daemon._process`` /
``Daemon._preprocess`` / ``Daemon._publish_predictions`` unchanged in behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .errors import EdgeError
from .preprocess import Preprocessor

__all__ = ["BatchOutcome", "SpectrumLike", "classify_batch", "preprocess_batch", "rejection_reason", "result_fields"]


class SpectrumLike(Protocol):
    """What a batch entry needs (:class:`edge.wire.SpectrumIn` has it)."""

    id: str
    intensity: np.ndarray
    raman_shift_cm1: np.ndarray | None


@dataclass
class BatchOutcome:
    """A classified micro-batch.

    Attributes
    ----------
    accepted : list
        The spectra that were classified, in input order.
    fields : list of dict, length len(accepted)
        Each accepted spectrum's result fields (:func:`result_fields`).
    rejected : list of (spectrum, reason, detail)
        Spectra refused, in the order they were refused; ``reason`` is :func:`rejection_reason`'s.
    x : numpy.ndarray, shape (len(accepted), N) or None
        The preprocessed batch (None when nothing was accepted).
    out : dict
        Backend outputs merged with the novelty decision (empty when nothing was classified).
    """

    accepted: list[Any] = field(default_factory=list)
    fields: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[Any, str, str]] = field(default_factory=list)
    x: np.ndarray | None = None
    out: dict[str, np.ndarray] = field(default_factory=dict)


def rejection_reason(exc: EdgeError) -> str:
    """Reason of a rejection: ``wire``, ``preprocess`` ... (the error class without "Error")."""
    return type(exc).__name__.replace("Error", "").lower() or "invalid"


def preprocess_batch(preprocessor: Preprocessor, spectra: list[Any], offset_cm1: float = 0.0
                     ) -> tuple[list[Any], np.ndarray | None, list[tuple[Any, str, str]]]:
    """Preprocess a micro-batch, rejecting bad spectra alone.

    One vectorised call when every spectrum shares its axis (the usual case under a backlog), else, or when
    that call fails, spectrum by spectrum so that a bad one is rejected alone.

    Parameters
    ----------
    preprocessor : edge.preprocess.Preprocessor
    spectra : list of SpectrumLike
        ``intensity`` shape (M,), ``raman_shift_cm1`` shape (M,) in cm⁻¹ or None (already on the model grid).
    offset_cm1 : float
        The drift compensation (:meth:`edge.novelty.NoveltyService.correction_cm1`), cm⁻¹.

    Returns
    -------
    ok : list
        The spectra that preprocessed, in order.
    x : numpy.ndarray, shape (len(ok), N) or (len(ok), C, N), float32, or None
    rejected : list of (spectrum, reason, detail)
    """
    if not spectra:
        return [], None, []
    first = spectra[0]
    same_axis = all(
        s.intensity.shape == first.intensity.shape
        and (s.raman_shift_cm1 is None) == (first.raman_shift_cm1 is None)
        and (s.raman_shift_cm1 is None or np.array_equal(s.raman_shift_cm1, first.raman_shift_cm1))
        for s in spectra[1:])
    if same_axis and len(spectra) > 1:
        try:
            return spectra, preprocessor(np.stack([s.intensity for s in spectra]), first.raman_shift_cm1,
                                         offset_cm1), []
        except EdgeError:
            pass  # find the culprit(s) below
    ok, rows, rejected = [], [], []
    for s in spectra:
        try:
            rows.append(preprocessor(s.intensity, s.raman_shift_cm1, offset_cm1))
            ok.append(s)
        except EdgeError as exc:
            rejected.append((s, rejection_reason(exc), str(exc)))
    return ok, (np.stack(rows) if rows else None), rejected


def result_fields(out: dict[str, np.ndarray], labels: np.ndarray, top_k: int, novelty: Any = None,
                  offset_correction_cm1: float = 0.0) -> list[dict[str, Any]]:
    """Build the per-spectrum result fields of a classified batch.

    Parameters
    ----------
    out : dict
        ``probabilities`` shape (B, K) plus the novelty decision's arrays.
    labels : numpy.ndarray, shape (K,), str
    top_k : int
        Labels and probabilities per result (ties: lowest class index, as argmax).
    novelty : edge.novelty.NoveltyService or None
    offset_correction_cm1 : float
        Drift compensation applied, cm⁻¹ (reported with the novelty fields).

    Returns
    -------
    list of dict
        ``labels``, ``probabilities`` (top ``top_k``), and with novelty the fields of
        :meth:`edge.novelty.NoveltyService.fields` plus ``offset_correction_cm1``.
    """
    proba = out["probabilities"]
    k = min(top_k, proba.shape[1])
    top = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    rows = []
    for i in range(proba.shape[0]):
        f: dict[str, Any] = {"labels": labels[top[i]].tolist(), "probabilities": [float(p) for p in proba[i, top[i]]]}
        if novelty is not None:
            f.update(novelty.fields(out, i))
            f["offset_correction_cm1"] = offset_correction_cm1
        rows.append(f)
    return rows


def classify_batch(spectra: list[Any], preprocessor: Preprocessor, backend: Any, heads: Any, labels: np.ndarray,
                   novelty: Any = None, top_k: int = 3, offset_cm1: float = 0.0) -> BatchOutcome:
    """Preprocess, infer, decide novelty and build the result fields of one micro-batch.

    Parameters
    ----------
    spectra : list of SpectrumLike
    preprocessor : edge.preprocess.Preprocessor
        The bundle's preprocessing.
    backend : edge.backends backend
        Open inference backend (``infer(x) -> dict``).
    heads : edge.heads.HeadSwitch
        Applies a swapped classification head (no-op otherwise).
    labels : numpy.ndarray, shape (K,), str
        Class names of the served head.
    novelty : edge.novelty.NoveltyService or None
    top_k : int
    offset_cm1 : float
        Drift compensation, cm⁻¹.

    Returns
    -------
    BatchOutcome
        An inference failure rejects every preprocessed spectrum of the batch with reason ``inference``.
    """
    ok, x, rejected = preprocess_batch(preprocessor, spectra, offset_cm1)
    if not ok:
        return BatchOutcome(rejected=rejected)
    try:
        out = heads.apply(backend.infer(x))
        if novelty is not None:
            out.update(novelty.decide(x, labels[np.argmax(out["probabilities"], axis=1)]))
    except EdgeError as exc:
        return BatchOutcome(rejected=rejected + [(s, "inference", str(exc)) for s in ok])
    return BatchOutcome(ok, result_fields(out, labels, top_k, novelty, offset_cm1), rejected, x, out)
