"""Accuracy benchmark (issue #5): our compact model against the paper's CNN and classical peers, in one run
with the same training splits and the same shifted test sets.

Data: the paper's public RRUFF splits (``rruff_soysal/raw_train_labeled_{10,20,30,40}pct.npz``), scored on
``raw_test.npz`` (150 spectra, 63 minerals) shifted right by 0 … 40 cm⁻¹ with the project's shift function
(:func:`edge.shift.shift_spectra`, each row padded with its own first value, as the paper built its +15 and
+30 cm⁻¹ sets). The test set is only scored, never used to choose anything.

Methods
-------
* ``compact`` — ours: ``configs/model_compact.toml`` unchanged (2-channel input, ~63 k parameters), trained
  with :func:`trainer.train.fit`; one run per seed.
* ``paper_m2`` / ``paper_m16`` — the paper's CNN (Soysal et al. §3): :class:`trainer.model.RamanCNN` with
  pooling m = 2 or 16 in n = 3 stages and the flatten + dense head (``dense_units=[2048]``: 22.95 M
  parameters at m = 2, the paper's ~23 M), one max-normalised input channel (``PreprocessConfig()``), Adam
  1e-3 with ReduceLROnPlateau and class-weighted cross-entropy (``TrainConfig(schedule="plateau")``), no
  augmentation (the paper trained on the spectra as they are).
* ``knn_peaks`` / ``svm_peaks`` — paper §3 baselines: :func:`scipy.signal.find_peaks_cwt` (widths 10–20
  points) on each spectrum, counts of peaks per 12 cm⁻¹ bin, then scikit-learn's 1-nearest-neighbour or
  RBF SVM (C = 10, gamma "scale", balanced class weights). Deterministic: one run.
* ``lr_snv_deriv`` — scikit-learn logistic regression (C = 1, balanced class weights) on the SNV of the
  Savitzky–Golay first derivative (11 points; the same :class:`edge.preprocess.Preprocessor` channel as our
  model's second input). Deterministic: one run.
* ``minirocket`` — aeon's ``MiniRocketClassifier`` (10 000 kernels, ridge with built-in CV) on the
  Savitzky–Golay first derivative; seeded. Reported as "not installed" without ``aeon`` (extra ``bench``).

Also: our model's INT8 export on the 40 % split (first seed: train → :func:`trainer.bundle_io.save_model`
into a temporary bundle → :func:`export.cli.export_bundle` with ``int8=True`` → ``model.int8.onnx`` scored
with onnxruntime), and the pooling study of the paper's Tables 3–4 as plots (40 % split, first seed): top-1
versus shift 0 … 40 cm⁻¹ for the paper CNN with m = 2 / 16 / 64 (n = 3) and n = 1 / 3 / 10 (m = 2), next to
ours (:func:`trainer.report.plot_shift_curve`). At n = 1 the flatten is 4× longer; its dense layer has 512
units so the model keeps the paper's ~23 M parameters.

Every finished (method, split, seed) cell is stored in ``accuracy_cells.json`` under the output folder,
keyed by a fingerprint of its settings: an interrupted run resumes where it stopped, and the quick run shares
the cells it has in common with the full run (our model's settings do not change with ``--quick``). The
JSON, the markdown table and the plots are rewritten after every cell, so partial results can be read while
the benchmark runs.

Run::

    edge-bench accuracy [--quick]
    python bench/bench_accuracy.py --json bench/results/accuracy.json [--quick] [--seeds 3] [--splits 10 20 30 40]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import pathlib
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np

from edge.data import SpectraSet, load_spectra
from edge.preprocess import PreprocessConfig, Preprocessor, RamanGrid, resample
from edge.shift import shift_spectra

__all__ = [
    "METHODS",
    "TARGETS_TOP1",
    "TEAM_EARLIER_TOP1",
    "aeon_available",
    "first_derivative",
    "knn_scores",
    "lr_scores",
    "minirocket_scores",
    "peak_count_features",
    "peak_positions",
    "run",
    "snv_derivative",
    "svm_scores",
]

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "model_compact.toml"
ENSEMBLE_CONFIG = DEFAULT_CONFIG.with_name("model_ensemble.toml")
TRAIN_FILE = "rruff_soysal/raw_train_labeled_{}pct.npz"
TEST_FILE = "rruff_soysal/raw_test.npz"
SPLITS = (10, 20, 30, 40)
#: Shifts of the accuracy-versus-shift curves, cm⁻¹ (also every table column is one of them).
CURVE_SHIFTS_CM1 = tuple(range(0, 45, 5))
#: Table columns: (training split %, test shift cm⁻¹).
COLUMNS = ((10, 0), (20, 0), (30, 0), (40, 0), (40, 15), (40, 30))
PEAK_WIDTHS = tuple(range(10, 21))
PEAK_BIN_CM1 = 12.0
#: Issue #5 targets for our model: 3-seed mean top-1 (%), per table column.
TARGETS_TOP1 = {(10, 0): 65.0, (20, 0): 76.0, (30, 0): 83.0, (40, 0): 85.0, (40, 15): 80.0, (40, 30): 80.0}
#: Top-1 (%) measured earlier by the team, per table column (None: not measured), for sanity.
TEAM_EARLIER_TOP1 = {
    "paper_m2": (44, 57, 68, 72, 30, 7),
    "paper_m16": (None, None, None, 59, 52, 39),
    "svm_peaks": (36, 54, 67, 68, 7, 6),
    "lr_snv_deriv": (61, 73, 75, 82, 13, 4),
    "minirocket": (53, 73, 81, 83, 74, 71),
}
#: Supervised CNN top-1 (%) the paper reports on these splits (Table 7) and shift robustness (Table 3, full pool).
PAPER_TOP1 = {"table7_splits_10_20_30_40": (42, 58, 65, 69),
              "table3_m2_shift_0_15_30": (83, 29, 8), "table3_m64_shift_0_15_30": (62, 47, 39)}
CELL_VERSION = 1
#: The dial (``--shift-tolerance-cm1``) for a calibrated instrument: drift within ±5 cm⁻¹.
CALIBRATED_TOLERANCE_CM1 = 5.0
#: Our models with the dial matched to each column's drift: the calibrated setting where the test spectra are
#: unshifted, the default (40 cm⁻¹) where they are shifted. Each cell is an ordinary trained model; the
#: choice is the instrument's specification, made before any test spectrum is seen.
DIAL_ROWS = {
    "compact_dial": {"label": "ours, dial matched to the drift (T=5 at 0, T=40 shifted)",
                     "at_zero": "compact_calibrated", "shifted": "compact"},
    "ensemble_dial": {"label": "ours, 2 half-width members, dial matched to the drift (T=5 at 0, T=40 shifted)",
                      "at_zero": "ensemble_calibrated", "shifted": "ensemble"},
    "compact_dial_compensated": {"label": "ours, dial matched to the drift + drift compensation (T=5 at 0, "
                                          "T=40 compensated shifted)",
                                 "at_zero": "compact_calibrated", "shifted": "compact_compensated"},
    "ensemble_dial_compensated": {"label": "ours, 2 half-width members, dial matched + drift compensation (T=5 "
                                           "at 0, T=40 compensated shifted)",
                                  "at_zero": "ensemble_calibrated", "shifted": "ensemble_compensated"},
}
#: Our models exported to INT8 and scored (40 % split, first seed), with the calibration each is exported
#: with: the T = 5 model loses 1.3 points with minmax calibration (the gate refuses it) and none with
#: percentile calibration (``edge-export --int8 --calibrate-method percentile``).
INT8_CHECKS = {"compact": "minmax", "compact_calibrated": "percentile"}
#: Rows of ours compared with the peers and the targets, in this order.
OUR_ROWS = ("default", "compact", "compact_dial", "ensemble", "ensemble_dial", "compact_compensated",
            "compact_dial_compensated", "ensemble_compensated", "ensemble_dial_compensated")
PEER_KEYS = ("paper_m2", "paper_m16", "knn_peaks", "svm_peaks", "lr_snv_deriv", "minirocket")


# ---------------------------------------------------------------------------------------------------------
# Peer features and classifiers
# ---------------------------------------------------------------------------------------------------------

def peak_positions(spectra: np.ndarray, widths: Sequence[int] = PEAK_WIDTHS) -> list[np.ndarray]:
    """Peak indices of each spectrum found by :func:`scipy.signal.find_peaks_cwt` (paper §3).

    Parameters
    ----------
    spectra : numpy.ndarray, shape (B, N)
        Spectra on a uniform grid (any intensity units).
    widths : sequence of int
        Ricker-wavelet widths in grid points (paper: 10 … 20).

    Returns
    -------
    list of numpy.ndarray
        B arrays of peak indices (int, ascending).
    """
    from scipy.signal import find_peaks_cwt

    w = np.asarray(widths)
    return [np.asarray(find_peaks_cwt(np.asarray(row, dtype=np.float64), w), dtype=np.intp) for row in spectra]


def peak_count_features(spectra: np.ndarray, raman_shift_cm1: np.ndarray, widths: Sequence[int] = PEAK_WIDTHS,
                        bin_cm1: float = PEAK_BIN_CM1) -> np.ndarray:
    """Counts of detected peaks per Raman-shift bin (paper §3: peak features for kNN and SVM).

    Parameters
    ----------
    spectra : numpy.ndarray, shape (B, N)
        Spectra on the uniform axis ``raman_shift_cm1``.
    raman_shift_cm1 : numpy.ndarray, shape (N,)
        Raman shift of the points, cm⁻¹.
    widths : sequence of int
        :func:`scipy.signal.find_peaks_cwt` widths, grid points.
    bin_cm1 : float
        Bin width, cm⁻¹; bins start at the axis' first value.

    Returns
    -------
    numpy.ndarray, shape (B, ceil(span / bin_cm1)), float32
        Number of peaks in each bin (span = last − first Raman shift + one step).
    """
    axis = np.asarray(raman_shift_cm1, dtype=np.float64)
    step = (axis[-1] - axis[0]) / (axis.size - 1)
    n_bins = int(np.ceil((axis[-1] - axis[0] + step) / bin_cm1 - 1e-9))
    edges = axis[0] + bin_cm1 * np.arange(n_bins + 1)
    out = np.zeros((len(spectra), n_bins), dtype=np.float32)
    for i, idx in enumerate(peak_positions(spectra, widths)):
        out[i] = np.histogram(axis[idx], bins=edges)[0]
    return out


class _PeakFeatureCache:
    """Peak-count features by spectrum content: the splits overlap and the test set is reused by two methods."""

    def __init__(self, axis: np.ndarray) -> None:
        self.axis, self._rows = axis, {}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        keys = [hashlib.sha1(np.ascontiguousarray(r, dtype=np.float32).tobytes()).hexdigest() for r in x]
        todo = [i for i, k in enumerate(keys) if k not in self._rows]
        if todo:
            feats = peak_count_features(x[todo], self.axis)
            for i, f in zip(todo, feats):
                self._rows[keys[i]] = f
        return np.stack([self._rows[k] for k in keys])


def _channel(x: np.ndarray, grid: RamanGrid, normalisation: str) -> np.ndarray:
    cfg = PreprocessConfig(grid=grid, derivative=1, derivative_window=11, normalisation=normalisation)
    return Preprocessor(cfg)(x)


def snv_derivative(spectra: np.ndarray, grid: RamanGrid | None = None) -> np.ndarray:
    """SNV of the Savitzky–Golay first derivative (11 points, per cm⁻¹): our model's second input channel.

    Parameters
    ----------
    spectra : numpy.ndarray, shape (B, N), float
        Spectra on ``grid`` (N = ``grid.n_points``).
    grid : RamanGrid, optional
        Raman-shift grid (default: the paper's 200–1591 cm⁻¹, 1 cm⁻¹ step).

    Returns
    -------
    numpy.ndarray, shape (B, N), float32
        Each row with zero mean and unit standard deviation.
    """
    return _channel(spectra, grid or RamanGrid(), "snv")


def first_derivative(spectra: np.ndarray, grid: RamanGrid | None = None) -> np.ndarray:
    """Savitzky–Golay first derivative (11 points), intensity units per cm⁻¹, shape (B, N), float32."""
    return _channel(spectra, grid or RamanGrid(), "none")


def _as_list(x_test) -> tuple[list[np.ndarray], bool]:
    if isinstance(x_test, (list, tuple)):
        return list(x_test), True
    return [x_test], False


def knn_scores(f_train: np.ndarray, y_train: np.ndarray, f_test, n_classes: int):
    """1-nearest-neighbour (scikit-learn, Euclidean) class scores.

    Parameters
    ----------
    f_train : numpy.ndarray, shape (M, F)
        Training features.
    y_train : numpy.ndarray, shape (M,), int in [0, n_classes)
    f_test : numpy.ndarray, shape (B, F), or a list of them
        Test features (a list: one fit scores several test sets).
    n_classes : int

    Returns
    -------
    numpy.ndarray, shape (B, n_classes), float64 (a list of them for a list input)
        Minus the distance to the class's nearest training spectrum (−inf for a class without one): the
        top-1 of these scores is the 1-NN prediction, their ranking gives top-3.
    """
    from sklearn.neighbors import KNeighborsClassifier

    tests, many = _as_list(f_test)
    with warnings.catch_warnings():  # "more than 50 % unique classes": expected with 1–5 spectra per mineral
        warnings.simplefilter("ignore", UserWarning)
        knn = KNeighborsClassifier(n_neighbors=1).fit(f_train, y_train)
    out = []
    for f in tests:
        dist, idx = knn.kneighbors(f, n_neighbors=len(f_train))
        scores = np.full((len(f), n_classes), -np.inf)
        rows = np.repeat(np.arange(len(f)), dist.shape[1])
        np.maximum.at(scores, (rows, y_train[idx].ravel()), -dist.ravel())
        out.append(scores)
    return out if many else out[0]


def svm_scores(f_train: np.ndarray, y_train: np.ndarray, f_test, n_classes: int, c: float = 10.0):
    """RBF SVM (scikit-learn ``SVC``, gamma "scale", balanced class weights): one-vs-rest decision values.

    Parameters and returns as :func:`knn_scores` (−inf for classes absent from training); ``c`` is the
    SVM's C.
    """
    from sklearn.svm import SVC

    tests, many = _as_list(f_test)
    svm = SVC(kernel="rbf", C=c, gamma="scale", class_weight="balanced", decision_function_shape="ovr")
    svm.fit(f_train, y_train)
    out = [_expand(svm.decision_function(f), svm.classes_, n_classes) for f in tests]
    return out if many else out[0]


def lr_scores(x_train: np.ndarray, y_train: np.ndarray, x_test, n_classes: int, c: float = 1.0):
    """Multinomial logistic regression (scikit-learn, lbfgs, balanced class weights): probabilities.

    Parameters and returns as :func:`knn_scores` (features: e.g. :func:`snv_derivative`; probability 0
    for classes absent from training); ``c`` is the inverse regularisation strength.
    """
    from sklearn.linear_model import LogisticRegression

    tests, many = _as_list(x_test)
    lr = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(x_train, y_train)
    out = [_expand(lr.predict_proba(x), lr.classes_, n_classes, fill=0.0) for x in tests]
    return out if many else out[0]


def aeon_available() -> bool:
    """True when aeon (extra ``bench``) is installed."""
    return importlib.util.find_spec("aeon") is not None


def minirocket_scores(x_train: np.ndarray, y_train: np.ndarray, x_test, n_classes: int, seed: int = 0,
                      n_kernels: int = 10_000):
    """Aeon ``MiniRocketClassifier`` (MiniRocket features, scaling, ``RidgeClassifierCV``): decision values.

    Parameters
    ----------
    x_train : numpy.ndarray, shape (M, N)
        Univariate training series (here the first derivative of each spectrum).
    y_train : numpy.ndarray, shape (M,), int
    x_test : numpy.ndarray, shape (B, N), or a list of them
    n_classes : int
    seed : int
        ``random_state`` of the kernels' biases.
    n_kernels : int
        Number of MiniRocket kernels.

    Returns
    -------
    numpy.ndarray, shape (B, n_classes), float64 (a list of them for a list input)
        Ridge decision values of the fitted pipeline (−inf for classes absent from training).
    """
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    from aeon.classification.convolution_based import MiniRocketClassifier

    tests, many = _as_list(x_test)
    clf = MiniRocketClassifier(n_kernels=n_kernels, n_jobs=1, random_state=seed)
    clf.fit(np.asarray(x_train, dtype=np.float64)[:, None, :], np.asarray(y_train))
    pipe = clf.pipeline_  # MiniRocket -> StandardScaler(with_mean=False) -> RidgeClassifierCV
    out = [_expand(pipe.decision_function(np.asarray(x, dtype=np.float64)[:, None, :]),
                   np.asarray(pipe.classes_).astype(int), n_classes) for x in tests]
    return out if many else out[0]


def _expand(scores: np.ndarray, present: np.ndarray, n_classes: int, fill: float = -np.inf) -> np.ndarray:
    out = np.full((scores.shape[0], n_classes), fill, dtype=np.float64)
    out[:, np.asarray(present, dtype=int)] = scores
    return out


# ---------------------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------------------

@dataclass
class Method:
    """One row of the benchmark.

    Attributes
    ----------
    key : str
        Identifier (JSON keys, cache keys).
    label : str
        Table row name.
    seeded : bool
        Trained once per seed (else one deterministic run, reported with std 0).
    settings : dict
        Everything that defines the method (recorded and fingerprinted for the cell cache).
    table : bool
        A row of the table (False: pooling-study variant, 40 % split and first seed only).
    fn : callable
        ``fn(method, data, seed, int8=..., data_dir=...)`` → dict with ``scores`` (shift cm⁻¹ → array of
        shape (150, 63): class scores of the shifted test spectra) and ``train_seconds``, or ``status``.
    """

    key: str
    label: str
    seeded: bool
    settings: dict[str, Any]
    table: bool = True
    fn: Callable[..., dict[str, Any]] | None = field(default=None, repr=False)


def _paper_settings(pool_size: int, n_pool: int, dense_units: list[int], max_epochs: int | None = None) -> dict:
    from trainer.augment import AugmentConfig
    from trainer.model import ModelConfig
    from trainer.train import TrainConfig

    train = TrainConfig(schedule="plateau", threads=1)
    if max_epochs is not None:
        train.max_epochs = train.min_epochs = max_epochs
    return {"preprocessing": PreprocessConfig().to_dict(),
            "model": ModelConfig(pool_size=pool_size, n_pool=n_pool, head="dense", dense_units=list(dense_units)).to_dict(),
            "training": train.to_dict(), "augmentation": AugmentConfig(probability=0.0).to_dict()}


def build_methods(quick: bool = False, config: str | os.PathLike | None = None) -> list[Method]:
    """The benchmark's methods with their settings (``quick``: smaller paper CNNs and MiniRocket; ours unchanged).

    Returns
    -------
    list of Method
    """
    from trainer.settings import TrainerSettings, apply_shift_tolerance

    def ours(key: str, label: str, path, tolerance_cm1: float | None = None) -> Method:
        settings = TrainerSettings.from_toml(path)
        settings.training.threads = 1
        extra: dict[str, Any] = {"config_file": str(path)}
        if tolerance_cm1 is not None:
            settings = apply_shift_tolerance(settings, tolerance_cm1)
            extra["shift_tolerance_cm1"] = tolerance_cm1
        return Method(key, label, True, {**settings.to_dict(), **extra}, True, _fit_cnn)

    config = config or DEFAULT_CONFIG
    t5 = f"dial T={CALIBRATED_TOLERANCE_CM1:g} cm⁻¹ (calibrated instrument)"
    dense, dense_n1 = ([256], [64]) if quick else ([2048], [512])
    epochs = 15 if quick else None
    mr_kernels = 2_000 if quick else 10_000

    def compensated(m: Method, drift: dict[str, Any] | None = None) -> Method:
        from edge.novelty import DriftConfig

        cfg = DriftConfig.from_dict(drift) if drift is not None else DriftConfig(compensate_offset=True)
        m.settings = {**m.settings, "drift_compensation": cfg.to_dict(),
                      "stream": "test spectra one at a time, in a random order seeded by the seed"}
        m.fn = _fit_cnn_compensated
        return m

    def paper(key, label, m, n, units, table=True):
        return Method(key, label, True, _paper_settings(m, n, units, epochs), table, _fit_cnn)

    return [
        # The shipped default (issue #14): edge-train's defaults (the config) behind the daemon's default drift
        # settings (compensation on, offset against every class's reference).
        compensated(ours("default", f"ours: the default ({pathlib.Path(config).name} + daemon defaults: drift "
                                    "compensation)", config), {}),
        ours("compact", f"ours: compact CNN ({pathlib.Path(config).name}), no compensation", config),
        ours("compact_calibrated", f"ours: same, {t5}", config, CALIBRATED_TOLERANCE_CM1),
        ours("ensemble", "ours: 2 half-width members (model_ensemble.toml, T=40)", ENSEMBLE_CONFIG),
        ours("ensemble_calibrated", f"ours: 2 half-width members, {t5}", ENSEMBLE_CONFIG, CALIBRATED_TOLERANCE_CM1),
        compensated(ours("compact_compensated", "ours: compact CNN (T=40) + onboard drift compensation "
                                                "(daemon's offset estimate, streamed)", config)),
        compensated(ours("ensemble_compensated", "ours: 2 half-width members (T=40) + onboard drift compensation",
                         ENSEMBLE_CONFIG)),
        paper("paper_m2", "paper CNN m=2 n=3", 2, 3, dense),
        paper("paper_m16", "paper CNN m=16 n=3", 16, 3, dense),
        Method("knn_peaks", "kNN (k=1) on peak counts", False,
               {"features": {"find_peaks_cwt_widths": list(PEAK_WIDTHS), "bin_cm1": PEAK_BIN_CM1},
                "classifier": "sklearn KNeighborsClassifier(n_neighbors=1), Euclidean"}, True, _fit_peaks),
        Method("svm_peaks", "SVM (RBF) on peak counts", False,
               {"features": {"find_peaks_cwt_widths": list(PEAK_WIDTHS), "bin_cm1": PEAK_BIN_CM1},
                "classifier": "sklearn SVC(kernel='rbf', C=10, gamma='scale', class_weight='balanced')"}, True,
               _fit_peaks),
        Method("lr_snv_deriv", "logistic regression on SNV of 1st derivative", False,
               {"features": "SNV of Savitzky-Golay 1st derivative (window 11, quadratic), edge.preprocess",
                "classifier": "sklearn LogisticRegression(C=1, lbfgs, max_iter=3000, class_weight='balanced')"},
               True, _fit_lr),
        Method("minirocket", "MiniRocket (aeon) on 1st derivative", True,
               {"features": "Savitzky-Golay 1st derivative (window 11, quadratic), edge.preprocess",
                "classifier": f"aeon MiniRocketClassifier(n_kernels={mr_kernels}): StandardScaler(with_mean=False) "
                              "+ RidgeClassifierCV(alphas=logspace(-3, 3, 10))", "n_kernels": mr_kernels},
               True, _fit_minirocket),
        paper("paper_m64", "paper CNN m=64 n=3", 64, 3, dense, table=False),
        paper("paper_m2_n1", f"paper CNN m=2 n=1 (dense {dense_n1[0]})", 2, 1, dense_n1, table=False),
        paper("paper_m2_n10", "paper CNN m=2 n=10", 2, 10, dense, table=False),
    ]


@dataclass
class _Data:
    train: SpectraSet
    x_train: np.ndarray
    classes: list[str]
    y_train: np.ndarray
    tests: dict[float, np.ndarray]
    y_test: np.ndarray
    grid: RamanGrid
    peaks: _PeakFeatureCache
    train_path: str
    test_path: str


def _train_cnn(method: Method, d: _Data, seed: int):
    """Train one of the CNN methods; returns (TrainResult, PreprocessConfig, TrainerSettings, seconds)."""
    from trainer.augment import AugmentConfig
    from trainer.model import ModelConfig
    from trainer.settings import TrainerSettings
    from trainer.train import TrainConfig, fit

    s = method.settings
    pcfg = PreprocessConfig.from_dict(s["preprocessing"])
    tcfg = TrainConfig.from_dict({**s["training"], "seed": int(seed)})
    mcfg, acfg = ModelConfig.from_dict(s["model"]), AugmentConfig.from_dict(s["augmentation"])
    t0 = time.perf_counter()
    r = fit(d.train, pcfg, mcfg, tcfg, acfg, classes=d.classes, progress=False)
    return r, pcfg, TrainerSettings(pcfg, r.model.config, tcfg, acfg), time.perf_counter() - t0


def _cnn_cell(r, t_train: float, scores: dict[float, np.ndarray], t_score: float) -> dict[str, Any]:
    from trainer.model import count_parameters

    return {"scores": scores, "train_seconds": t_train, "score_seconds": t_score,
            "n_parameters": count_parameters(r.model), "epochs": r.epochs,
            "final_train_loss": r.history[-1]["loss"] if r.history else None}


def _fit_cnn(method: Method, d: _Data, seed: int, int8: bool = False, data_dir: str | None = None) -> dict[str, Any]:
    from trainer.train import predict_proba

    r, pcfg, settings, t_train = _train_cnn(method, d, seed)
    pre = Preprocessor(pcfg)
    t0 = time.perf_counter()
    scores = {sh: predict_proba(r.model, pre(x)) for sh, x in d.tests.items()}
    out = _cnn_cell(r, t_train, scores, time.perf_counter() - t0)
    if int8:
        out["int8"] = _int8_check(r, settings, d, scores[0.0], data_dir, INT8_CHECKS.get(method.key, "minmax"))
    return out


def _fit_cnn_compensated(method: Method, d: _Data, seed: int, **_: Any) -> dict[str, Any]:
    """Our CNN behind the daemon's drift compensation: each shifted test set is streamed one spectrum at a
    time (random order, seeded) through :class:`edge.novelty.DriftMonitor`, and every spectrum is
    preprocessed with the offset estimated from the spectra before it removed (``compensate_offset``),
    exactly as :class:`edge.daemon.Daemon` does. References: class-mean training spectra.
    """
    from edge.novelty import DriftConfig, DriftMonitor, class_mean_spectra
    from trainer.train import predict_proba

    r, pcfg, _, t_train = _train_cnn(method, d, seed)
    pre = Preprocessor(pcfg)
    refs = class_mean_spectra(pre(d.x_train), d.train.labels, d.classes)
    cfg = DriftConfig.from_dict(method.settings["drift_compensation"])
    t0 = time.perf_counter()
    scores, corrections = {}, {}
    for sh, x in d.tests.items():
        monitor = DriftMonitor(cfg, refs, d.grid.step_cm1)
        out = np.zeros((len(x), len(d.classes)))
        applied = np.zeros(len(x))
        for n, i in enumerate(np.random.default_rng(seed).permutation(len(x))):
            applied[i] = monitor.correction_cm1
            xi = pre(x[i:i + 1], None, applied[i])
            out[i] = predict_proba(r.model, xi)[0]
            monitor.update(np.array([n]), 0, spectra=xi, proba=out[i:i + 1], applied_offset_cm1=applied[i])
        scores[sh] = out
        corrections[f"{sh:g}"] = {"uncorrected_spectra": int(np.sum(applied == 0.0)),
                                  "median_correction_cm1": float(np.median(applied[applied != 0.0]))
                                  if np.any(applied != 0.0) else None}
    cell = _cnn_cell(r, t_train, scores, time.perf_counter() - t0)
    cell["compensation"] = corrections
    return cell


def _int8_check(r, settings, d: _Data, p_fp32: np.ndarray, data_dir: str | None,
                calibrate_method: str = "minmax") -> dict[str, Any]:
    """Train → save_model (temporary bundle) → export_bundle(int8=True) → score model.int8.onnx."""
    from export.cli import export_bundle
    from export.errors import AccuracyGateError
    from export.quantize import INT8_FILE, QuantConfig, score_onnx
    from trainer.bundle_io import save_model

    t0 = time.perf_counter()
    res: dict[str, Any] = {"fp32_torch_top1": 100.0 * float(np.mean(p_fp32.argmax(1) == d.y_test)),
                           "calibrate_method": calibrate_method}
    with tempfile.TemporaryDirectory(prefix="bench-accuracy-") as tmp:
        bundle = save_model(pathlib.Path(tmp) / "bundle", r.model, r.labels, settings,
                            {"train_source": d.train_path, "test_source": d.test_path, "epochs": r.epochs},
                            name="raman-cnn-compact")
        # The export's own gate would delete an INT8 model more than 1 point worse; here it must stay so it
        # can be scored at every shift, so the gate is opened wide and the 1-point check is made below.
        try:
            gate = export_bundle(bundle, int8=True, max_accuracy_drop=100.0, data_dir=data_dir,
                                 quant=QuantConfig(calibrate_method=calibrate_method))
        except AccuracyGateError as exc:  # pragma: no cover - only above a 100-point drop
            gate, res["gate_error"] = bundle.metrics.get("export", {}), str(exc)
        res["export_gate"] = {k: gate.get(k) for k in ("n", "fp32_top1", "int8_top1", "drop_points",
                                                       "top1_agreement", "max_abs_probability_diff", "fp32_bytes",
                                                       "int8_bytes", "size_ratio", "quantization")}
        pre = Preprocessor(settings.preprocessing)
        int8_path, fp32_path = bundle.path / INT8_FILE, bundle.path / "model.onnx"
        for name, path in (("fp32_onnx", fp32_path), ("int8", int8_path)):
            if path.is_file():
                for sh in (0.0, 15.0, 30.0):
                    p = score_onnx(path, pre(d.tests[sh]))
                    res[f"{name}_top1" + ("" if sh == 0 else f"_shift{int(sh)}")] = 100.0 * float(np.mean(p.argmax(1) == d.y_test))
    if "int8_top1" not in res:  # no INT8 file: the export's own gate figures
        res["int8_top1"] = res["export_gate"].get("int8_top1")
    if res.get("int8_top1") is not None:
        res["drop_points_vs_fp32_torch"] = res["fp32_torch_top1"] - res["int8_top1"]
        res["within_1_point"] = bool(res["drop_points_vs_fp32_torch"] <= 1.0 + 1e-9)
        res["gate_passed"] = res["within_1_point"]  # what export_bundle(max_accuracy_drop=1.0) would decide
    res["seconds"] = time.perf_counter() - t0
    return res


def _fit_peaks(method: Method, d: _Data, seed: int, **_: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    f_train = d.peaks(d.x_train)
    f_tests = [d.peaks(x) for x in d.tests.values()]
    t_feat = time.perf_counter() - t0
    fn = knn_scores if method.key == "knn_peaks" else svm_scores
    t0 = time.perf_counter()
    scores = dict(zip(d.tests, fn(f_train, d.y_train, f_tests, len(d.classes))))
    return {"scores": scores, "feature_seconds": t_feat, "train_seconds": time.perf_counter() - t0,
            "note": "peak features cached by spectrum content across splits and methods; train_seconds = "
                    "fit and score of the classifier; feature_seconds = peak finding not already cached"}


def _fit_lr(method: Method, d: _Data, seed: int, **_: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    scores = dict(zip(d.tests, lr_scores(snv_derivative(d.x_train, d.grid), d.y_train,
                                         [snv_derivative(x, d.grid) for x in d.tests.values()], len(d.classes))))
    return {"scores": scores, "train_seconds": time.perf_counter() - t0}


def _fit_minirocket(method: Method, d: _Data, seed: int, **_: Any) -> dict[str, Any]:
    if not aeon_available():
        return {"status": "not installed", "note": "pip install 'raman-edge[bench]' (aeon) for this row"}
    import aeon

    t0 = time.perf_counter()
    scores = dict(zip(d.tests, minirocket_scores(first_derivative(d.x_train, d.grid), d.y_train,
                                                 [first_derivative(x, d.grid) for x in d.tests.values()],
                                                 len(d.classes), seed=int(seed),
                                                 n_kernels=method.settings["n_kernels"])))
    return {"scores": scores, "train_seconds": time.perf_counter() - t0, "aeon": aeon.__version__}


# ---------------------------------------------------------------------------------------------------------
# Cells, cache, aggregation
# ---------------------------------------------------------------------------------------------------------

#: Settings added after cells were first cached, with the value that trains exactly as before: dropped from
#: the fingerprint at that value, so adding a setting does not invalidate hours of cached peer cells.
NEUTRAL_SETTINGS = {("model", "members"): 1, ("training", "mixup_alpha"): 0.0, ("model", "pool_blur"): 0,
                    ("augmentation", "band_ratio"): 0.0}


def _fingerprint(method: Method, shifts: Sequence[float]) -> str:
    settings = {k: (dict(v) if isinstance(v, dict) else v) for k, v in method.settings.items()}
    for (section, name), neutral in NEUTRAL_SETTINGS.items():
        if isinstance(settings.get(section), dict) and settings[section].get(name, neutral) == neutral:
            settings[section].pop(name, None)
    blob = json.dumps({"v": CELL_VERSION, "settings": settings, "shifts": [float(s) for s in shifts],
                       "train": TRAIN_FILE, "test": TEST_FILE}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _cell_key(method: Method, split: int, seed: int, shifts: Sequence[float]) -> str:
    return f"{method.key}|{split}|{seed}|{_fingerprint(method, shifts)}"


class _CellCache:
    def __init__(self, path: pathlib.Path | None) -> None:
        self.path = path
        self.cells: dict[str, dict[str, Any]] = {}
        if path is not None and path.is_file():
            try:
                self.cells = json.loads(path.read_text(encoding="utf-8")).get("cells", {})
            except (OSError, ValueError):
                self.cells = {}

    def put(self, key: str, cell: dict[str, Any]) -> None:
        self.cells[key] = cell
        if self.path is not None:
            _write_atomic(self.path, json.dumps({"cells": self.cells}, indent=1, default=_json_default) + "\n")


def _write_atomic(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _metrics(scores: np.ndarray, y: np.ndarray, classes: list[str]) -> dict[str, float]:
    from trainer.report import classification_metrics

    s = np.where(np.isfinite(scores), scores, np.nanmin(np.where(np.isfinite(scores), scores, np.inf)) - 1.0)
    m = classification_metrics(s, y, classes)
    return {"top1": 100.0 * m["top1"], "top3": 100.0 * m["top3"], "macro_f1": 100.0 * m["macro_f1"]}


def _stats(values: list[float]) -> dict[str, Any]:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size),
            "values": [round(float(x), 3) for x in v]}


def _summarise(methods: list[Method], cells: dict[str, dict[str, Any]], splits: Sequence[int],
               seeds: Sequence[int], shifts: Sequence[float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in methods:
        per_split: dict[str, Any] = {}
        status = None
        for split in splits:
            runs = [cells.get(_cell_key(m, split, sd, shifts)) for sd in (seeds if m.seeded else seeds[:1])]
            runs = [r for r in runs if r is not None]
            if any(r.get("status") for r in runs):
                status = next(r["status"] for r in runs if r.get("status"))
                continue
            if not runs:
                continue
            per_split[str(split)] = {
                "n_runs": len(runs),
                "shifts": {f"{float(sh):g}": {k: _stats([r["shifts"][f"{float(sh):g}"][k] for r in runs])
                                               for k in ("top1", "top3", "macro_f1")} for sh in shifts},
                "train_seconds": _stats([r["train_seconds"] for r in runs]),
                "n_parameters": runs[0].get("n_parameters"),
            }
        out[m.key] = {"label": m.label, "seeded": m.seeded, "table": m.table, "splits": per_split}
        if status:
            out[m.key]["status"] = status
    return out


def _value(summary: dict[str, Any], key: str, split: int, shift: float, metric: str = "top1") -> dict[str, Any] | None:
    s = summary.get(key, {}).get("splits", {}).get(str(split))
    return None if s is None else s["shifts"].get(f"{float(shift):g}", {}).get(metric)


def _row_value(summary: dict[str, Any], row: str, split: int, shift: float, metric: str = "top1") -> dict[str, Any] | None:
    """A method's value, or for a dial-matched row (:data:`DIAL_ROWS`) that of the method matching the shift."""
    if row in DIAL_ROWS:
        d = DIAL_ROWS[row]
        return _value(summary, d["shifted"] if shift else d["at_zero"], split, shift, metric)
    return _value(summary, row, split, shift, metric)


def _versus_peers(summary: dict[str, Any]) -> dict[str, Any]:
    """Per column: the best peer's mean top-1 and whether each of our rows (:data:`OUR_ROWS`) is ahead."""
    out = {}
    for split, shift in COLUMNS:
        peers = {k: _value(summary, k, split, shift) for k in PEER_KEYS}
        peers = {k: v["mean"] for k, v in peers.items() if v and v.get("mean") is not None}
        best = max(peers, key=peers.get) if peers else None
        row: dict[str, Any] = {"best_peer": best, "best_peer_top1": None if best is None else round(peers[best], 2)}
        for key in OUR_ROWS:
            v = _row_value(summary, key, split, shift)
            mean = None if v is None else v.get("mean")
            row[key] = None if mean is None else round(mean, 2)
            row[f"{key}_ahead"] = None if mean is None or best is None else bool(mean > peers[best])
        out[_colname((split, shift))] = row
    return out


def _targets(summary: dict[str, Any], n_seeds: int, row: str = "compact") -> dict[str, Any]:
    res = {}
    for (split, shift), target in TARGETS_TOP1.items():
        v = _row_value(summary, row, split, shift)
        name = f"{split}%" + (f"+{shift}" if shift else "")
        if v is None or v["mean"] is None:
            res[name] = {"target": target, "mean": None, "met": None, "n_seeds": 0}
        else:
            res[name] = {"target": target, "mean": round(v["mean"], 2), "std": round(v["std"], 2),
                         "met": bool(v["mean"] >= target), "n_seeds": v["n"],
                         "provisional": v["n"] < n_seeds or n_seeds < 3}
    return res


# ---------------------------------------------------------------------------------------------------------
# Reporting: markdown and plots
# ---------------------------------------------------------------------------------------------------------

def _fmt(v: dict[str, Any] | None, std: bool = True) -> str:
    if v is None or v.get("mean") is None:
        return "–"
    return f"{v['mean']:.1f} ± {v['std']:.1f}" if std else f"{v['mean']:.1f}"


def _params(summary: dict[str, Any], key: str) -> str:
    for s in summary[key]["splits"].values():
        n = s.get("n_parameters")
        if n:
            return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"
    return "–"


def markdown(result: dict[str, Any]) -> str:
    """The result as a markdown report: top-1 table (rows = methods), macro-F1 and top-3, targets, INT8,
    pooling study, earlier figures, settings and timings.
    """
    summary, methods = result["summary"], [m for m in result["methods"] if m["table"]]
    header = "| method | params | " + " | ".join(_colname(c) for c in COLUMNS) + " |"
    rule = "|---|---|" + "---|" * len(COLUMNS)
    n_seeds = len(result["seeds"])
    state = "complete" if result["complete"] else f"PARTIAL ({result['cells_done']}/{result['cells_planned']} cells)"
    lines = [f"# Accuracy benchmark — `edge-bench accuracy`{' --quick' if result['quick'] else ''} ({state})", "",
             f"Test: `raw_test.npz` (150 spectra, 63 minerals), shifted right by 0/15/30 cm⁻¹ with "
             f"`edge.shift.shift_spectra`. Training: `raw_train_labeled_{{10,20,30,40}}pct.npz`. Seeds: "
             f"{result['seeds']} (seeded methods, mean ± sample std); deterministic methods: one run, ± 0. "
             f"Run {result['started']}, {result['wall_seconds'] / 60:.1f} min on {result['machine']['summary']}"
             + (f"; {result['cells_reused_from_cache']} of {result['cells_planned']} cells reused from the cell cache "
                f"(their own compute time: {result['cell_seconds_total'] / 60:.1f} min in all)"
                if result.get("cells_reused_from_cache") else "") + ".",
             "", "## Top-1 (%)", "", header, rule]
    for m in methods:
        st = summary[m["key"]].get("status")
        if st:
            lines.append(f"| {m['label']} | – | " + " | ".join(st for _ in COLUMNS) + " |")
            continue
        lines.append(f"| {m['label']} | {_params(summary, m['key'])} | " + " | ".join(
            _fmt(_value(summary, m["key"], sp, sh)) for sp, sh in COLUMNS) + " |")
    for key, d in DIAL_ROWS.items():
        if d["at_zero"] in summary and d["shifted"] in summary:
            lines.append(f"| {d['label']} | {_params(summary, d['shifted'])} | " + " | ".join(
                _fmt(_row_value(summary, key, sp, sh)) for sp, sh in COLUMNS) + " |")
    labels = {**{k: v["label"] for k, v in summary.items()}, **{k: d["label"] for k, d in DIAL_ROWS.items()}}
    rows = [r for r in OUR_ROWS if r in labels]
    if result.get("versus_peers"):
        lines += ["", "## Ours against the best peer of each column (mean top-1, %; ✓ = strictly ahead)", "",
                  "| column | best peer | its top-1 | " + " | ".join(labels[r] for r in rows) + " |",
                  "|---|---|---|" + "---|" * len(rows)]
        for col, r in result["versus_peers"].items():
            def cell(key):
                v, ahead = r.get(key), r.get(f"{key}_ahead")
                return "–" if v is None else f"{v:.1f} {'✓' if ahead else '✗'}"
            lines.append(f"| {col} | {labels.get(r['best_peer'], '–')} | "
                         f"{'–' if r['best_peer_top1'] is None else format(r['best_peer_top1'], '.1f')} | "
                         + " | ".join(cell(k) for k in rows) + " |")
    for metric, title in (("macro_f1", "Macro-F1 (× 100)"), ("top3", "Top-3 (%)")):
        lines += ["", f"## {title}, mean over seeds", "", "| method | " + " | ".join(_colname(c) for c in COLUMNS) + " |",
                  "|---|" + "---|" * len(COLUMNS)]
        for m in methods:
            if summary[m["key"]].get("status"):
                continue
            lines.append(f"| {m['label']} | " + " | ".join(
                _fmt(_value(summary, m["key"], sp, sh, metric), std=False) for sp, sh in COLUMNS) + " |")
    by_row = result.get("targets_by_row") or {"compact": result["targets"]}
    rows_t = [r for r in OUR_ROWS if r in by_row]
    lines += ["", f"## Targets for our models (mean top-1 over {n_seeds} seed(s); the issue asks for 3)", "",
              "| column | target | " + " | ".join(labels.get(r, r) for r in rows_t) + " |",
              "|---|---|" + "---|" * len(rows_t)]

    def target_cell(t):
        if t["mean"] is None:
            return "–"
        met = "met" if t["met"] else "MISSED"
        if t.get("provisional"):
            met += f" (provisional: {t['n_seeds']} seed(s))"
        return f"{t['mean']:.1f} ± {t['std']:.1f} {met}"
    for name, t in result["targets"].items():
        lines.append(f"| {name} | ≥ {t['target']:.0f} | " + " | ".join(target_cell(by_row[r][name]) for r in rows_t) + " |")
    int8s = result.get("int8_by_method") or ({"compact": result["int8"]} if result.get("int8") else {})
    lines += ["", "## INT8 export of our models (40 % split, first seed)", ""]
    for key, q in int8s.items():
        def pc(k, q=q):
            return "–" if q.get(k) is None else f"{q[k]:.1f}"
        g = q.get("export_gate", {})
        lines.append(f"{labels.get(key, key)}: FP32 (PyTorch) top-1 {pc('fp32_torch_top1')} %, FP32 ONNX "
                     f"{pc('fp32_onnx_top1')} %, INT8 (`model.int8.onnx`, static QDQ, "
                     f"{q.get('calibrate_method', 'minmax')} calibration on the training split) {pc('int8_top1')} % → "
                     f"drop {q['drop_points_vs_fp32_torch']:+.1f} points: "
                     f"{'within 1 point (met)' if q['within_1_point'] else 'MORE than 1 point (MISSED)'}; "
                     f"top-1 agreement FP32/INT8 {g.get('top1_agreement') or float('nan'):.1f} %. At +15/+30 cm⁻¹: "
                     f"FP32 ONNX {pc('fp32_onnx_top1_shift15')}/{pc('fp32_onnx_top1_shift30')} %, INT8 "
                     f"{pc('int8_top1_shift15')}/{pc('int8_top1_shift30')} %. Size {g.get('fp32_bytes')} → "
                     f"{g.get('int8_bytes')} bytes.")
        lines.append("")
    if not int8s:
        lines.append("not run yet.")
    lines += ["", "## Pooling study (paper Tables 3–4), 40 % split, first seed: top-1 (%) vs shift (cm⁻¹)", "",
              "| model | params | " + " | ".join(f"{s:g}" for s in result["curve_shifts_cm1"]) + " |",
              "|---|---|" + "---|" * len(result["curve_shifts_cm1"])]
    for key, curve in result["pooling_study"]["curves"].items():
        lines.append(f"| {result['pooling_study']['labels'][key]} | {result['pooling_study']['params'].get(key) or '–'} | "
                     + " | ".join(f"{100 * c['top1']:.1f}" for c in curve) + " |")
    lines += ["", "Plots: " + ", ".join(f"`{pathlib.Path(p).name}`" for p in result["plots"]), "",
              "## Earlier figures (team, same splits; paper Table 7 / Table 3)", "",
              "| method | " + " | ".join(_colname(c) for c in COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    labels = {m["key"]: m["label"] for m in result["methods"]}
    for key, vals in TEAM_EARLIER_TOP1.items():
        lines.append(f"| {labels.get(key, key)} (team, earlier) | " + " | ".join("–" if v is None else str(v) for v in vals) + " |")
    lines.append("| paper Table 7, supervised CNN | " + " | ".join(str(v) for v in PAPER_TOP1["table7_splits_10_20_30_40"]) + " | – | – |")
    lines += ["", "## Timings (training seconds per run, mean; machine shared with other jobs)", "",
              "| method | " + " | ".join(f"{s} %" for s in result["splits"]) + " | total cell seconds |",
              "|---|" + "---|" * (len(result["splits"]) + 1)]
    for m in result["methods"]:
        sm = summary[m["key"]]
        if sm.get("status"):
            continue
        lines.append(f"| {m['label']} | " + " | ".join(
            _fmt(sm["splits"].get(str(sp), {}).get("train_seconds"), std=False) for sp in result["splits"])
            + f" | {result['timings'].get(m['key'], 0):.0f} |")
    lines += ["", "Settings of every method, per-seed values, timings and the machine: "
              f"`{pathlib.Path(result['json_path']).name if result.get('json_path') else 'JSON'}`.", ""]
    return "\n".join(lines)


def _colname(c: tuple[int, int]) -> str:
    split, shift = c
    return f"{split} %" + (f" +{shift}" if shift else "")


def _plots(result: dict[str, Any], out_dir: pathlib.Path, stem: str) -> list[str]:
    from trainer.report import plot_shift_curve

    made = []
    curves = result["pooling_study"]["curves"]
    labels = result["pooling_study"]["labels"]
    groups = {
        f"{stem}_shift_pool_size.png": (["paper_m2", "paper_m16", "paper_m64", "compact"],
                                       "pooling size m (n = 3), 40 % split"),
        f"{stem}_shift_pool_stages.png": (["paper_m2_n1", "paper_m2", "paper_m2_n10", "compact"],
                                         "pooling stages n (m = 2), 40 % split"),
    }
    for name, (keys, title) in groups.items():
        sel = {labels[k]: curves[k] for k in keys if k in curves}
        if sel:
            made.append(str(plot_shift_curve(sel, out_dir / name, f"Paper Tables 3–4 as a plot: {title}")))
    # every table method at 40 %, mean over seeds
    sel = {}
    for m in result["methods"]:
        v = result["summary"][m["key"]]["splits"].get("40")
        if m["table"] and v:
            sel[m["label"]] = [{"shift_cm1": float(sh), "top1": v["shifts"][f"{float(sh):g}"]["top1"]["mean"] / 100.0}
                               for sh in result["curve_shifts_cm1"]]
    if sel:
        made.append(str(plot_shift_curve(sel, out_dir / f"{stem}_shift_methods.png",
                                         "top-1 vs shift, 40 % split (mean over seeds)")))
    made.append(str(_plot_splits(result, out_dir / f"{stem}_vs_split.png")))
    return made


def _plot_splits(result: dict[str, Any], path: pathlib.Path) -> pathlib.Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for m in result["methods"]:
        sm = result["summary"][m["key"]]
        if not m["table"] or sm.get("status"):
            continue
        xs, ys, es = [], [], []
        for sp in result["splits"]:
            v = _value(result["summary"], m["key"], sp, 0.0)
            if v and v["mean"] is not None:
                xs.append(sp), ys.append(v["mean"]), es.append(v["std"])
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=m["label"])
    for (sp, sh), t in TARGETS_TOP1.items():
        if sh == 0:
            ax.plot([sp], [t], marker="_", markersize=18, color="k")
    ax.set_xlabel("labelled training spectra (% of the paper's pool)")
    ax.set_ylabel("top-1 on raw_test (%)")
    ax.set_ylim(0, 100)
    ax.set_xticks(list(result["splits"]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("top-1 vs training split (unshifted test; black dashes: our targets)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------

def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _machine() -> dict[str, Any]:
    import scipy
    import sklearn
    import torch

    cpu = platform.processor()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": 1,
            "numpy": np.__version__, "scipy": scipy.__version__, "scikit_learn": sklearn.__version__,
            "aeon": None, "onnxruntime": None}
    for mod in ("aeon", "onnxruntime"):
        if importlib.util.find_spec(mod) is not None:
            info[mod] = __import__(mod).__version__
    info["summary"] = f"{cpu}, {os.cpu_count()} CPU cores (shared), 1 thread per job"
    return info


def run(quick: bool = False, seeds: int = 3, splits: Sequence[int] = SPLITS, out_dir: str | os.PathLike = RESULTS, *,
        json_path: str | os.PathLike | None = None, methods: Sequence[str] | None = None,
        data_dir: str | None = None, config: str | os.PathLike | None = None, resume: bool = True,
        int8: bool = True, pooling: bool = True) -> dict[str, Any]:
    """Train and score every method on every split and seed; write JSON, markdown and plots.

    Parameters
    ----------
    quick : bool
        A fast check: one seed, the 10 % and 40 % splits, paper CNNs with small dense layers (256 units;
        64 at n = 1) and 15 epochs, MiniRocket with 2 000 kernels; our model unchanged. Files get the stem
        ``accuracy_quick``.
    seeds : int
        Seeds 0 … seeds−1 for the seeded methods.
    splits : sequence of int
        Training splits, % (10, 20, 30, 40).
    out_dir : path-like
        Folder for ``accuracy.json``/``.md``, the PNGs and the cell cache ``accuracy_cells.json``.
    json_path : path-like, optional
        JSON file (default ``out_dir/<stem>.json``).
    methods : sequence of str, optional
        Method keys to run (default all; see :func:`build_methods`).
    data_dir : str, optional
        Data folder (default: ``RAMAN_EDGE_DATA`` or ``../shared/data``).
    config : path-like, optional
        Our model's config (default ``configs/model_compact.toml``).
    resume : bool
        Reuse finished cells from the cache (same settings fingerprint).
    int8 : bool
        Export our 40 %-split model to INT8 and score it.
    pooling : bool
        Train the pooling-study variants (m = 64; n = 1 and 10).

    Returns
    -------
    dict
        Settings, per-cell results, summary (mean ± std per method, split, shift and metric), targets,
        INT8 figures, pooling-study curves, timings, machine.
    """
    from threadpoolctl import threadpool_limits

    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    with threadpool_limits(1):
        return _run(quick, seeds, splits, pathlib.Path(out_dir), json_path, methods, data_dir, config, resume,
                    int8, pooling)


def _run(quick, n_seeds, splits, out_dir, json_path, only, data_dir, config, resume, int8, pooling) -> dict[str, Any]:
    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_start = os.getloadavg()
    if quick:
        n_seeds = 1
        splits = tuple(s for s in splits if s in (10, 40)) or tuple(splits)[-1:]
    splits = tuple(int(s) for s in splits)
    seeds = list(range(max(1, int(n_seeds))))
    stem = "accuracy_quick" if quick else "accuracy"
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = pathlib.Path(json_path) if json_path else out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    all_methods = build_methods(quick, config)
    methods = [m for m in all_methods if (only is None or m.key in only) and (m.table or pooling)]
    shifts = tuple(float(s) for s in CURVE_SHIFTS_CM1)
    cache = _CellCache(out_dir / "accuracy_cells.json")
    grid = RamanGrid()
    test_set = load_spectra(TEST_FILE, grid, data_dir)
    x_test = resample(test_set.intensities, test_set.raman_shift_cm1, grid)
    tests = {sh: (x_test if sh == 0 else shift_spectra(x_test, sh, grid.step_cm1)) for sh in shifts}
    peaks = _PeakFeatureCache(grid.axis)
    trains = {sp: load_spectra(TRAIN_FILE.format(sp), grid, data_dir) for sp in splits}
    do_int8 = int8 and 40 in splits and any(m.key in INT8_CHECKS for m in methods)

    # Plan: deterministic peers; then per seed: each seeded table method over all splits; the pooling
    # variants right after the first seed (so a partial run already has the plots).
    plan: list[tuple[Method, int, int]] = []
    for m in methods:
        if m.table and not m.seeded:
            plan += [(m, sp, seeds[0]) for sp in splits]
    for i, sd in enumerate(seeds):
        for m in methods:
            if m.table and m.seeded:
                plan += [(m, sp, sd) for sp in splits]
        if i == 0 and 40 in splits:
            plan += [(m, 40, sd) for m in methods if not m.table]
    _log(f"accuracy benchmark{' (quick)' if quick else ''}: {len(plan)} cells, seeds {seeds}, splits {splits}; "
         f"cache {cache.path}")

    result: dict[str, Any] = {}
    reused = 0

    def write(complete: bool) -> dict[str, Any]:
        nonlocal result
        cells = {k: v for k, v in cache.cells.items()}
        summary = _summarise(methods, cells, splits, seeds, shifts)
        int8_res = None
        c0 = cells.get(_cell_key(next((m for m in methods if m.key == "compact"), all_methods[0]), 40, seeds[0], shifts))
        if c0 and c0.get("int8"):
            int8_res = c0["int8"]
        int8_by_method = {}
        for m in methods:
            c = cells.get(_cell_key(m, 40, seeds[0], shifts)) if m.key in INT8_CHECKS else None
            if c and c.get("int8"):
                int8_by_method[m.key] = c["int8"]
        pool_keys = ["paper_m2", "paper_m16", "paper_m64", "paper_m2_n1", "paper_m2_n10", "compact"]
        by_key = {m.key: m for m in methods}
        curves, labels, params = {}, {}, {}
        for k in pool_keys:
            if k in by_key:
                c = cells.get(_cell_key(by_key[k], 40, seeds[0], shifts))
                if c and not c.get("status"):
                    curves[k] = [{"shift_cm1": sh, "top1": c["shifts"][f"{sh:g}"]["top1"] / 100.0} for sh in shifts]
                    labels[k] = by_key[k].label
                    n = c.get("n_parameters")
                    params[k] = (f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.0f} k") if n else None
        timings: dict[str, float] = {}
        planned_keys = {_cell_key(m, sp, sd, shifts) for m, sp, sd in plan}
        run_cells = {}
        for m, sp, sd in plan:
            c = cells.get(_cell_key(m, sp, sd, shifts))
            if c is not None:
                run_cells[f"{m.key}|{sp}|{sd}"] = c
                timings[m.key] = timings.get(m.key, 0.0) + c.get("cell_seconds", 0.0)
        result = {
            "benchmark": "accuracy (issue #5): ours vs paper CNN and classical peers",
            "quick": quick, "complete": complete, "started": started,
            "cells_planned": len(planned_keys), "cells_done": sum(k in cells for k in planned_keys),
            "wall_seconds": round(time.perf_counter() - t_start, 1),
            "cells_reused_from_cache": reused,
            "cell_seconds_total": round(sum(c.get("cell_seconds", 0.0) for c in run_cells.values()), 1),
            "train_files": {str(sp): trains[sp].source for sp in splits}, "test_file": test_set.source,
            "n_test": len(test_set), "n_classes": len(test_set.classes),
            "splits": list(splits), "seeds": seeds, "table_columns": [list(c) for c in COLUMNS],
            "curve_shifts_cm1": list(shifts),
            "shift_function": "edge.shift.shift_spectra (right shift, left edge padded with each row's first value)",
            "methods": [{"key": m.key, "label": m.label, "seeded": m.seeded, "table": m.table,
                         "settings": m.settings} for m in methods],
            "summary": summary, "targets": _targets(summary, len(seeds)),
            "targets_by_row": {r: _targets(summary, len(seeds), r) for r in OUR_ROWS},
            "versus_peers": _versus_peers(summary),
            "int8": int8_res, "int8_by_method": int8_by_method,
            "int8_target": "INT8 top-1 within 1 point of FP32 (40 % split)",
            "pooling_study": {"split": 40, "seed": seeds[0], "curves": curves, "labels": labels, "params": params},
            "team_earlier_top1": {k: list(v) for k, v in TEAM_EARLIER_TOP1.items()}, "paper_top1": PAPER_TOP1,
            "timings": {k: round(v, 1) for k, v in timings.items()},
            "cells": run_cells,
            "machine": {**_machine(), "loadavg_start": load_start, "loadavg_now": os.getloadavg()},
            "json_path": str(json_path), "markdown_path": str(md_path),
            "command": "python bench/bench_accuracy.py" + (" --quick" if quick else "") + f" --json {json_path}",
        }
        try:
            result["plots"] = _plots(result, out_dir, stem)
        except Exception as exc:  # a plotting failure must not lose the numbers
            result["plots"] = []
            result["plot_error"] = repr(exc)
        _write_atomic(json_path, json.dumps(result, indent=2, default=_json_default) + "\n")
        _write_atomic(md_path, markdown(result))
        return result

    for m, sp, sd in plan:
        key = _cell_key(m, sp, sd, shifts)
        want_int8 = do_int8 and m.key in INT8_CHECKS and sp == 40 and sd == seeds[0]
        cached = cache.cells.get(key)
        if resume and cached is not None and (not want_int8 or cached.get("int8")):
            reused += 1
            continue
        d = _Data(trains[sp], resample(trains[sp].intensities, trains[sp].raman_shift_cm1, grid),
                  trains[sp].classes, _encode(trains[sp].labels, trains[sp].classes), tests,
                  _encode(test_set.labels, trains[sp].classes), grid, peaks, trains[sp].source, test_set.source)
        t0 = time.perf_counter()
        try:
            out = m.fn(m, d, sd, int8=want_int8, data_dir=data_dir)
        except Exception as exc:  # one failing peer must not sink the benchmark
            _log(f"{m.key} {sp}% seed {sd}: FAILED: {exc!r}")
            out = {"status": f"failed: {type(exc).__name__}: {exc}"[:300]}
        cell: dict[str, Any] = {k: v for k, v in out.items() if k != "scores"}
        cell.update(method=m.key, split=sp, seed=sd, n_train=len(d.train),
                    cell_seconds=round(time.perf_counter() - t0, 2))
        if "scores" in out:
            cell["shifts"] = {f"{sh:g}": _metrics(out["scores"][sh], d.y_test, d.classes) for sh in shifts}
            s = cell["shifts"]
            _log(f"{m.key} {sp}% seed {sd}: top-1 0/15/30 cm-1 = {s['0']['top1']:.1f}/{s['15']['top1']:.1f}/"
                 f"{s['30']['top1']:.1f} %, cell {cell['cell_seconds']:.0f} s"
                 + (f", INT8 {out['int8'].get('int8_top1') or float('nan'):.1f} vs FP32 "
                    f"{out['int8']['fp32_torch_top1']:.1f} %" if out.get("int8") else ""))
        else:
            _log(f"{m.key} {sp}% seed {sd}: {cell.get('status')}")
        if cell.get("status") == "not installed":
            cache.cells[key] = cell  # not persisted: installing aeon later makes the row run
        else:
            cache.put(key, cell)
        write(False)
    return write(True)


def _encode(labels: np.ndarray, classes: list[str]) -> np.ndarray:
    from trainer.train import encode_labels

    return encode_labels(labels, classes)


METHODS = ["default", "compact", "compact_calibrated", "compact_compensated", "ensemble_compensated", "ensemble",
           "ensemble_calibrated", "paper_m2", "paper_m16", "knn_peaks", "svm_peaks", "lr_snv_deriv", "minirocket",
           "paper_m64", "paper_m2_n1", "paper_m2_n10"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=None, help="JSON file (default: OUT/accuracy.json, or accuracy_quick.json)")
    p.add_argument("--out", default=str(RESULTS), help="folder for markdown, plots and the cell cache")
    p.add_argument("--quick", action="store_true", help="1 seed, 10 %% and 40 %% splits, small paper CNNs")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--splits", type=int, nargs="+", default=list(SPLITS))
    p.add_argument("--methods", nargs="+", default=None, choices=METHODS)
    p.add_argument("--no-resume", action="store_true", help="retrain every cell (the cache is rewritten)")
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--no-pooling", action="store_true", help="skip the m=64, n=1, n=10 pooling variants")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--config", default=None, help="our model's config (default configs/model_compact.toml)")
    a = p.parse_args(argv)
    r = run(a.quick, a.seeds, a.splits, a.out, json_path=a.json, methods=a.methods, data_dir=a.data_dir,
            config=a.config, resume=not a.no_resume, int8=not a.no_int8, pooling=not a.no_pooling)
    print(pathlib.Path(r["markdown_path"]).read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
