"""The classical peers (paper §3 and beyond): kNN and SVM on peak counts, logistic regression on the SNV
of the first derivative, MiniRocket; their features, classifiers and benchmark cells.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any, overload

import numpy as np

from edge.preprocess import PreprocessConfig, Preprocessor, RamanGrid

from .base import Method, _Data
from .constants import PEAK_BIN_CM1, PEAK_WIDTHS


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

#: Several test sets scored by one fit.
ManyArrays = list[np.ndarray] | tuple[np.ndarray, ...]


class _PeakFeatureCache:
    """Peak-count features by spectrum content: the splits overlap and the test set is reused by two methods."""

    def __init__(self, axis: np.ndarray) -> None:
        self.axis = axis
        self._rows: dict[str, np.ndarray] = {}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        keys = [hashlib.sha1(np.ascontiguousarray(r, dtype=np.float32).tobytes()).hexdigest() for r in x]
        todo = [i for i, k in enumerate(keys) if k not in self._rows]
        if todo:
            feats = peak_count_features(x[todo], self.axis)
            for i, f in zip(todo, feats, strict=True):
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


def _as_list(x_test: np.ndarray | ManyArrays) -> tuple[list[np.ndarray], bool]:
    if isinstance(x_test, (list, tuple)):
        return list(x_test), True
    return [x_test], False


@overload
def knn_scores(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, n_classes: int) -> np.ndarray: ...
@overload
def knn_scores(f_train: np.ndarray, y_train: np.ndarray, f_test: ManyArrays, n_classes: int) -> list[np.ndarray]: ...
def knn_scores(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray | ManyArrays,
               n_classes: int) -> np.ndarray | list[np.ndarray]:
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


@overload
def svm_scores(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, n_classes: int, c: float = 10.0) -> np.ndarray: ...
@overload
def svm_scores(f_train: np.ndarray, y_train: np.ndarray, f_test: ManyArrays,
               n_classes: int, c: float = 10.0) -> list[np.ndarray]: ...
def svm_scores(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray | ManyArrays,
               n_classes: int, c: float = 10.0) -> np.ndarray | list[np.ndarray]:
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


@overload
def lr_scores(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_classes: int, c: float = 1.0) -> np.ndarray: ...
@overload
def lr_scores(x_train: np.ndarray, y_train: np.ndarray, x_test: ManyArrays,
              n_classes: int, c: float = 1.0) -> list[np.ndarray]: ...
def lr_scores(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray | ManyArrays,
              n_classes: int, c: float = 1.0) -> np.ndarray | list[np.ndarray]:
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


@overload
def minirocket_scores(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                      n_classes: int, seed: int = 0, n_kernels: int = 10_000) -> np.ndarray: ...
@overload
def minirocket_scores(x_train: np.ndarray, y_train: np.ndarray, x_test: ManyArrays,
                      n_classes: int, seed: int = 0, n_kernels: int = 10_000) -> list[np.ndarray]: ...
def minirocket_scores(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray | ManyArrays, n_classes: int,
                      seed: int = 0, n_kernels: int = 10_000) -> np.ndarray | list[np.ndarray]:
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


def _fit_peaks(method: Method, d: _Data, seed: int, **_: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    f_train = d.peaks(d.x_train)
    f_tests = [d.peaks(x) for x in d.tests.values()]
    t_feat = time.perf_counter() - t0
    fn = knn_scores if method.key == "knn_peaks" else svm_scores
    t0 = time.perf_counter()
    scores = dict(zip(d.tests, fn(f_train, d.y_train, f_tests, len(d.classes)), strict=True))
    return {"scores": scores, "feature_seconds": t_feat, "train_seconds": time.perf_counter() - t0,
            "note": "peak features cached by spectrum content across splits and methods; train_seconds = "
                    "fit and score of the classifier; feature_seconds = peak finding not already cached"}


def _fit_lr(method: Method, d: _Data, seed: int, **_: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    scores = dict(zip(d.tests, lr_scores(snv_derivative(d.x_train, d.grid), d.y_train,
                                         [snv_derivative(x, d.grid) for x in d.tests.values()], len(d.classes)),
                      strict=True))
    return {"scores": scores, "train_seconds": time.perf_counter() - t0}


def _fit_minirocket(method: Method, d: _Data, seed: int, **_: Any) -> dict[str, Any]:
    if not aeon_available():
        return {"status": "not installed", "note": "pip install 'raman-edge[bench]' (aeon) for this row"}
    import aeon

    t0 = time.perf_counter()
    scores = dict(zip(d.tests, minirocket_scores(first_derivative(d.x_train, d.grid), d.y_train,
                                                 [first_derivative(x, d.grid) for x in d.tests.values()],
                                                 len(d.classes), seed=int(seed),
                                                 n_kernels=method.settings["n_kernels"]), strict=True))
    return {"scores": scores, "train_seconds": time.perf_counter() - t0, "aeon": aeon.__version__}
