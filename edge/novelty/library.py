"""The spectral library: the training spectra's band profiles, matched against the predicted class."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ..errors import BundleError, ConfigError, PreprocessError
from .scores import HIGHPASS_POINTS, _unit_lines, highpass, primary_channel

if TYPE_CHECKING:
    from ..bundle import Bundle

__all__ = ["LIBRARY_BAND_POWER", "LIBRARY_FILE", "LIBRARY_SHIFT_TOLERANCE_CM1", "SpectralLibrary", "band_profiles"]

LIBRARY_FILE = "novelty_library.npz"
#: Raman-shift offset a library match tolerates, cm⁻¹: the calibration tolerance (DriftConfig.offset_alarm_cm1).
LIBRARY_SHIFT_TOLERANCE_CM1 = 3.0
#: Power applied to the positive line component in library band profiles (:func:`band_profiles`). Chosen on the
#: 40 % *training* split alone (``python -m bench.library_profile_cv``: classes held out of the library,
#: nearest-neighbour stand-in for the classifier), where it ties with 0.1 for the best AUROC (0.891 at k = 10,
#: 40 draws) among 1, 0.5, 0.35, 0.25, 0.15, 0.1 and 0.05; no test spectrum was used.
LIBRARY_BAND_POWER = 0.15


def band_profiles(x: np.ndarray, window: int = HIGHPASS_POINTS, power: float | None = LIBRARY_BAND_POWER,
                  dtype: npt.DTypeLike = np.float64) -> np.ndarray:
    """Unit band profiles: where a spectrum has Raman bands, with their heights compressed.

    ``profile = normalise(max(hp(x), 0) ** power)``: the positive part of the line component (:func:`highpass`;
    the negative part is the moving average's undershoot beside each band) raised to ``power`` < 1, so that a
    weak band weighs almost as much as a strong one. A mineral is identified by *which* bands it has (the
    principle of Raman library search); their relative heights change with crystal orientation,
    polarisation and the instrument, between RRUFF samples of one mineral as much as between related
    minerals. With the plain line component (``power=None``) one strong shared band makes two minerals look
    alike: a sodalite spectrum (bands near 265, 465 and 988 cm⁻¹) matches quartz (464 cm⁻¹) at cos 0.93.

    Parameters
    ----------
    x : numpy.ndarray, shape (N,) or (B, N)
        Spectra on a uniform grid.
    window : int
        High-pass width in grid points (odd, ≥ 3).
    power : float or None
        Compression power in (0, 1]; None gives the signed unit line component instead (libraries of bundles
        written before band profiles).
    dtype : numpy dtype
        Precision of the computation and the result.

    Returns
    -------
    numpy.ndarray, same shape, ``dtype``
        Rows of unit norm (zero for a spectrum without any positive line component).

    Raises
    ------
    ConfigError
        On an even or too small window, or a power outside (0, 1].
    """
    if power is None:
        return _unit_lines(x, window, dtype)
    return _profiles_from_lines(highpass(x, window, dtype), power)


def _profiles_from_lines(h: np.ndarray, power: float | None) -> np.ndarray:
    """:func:`band_profiles` from line components ``h`` (unit or not: their scale cancels); ``h`` itself
    when ``power`` is None (then it must be unit already).
    """
    if power is None:
        return h
    if not 0.0 < power <= 1.0:
        raise ConfigError(f"band-profile power must be in (0, 1], got {power}")
    p = np.maximum(h, 0)
    np.power(p, p.dtype.type(power), out=p)
    p /= np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-12)
    return p



class SpectralLibrary:
    """The training spectra as a library: "is this spectrum really like the spectra of the mineral the
    classifier names?"

    The classic Raman library search (hit quality index, HQI: the correlation of a spectrum with library
    spectra) asked of the predicted class only. Each library row is the unit band profile
    (:func:`band_profiles` of channel 0: positive line component, heights compressed by ``band_power``) of one
    preprocessed training spectrum, stored as float16 (half the bytes; the scores move by < 1e-3). The library
    score of a spectrum ``x`` predicted as class ``c`` is::

        score = 1 - max over library rows l of class c, over lags |s| <= S of cos(bp(x) shifted by s, l)

    a reconstruction error with the spectrum "reconstructed" by its best match among the known spectra of its
    predicted mineral, allowing ``S`` = ``shift_tolerance_cm1`` / grid step points of Raman-shift offset
    (default :data:`LIBRARY_SHIFT_TOLERANCE_CM1`, the calibration tolerance). A known mineral finds a close
    relative; a mineral the classifier has never seen is named after its nearest known relative but lacks
    some of its bands or has others. Higher = more novel, in [0, 1] (in [0, 2] for a library of signed line
    components, ``band_power=None``: bundles written before band profiles, where the score is the
    autoencoder's line-residual metric, :func:`line_residual_score`).

    Parameters
    ----------
    lines : numpy.ndarray, shape (L, N)
        Unit band profiles of the library spectra (:meth:`from_spectra` computes them).
    classes : numpy.ndarray of int, shape (L,)
        Class index of each row, into ``labels``.
    labels : sequence of str
        Class names.
    shift_points : int
        Largest lag tried, grid points (≥ 0).
    window : int
        High-pass window, grid points (:data:`HIGHPASS_POINTS`).
    band_power : float or None
        Compression power of the band profiles (:data:`LIBRARY_BAND_POWER`); None for signed line components.

    Raises
    ------
    BundleError
        On inconsistent shapes, classes outside the label list, a negative lag or a power outside (0, 1].
    """

    def __init__(self, lines: np.ndarray, classes: np.ndarray, labels: Iterable[str], shift_points: int,
                 window: int = HIGHPASS_POINTS, band_power: float | None = None) -> None:
        self.lines = np.asarray(lines, dtype=np.float16)
        self.classes = np.asarray(classes, dtype=np.int64)
        self.labels = [str(x) for x in labels]
        self.shift_points, self.window = int(shift_points), int(window)
        self.band_power = None if band_power is None else float(band_power)
        if self.lines.ndim != 2 or self.classes.shape != (len(self.lines),) or not len(self.lines):
            raise BundleError(f"library lines {self.lines.shape} and classes {self.classes.shape} do not match")
        if self.classes.min() < 0 or self.classes.max() >= len(self.labels) or self.shift_points < 0:
            raise BundleError("library classes must index its labels, and its lag must be ≥ 0")
        if self.band_power is not None and not 0.0 < self.band_power <= 1.0:
            raise BundleError(f"library band power must be in (0, 1], got {self.band_power}")
        self._lines32 = self.lines.astype(np.float32)
        self._rows = {name: np.flatnonzero(self.classes == c) for c, name in enumerate(self.labels)}
        self._blocks: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_spectra(cls, x: np.ndarray, labels: npt.ArrayLike, classes: Iterable[str], shift_tolerance_cm1: float,
                     step_cm1: float,
                     window: int = HIGHPASS_POINTS, band_power: float | None = LIBRARY_BAND_POWER) -> SpectralLibrary:
        """Library of preprocessed spectra ``x`` (B, N) or (B, C, N) with class names ``labels`` (B,), class
        order ``classes``; lag ``round(shift_tolerance_cm1 / step_cm1)`` points; band profiles with
        ``band_power`` (None: signed line components).

        Raises
        ------
        BundleError
            If a label is not in ``classes``.
        """
        names = [str(c) for c in classes]
        index = {c: i for i, c in enumerate(names)}
        try:
            y = np.array([index[str(v)] for v in np.asarray(labels)], dtype=np.int64)
        except KeyError as exc:
            raise BundleError(f"library label {exc} is not a class") from exc
        lines = band_profiles(primary_channel(np.asarray(x)), window, band_power, np.float32)
        return cls(lines, y, names, round(shift_tolerance_cm1 / step_cm1), window, band_power)

    def _lagged(self, u: np.ndarray) -> np.ndarray:
        """Unit rows ``u`` (B, N) at every lag, re-normalised: shape (B, 2S + 1, N), float32 (zero fill at the
        edges).
        """
        b, n = u.shape
        s = self.shift_points
        out = np.zeros((b, 2 * s + 1, n), dtype=np.float32)
        for j, lag in enumerate(range(-s, s + 1)):
            if lag >= 0:
                out[:, j, lag:] = u[:, :n - lag]
            else:
                out[:, j, :lag] = u[:, -lag:]
        return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)

    def _class_block(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Library rows of a class and their lagged copies flattened to ((2S + 1)·rows, N), cached."""
        if name not in self._blocks:
            rows = self._rows.get(name)
            if rows is None or not rows.size:
                return None
            self._blocks[name] = (rows, self._lagged(self._lines32[rows]).reshape(-1, self.lines.shape[1]))
        return self._blocks[name]

    def scores(self, x: np.ndarray, predicted: Iterable[str],
               unit_lines: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Library scores of preprocessed spectra against the library rows of their predicted classes.

        Parameters
        ----------
        x : numpy.ndarray, shape (B, N) or (B, C, N)
            Preprocessed spectra (channel 0 is used).
        predicted : sequence of str, length B
            Class name the classifier gives each spectrum.
        unit_lines : numpy.ndarray, shape (B, N), optional
            The unit line components of ``x`` when already computed (:func:`residual_scores` with
            ``return_line_components``; same window): the band profiles are made from them.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            ``score`` shape (B,), float64, in [0, 1] ([0, 2] for signed line components): NaN where the class
            has no library spectra (a mineral added after training, e.g. by head-only transfer); ``match``
            shape (B,), int64: the best library row (-1 with a NaN score).

        Raises
        ------
        PreprocessError
            If the spectra are not on the library's grid.
        """
        x0 = primary_channel(np.asarray(x))
        if x0.shape[-1] != self.lines.shape[1]:
            raise PreprocessError(f"spectra have {x0.shape[-1]} points, the library {self.lines.shape[1]}")
        if unit_lines is None:
            u = band_profiles(x0, self.window, self.band_power, np.float32)
        else:
            u = _profiles_from_lines(unit_lines, self.band_power)
        score = np.full(len(x0), np.nan)
        match = np.full(len(x0), -1, dtype=np.int64)
        lags = 2 * self.shift_points + 1
        for i, name in enumerate(predicted):
            block = self._class_block(str(name))
            if block is None:
                continue
            rows, lagged = block
            sim = lagged @ u[i]  # ((2S + 1)·rows,): row-major by library row, then lag
            j = int(np.argmax(sim))
            score[i], match[i] = 1.0 - float(sim[j]), int(rows[j // lags])
        return score, match

    def similarity_matrix(self) -> np.ndarray:
        """Similarity of every library row with every other, the way :meth:`scores` compares: the largest
        cosine over lags |s| ≤ ``shift_points``, shape (L, L), float32 (diagonal ≈ 1). For studies of the
        library itself (``bench.library_profile_cv``).
        """
        return self._lag_max(self._lines32, self._lagged(self._lines32).reshape(-1, self.lines.shape[1]))

    def _lag_max(self, queries: np.ndarray, lagged: np.ndarray) -> np.ndarray:
        """Largest cosine over lags of unit ``queries`` (B, N) with library rows given as their lagged copies
        flattened row-major by row, then lag (:meth:`_class_block`): shape (B, rows), float32.
        """
        lags = 2 * self.shift_points + 1
        return (queries @ lagged.T).reshape(len(queries), -1, lags).max(axis=2)

    def leave_one_out_scores(self) -> np.ndarray:
        """Nominal calibration: each library spectrum scored (as :meth:`scores` scores a spectrum) against the
        *other* spectra of its class, shape (L,), float64; NaN for a class with one spectrum. A threshold is
        a quantile of these.
        """
        out = np.full(len(self.lines), np.nan)
        for name, rows in self._rows.items():
            block = self._class_block(name)
            if rows.size < 2 or block is None:  # (a class with rows always has a block)
                continue
            sim = self._lag_max(self._lines32[rows], block[1])
            np.fill_diagonal(sim, -np.inf)
            out[rows] = 1.0 - sim.max(axis=1).astype(np.float64)
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """What a bundle stores (:data:`LIBRARY_FILE`): ``lines`` float16, ``classes`` int64, ``labels``."""
        return {"lines": self.lines, "classes": self.classes, "labels": np.array(self.labels, dtype=str)}

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> tuple[SpectralLibrary, float] | None:
        """The bundle's library and its threshold (``manifest["novelty"]["library"]``), or None without one.

        Raises
        ------
        BundleError
            If the section is there but its file is missing, unreadable or not on the bundle's grid.
        """
        nov = bundle.manifest.get("novelty") or {}
        section = nov.get("library")
        if not section:
            return None
        name = nov.get("files", {}).get("library")
        if not name or not bundle.has_file(name):
            raise BundleError(f"{bundle.path}: the novelty section names a spectral library but has no file")
        try:
            threshold = float(section["threshold"])
            power = section.get("band_power")  # absent: a bundle written before band profiles
            lib = cls.load(bundle.file(name), int(section["shift_points"]),
                           int(section.get("highpass_points", HIGHPASS_POINTS)),
                           None if power is None else float(power))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{bundle.path}: invalid spectral-library section: {exc}") from exc
        if lib.lines.shape[1] != bundle.grid.n_points:
            raise BundleError(f"{bundle.path}: the spectral library has {lib.lines.shape[1]} points, "
                              f"the grid {bundle.grid.n_points}")
        return lib, threshold

    @classmethod
    def load(cls, path: str | os.PathLike[str], shift_points: int, window: int = HIGHPASS_POINTS,
             band_power: float | None = None) -> SpectralLibrary:
        """Read :meth:`arrays` back (the settings are the manifest's).

        Raises
        ------
        BundleError
            If the file is unreadable or inconsistent.
        """
        try:
            with np.load(path, allow_pickle=False) as d:
                return cls(d["lines"], d["classes"], d["labels"].tolist(), shift_points, window, band_power)
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"{path}: unreadable spectral library: {exc}") from exc

