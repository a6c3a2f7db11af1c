"""Export of the novelty autoencoder next to the classifier: FP32 ONNX, and static QDQ INT8 with a parity gate.

The autoencoder (:mod:`trainer.autoencoder`) takes ``spectra`` (batch, N) float32 — the same preprocessed
input as the classifier — and returns ``reconstruction`` (batch, N) float32; the novelty score is computed
from both in numpy on board (:mod:`edge.novelty`), so quantisation never touches the score itself.

Parity gate of the INT8 autoencoder (the analogue of the classifier's accuracy gate): on the validation
spectra, the INT8 and FP32 novelty scores must correlate (Pearson r of the log scores ≥ ``min_correlation``,
default 0.99) and the novel / not-novel decisions at the bundle's threshold must agree on all but at most
``max_disagreement_points`` percent of the spectra (default 1 point). An INT8 autoencoder that fails is
removed and the FP32 one is served (the failure is recorded in ``manifest["metrics"]["export_novelty"]``
and logged; it does not fail the classifier's export).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.backends import OnnxRuntimeBackend
from edge.bundle import Bundle, chmod_umask
from edge.data import load_spectra
from edge.novelty import AE_FP32_FILE, AE_INT8_FILE, novelty_scores, primary_channel
from edge.preprocess import Preprocessor
from trainer.autoencoder import load_autoencoder

from .errors import ExportError
from .onnx_export import INPUT_NAME, OPSET, onnx_metadata, set_metadata
from .quantize import QuantConfig, quantize_int8

__all__ = ["OUTPUT_NAME", "compare_autoencoders", "export_autoencoder_fp32", "export_novelty"]

OUTPUT_NAME = "reconstruction"
log = logging.getLogger("export")


def _metadata(bundle: Bundle) -> dict[str, str]:
    nov = bundle.manifest["novelty"]
    return {**onnx_metadata(bundle), "raman_edge.role": "novelty-autoencoder",
            "raman_edge.novelty_metric": str(nov["metric"]), "raman_edge.novelty_threshold": repr(nov["threshold"])}


def export_autoencoder_fp32(bundle: Bundle) -> Path:
    """Export the bundle's novelty autoencoder to FP32 ONNX and record it (manifest files and novelty.files).

    Input ``spectra`` (batch, N) float32; output ``reconstruction`` (batch, N) float32.

    Raises
    ------
    ExportError
        If the exporter fails.
    BundleError
        If the bundle has no autoencoder.
    """
    model = load_autoencoder(bundle)
    path = bundle.path / AE_FP32_FILE
    example = torch.zeros(2, model.n_points)
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "torch._export"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, opset_version=OPSET,
                              external_data=False, verbose=False)
    except Exception as exc:  # the exporter raises many unrelated types
        raise ExportError(f"ONNX export of the novelty autoencoder failed: {exc}") from exc
    set_metadata(path, _metadata(bundle))
    bundle.add_file(AE_FP32_FILE, role="novelty-onnx-fp32", opset=OPSET, input=INPUT_NAME, outputs=[OUTPUT_NAME])
    bundle.manifest["novelty"]["files"]["onnx_fp32"] = AE_FP32_FILE
    bundle.save()
    return path


def _reconstruct(path: Path, x: np.ndarray, batch: int = 256) -> np.ndarray:
    with OnnxRuntimeBackend(path, required_outputs=(OUTPUT_NAME,)) as backend:
        return np.concatenate([backend.infer(x[i:i + batch])[OUTPUT_NAME] for i in range(0, len(x), batch)])


def compare_autoencoders(fp32: Path, int8: Path, spectra: np.ndarray, threshold: float, metric: str,
                         max_disagreement_points: float = 1.0, min_correlation: float = 0.99) -> dict[str, Any]:
    """The parity gate of the INT8 autoencoder against FP32 (see the module docstring).

    Parameters
    ----------
    fp32, int8 : pathlib.Path
        ONNX autoencoders.
    spectra : numpy.ndarray, shape (B, N) or (B, C, N), float32
        Preprocessed validation spectra (channel 0 is used).
    threshold : float
        The bundle's novelty threshold.
    metric : str
        The bundle's novelty metric.
    max_disagreement_points, min_correlation : float
        The gate.

    Returns
    -------
    dict
        ``n``, ``pearson_log_scores``, ``spearman_scores``, ``max_rel_score_diff``, ``novel_rate_fp32``,
        ``novel_rate_int8`` and ``disagreement_points`` (percent), sizes, the gate settings and ``passed``.
    """
    from scipy.stats import spearmanr

    x = np.ascontiguousarray(primary_channel(spectra), dtype=np.float32)
    s32 = novelty_scores(x, _reconstruct(fp32, x), metric)
    s8 = novelty_scores(x, _reconstruct(int8, x), metric)
    l32, l8 = np.log(np.maximum(s32, 1e-12)), np.log(np.maximum(s8, 1e-12))
    r = float(np.corrcoef(l32, l8)[0, 1]) if len(x) > 1 else 1.0
    d32, d8 = s32 > threshold, s8 > threshold
    res: dict[str, Any] = {"n": len(x), "metric": metric, "threshold": float(threshold), "pearson_log_scores": r,
           "spearman_scores": float(spearmanr(s32, s8).statistic) if len(x) > 1 else 1.0,
           "max_rel_score_diff": float(np.max(np.abs(s8 - s32) / np.maximum(s32, 1e-12))),
           "novel_rate_fp32": 100.0 * float(d32.mean()), "novel_rate_int8": 100.0 * float(d8.mean()),
           "disagreement_points": 100.0 * float(np.mean(d32 != d8)),
           "fp32_bytes": fp32.stat().st_size, "int8_bytes": int8.stat().st_size,
           "max_disagreement_points": max_disagreement_points, "min_correlation": min_correlation}
    res["passed"] = bool(res["disagreement_points"] <= max_disagreement_points and r >= min_correlation)
    return res


def export_novelty(bundle: Bundle, *, int8: bool, calib: str | None = None, val: str | None = None,
                   quant: QuantConfig | None = None, data_dir: str | None = None,
                   max_disagreement_points: float = 1.0) -> dict[str, Any]:
    """Export the novelty autoencoder (FP32; with ``int8`` also the gated INT8 model).

    Parameters
    ----------
    bundle : Bundle
        A bundle with ``manifest["novelty"]``.
    int8 : bool
    calib, val : str, optional
        Calibration and validation spectra (default: the bundle's training and test sets).
    quant : QuantConfig
        As for the classifier.
    data_dir : str, optional
    max_disagreement_points : float

    Returns
    -------
    dict
        ``fp32`` (file name) and, with ``int8``, the gate's figures (``passed`` says whether the INT8 model
        was kept).

    Raises
    ------
    ExportError
        If an export step fails or, with ``int8``, no calibration/validation spectra can be found.
    """
    nov = bundle.manifest["novelty"]
    fp32 = export_autoencoder_fp32(bundle)
    out: dict[str, Any] = {"fp32": fp32.name}
    if not int8:
        bundle.save()
        return out
    training = bundle.manifest.get("training", {})
    calib = calib or training.get("train_source")
    val = val or training.get("test_source")
    if not calib or not val:
        raise ExportError("the novelty autoencoder's INT8 export needs calibration and validation spectra: "
                          "pass --calib and --val (the bundle records none)")
    pre = Preprocessor(bundle.preprocessing)
    c = load_spectra(calib, bundle.grid, data_dir)
    v = load_spectra(val, bundle.grid, data_dir)
    quant = quant or QuantConfig()
    # The candidate goes to a temporary file; it replaces a shipped INT8 autoencoder only when it passes.
    fd, tmp_name = tempfile.mkstemp(dir=bundle.path, prefix=".candidate.", suffix=".ae.int8.onnx")
    os.close(fd)
    candidate = Path(tmp_name)
    try:
        chmod_umask(candidate)
        quantize_int8(bundle, np.ascontiguousarray(primary_channel(pre(c.intensities, c.raman_shift_cm1))), quant,
                      out_name=candidate.name, src_name=AE_FP32_FILE)
        set_metadata(candidate, _metadata(bundle))
        res = compare_autoencoders(fp32, candidate, pre(v.intensities, v.raman_shift_cm1), float(nov["threshold"]),
                                   str(nov["metric"]), max_disagreement_points)
        res.update(validation_source=v.source, calibration_source=c.source, quantization=quant.to_dict())
        res["kept_previous_int8"] = bool(not res["passed"] and bundle.has_file(AE_INT8_FILE))
        bundle.metrics["export_novelty"] = res
        if res["passed"]:
            os.replace(candidate, bundle.path / AE_INT8_FILE)
            bundle.add_file(AE_INT8_FILE, role="novelty-onnx-int8-qdq", **quant.to_dict())
            nov["files"]["onnx_int8"] = AE_INT8_FILE
        else:
            log.warning("INT8 novelty autoencoder candidate NOT shipped: decisions disagree on %.2f %% of %d validation "
                        "spectra (allowed %.2f), log-score correlation %.4f (min %.2f); %s",
                        res["disagreement_points"], res["n"], max_disagreement_points, res["pearson_log_scores"],
                        res["min_correlation"], "the previous INT8 autoencoder is kept" if res["kept_previous_int8"]
                        else "the FP32 autoencoder will be served")
    finally:
        candidate.unlink(missing_ok=True)
    bundle.save()
    out.update(res)
    return out
