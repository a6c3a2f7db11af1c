"""Step 2 of the export: static QDQ INT8 quantisation with onnxruntime.quantization, and step 3: the
accuracy gate that compares INT8 with FP32 and refuses to ship a worse model.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.backends import OnnxRuntimeBackend
from edge.bundle import Bundle

from .errors import AccuracyGateError, ExportError

# export.onnx_export imports torch; the quantiser and the gate need only onnx/onnxruntime, so it is imported
# where used and ``edge-export --help`` stays fast.
INPUT_NAME = "spectra"  #: the classifier's input (as :data:`export.onnx_export.INPUT_NAME`)

__all__ = ["INT8_FILE", "QuantConfig", "compare_models", "quantize_int8", "score_onnx"]

INT8_FILE = "model.int8.onnx"
log = logging.getLogger("export")


@dataclass
class QuantConfig:
    """Static quantisation settings (FIELD_NOTES: signed int8 QDQ is the recommended default; measure
    per-channel vs per-tensor and the calibration method).

    Parameters
    ----------
    per_channel : bool
        Per-output-channel weight scales.
    calibrate_method : {"minmax", "entropy", "percentile"}
        Activation range estimation.
    max_calibration_spectra : int
        Cap on calibration spectra (a few hundred suffice).
    tensorrt : bool
        Quantise for TensorRT's explicit quantisation: symmetric activations (zero points 0) and float bias
        (no int32 bias Q/DQ); see :mod:`export.tensorrt_check`. Default: asymmetric activations and int32
        bias, onnxruntime's CPU defaults.
    """

    per_channel: bool = True
    calibrate_method: str = "minmax"
    max_calibration_spectra: int = 512
    tensorrt: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The settings as recorded in the manifest's export section."""
        return {"format": "QDQ", "activations": "int8", "weights": "int8", "per_channel": self.per_channel,
                "calibrate_method": self.calibrate_method, "float_nodes": "Softmax; single-input-channel Conv (per-channel)",
                "activation_symmetric": self.tensorrt, "bias": "float" if self.tensorrt else "int32"}


class _CalibrationReader:
    # Batches of one spectrum: the histogram calibrators (entropy, percentile) need equal batch shapes.
    def __init__(self, spectra: np.ndarray, batch: int = 1) -> None:
        self._it: Iterator = iter([{INPUT_NAME: spectra[i:i + batch]} for i in range(0, len(spectra), batch)])

    def get_next(self):
        return next(self._it, None)


def quantize_int8(bundle: Bundle, calibration: np.ndarray, cfg: QuantConfig | None = None,
                  out_name: str = INT8_FILE, src_name: str = "model.onnx") -> Path:
    """Quantise the bundle's FP32 ONNX to static QDQ INT8 (signed activations and weights).

    Parameters
    ----------
    bundle : Bundle
        Bundle with ``model.onnx``.
    calibration : numpy.ndarray, shape (C, N), float32
        *Preprocessed* calibration spectra (nominal training spectra).
    cfg : QuantConfig
    out_name, src_name : str
        Bundle file names of the INT8 result and of the FP32 source (the novelty autoencoder uses
        ``autoencoder.int8.onnx`` / ``autoencoder.onnx``; both take input ``spectra``).

    Returns
    -------
    pathlib.Path
        The INT8 model (not yet recorded in the manifest: the accuracy gate decides).

    Raises
    ------
    ExportError
        If onnxruntime's quantisation tools are missing or fail, or no calibration spectra are given.
    """
    cfg = cfg or QuantConfig()
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise ExportError("INT8 export needs onnxruntime's quantization tools and onnx: pip install raman-edge[export]") from exc
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if cfg.calibrate_method not in methods:
        raise ExportError(f"calibrate_method must be one of {sorted(methods)}, got {cfg.calibrate_method!r}")
    if len(calibration) == 0:
        raise ExportError("no calibration spectra")
    rng = np.random.default_rng(0)
    if len(calibration) > cfg.max_calibration_spectra:
        calibration = calibration[rng.choice(len(calibration), cfg.max_calibration_spectra, replace=False)]
    fp32 = bundle.file(src_name)
    out = bundle.path / out_name
    import onnx

    # onnxruntime (1.31, CPU) fuses a per-channel QDQ Conv with a single input channel into a QLinearConv that
    # computes wrong results (test top-1 fell from 69 % to 5 %; correct with graph optimisation off). The first
    # convolution reads the 1-channel spectrum and holds < 0.5 % of the weights: it stays in float.
    graph = onnx.load(str(fp32)).graph
    weights = {i.name: list(i.dims) for i in graph.initializer}
    exclude = [n.name for n in graph.node
               if n.op_type == "Conv" and cfg.per_channel and len(n.input) > 1 and weights.get(n.input[1], [0, 0])[1] == 1]
    # Softmax stays float: quantised probabilities come in steps of 1/255, which ties the top classes and
    # blunts every confidence score (maximum softmax probability, confidence gap).
    exclude += [n.name for n in graph.node if n.op_type == "Softmax"]
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        try:
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre), str(out), _CalibrationReader(np.ascontiguousarray(calibration, dtype=np.float32)),
                quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                per_channel=cfg.per_channel, calibrate_method=methods[cfg.calibrate_method], nodes_to_exclude=exclude,
                extra_options={"ActivationSymmetric": cfg.tensorrt, "WeightSymmetric": True,
                               "QuantizeBias": not cfg.tensorrt},
            )
        except Exception as exc:
            raise ExportError(f"INT8 quantisation failed: {exc}") from exc
    from .onnx_export import onnx_metadata, set_metadata

    set_metadata(out, onnx_metadata(bundle))
    return out


def score_onnx(path: Path, spectra: np.ndarray, batch: int = 256) -> np.ndarray:
    """Probabilities of an ONNX classifier, shape (B, K), float32 (onnxruntime, CPU)."""
    with OnnxRuntimeBackend(path) as backend:
        return np.concatenate([backend.infer(spectra[i:i + batch])["probabilities"]
                               for i in range(0, len(spectra), batch)])


def compare_models(fp32: Path, int8: Path, spectra: np.ndarray, y: np.ndarray, max_drop_points: float) -> dict[str, Any]:
    """The accuracy gate: top-1 of FP32 and INT8, their top-1 agreement, file sizes.

    Parameters
    ----------
    fp32, int8 : pathlib.Path
        ONNX models.
    spectra : numpy.ndarray, shape (B, N), float32
        Preprocessed validation spectra.
    y : numpy.ndarray, shape (B,), int
        True class indices (-1: unknown label, counted wrong).
    max_drop_points : float
        Largest accepted top-1 loss of INT8 against FP32, in percentage points.

    Returns
    -------
    dict
        ``fp32_top1``, ``int8_top1`` (percent), ``drop_points``, ``top1_agreement`` (percent),
        ``fp32_bytes``, ``int8_bytes``, ``size_ratio``, ``n``, ``max_drop_points``, ``passed``.
    """
    p32, p8 = score_onnx(fp32, spectra), score_onnx(int8, spectra)
    a32 = 100.0 * float(np.mean(p32.argmax(1) == y))
    a8 = 100.0 * float(np.mean(p8.argmax(1) == y))
    b32, b8 = fp32.stat().st_size, int8.stat().st_size
    res = {"n": len(y), "fp32_top1": a32, "int8_top1": a8, "drop_points": a32 - a8,
           "top1_agreement": 100.0 * float(np.mean(p32.argmax(1) == p8.argmax(1))),
           "max_abs_probability_diff": float(np.max(np.abs(p32 - p8))),
           "fp32_bytes": b32, "int8_bytes": b8, "size_ratio": b8 / b32, "max_drop_points": max_drop_points}
    res["passed"] = bool(res["drop_points"] <= max_drop_points)
    return res


def gate(result: dict[str, Any]) -> None:
    """Raise :class:`AccuracyGateError` when the comparison failed."""
    if not result["passed"]:
        raise AccuracyGateError(
            f"INT8 top-1 {result['int8_top1']:.2f} % is {result['drop_points']:.2f} points below FP32 "
            f"{result['fp32_top1']:.2f} % on {result['n']} validation spectra (allowed: {result['max_drop_points']}); "
            "the INT8 model was NOT shipped"
            + (" (the previously shipped INT8 model is kept)" if result.get("kept_previous_int8") else "")
            + ". Try --per-tensor, --calibrate-method entropy|percentile, or more "
            "calibration spectra (--calib)."
        )
