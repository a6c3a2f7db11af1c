"""``edge-eval novelty``: how well the novelty and drift detectors work on real spectra.

Examples
--------
edge-eval novelty --out reports/novelty                       # defaults below, seed 0
edge-eval novelty --out reports/novelty --draws 3 --seed 1
edge-eval novelty --out reports/novelty --skip-loco           # drift streams only

Leave-classes-out
-----------------
For k in ``--ks`` (5, 10, 15) and ``--draws`` random draws of k withheld classes (seeded): the classifier
and the autoencoder are trained on the training split without those classes (the autoencoder's threshold
from its own out-of-fold nominal scores, exactly as ``edge-train --novelty`` does), then the test spectra are
scored: those of seen classes are nominal, those of withheld classes novel. Per detector: AUROC
(scikit-learn), FPR at 95 % TPR, the false-alarm rate on the nominal test spectra at the recorded threshold
(to compare with 1 − quantile), and the detection rate at that threshold. For the library detector, also
where it loses (:func:`library_diagnostics`): its AUROC with a perfect classifier on the seen classes, the
novel spectra it misses (which mineral they were named after) and the seen spectra it flags. Detectors
(higher = more novel):

- ``library``: the spectral-library match (:class:`edge.novelty.SpectralLibrary`; what decides the daemon's
  ``novel`` by default): 1 − cosine of the band profile (:func:`edge.novelty.band_profiles`) with the
  best-matching training spectrum of the predicted class within ±3 cm⁻¹; threshold from the training spectra
  leave-one-out;
- ``library_msp``: the library score plus ``msp`` (below), both dimensionless in [0, 1] for nominal spectra:
  does the spectrum match its predicted mineral, and is the classifier sure of it. Evaluation only; its
  threshold mixes the library's leave-one-out and the classifier's in-sample scores;
- ``ae``: the autoencoder's line residual (the daemon's reconstruction error; thresholded out-of-fold);
- ``ae_mse``: the autoencoder's plain mean squared error (threshold out-of-fold);
- ``msp``: 1 − maximum softmax probability; ``energy``: −logsumexp(logits); ``prototype``: cosine distance of
  the backbone embedding to the nearest class prototype. Their thresholds are in-sample (the classifier's own
  training spectra), as the bundle records them;
- ``knn``: cosine distance of the backbone embedding to the nearest training embedding (deep nearest
  neighbours); threshold from the training spectra leave-one-out (each one's nearest *other* spectrum).

Drift streams
-------------
A classifier and autoencoder trained on the whole training split (all classes known) score streams built
from the real test spectra (random order with replacement, Gaussian noise of ``--noise`` × each spectrum's
maximum), and :class:`edge.novelty.DriftMonitor` — the daemon's code, default settings — watches them:

- ``nominal``: 10 000 spectra, nothing changes: every alarm is false;
- ``gradual``: 300 nominal spectra, then a Raman-shift offset growing linearly by 0.05 cm⁻¹ per spectrum
  from 0 to 30 cm⁻¹ (600 spectra), then 100 at 30 cm⁻¹; the delay counts from the spectrum where the offset
  exceeds 5 cm⁻¹ (negative: detected before);
- ``step``: 300 nominal spectra, then 300 shifted by 10 cm⁻¹; delay from the step;
- ``fluorescence``: 300 nominal spectra, then a broad background (a Gaussian centred at 1400 cm⁻¹, 500 cm⁻¹
  standard deviation) growing linearly from 0 to 100 % of each spectrum's peak height over 600 spectra;
  delay from the spectrum where it exceeds 20 %.

The gradual and step streams also run behind the daemon's drift compensation (``compensate_offset``):
top-1 from the change on, with and without it, and the compensated run's alarm delay.

Each drift stream is repeated ``--repeats`` times with different random orders; delays are reported per
repeat and as the median. The offset estimate (moving median over ``offset_window`` spectra) is compared
with the true offset at the same spectrum and with the mean true offset over the window it summarises.

Default settings keep the whole run to about ten minutes on one CPU thread: the classifier trains with the
config's own recipe (the shipped model; ``--epochs N`` shortens it), autoencoder ``--ae-epochs 40`` with
``--folds 3``, 3 draws per k. Everything is seeded (``--seed``); JSON and PNG plots go to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.cli_common import (
    CliParser,
    add_data_args,
    add_logging_args,
    non_negative_float,
    non_negative_int,
    positive_int,
    probability,
    require_extra,
    run_cli,
    setup_logging,
)
from edge.data import SpectraSet, load_spectra
from edge.novelty import DriftConfig, DriftMonitor
from edge.preprocess import Preprocessor
from edge.shift import shift_spectra

from .errors import TrainerError

__all__ = ["detector_metrics", "drift_streams", "evaluate_novelty", "leave_classes_out", "library_diagnostics", "main"]
log = logging.getLogger("trainer.evaluate")

DETECTORS = ("library", "library_msp", "ae", "ae_mse", "msp", "energy", "prototype", "knn")


# -- metrics ---------------------------------------------------------------------------------------------
def detector_metrics(nominal: np.ndarray, novel: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC, FPR at 95 % TPR, and the rates at a threshold, of scores where higher means novel.

    Parameters
    ----------
    nominal, novel : numpy.ndarray, shape (n0,), (n1,)
        Scores of nominal and novel spectra.
    threshold : float
        Recorded threshold (novel when score > threshold).

    Returns
    -------
    dict
        ``auroc``, ``fpr_at_95tpr``, ``false_alarm_rate`` (nominal above threshold), ``detection_rate``
        (novel above threshold), ``n_nominal``, ``n_novel``.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.r_[np.zeros(len(nominal)), np.ones(len(novel))]
    s = np.r_[nominal, novel]
    fpr, tpr, _ = roc_curve(y, s)
    i = int(np.searchsorted(tpr, 0.95, side="left"))
    return {"auroc": float(roc_auc_score(y, s)), "fpr_at_95tpr": float(fpr[min(i, len(fpr) - 1)]),
            "false_alarm_rate": float(np.mean(nominal > threshold)), "detection_rate": float(np.mean(novel > threshold)),
            "threshold": float(threshold), "n_nominal": len(nominal), "n_novel": len(novel)}


# -- models ----------------------------------------------------------------------------------------------
@dataclass
class _Models:
    classifier: Any
    labels: list[str]
    novelty: Any                 # trainer.autoencoder.NoveltyFit
    embedding_prototypes: np.ndarray
    thresholds: dict[str, float]
    seconds: float
    train_embeddings: np.ndarray | None = None   # the ``knn`` detector's library (not in bundles)


def _train(train: SpectraSet, settings, epochs: int | None, ae_cfg) -> _Models:
    from .autoencoder import (
        class_prototypes,
        classifier_outputs,
        classifier_scores,
        fit_novelty,
        nearest_neighbour_distance,
    )
    from .train import encode_labels, fit

    t0 = time.perf_counter()
    s = settings
    if epochs is not None:  # a fixed number of epochs instead of the config's recipe
        s.training.max_epochs = s.training.min_epochs = epochs
        s.training.steps = 0
    res = fit(train, s.preprocessing, s.model, s.training, s.augmentation, progress=False)
    nov = fit_novelty(train, s.preprocessing, ae_cfg, classes=res.labels)
    pre = Preprocessor(s.preprocessing)
    x = pre(train.intensities, train.raman_shift_cm1)
    logits, emb = classifier_outputs(res.model, x)
    protos = class_prototypes(emb, encode_labels(train.labels, res.labels), len(res.labels))
    q = ae_cfg.quantile
    cs = classifier_scores(logits, emb, protos)
    thr = {k: float(np.quantile(v, q)) for k, v in cs.items()}
    fused = nov.library_calibration + cs["msp"]  # training-spectrum order in both
    thr["library_msp"] = float(np.quantile(fused[np.isfinite(fused)], q))
    thr["ae"] = nov.threshold
    thr["library"] = nov.library_threshold
    thr["ae_mse"] = float(np.quantile(nov.calibration("mse"), q))
    thr["knn"] = float(np.quantile(nearest_neighbour_distance(emb, emb, leave_one_out=True), q))
    return _Models(res.model, res.labels, nov, protos, thr, time.perf_counter() - t0, emb)


def _models_from_bundle(path: str) -> _Models:
    """The classifier, autoencoder and thresholds of a bundle trained with ``edge-train --novelty``."""
    from edge.bundle import Bundle
    from edge.novelty import METRICS, SpectralLibrary

    from .autoencoder import AEConfig, NoveltyFit, load_autoencoder
    from .bundle_io import load_model

    b = Bundle.load(path)
    nov = b.manifest.get("novelty")
    if not nov or "classifier_scores" not in nov:
        raise TrainerError(f"{path}: --bundle needs a bundle trained with edge-train --novelty")
    with np.load(b.file(nov["files"]["prototypes"]), allow_pickle=False) as d:
        protos, eprotos = np.asarray(d["spectrum_prototypes"]), np.asarray(d["embedding_prototypes"])
        calib = {m: np.asarray(d[f"calibration_{m}"]) for m in METRICS}
    cfg = AEConfig.from_dict(nov["autoencoder"]["settings"])
    fit = NoveltyFit(load_autoencoder(b), cfg, float(nov["threshold"]), calib, np.zeros(0, dtype=np.int64), {},
                     protos, b.labels, [], 0.0)
    thr = dict(nov["classifier_scores"]["thresholds"])
    library = SpectralLibrary.from_bundle(b)
    if library is not None:
        fit.library, fit.library_threshold = library
        thr["library"] = fit.library_threshold
    thr["ae"] = float(nov["threshold"])
    thr["ae_mse"] = float(np.quantile(calib["mse"], float(nov["quantile"])))
    return _Models(load_model(b), b.labels, fit, eprotos, thr, 0.0)


def _score(models: _Models, x: np.ndarray) -> dict[str, np.ndarray]:
    """All detector scores, the probabilities and the predicted mineral names of preprocessed spectra (B, N)."""
    from .autoencoder import ae_scores, classifier_outputs, classifier_scores, nearest_neighbour_distance

    logits, emb = classifier_outputs(models.classifier, x)
    out = classifier_scores(logits, emb, models.embedding_prototypes)
    out["predicted"] = np.asarray(models.labels)[logits.argmax(axis=1)]
    if models.train_embeddings is not None:
        out["knn"] = nearest_neighbour_distance(emb, models.train_embeddings)
    if models.novelty.library is not None:
        out["library"] = models.novelty.library.scores(x, out["predicted"])[0]
        out["library_msp"] = out["library"] + out["msp"]
    a = ae_scores(models.novelty.model, x)
    out["ae"], out["ae_mse"] = a[models.novelty.config.metric], a["mse"]
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    out["probabilities"] = p / p.sum(axis=1, keepdims=True)
    return out


# -- leave classes out -----------------------------------------------------------------------------------
def library_diagnostics(library, x: np.ndarray, score: np.ndarray, predicted: np.ndarray, labels: np.ndarray,
                        novel: np.ndarray, threshold: float) -> dict[str, Any]:
    """Where the spectral-library detector loses AUROC, and how much a better classifier could win back.

    Parameters
    ----------
    library : edge.novelty.SpectralLibrary
        The run's library (training spectra of the seen classes).
    x : numpy.ndarray, shape (B, N) or (B, C, N)
        Preprocessed test spectra.
    score : numpy.ndarray, shape (B,)
        Their library scores against the predicted class (the ``library`` detector).
    predicted, labels : numpy.ndarray, shape (B,), str
        Predicted and true mineral names.
    novel : numpy.ndarray, shape (B,), bool
        Spectra of withheld classes.
    threshold : float
        The library's recorded threshold.

    Returns
    -------
    dict
        - ``auroc_true_class``: AUROC when every *seen* spectrum is matched against its true class instead of
          the predicted one (a perfect classifier on the seen classes; novel spectra unchanged): the ceiling
          of what classifier accuracy can add to this detector;
        - ``auroc_correct_only``: AUROC over the correctly classified seen spectra and all novel ones;
        - ``misses``: novel spectra at or below the threshold (true and predicted mineral, score), lowest
          first; ``false_alarms``: seen spectra above it (with ``correct``: was the prediction right),
          highest first.
    """
    from sklearn.metrics import roc_auc_score

    seen = ~novel
    true_score = score.copy()
    true_score[seen] = library.scores(x[seen], labels[seen])[0]
    correct = seen & (predicted == labels)
    keep = correct | novel

    def rows(mask, order):
        idx = np.flatnonzero(mask)
        return [{"label": str(labels[i]), "predicted": str(predicted[i]), "score": round(float(score[i]), 4),
                 **({} if novel[i] else {"correct": bool(correct[i])})}
                for i in idx[np.argsort(order * score[idx], kind="stable")]]

    return {"auroc_true_class": float(roc_auc_score(novel, true_score)),
            "auroc_correct_only": float(roc_auc_score(novel[keep], score[keep])),
            "misses": rows(novel & (score <= threshold), 1), "false_alarms": rows(seen & (score > threshold), -1)}


def leave_classes_out(train: SpectraSet, test: SpectraSet, settings_factory: Callable, ae_cfg, ks: Sequence[int],
                      draws: int, epochs: int | None, seed: int) -> dict[str, Any]:
    """Run the leave-classes-out protocol (module docstring); returns per-run and summary figures."""
    classes = np.asarray(train.classes)
    runs = []
    for k in ks:
        if not 0 < k < len(classes):
            raise TrainerError(f"k = {k} classes cannot be withheld from {len(classes)}")
        for d in range(draws):
            rng = np.random.default_rng([seed, k, d])
            withheld = sorted(rng.choice(classes, k, replace=False).tolist())
            sub = train.subset(~np.isin(train.labels, withheld))
            settings = settings_factory()
            settings.training.seed = seed + d
            ae_cfg.seed = seed + d
            models = _train(sub, settings, epochs, ae_cfg)
            pre = Preprocessor(settings.preprocessing)
            xt = pre(test.intensities, test.raman_shift_cm1)
            scores = _score(models, xt)
            novel = np.isin(test.labels, withheld)
            labels = np.asarray(test.labels)
            predicted = scores["predicted"]
            top1 = float(np.mean(predicted[~novel] == labels[~novel]))
            run: dict[str, Any] = {
                   "k": k, "draw": d, "withheld": withheld, "n_train": len(sub), "seconds": round(models.seconds, 1),
                   "seen_top1": top1,
                   "library_diagnostics": library_diagnostics(models.novelty.library, xt, scores["library"], predicted, labels,
                                                              novel, models.thresholds["library"]),
                   "detectors": {name: detector_metrics(scores[name][~novel], scores[name][novel],
                                                        models.thresholds[name]) for name in DETECTORS},
                   "scores": {name: {"nominal": scores[name][~novel].tolist(), "novel": scores[name][novel].tolist()}
                              for name in DETECTORS}}
            log.info("k=%d draw %d (%.0f s): seen top-1 %.2f; AUROC %s", k, d, models.seconds, top1,
                     {n: round(v["auroc"], 3) for n, v in run["detectors"].items()})
            runs.append(run)
    summary: dict[str, Any] = {}
    for k in ks:
        rk = [r for r in runs if r["k"] == k]
        summary[str(k)] = {name: {m: float(np.mean([r["detectors"][name][m] for r in rk]))
                                  for m in ("auroc", "fpr_at_95tpr", "false_alarm_rate", "detection_rate")}
                           for name in DETECTORS}
        for name in DETECTORS:
            summary[str(k)][name]["auroc_per_draw"] = [r["detectors"][name]["auroc"] for r in rk]
        diag = [r["library_diagnostics"] for r in rk]
        summary[str(k)]["library"]["diagnostics"] = {
            **{m: float(np.mean([g[m] for g in diag])) for m in ("auroc_true_class", "auroc_correct_only")},
            "seen_top1": float(np.mean([r["seen_top1"] for r in rk])),
            "misses_by_pair": _counts(f"{m['label']} as {m['predicted']}" for g in diag for m in g["misses"]),
            "false_alarms_by_class": _counts(f["label"] for g in diag for f in g["false_alarms"]),
            "false_alarms_misclassified": int(sum(not f["correct"] for g in diag for f in g["false_alarms"]))}
    return {"runs": runs, "summary": summary, "quantile": ae_cfg.quantile}


def _counts(names) -> dict[str, int]:
    """Occurrences of each name, most frequent first (ties alphabetical)."""
    from collections import Counter

    return dict(sorted(Counter(names).items(), key=lambda kv: (-kv[1], kv[0])))


# -- drift streams ---------------------------------------------------------------------------------------
def _background(axis: np.ndarray, centre: float = 1400.0, sigma: float = 500.0) -> np.ndarray:
    bg = np.exp(-0.5 * ((axis - centre) / sigma) ** 2)
    return (bg / bg.max()).astype(np.float32)


def make_stream(test: SpectraSet, kind: str, rng: np.random.Generator, noise: float,
                n_nominal: int = 10_000) -> dict[str, Any]:
    """One drift stream from the test spectra (see the module docstring).

    Returns
    -------
    dict
        ``x_raw`` (T, N) float32 spectra on the grid before preprocessing, ``offset_cm1`` (T,) true offset,
        ``background`` (T,) background amplitude relative to the peak height, ``onset`` index from which a
        detection counts as timely (None for the nominal stream), ``drift_start`` (first changed spectrum).
    """
    step = float(np.mean(np.diff(test.raman_shift_cm1)))
    if kind == "nominal":
        t = n_nominal
        offset = np.zeros(t)
        onset = start = None
    elif kind == "gradual":
        offset = np.r_[np.zeros(300), np.linspace(0.05, 30.0, 600), np.full(100, 30.0)]
        start, onset = 300, int(np.argmax(offset > 5.0))
    elif kind == "step":
        offset = np.r_[np.zeros(300), np.full(300, 10.0)]
        start = onset = 300
    elif kind == "fluorescence":
        offset = np.zeros(900)
        start = 300
    else:
        raise TrainerError(f"unknown stream kind {kind!r}")
    t = len(offset)
    bgamp = np.zeros(t)
    if kind == "fluorescence":
        bgamp[300:] = np.linspace(1.0 / 600, 1.0, 600)
        onset = int(np.argmax(bgamp > 0.2))
    idx = rng.integers(0, len(test), t)
    x = test.intensities[idx].astype(np.float32)
    peak = np.abs(x).max(axis=1, keepdims=True)
    x = x + (rng.standard_normal(x.shape) * noise * peak).astype(np.float32)
    if np.any(offset != 0):
        x = shift_spectra(x, offset, step)
    if np.any(bgamp > 0):
        x = x + (bgamp[:, None] * peak * _background(test.raman_shift_cm1)[None, :]).astype(np.float32)
    return {"x_raw": x, "offset_cm1": offset, "background": bgamp, "onset": onset, "drift_start": start,
            "index": idx}


def run_stream(models: _Models, pre: Preprocessor, stream: dict[str, Any], drift_cfg: DriftConfig,
               step_cm1: float, batch: int = 16) -> dict[str, Any]:
    """Feed a stream through the scorers and a fresh :class:`DriftMonitor` in micro-batches (with
    ``drift_cfg.compensate_offset``, each batch is preprocessed with the monitor's correction removed, as the
    daemon does). Returns the alarms, the offset estimate after each spectrum, score traces, the predicted
    class of each spectrum and the correction applied to it.
    """
    mon = DriftMonitor(drift_cfg, models.novelty.prototypes, step_cm1)
    x_all = stream["x_raw"]
    t = len(x_all)
    est = np.full(t, np.nan)
    alarms: list[dict[str, Any]] = []
    trace = {k: np.zeros(t) for k in ("ae", "ae_mse", "msp", "correction", "predicted")}
    for a in range(0, t, batch):
        correction = mon.correction_cm1
        xb = pre(x_all[a:a + batch], None, correction)
        sc = _score(models, xb)
        proba = sc["probabilities"]
        msp = proba.max(axis=1)
        seq = np.arange(a, a + len(xb))
        alarms += mon.update(seq, 0, novelty=sc["ae"], residual=sc["ae_mse"], msp=msp, spectra=xb, proba=proba,
                             applied_offset_cm1=correction)
        est[a:a + len(xb)] = np.nan if mon.offset_cm1 is None else mon.offset_cm1
        sl = slice(a, a + len(xb))
        trace["ae"][sl], trace["ae_mse"][sl], trace["msp"][sl] = sc["ae"], sc["ae_mse"], msp
        trace["correction"][sl], trace["predicted"][sl] = correction, proba.argmax(axis=1)
    return {"alarms": alarms, "offset_estimate": est, "trace": trace}


def _stream_top1(models: _Models, test: SpectraSet, stream: dict[str, Any], r: dict[str, Any], start: int) -> float:
    """Top-1 of a stream's predictions from spectrum ``start`` on."""
    y = np.array([models.labels.index(c) for c in np.asarray(test.labels)[stream["index"]]])
    return float(np.mean(r["trace"]["predicted"][start:] == y[start:]))


def _delays(alarms: list[dict[str, Any]], onset: int | None, start: int | None, warmup: int) -> dict[str, Any]:
    out: dict[str, Any] = {"alarms": [{k: a[k] for k in ("kind", "detected_seq", "change_seq", "statistic")} for a in alarms]}
    before = [a for a in alarms if start is not None and a["detected_seq"] < start]
    out["false_alarms_before_drift"] = len(before)
    after = [a for a in alarms if start is None or a["detected_seq"] >= start]
    if onset is not None:
        first = min((a["detected_seq"] for a in after), default=None)
        out["delay"] = None if first is None else int(first - onset)
        out["delay_by_kind"] = {}
        for kind in sorted({a["kind"] for a in after}):
            out["delay_by_kind"][kind] = int(min(a["detected_seq"] for a in after if a["kind"] == kind) - onset)
        out["first_alarm_kind"] = None if first is None else next(a["kind"] for a in after if a["detected_seq"] == first)
    return out


def drift_streams(models: _Models, test: SpectraSet, pre: Preprocessor, drift_cfg: DriftConfig, seed: int,
                  noise: float, repeats: int, n_nominal: int) -> dict[str, Any]:
    """Run the nominal, gradual, step and fluorescence streams (module docstring)."""
    step = float(np.mean(np.diff(test.raman_shift_cm1)))
    res: dict[str, Any] = {"settings": drift_cfg.to_dict(), "noise": noise, "streams": {}}
    rng = np.random.default_rng([seed, 7])
    t0 = time.perf_counter()
    s = make_stream(test, "nominal", rng, noise, n_nominal)
    r = run_stream(models, pre, s, drift_cfg, step)
    counted = [a for a in r["alarms"] if a["detected_seq"] >= drift_cfg.warmup]
    by_kind: dict[str, int] = {}
    for a in counted:
        by_kind[a["kind"]] = by_kind.get(a["kind"], 0) + 1
    n_counted = n_nominal - drift_cfg.warmup
    res["streams"]["nominal"] = {
        "n": n_nominal, "n_after_warmup": n_counted, "false_alarms": len(counted), "by_kind": by_kind,
        "false_alarms_per_10k": 1e4 * len(counted) / n_counted,
        "alarms": [{k: a[k] for k in ("kind", "detected_seq", "change_seq", "statistic")} for a in counted],
        "offset_estimate_abs_p95": float(np.nanpercentile(np.abs(r["offset_estimate"][drift_cfg.warmup:]), 95)),
        "novel_rate": float(np.mean(r["trace"]["ae"] > models.thresholds["ae"])), "seconds": round(time.perf_counter() - t0, 1)}
    log.info("nominal stream: %d false alarms in %d spectra %s", len(counted), n_counted, by_kind)
    plots: dict[str, Any] = {"nominal": (s, r)}
    for kind in ("gradual", "step", "fluorescence"):
        reps = []
        for rep in range(repeats):
            s = make_stream(test, kind, np.random.default_rng([seed, 11, rep, len(kind)]), noise)
            r = run_stream(models, pre, s, drift_cfg, step)
            d = _delays(r["alarms"], s["onset"], s["drift_start"], drift_cfg.warmup)
            d["top1_after_start"] = _stream_top1(models, test, s, r, s["drift_start"])
            if kind in ("gradual", "step"):
                # The same stream behind the daemon's drift compensation (compensate_offset = true).
                rc = run_stream(models, pre, s, dataclasses.replace(drift_cfg, compensate_offset=True), step)
                dc = _delays(rc["alarms"], s["onset"], s["drift_start"], drift_cfg.warmup)
                d["compensated"] = {"top1_after_start": _stream_top1(models, test, s, rc, s["drift_start"]),
                                    "delay": dc["delay"], "false_alarms_before_drift": dc["false_alarms_before_drift"],
                                    "final_correction_cm1": float(rc["trace"]["correction"][-1])}
                est, true = r["offset_estimate"], s["offset_cm1"]
                w = drift_cfg.offset_window
                win_true = np.array([true[max(0, i - w + 1):i + 1].mean() for i in range(len(true))])
                sel = np.arange(len(true)) >= s["drift_start"]
                ok = sel & np.isfinite(est)
                d["offset"] = {
                    "mae_vs_true_cm1": float(np.mean(np.abs(est[ok] - true[ok]))),
                    "mae_vs_window_mean_cm1": float(np.mean(np.abs(est[ok] - win_true[ok]))),
                    "max_abs_err_vs_window_mean_cm1": float(np.max(np.abs(est[ok] - win_true[ok]))),
                    "p95_abs_err_vs_window_mean_cm1": float(np.percentile(np.abs(est[ok] - win_true[ok]), 95)),
                    "final_estimate_cm1": float(est[-1]), "final_true_cm1": float(true[-1]),
                    "estimate_at_onset_cm1": float(est[s["onset"]]),
                }
            reps.append(d)
            if rep == 0:
                plots[kind] = (s, r)
        delays = [d["delay"] for d in reps]
        summary = {"onset_definition": {"gradual": "offset > 5 cm-1", "step": "10 cm-1 step",
                                        "fluorescence": "background > 20 % of peak height"}[kind],
                   "delays": delays, "median_delay": None if any(v is None for v in delays) else float(np.median(delays)),
                   "missed": int(sum(v is None for v in delays)),
                   "false_alarms_before_drift": int(sum(d["false_alarms_before_drift"] for d in reps)),
                   "repeats": reps}
        summary["top1_after_start"] = float(np.mean([d["top1_after_start"] for d in reps]))
        if kind in ("gradual", "step"):
            summary["compensated_top1_after_start"] = float(np.mean([d["compensated"]["top1_after_start"] for d in reps]))
            summary["compensated_delays"] = [d["compensated"]["delay"] for d in reps]
            summary["offset_mae_vs_window_mean_cm1"] = float(np.mean([d["offset"]["mae_vs_window_mean_cm1"] for d in reps]))
            summary["offset_mae_vs_true_cm1"] = float(np.mean([d["offset"]["mae_vs_true_cm1"] for d in reps]))
        res["streams"][kind] = summary
        log.info("%s: delays %s (first kinds %s)", kind, delays, [d.get("first_alarm_kind") for d in reps])
    res["_plots"] = plots
    return res


# -- plots -----------------------------------------------------------------------------------------------
def _plots(out: Path, loco: dict[str, Any] | None, drift: dict[str, Any] | None,
           thresholds: dict[str, float] | None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    files = []
    if loco:
        ks = sorted({r["k"] for r in loco["runs"]})
        fig, axes = plt.subplots(1, len(ks), figsize=(4.2 * len(ks), 4), squeeze=False)
        for ax, k in zip(axes[0], ks, strict=True):
            run = next(r for r in loco["runs"] if r["k"] == k)
            for name in DETECTORS:
                sc = run["scores"][name]
                y = np.r_[np.zeros(len(sc["nominal"])), np.ones(len(sc["novel"]))]
                fpr, tpr, _ = roc_curve(y, np.r_[sc["nominal"], sc["novel"]])
                ax.plot(fpr, tpr, label=f"{name} ({run['detectors'][name]['auroc']:.2f})")
            ax.plot([0, 1], [0, 1], "k:", lw=0.8)
            ax.set_title(f"{k} classes withheld (draw 0)")
            ax.set_xlabel("false-positive rate (nominal)")
            ax.set_ylabel("true-positive rate (novel)")
            ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(out / "roc_leave_classes_out.png", dpi=110)
        plt.close(fig)
        files.append("roc_leave_classes_out.png")
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.8 / len(DETECTORS)
        for j, name in enumerate(DETECTORS):
            means = [loco["summary"][str(k)][name]["auroc"] for k in ks]
            per = [loco["summary"][str(k)][name]["auroc_per_draw"] for k in ks]
            xs = np.arange(len(ks)) + (j - len(DETECTORS) / 2 + 0.5) * width
            ax.bar(xs, means, width, label=name)
            for x0, p in zip(xs, per, strict=True):
                ax.plot([x0] * len(p), p, "k.", ms=3)
        ax.axhline(0.95, color="k", ls="--", lw=0.8)
        ax.set_xticks(np.arange(len(ks)), [f"k = {k}" for k in ks])
        ax.set_ylim(0.4, 1.0)
        ax.set_ylabel("AUROC (dots: draws)")
        ax.set_title("leave-classes-out novelty detection, raw_test")
        ax.legend(fontsize=7, ncol=3)
        fig.tight_layout()
        fig.savefig(out / "auroc_by_k.png", dpi=110)
        plt.close(fig)
        files.append("auroc_by_k.png")
    if drift and thresholds is not None:
        plots = drift["_plots"]
        kinds = [k for k in ("gradual", "step", "fluorescence", "nominal") if k in plots]
        fig, axes = plt.subplots(len(kinds), 1, figsize=(9, 2.6 * len(kinds)), squeeze=False)
        for ax, kind in zip(axes[:, 0], kinds, strict=True):
            s, r = plots[kind]
            n = len(s["x_raw"]) if kind != "nominal" else min(2000, len(s["x_raw"]))
            t = np.arange(n)
            ax.plot(t, np.log(r["trace"]["ae"][:n] / thresholds["ae"]), lw=0.4, color="0.6", label="log(novelty / threshold)")
            ax2 = ax.twinx()
            if kind == "fluorescence":
                ax2.plot(t, 100 * s["background"][:n], "g-", label="background, % of peak")
                ax2.set_ylabel("background %")
            else:
                ax2.plot(t, s["offset_cm1"][:n], "g-", label="true offset")
                ax2.plot(t, r["offset_estimate"][:n], "b-", lw=0.8, label="estimated offset")
                ax2.set_ylabel("offset, cm⁻¹")
            for a in r["alarms"]:
                if a["detected_seq"] < n:
                    ax.axvline(a["detected_seq"], color="r", lw=0.8)
                    ax.text(a["detected_seq"], ax.get_ylim()[1], a["kind"], fontsize=6, rotation=90, va="top", color="r")
            if s["onset"] is not None:
                ax.axvline(s["onset"], color="k", ls="--", lw=0.8)
            ax.set_title(f"{kind} stream (red: alarms; dashed: onset)", fontsize=9)
            ax.set_xlabel("spectrum")
            ax2.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        fig.savefig(out / "drift_streams.png", dpi=110)
        plt.close(fig)
        files.append("drift_streams.png")
    return files


# -- command ---------------------------------------------------------------------------------------------
def evaluate_novelty(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation described in the module docstring; returns the JSON-able result."""
    from .autoencoder import AEConfig
    from .cli import settings_from_args

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def settings_factory():
        ns = argparse.Namespace(config=args.config, seed=args.seed, epochs=args.epochs, pool_size=None, n_pool=None,
                                head=None, threads=1, steps=None)
        return settings_from_args(ns)

    base = settings_factory()
    grid = base.preprocessing.grid
    train = load_spectra(args.train, grid, args.data_dir)
    test = load_spectra(args.test, grid, args.data_dir)
    ae_cfg = AEConfig(max_epochs=args.ae_epochs, folds=args.folds, quantile=args.quantile, seed=args.seed, threads=1)
    result: dict[str, Any] = {
        "command": "edge-eval novelty", "argv": list(args.argv), "seed": args.seed,
        "train": train.source, "test": test.source, "drift_bundle": args.bundle,
        "settings": {"classifier_epochs": args.epochs, "autoencoder": ae_cfg.to_dict(), "ks": args.ks,
                     "draws": args.draws, "quantile": args.quantile, "torch_threads": 1},
    }
    loco = drift = None
    if not args.skip_loco:
        loco = leave_classes_out(train, test, settings_factory, AEConfig(**ae_cfg.to_dict()), args.ks, args.draws,
                                 args.epochs, args.seed)
        result["leave_classes_out"] = {"summary": loco["summary"], "quantile": loco["quantile"],
                                       "runs": [{k: v for k, v in r.items() if k != "scores"} for r in loco["runs"]]}
    thresholds = None
    if not args.skip_drift:
        models = _models_from_bundle(args.bundle) if args.bundle else \
            _train(train, settings_factory(), args.epochs, AEConfig(**ae_cfg.to_dict()))
        thresholds = models.thresholds
        pre = Preprocessor(base.preprocessing)
        drift = drift_streams(models, test, pre, DriftConfig(compensate_offset=False), args.seed, args.noise,
                              args.repeats, args.n_nominal)
        result["drift"] = {k: v for k, v in drift.items() if k != "_plots"}
        result["drift"]["model_seconds"] = round(models.seconds, 1)
        result["drift"]["thresholds"] = thresholds
    result["plots"] = _plots(out, loco, drift, thresholds)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "novelty_eval.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _print_summary(result: dict[str, Any]) -> None:
    loco = result.get("leave_classes_out")
    if loco:
        print(f"leave-classes-out (mean over draws; threshold quantile {loco['quantile']}):")
        print(f"  {'k':>3} {'detector':<10} {'AUROC':>6} {'FPR@95TPR':>9} {'false alarms':>12} {'detected':>8}")
        for k, per in loco["summary"].items():
            for name, m in per.items():
                print(f"  {k:>3} {name:<10} {m['auroc']:6.3f} {m['fpr_at_95tpr']:9.3f} {100 * m['false_alarm_rate']:11.1f}% "
                      f"{100 * m['detection_rate']:7.1f}%")
            g = per["library"].get("diagnostics")
            if g:
                top = ", ".join(f"{p} ×{n}" for p, n in list(g["misses_by_pair"].items())[:4])
                print(f"      library, seen top-1 {g['seen_top1']:.3f}: AUROC with the true class of every seen spectrum "
                      f"{g['auroc_true_class']:.3f}, over correctly classified seen spectra {g['auroc_correct_only']:.3f}; "
                      f"most missed: {top}")
    drift = result.get("drift")
    if drift:
        st = drift["streams"]
        print(f"drift: nominal stream {st['nominal']['false_alarms_per_10k']:.1f} false alarms / 10 000 spectra "
              f"{st['nominal']['by_kind']}")
        for kind in ("gradual", "step", "fluorescence"):
            s = st[kind]
            line = f"  {kind:<12} delay after onset ({s['onset_definition']}): {s['delays']} (median {s['median_delay']})"
            if "offset_mae_vs_window_mean_cm1" in s:
                line += f"; offset error {s['offset_mae_vs_window_mean_cm1']:.2f} cm-1 (vs window mean)"
            line += f"; top-1 after the change {100 * s['top1_after_start']:.1f} %"
            if "compensated_top1_after_start" in s:
                line += (f", with drift compensation {100 * s['compensated_top1_after_start']:.1f} % "
                         f"(delays {s['compensated_delays']})")
            print(line)
    print(f"total {result['seconds']:.0f} s; plots: {', '.join(result['plots'])}")


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="edge-eval", description="Evaluate the novelty and drift detectors on real spectra.")
    sub = p.add_subparsers(dest="what", required=True)
    n = sub.add_parser("novelty", help="leave-classes-out novelty and drift streams (trainer/evaluate.py)")
    n.add_argument("--train", default="rruff_soysal/raw_train_labeled_40pct.npz")
    n.add_argument("--test", default="rruff_soysal/raw_test.npz")
    n.add_argument("--out", required=True, help="folder for novelty_eval.json and the PNG plots")
    n.add_argument("--config", default=None, help="model config TOML (default: configs/model_compact.toml)")
    n.add_argument("--seed", type=non_negative_int, default=0)
    n.add_argument("--ks", type=positive_int, nargs="+", default=[5, 10, 15], help="numbers of withheld classes")
    n.add_argument("--draws", type=positive_int, default=3, help="random class draws per k")
    n.add_argument("--epochs", type=positive_int, default=None,
                   help="classifier epochs (fixed; default: the config's own training recipe)")
    n.add_argument("--ae-epochs", type=positive_int, default=40, help="autoencoder epochs")
    n.add_argument("--folds", type=positive_int, default=3, help="out-of-fold folds of the autoencoder threshold")
    n.add_argument("--quantile", type=probability, default=0.95, help="threshold quantile (nominal data only)")
    n.add_argument("--noise", type=non_negative_float, default=0.01,
                   help="stream noise, relative to each spectrum's maximum")
    n.add_argument("--repeats", type=positive_int, default=3, help="repeats of each drift stream")
    n.add_argument("--n-nominal", type=positive_int, default=10_000, help="length of the nominal stream")
    n.add_argument("--bundle", default=None, help="drift part: use this bundle (edge-train --novelty) instead of "
                                                  "training a classifier and autoencoder on --train")
    n.add_argument("--skip-loco", action="store_true", help="no leave-classes-out part")
    n.add_argument("--skip-drift", action="store_true", help="no drift part")
    add_data_args(n)
    add_logging_args(n)
    from .eval_instruments import add_parser as add_instruments_parser  # issue #14: other instruments' spectra

    add_instruments_parser(sub)
    return p


def main_impl(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    setup_logging(args)
    if args.what == "instruments":
        from .eval_instruments import run

        run(args)
        return 0
    require_extra("torch", "train", "edge-eval")
    import torch

    torch.set_num_threads(1)
    result = evaluate_novelty(args)
    _print_summary(result)
    print(f"wrote {Path(args.out) / 'novelty_eval.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``edge-eval``: user errors print one ``error:`` line and exit 1."""
    return run_cli(main_impl, argv, "edge-eval")


if __name__ == "__main__":
    sys.exit(main())
