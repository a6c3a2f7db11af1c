"""The novelty autoencoder at run time (onnxruntime), with the bundle's spectral library and thresholds."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BundleError, ConfigError
from .library import SpectralLibrary
from .scores import HIGHPASS_POINTS, METRICS, primary_channel, residual_scores

if TYPE_CHECKING:
    from ..bundle import Bundle

__all__ = ["AE_FILE_STEM", "AE_FP32_FILE", "AE_INT8_FILE", "DETECTORS", "NOVELTY_SCHEMA", "PROTOTYPES_FILE",
           "NoveltyModel"]

NOVELTY_SCHEMA = 1
AE_FILE_STEM = "autoencoder"
AE_FP32_FILE = f"{AE_FILE_STEM}.onnx"
AE_INT8_FILE = f"{AE_FILE_STEM}.int8.onnx"
PROTOTYPES_FILE = "novelty_prototypes.npz"
#: Which score decides ``novel``: "auto" = the spectral library when the bundle has one, else the autoencoder.
DETECTORS = ("auto", "library", "autoencoder")


class NoveltyModel:
    """The bundle's novelty autoencoder (run with onnxruntime), spectral library, thresholds and reference
    spectra.

    Parameters
    ----------
    bundle : edge.bundle.Bundle
        A bundle with ``manifest["novelty"]`` and the autoencoder exported to ONNX.
    precision : {"auto", "int8", "fp32"}
        ``"auto"`` (and ``"int8"``) serve the INT8 autoencoder when the bundle has it, else FP32.
    threads : int
        onnxruntime intra-op threads.
    detector : {"auto", "library", "autoencoder"}
        Which score decides ``novel`` (:data:`DETECTORS`): the spectral-library match
        (:class:`SpectralLibrary`, the better detector on the real leave-classes-out evaluation, README
        "Novelty") or the autoencoder's reconstruction error; ``"auto"`` = the library when the bundle has
        one. Both are always computed (see :meth:`decide` for when).

    Raises
    ------
    BundleError
        If the bundle has no novelty section, an unknown metric or schema, no autoencoder ONNX file, or an
        unreadable spectral library.
    ConfigError
        For an unknown detector, or ``"library"`` with a bundle without a library.
    """

    def __init__(self, bundle: Bundle, precision: str = "auto", threads: int = 1, detector: str = "auto") -> None:
        from ..backends import OnnxRuntimeBackend

        if detector not in DETECTORS:
            raise ConfigError(f"novelty_detector must be one of {DETECTORS}, got {detector!r}")

        nov = bundle.manifest.get("novelty")
        if not nov:
            raise BundleError(f"{bundle.path}: no novelty detector in this bundle (edge-train --novelty)")
        if nov.get("schema") != NOVELTY_SCHEMA:
            raise BundleError(f"{bundle.path}: novelty schema {nov.get('schema')!r} not supported ({NOVELTY_SCHEMA})")
        self.metric = str(nov.get("metric", ""))
        if self.metric not in METRICS:
            raise BundleError(f"{bundle.path}: unknown novelty metric {self.metric!r}")
        self.window = int(nov.get("highpass_points", HIGHPASS_POINTS))
        self.threshold = float(nov["threshold"])
        self.quantile = float(nov["quantile"])
        files = nov.get("files", {})
        name = files.get("onnx_int8") if precision in ("auto", "int8") and files.get("onnx_int8") else files.get("onnx_fp32")
        if not name or not bundle.has_file(name):
            raise BundleError(f"{bundle.path}: the novelty autoencoder has no ONNX export; run edge-export {bundle.path}")
        self.precision = "int8" if name == files.get("onnx_int8") else "fp32"
        self.model_path = bundle.file(name)
        self.backend = OnnxRuntimeBackend(self.model_path, intra_op_threads=threads, precision=self.precision,
                                          required_outputs=("reconstruction",))
        self.references: np.ndarray | None = None
        if files.get("prototypes") and bundle.has_file(files["prototypes"]):
            try:
                with np.load(bundle.file(files["prototypes"]), allow_pickle=False) as d:
                    self.references = np.asarray(d["spectrum_prototypes"], dtype=np.float32)
            except (OSError, ValueError, KeyError) as exc:
                raise BundleError(f"{bundle.path}: unreadable novelty prototypes: {exc}") from exc
        self.library: SpectralLibrary | None
        self.library_threshold: float
        self.library, self.library_threshold = SpectralLibrary.from_bundle(bundle) or (None, math.nan)
        if detector == "library" and self.library is None:
            raise ConfigError(f"{bundle.path}: novelty_detector = \"library\" but this bundle has no spectral library "
                              "(retrain with edge-train --novelty, or use \"autoencoder\")")
        self.detector = "library" if detector == "auto" and self.library is not None else \
            ("autoencoder" if detector == "auto" else detector)

    def load(self) -> None:
        """Load the autoencoder into onnxruntime."""
        self.backend.load()

    def close(self) -> None:
        """Release the onnxruntime session."""
        self.backend.close()

    def score(self, x: np.ndarray, predicted: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Novelty of a batch of preprocessed spectra: :meth:`decide`, then :meth:`complete`.

        Parameters
        ----------
        x : numpy.ndarray, shape (B, N) or (B, C, N), float32
            Preprocessed spectra (channel 0 is used).
        predicted : sequence of str, length B, optional
            The classifier's top-1 class names: needed by the library detector. Without them (or for a class
            the library does not hold) a spectrum is judged by the autoencoder, and ``novelty_detector`` says
            so.

        Returns
        -------
        dict
            Each shape (B,): ``reconstruction_error`` (the autoencoder's thresholded metric) and
            ``reconstruction_mse``, float64; ``library_score`` float64 (NaN without a library or a match);
            ``novelty_score`` and ``novelty_threshold`` float64, of the detector that decided; ``novel`` bool
            (score > threshold); ``novelty_detector`` str (``"library"`` or ``"autoencoder"``).

        Raises
        ------
        BackendError
            If onnxruntime fails.
        """
        return self.complete(x, self.decide(x, predicted))

    def decide(self, x: np.ndarray, predicted: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """What a prediction needs before it is published: the :meth:`score` keys, except that the autoencoder
        runs here only when it decides for a spectrum of the batch (detector ``"autoencoder"``, no
        ``predicted``, or a class the library does not hold). Otherwise ``reconstruction_error`` and
        ``reconstruction_mse`` are left out, for :meth:`complete` to add after the predictions are out (the
        daemon does so: the drift monitor needs them, the decision does not).
        """
        x0 = np.ascontiguousarray(primary_channel(x), dtype=np.float32)
        use_library = self.detector == "library" and self.library is not None and predicted is not None
        out: dict[str, np.ndarray] = {}
        unit = None
        if not use_library:  # the autoencoder decides: run it first, and share its line components
            out, unit = self._autoencoder(x0)
        lib = np.full(len(x0), np.nan)
        if self.library is not None and predicted is not None:
            lib = self.library.scores(x0, predicted, unit if self.library.window == self.window else None)[0]
        use_lib = np.isfinite(lib) if use_library else np.zeros(len(x0), dtype=bool)
        if not use_lib.all() and not out:  # a class without library spectra: the autoencoder decides for it
            out, _ = self._autoencoder(x0)
        ae = out["reconstruction_error"] if out else lib  # (unused where the library decides)
        score = np.where(use_lib, lib, ae)
        thr = np.where(use_lib, self.library_threshold, self.threshold)
        out.update({"library_score": lib, "novelty_score": score, "novelty_threshold": thr, "novel": score > thr,
                    "novelty_detector": np.where(use_lib, "library", "autoencoder")})
        return out

    def complete(self, x: np.ndarray, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Add the autoencoder's ``reconstruction_error`` and ``reconstruction_mse`` to a :meth:`decide`
        result of the same ``x`` that lacks them (in place); returns ``out``.

        Raises
        ------
        BackendError
            If onnxruntime fails.
        """
        if "reconstruction_error" not in out:
            out.update(self._autoencoder(np.ascontiguousarray(primary_channel(x), dtype=np.float32))[0])
        return out

    def _autoencoder(self, x0: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The autoencoder's scores of channel-0 spectra (B, N), and their unit line components."""
        r = self.backend.infer(x0)["reconstruction"]
        line, mse, unit = residual_scores(x0, r, self.window, return_line_components=True)
        return {"reconstruction_error": mse if self.metric == "mse" else line, "reconstruction_mse": mse}, unit

    def describe(self) -> dict[str, Any]:
        """Settings for the daemon's status messages: metric, thresholds, precision, model file, detector."""
        d = {"metric": self.metric, "threshold": self.threshold, "quantile": self.quantile,
             "precision": self.precision, "model": Path(self.model_path).name, "detector": self.detector}
        if self.library is not None:
            d["library"] = {"threshold": self.library_threshold, "spectra": len(self.library.lines),
                            "shift_points": self.library.shift_points, "band_power": self.library.band_power}
        return d

