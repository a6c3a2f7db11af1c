"""What the daemon runs per micro-batch: novelty scores, then the drift monitor."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import PreprocessError
from .autoencoder import NoveltyModel
from .drift import DriftConfig, DriftMonitor, batch_rows

if TYPE_CHECKING:
    from ..bundle import Bundle
    from ..wire import SpectrumIn

__all__ = ["NoveltyService"]
log = logging.getLogger("edge.novelty")


class NoveltyService:
    """What the daemon runs per micro-batch: the autoencoder's scores, then the drift monitor.

    Parameters
    ----------
    model : NoveltyModel
    drift : DriftConfig
    step_cm1 : float
        Grid spacing, cm⁻¹.
    grid_axis : numpy.ndarray, shape (N,)
        The model grid (axis of spectra sent without one, for the reference-line measurement).
    """

    def __init__(self, model: NoveltyModel, drift: DriftConfig, step_cm1: float, grid_axis: np.ndarray) -> None:
        self.model = model
        self.monitor = DriftMonitor(drift, model.references, step_cm1)
        self.grid_axis = np.asarray(grid_axis, dtype=np.float64)
        self.reference_label = drift.reference_label.strip().lower()

    @classmethod
    def from_bundle(cls, bundle: Bundle, drift: Mapping[str, Any] | DriftConfig | None = None, precision: str = "auto",
                    threads: int = 1, detector: str = "auto") -> NoveltyService | None:
        """The bundle's novelty service, or None when the bundle has no novelty section.

        Raises
        ------
        BundleError
            If the section is there but unusable (no ONNX export, unknown metric, corrupt file).
        ConfigError
            For invalid drift settings.
        """
        if not bundle.manifest.get("novelty"):
            return None
        cfg = drift if isinstance(drift, DriftConfig) else DriftConfig.from_dict(drift)
        return cls(NoveltyModel(bundle, precision, threads, detector), cfg, bundle.grid.step_cm1, bundle.grid.axis)

    def load(self, warmup_shape: tuple[int, ...] | None = None) -> None:
        """Load the autoencoder (and run a dummy batch of ``warmup_shape`` = (B, N) when given)."""
        self.model.load()
        if warmup_shape is not None:
            self.model.score(np.zeros(warmup_shape, dtype=np.float32) + 1e-3)

    def close(self) -> None:
        """Release the autoencoder."""
        self.model.close()

    def score(self, x: np.ndarray, predicted: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Per-spectrum novelty of a preprocessed micro-batch (see :meth:`NoveltyModel.score`)."""
        return self.model.score(x, predicted)

    def decide(self, x: np.ndarray, predicted: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """The novelty fields a prediction is published with (:meth:`NoveltyModel.decide`); :meth:`observe`
        adds the autoencoder's scores afterwards when the decision did not need them.
        """
        return self.model.decide(x, predicted)

    def correction_cm1(self) -> float:
        """The drift compensation for the next spectra, cm⁻¹ (:attr:`DriftMonitor.correction_cm1`)."""
        return self.monitor.correction_cm1

    def offset_warming_up(self) -> bool:
        """True while the drift compensation waits for its first estimate (:attr:`DriftMonitor.offset_warming_up`)."""
        return self.monitor.offset_warming_up

    def fields(self, out: Mapping[str, np.ndarray], i: int) -> dict[str, Any]:
        """The novelty fields of prediction ``i`` of a batch: ``novelty_score``, ``novelty_threshold``,
        ``novel``, ``novelty_detector`` (which detector decided), ``library_score`` (None without a library
        match), and ``reconstruction_error`` and ``reconstruction_mse`` when the autoencoder ran before
        publishing.
        """
        lib = float(out["library_score"][i])
        f = {"novelty_score": float(out["novelty_score"][i]), "novelty_threshold": float(out["novelty_threshold"][i]),
             "novel": bool(out["novel"][i]), "novelty_detector": str(out["novelty_detector"][i]),
             "library_score": lib if math.isfinite(lib) else None}
        if "reconstruction_error" in out:  # computed before publishing (see NoveltyModel.decide)
            f["reconstruction_error"] = float(out["reconstruction_error"][i])
            f["reconstruction_mse"] = float(out["reconstruction_mse"][i])
        return f

    def fields_batch(self, out: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
        """:meth:`fields` of every prediction of the batch (the arrays converted to Python values once, not
        element by element; the same values, keys in the same order).
        """
        score, thr = out["novelty_score"].tolist(), out["novelty_threshold"].tolist()
        novel, detector = np.asarray(out["novel"], dtype=bool).tolist(), np.asarray(out["novelty_detector"]).tolist()
        lib = [v if math.isfinite(v) else None for v in np.asarray(out["library_score"], dtype=np.float64).tolist()]
        rows = [{"novelty_score": float(a), "novelty_threshold": float(b), "novel": c, "novelty_detector": str(d),
                 "library_score": e} for a, b, c, d, e in zip(score, thr, novel, detector, lib, strict=True)]
        if "reconstruction_error" in out:  # computed before publishing (see NoveltyModel.decide)
            for f, err, mse in zip(rows, out["reconstruction_error"].tolist(), out["reconstruction_mse"].tolist(),
                                   strict=True):
                f["reconstruction_error"], f["reconstruction_mse"] = float(err), float(mse)
        return rows

    def observe(self, seqs: np.ndarray, time_ns: int, spectra: Sequence[SpectrumIn], x: np.ndarray,
                out: dict[str, np.ndarray], applied_offset_cm1: float = 0.0) -> list[dict[str, Any]]:
        """Feed a published batch to the drift monitor; return the drift payloads to publish.

        Parameters
        ----------
        seqs : numpy.ndarray of int, shape (B,)
            Sequence numbers of the batch's predictions.
        time_ns : int
        spectra : list of edge.wire.SpectrumIn
            The decoded inputs (their ``label`` marks measurements of the calibration standard).
        x : numpy.ndarray, shape (B, N) or (B, C, N)
            Preprocessed batch.
        out : dict
            Classifier outputs (``probabilities``) merged with :meth:`decide`'s; the autoencoder's scores are
            added to it here when missing (not when ``batch_max`` subsamples the batch: they are then computed
            for the subsample only).
        applied_offset_cm1 : float
            The drift compensation ``x`` was preprocessed with (:meth:`correction_cm1`), cm⁻¹.
        """
        events: list[dict[str, Any]] = []
        is_ref = np.array([bool(self.reference_label) and (s.label or "").strip().lower() == self.reference_label
                           for s in spectra])
        for i in np.flatnonzero(is_ref):
            s = spectra[int(i)]
            axis = self.grid_axis if s.raman_shift_cm1 is None else s.raman_shift_cm1
            try:
                events.append(self.monitor.reference(s.intensity, axis, int(seqs[i]), time_ns))
            except PreprocessError as exc:
                log.warning("reference spectrum %s: %s", s.id, exc)
        keep = np.flatnonzero(~is_ref)
        sel = batch_rows(len(keep), self.monitor.config.batch_max)
        if sel.size < keep.size:  # under a flood (batch_max): the autoencoder and the monitor on a subsample only
            keep = keep[sel]
            x_keep = x[keep]
            scores = self.model.complete(x_keep, {k: out[k][keep] for k in ("reconstruction_error", "reconstruction_mse")
                                                  if k in out})
        else:
            x_keep = x[keep]
            scores = {k: v[keep] for k, v in self.model.complete(x, out).items()
                      if k in ("reconstruction_error", "reconstruction_mse")}
        if keep.size:
            proba = out["probabilities"][keep]
            events += self.monitor.update(np.asarray(seqs)[keep], time_ns, novelty=scores["reconstruction_error"],
                                          residual=scores["reconstruction_mse"], msp=proba.max(axis=1),
                                          spectra=x_keep, proba=proba, applied_offset_cm1=applied_offset_cm1)
        return events

    def status(self) -> dict[str, Any]:
        """``{"novelty": {...}, "drift": {...}}`` for the daemon's status messages."""
        return {"novelty": self.model.describe(), "drift": self.monitor.status()}
