"""One micro-batch, classified: calibrate → preprocess → infer → novelty → quality → result fields.

The one code path the daemon (:mod:`edge.daemon`, spectra from sockets) and offline prediction
(:mod:`edge.predict`, spectra from files) share, so a spectrum gets the same fields whichever way it arrives.
Sockets, files and clusters only move batches in and results out. Moved out of ``Daemon._process``,
``_calibrate``, ``_preprocess``, ``_reject_nonfinite`` and ``_publish_predictions``, unchanged in behaviour.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np

from .errors import EdgeError
from .preprocess import Preprocessor

__all__ = ["BatchOutcome", "SpectrumLike", "calibrate_batch", "classify_batch", "preprocess_batch", "reject_nonfinite",
           "rejection_detail", "rejection_reason", "result_fields"]


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
    inputs : list, length len(accepted)
        The caller's objects of ``accepted``, in the same order: with an instrument calibration each accepted
        spectrum is a copy on its calibrated axis, and ``inputs`` maps it back. ``rejected`` holds the caller's
        objects.
    """

    accepted: list[Any] = field(default_factory=list)
    fields: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[Any, str, str]] = field(default_factory=list)
    x: np.ndarray | None = None
    out: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: list[Any] = field(default_factory=list)


def rejection_reason(exc: Exception) -> str:
    """Name the reason of a rejection.

    ``wire``, ``preprocess`` ... (the error class without "Error"); ``internal`` for a foreign exception (a gap
    in validation, answered like any rejection: docs/wire.md).
    """
    if not isinstance(exc, EdgeError):
        return "internal"
    return type(exc).__name__.replace("Error", "").lower() or "invalid"


def rejection_detail(exc: Exception) -> str:
    """Detail of a rejection: the message, prefixed with the class name for a foreign exception."""
    return str(exc) if isinstance(exc, EdgeError) else f"{type(exc).__name__}: {exc}"


def calibrate_batch(hygiene: Any, spectra: list[Any], rejected: list[tuple[Any, str, str]]) -> list[Any]:
    """Put each spectrum on the instrument's calibrated axis (:meth:`edge.hygiene.Hygiene.calibrate`).

    A spectrum the calibration cannot take is appended to ``rejected`` (foreign errors too, as ``internal``).
    """
    if hygiene is None or hygiene.calibration is None:
        return spectra
    out = []
    for s in spectra:
        try:
            out.append(hygiene.calibrate(s))
        except Exception as exc:  # foreign ones too (reason "internal"): one spectrum, never the caller
            rejected.append((s, rejection_reason(exc), rejection_detail(exc)))
    return out


def preprocess_batch(preprocessor: Preprocessor, spectra: list[Any], offset_cm1: float | Callable[[], float] = 0.0,
                     rejected: list[tuple[Any, str, str]] | None = None,
                     standard: tuple[str, Preprocessor] | None = None,
                     ) -> tuple[list[Any], np.ndarray | None, np.ndarray | None, Any]:
    """Preprocess a micro-batch, rejecting bad spectra alone.

    One vectorised call when every spectrum shares its axis (the usual case under a backlog), else, or when
    that call fails, spectrum by spectrum so that a bad one is rejected alone (appended to ``rejected``).

    Parameters
    ----------
    preprocessor : edge.preprocess.Preprocessor
    spectra : list of SpectrumLike
        ``intensity`` shape (M,), ``raman_shift_cm1`` shape (M,) in cm⁻¹ or None (already on the model grid).
    offset_cm1 : float or callable
        The drift compensation (:meth:`edge.novelty.NoveltyService.correction_cm1`), cm⁻¹, or a function returning
        it (:meth:`edge.preprocess.Preprocessor.process` calls it once the batch is resampled).
    rejected : list, optional
        Receives (spectrum, reason, detail) of each spectrum refused.
    standard : (str, Preprocessor), optional
        The label of the instrument's reference standard (lower case, e.g. ``"silicon"``) and the preprocessing
        its spectra get instead: the bundle's without the coverage minimum (a standard is measured over a
        narrow range around its line; the drift monitor reads it, the classifier does not).

    Returns
    -------
    ok : list
        The spectra that preprocessed, in order.
    x : numpy.ndarray, shape (len(ok), N) or (len(ok), C, N), float32, or None
    spikes : numpy.ndarray of int, shape (len(ok),), or None
        Cosmic-ray spikes removed per spectrum.
    despiked : numpy.ndarray (len(ok), M) or list of arrays, or None
        The inputs after spike removal, on their own axes (for the quality gate).
    """
    rejected = [] if rejected is None else rejected
    if not spectra:
        return [], None, None, None
    first = spectra[0]
    same_axis = all(
        s.intensity.shape == first.intensity.shape
        and (s.raman_shift_cm1 is None) == (first.raman_shift_cm1 is None)
        and (s.raman_shift_cm1 is None or np.array_equal(s.raman_shift_cm1, first.raman_shift_cm1))
        for s in spectra[1:])
    if same_axis and len(spectra) > 1:
        try:
            return spectra, *preprocessor.process(np.stack([s.intensity for s in spectra]), first.raman_shift_cm1,
                                                  offset_cm1)
        except Exception:  # an EdgeError, or a foreign one: find the culprit(s) below
            pass
    ok, rows, spikes, raw = [], [], [], []
    for s in spectra:
        is_standard = standard is not None and (getattr(s, "label", None) or "").strip().lower() == standard[0]
        try:
            x, n, r = (standard[1] if standard is not None and is_standard else preprocessor).process(
                s.intensity, s.raman_shift_cm1, offset_cm1)
        except Exception as exc:  # foreign ones too (reason "internal"): one spectrum, never the caller
            rejected.append((s, rejection_reason(exc), rejection_detail(exc)))
            continue
        rows.append(x)
        spikes.append(n)
        raw.append(r)
        ok.append(s)
    if not rows:
        return [], None, None, None
    return ok, np.stack(rows), np.asarray(spikes, dtype=np.int64), raw


def reject_nonfinite(ok: list[Any], x: np.ndarray | None, rejected: list[tuple[Any, str, str]]) -> np.ndarray | None:
    """Reject every spectrum whose preprocessed row holds NaN or Inf (before inference and drift statistics).

    Returns the boolean mask of the rows kept, shape (B,), or None when every row is finite.
    """
    if x is None or not ok:
        return None
    good = np.isfinite(x.reshape(len(ok), -1)).all(axis=1)
    if good.all():
        return None
    rejected += [(s, "preprocess", "preprocessing produced NaN or Inf") for s, g in zip(ok, good, strict=True)
                 if not g]
    return good


def result_fields(out: dict[str, np.ndarray], labels: np.ndarray, top_k: int, novelty: Any = None,
                  offset_correction_cm1: float = 0.0,
                  hygiene: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
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
    hygiene : list of dict, optional
        Per-spectrum fields of :meth:`edge.hygiene.Hygiene.fields`.

    Returns
    -------
    list of dict
        ``labels``, ``probabilities`` (top ``top_k``); with novelty the fields of
        :meth:`edge.novelty.NoveltyService.fields` plus ``offset_correction_cm1``; with hygiene
        ``spikes_removed``, ``quality``, ``labels_trusted``, ``calibration`` (an untrusted spectrum is
        ``novel``: published, never trusted).
    """
    proba = out["probabilities"]
    k = min(top_k, proba.shape[1])
    top = np.argsort(-proba, axis=1, kind="stable")[:, :k]  # ties: lowest class index, as argmax
    # whole arrays to Python values once (the same values as element by element)
    top_labels = np.asarray(labels)[top].tolist()
    top_probs = np.take_along_axis(proba, top, axis=1).astype(np.float64).tolist()
    nov = novelty.fields_batch(out) if novelty is not None else None
    rows = []
    for i in range(proba.shape[0]):
        f: dict[str, Any] = {"labels": top_labels[i], "probabilities": top_probs[i]}
        if nov is not None:
            f.update(nov[i])
            f["offset_correction_cm1"] = offset_correction_cm1
        if hygiene is not None:  # spikes_removed, quality, labels_trusted, calibration (edge.hygiene)
            f.update(hygiene[i])
            if not hygiene[i]["labels_trusted"]:
                f["novel"] = True  # not a usable Raman spectrum: published, never trusted
        rows.append(f)
    return rows


def classify_batch(spectra: list[Any], preprocessor: Preprocessor, backend: Any, heads: Any, labels: np.ndarray,
                   novelty: Any = None, top_k: int = 3, offset_cm1: float | Callable[[], float] = 0.0,
                   hygiene: Any = None, standard: tuple[str, Preprocessor] | None = None,
                   quality_pool: Executor | None = None) -> BatchOutcome:
    """Calibrate, preprocess, infer, decide novelty and quality, and build the result fields of one micro-batch.

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
    offset_cm1 : float or callable
        Drift compensation, cm⁻¹, or a function returning it, called once the batch is resampled (the daemon's
        drift bookkeeping of the previous batch runs until then) and before inference.
    hygiene : edge.hygiene.Hygiene or None
        Calibration and quality gate (:mod:`edge.hygiene`).
    standard : (str, Preprocessor), optional
        Reference-standard spectra and their preprocessing (:func:`preprocess_batch`).
    quality_pool : concurrent.futures.Executor, optional
        Runs the quality gate while this thread runs inference and the novelty decision (both release the GIL
        for most of their time): the same quality, the same outcome, sooner. Default: in turn, on this thread.

    Returns
    -------
    BatchOutcome
        Rejections in the order they happen (calibration, preprocessing, non-finite rows); an inference (or
        quality-gate) failure rejects every remaining spectrum of the batch with reason ``inference``.
    """
    rejected: list[tuple[Any, str, str]] = []
    given = spectra
    spectra = calibrate_batch(hygiene, spectra, rejected)
    origin: dict[int, Any] = {}  # id(calibrated copy) -> the caller's object (none without a calibration)
    if spectra is not given:
        refused = {id(s) for s, _, _ in rejected}
        origin = {id(c): s for c, s in zip(spectra, [s for s in given if id(s) not in refused], strict=True)}

    def outcome(ok: list[Any], rejected: list[tuple[Any, str, str]], fields: list[dict[str, Any]] | None = None,
                x: np.ndarray | None = None, out: dict[str, np.ndarray] | None = None) -> BatchOutcome:
        """The outcome with the caller's objects (a calibrated spectrum is a copy: ``BatchOutcome.inputs``)."""
        return BatchOutcome(ok, fields or [], [(origin.get(id(r), r), why, detail) for r, why, detail in rejected], x,
                            out if out is not None else {}, [origin.get(id(a), a) for a in ok])

    ok, x, spikes, despiked = preprocess_batch(preprocessor, spectra, offset_cm1, rejected, standard)
    good = reject_nonfinite(ok, x, rejected)
    if good is not None:  # drop the rejected rows from every per-spectrum array
        ok = [s for s, g in zip(ok, good, strict=True) if g]
        despiked = [r for r, g in zip(despiked, good, strict=True) if g]
        x, spikes = (x[good], spikes[good]) if ok and x is not None and spikes is not None else (None, None)
    if not ok:
        return outcome([], rejected)
    if callable(offset_cm1):  # (preprocessing has called it: the same value, for the result fields)
        offset_cm1 = offset_cm1()
    judged = quality_pool.submit(hygiene.judge, ok, despiked) if hygiene is not None and quality_pool else None
    try:
        out = heads.apply(backend.infer(x))
        if novelty is not None:
            out.update(novelty.decide(x, labels[np.argmax(out["probabilities"], axis=1)]))
        fields_h = None
        if hygiene is not None:
            quality = judged.result() if judged is not None else hygiene.judge(ok, despiked)
            fields_h = [hygiene.fields(q, n) for q, n in zip(quality, cast("np.ndarray", spikes), strict=True)]
    except Exception as exc:  # an inference (or quality-gate) failure rejects its batch, never the caller
        if judged is not None:
            wait([judged])  # it reads this batch's arrays: done before the caller goes on
        return outcome([], rejected + [(s, "inference", rejection_detail(exc)) for s in ok])
    return outcome(ok, rejected, result_fields(out, labels, top_k, novelty, offset_cm1, fields_h), x, out)
