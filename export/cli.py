"""``edge-export``: FP32 ONNX, and with ``--int8`` a static QDQ INT8 model that must pass an accuracy gate.

Examples
--------
edge-export bundles/rruff40 --int8
edge-export bundles/rruff40 --int8 --val rruff_soysal/raw_test.npz --max-accuracy-drop 0.5
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.bundle import Bundle, chmod_umask
from edge.cli_common import (
    CliParser,
    add_data_args,
    add_logging_args,
    missing_extra_note,
    non_negative_float,
    require_extra,
    run_cli,
    setup_logging,
)
from edge.data import load_spectra
from edge.preprocess import Preprocessor

from .errors import ExportError
from .quantize import INT8_FILE, QuantConfig, compare_models, gate, quantize_int8
from .tensorrt_check import check_tensorrt_qdq, describe_check

log = logging.getLogger("export")


def add_quant_args(parser: argparse.ArgumentParser) -> None:
    """Add the INT8 quantisation options (calibration method, granularity, accuracy gate) to ``parser``."""
    g = parser.add_argument_group("INT8 quantisation")
    g.add_argument("--int8", action="store_true", help="also write a static QDQ INT8 model (accuracy-gated)")
    g.add_argument("--calib", default=None, help="calibration spectra (default: the bundle's training spectra)")
    g.add_argument("--val", default=None, help="validation spectra for the gate (default: the bundle's test set)")
    g.add_argument("--max-accuracy-drop", type=non_negative_float, default=1.0,
                   help="allowed INT8 top-1 loss, percentage points (≥ 0; default 1)")
    g.add_argument("--per-tensor", action="store_true", help="per-tensor weight scales (default per-channel)")
    g.add_argument("--calibrate-method", choices=["minmax", "entropy", "percentile"], default="minmax")
    g.add_argument("--tensorrt", action="store_true",
                   help="quantise for TensorRT explicit quantisation (symmetric activations, float bias)")


def build_parser() -> argparse.ArgumentParser:
    """Build the ``edge-export`` argument parser."""
    p = CliParser(prog="edge-export", description="Export a model bundle to ONNX FP32 / INT8.",
                  formatter_class=argparse.RawDescriptionHelpFormatter,
                  epilog=" ".join(filter(None, (missing_extra_note("torch", "export"), missing_extra_note("onnx", "export")))))
    p.add_argument("bundle", help="bundle folder written by edge-train")
    add_quant_args(p)
    add_data_args(p)
    add_logging_args(p)
    return p


#: Smallest share of validation spectra whose label the bundle knows for the gate to mean anything.
MIN_KNOWN_LABEL_FRACTION = 0.5


def check_validation_labels(labels: Sequence[str] | np.ndarray, bundle_labels: Sequence[str], source: str) -> int:
    """Refuse a validation set whose labels do not match the bundle's classes.

    Parameters
    ----------
    labels : sequence of str or numpy.ndarray, shape (B,)
        Labels of the validation spectra.
    bundle_labels : sequence of str
        The bundle's classes.
    source : str
        Where the spectra come from (for the message).

    Returns
    -------
    int
        Number of validation spectra whose label the bundle does not know (counted as wrong by the gate).

    Raises
    ------
    ExportError
        If the set is empty or fewer than :data:`MIN_KNOWN_LABEL_FRACTION` of its spectra carry one of the
        bundle's labels (e.g. ``--val synthetic:test`` for a bundle trained on RRUFF minerals): a gate on them
        would compare 0 % with 0 % and pass.
    """
    known = set(bundle_labels)
    n = len(labels)
    unknown = [str(x) for x in labels if x not in known]
    if n == 0 or len(unknown) > (1 - MIN_KNOWN_LABEL_FRACTION) * n:
        examples = ", ".join(sorted(set(unknown))[:3])
        raise ExportError(
            f"{source}: validation labels do not match the bundle's: {n - len(unknown)} of {n} spectra carry one of "
            f"its {len(known)} labels (unknown: {examples}); pass --val with spectra of the bundle's classes")
    if unknown:
        log.warning("%s: %d of %d validation spectra have labels the bundle does not know; they count as wrong",
                    source, len(unknown), n)
    return len(unknown)


def export_bundle(bundle: Bundle, *, int8: bool, calib: str | None = None, val: str | None = None,
                  max_accuracy_drop: float = 1.0, quant: QuantConfig | None = None,
                  data_dir: str | None = None) -> dict:
    """Run the export steps on a bundle; returns the gate's figures (empty without ``int8``).

    The INT8 candidate is written to a temporary file in the bundle folder and moved into place
    (``os.replace``) only when it passes the gate: a previously shipped INT8 model is never deleted or replaced
    by one that failed.

    Raises
    ------
    ExportError
        When a step fails, ``max_accuracy_drop`` is negative, no calibration/validation spectra can be found,
        or the validation labels do not match the bundle's (:func:`check_validation_labels`).
    AccuracyGateError
        When INT8 loses more than ``max_accuracy_drop`` points; the candidate is removed, an older INT8 model
        stays.
    """
    if not max_accuracy_drop >= 0:  # also refuses NaN
        raise ExportError(f"max_accuracy_drop must be ≥ 0 percentage points, got {max_accuracy_drop}")
    from trainer.train import encode_labels  # torch: imported only when exporting

    from .onnx_export import export_fp32

    if int8:  # the gate's inputs are checked before anything is written
        training = bundle.manifest.get("training", {})
        calib = calib or training.get("train_source")
        val = val or training.get("test_source")
        if not calib:
            raise ExportError("no calibration spectra: pass --calib PATH (the bundle records no training set)")
        if not val:
            raise ExportError("no validation spectra for the accuracy gate: pass --val PATH (the bundle records no test set)")
        v = load_spectra(val, bundle.grid, data_dir)
        n_unknown = check_validation_labels(v.labels, bundle.labels, v.source)
        c = load_spectra(calib, bundle.grid, data_dir)
    fp32 = export_fp32(bundle)
    if bundle.manifest.get("novelty"):  # the novelty autoencoder travels with the classifier (export/novelty_export.py)
        from .novelty_export import export_novelty

        export_novelty(bundle, int8=int8, calib=calib, val=val, quant=quant, data_dir=data_dir)
    if not int8:
        return {}
    pre = Preprocessor(bundle.preprocessing)
    quant = quant or QuantConfig()
    fd, tmp_name = tempfile.mkstemp(dir=bundle.path, prefix=".candidate.", suffix=".int8.onnx")
    os.close(fd)
    candidate = Path(tmp_name)
    try:
        chmod_umask(candidate)
        quantize_int8(bundle, pre(c.intensities, c.raman_shift_cm1), quant, out_name=candidate.name)
        result = compare_models(fp32, candidate, pre(v.intensities, v.raman_shift_cm1),
                                encode_labels(v.labels, bundle.labels), max_accuracy_drop)
        result.update(validation_source=v.source, calibration_source=c.source, quantization=quant.to_dict(),
                      n_unknown_label=n_unknown, tensorrt=check_tensorrt_qdq(candidate))
        result["kept_previous_int8"] = bool(not result["passed"] and bundle.has_file(INT8_FILE))
        bundle.metrics["export"] = result
        if result["passed"]:
            os.replace(candidate, bundle.path / INT8_FILE)
            bundle.add_file(INT8_FILE, role="onnx-int8-qdq", **quant.to_dict())
        bundle.save()
    finally:
        candidate.unlink(missing_ok=True)
    gate(result)
    return result


def _summary_line(result: dict) -> str:
    """The gate's figures as one line."""
    return (f"INT8 gate passed: top-1 {result['int8_top1']:.1f} % vs FP32 {result['fp32_top1']:.1f} % "
            f"(drop {result['drop_points']:.2f} points, allowed {result['max_drop_points']:g}) on {result['n']} spectra; "
            f"agreement {result['top1_agreement']:.1f} %; {result['int8_bytes'] / 1024:.0f} KiB "
            f"({100 * result['size_ratio']:.0f} % of FP32)")


def main_impl(argv: Sequence[str] | None = None) -> int:
    """Parse the ``edge-export`` command line and export the bundle; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args)
    require_extra("torch", "export", "edge-export")
    require_extra("onnx", "export", "edge-export")
    bundle = Bundle.load(args.bundle)
    quant = QuantConfig(per_channel=not args.per_tensor, calibrate_method=args.calibrate_method, tensorrt=args.tensorrt)
    result = export_bundle(bundle, int8=args.int8, calib=args.calib, val=args.val,
                           max_accuracy_drop=args.max_accuracy_drop, quant=quant, data_dir=args.data_dir)
    print(f"FP32 ONNX: {bundle.path / 'model.onnx'}")
    nov = bundle.manifest.get("novelty")
    if nov:
        names = [bundle.path.joinpath(nov["files"][k]).name for k in ("onnx_fp32", "onnx_int8") if k in nov["files"]]
        print(f"novelty autoencoder: {', '.join(names)}")
        gate_ae = bundle.metrics.get("export_novelty")
        if args.int8 and gate_ae:
            print(f"novelty INT8 {'shipped' if gate_ae['passed'] else 'NOT shipped'}: log-score correlation "
                  f"{gate_ae['pearson_log_scores']:.4f}, novel rate {gate_ae['novel_rate_fp32']:.1f} % (FP32) vs "
                  f"{gate_ae['novel_rate_int8']:.1f} % (INT8), decisions differ on {gate_ae['disagreement_points']:.2f} "
                  f"% of {gate_ae['n']} spectra")
    if result:
        print(f"INT8 QDQ:  {bundle.path / INT8_FILE}")
        print(_summary_line(result))
        print(describe_check(result["tensorrt"]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``edge-export``: user errors print one ``error:`` line and exit 1."""
    return run_cli(main_impl, argv, "edge-export")


if __name__ == "__main__":
    sys.exit(main())
