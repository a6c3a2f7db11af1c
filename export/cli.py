"""``edge-export``: FP32 ONNX, and with ``--int8`` a static QDQ INT8 model that must pass an accuracy gate.

Examples
--------
edge-export bundles/rruff40 --int8
edge-export bundles/rruff40 --int8 --val rruff_soysal/raw_test.npz --max-accuracy-drop 0.5
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from edge.bundle import Bundle
from edge.cli_common import add_data_args, add_logging_args, run_cli, setup_logging
from edge.data import load_spectra
from edge.preprocess import Preprocessor
from trainer.train import encode_labels

from .errors import ExportError
from .onnx_export import export_fp32
from .quantize import INT8_FILE, QuantConfig, compare_models, gate, quantize_int8

log = logging.getLogger("export")


def add_quant_args(parser: argparse.ArgumentParser) -> None:
    """Add the INT8 quantisation options (calibration method, granularity, accuracy gate) to ``parser``."""
    g = parser.add_argument_group("INT8 quantisation")
    g.add_argument("--int8", action="store_true", help="also write a static QDQ INT8 model (accuracy-gated)")
    g.add_argument("--calib", default=None, help="calibration spectra (default: the bundle's training spectra)")
    g.add_argument("--val", default=None, help="validation spectra for the gate (default: the bundle's test set)")
    g.add_argument("--max-accuracy-drop", type=float, default=1.0, help="allowed INT8 top-1 loss, points")
    g.add_argument("--per-tensor", action="store_true", help="per-tensor weight scales (default per-channel)")
    g.add_argument("--calibrate-method", choices=["minmax", "entropy", "percentile"], default="minmax")


def build_parser() -> argparse.ArgumentParser:
    """Build the ``edge-export`` argument parser."""
    p = argparse.ArgumentParser(prog="edge-export", description="Export a model bundle to ONNX FP32 / INT8.")
    p.add_argument("bundle", help="bundle folder written by edge-train")
    add_quant_args(p)
    add_data_args(p)
    add_logging_args(p)
    return p


def export_bundle(bundle: Bundle, *, int8: bool, calib: str | None = None, val: str | None = None,
                  max_accuracy_drop: float = 1.0, quant: QuantConfig | None = None,
                  data_dir: str | None = None) -> dict:
    """Run the export steps on a bundle; returns the gate's figures (empty without ``int8``).

    Raises
    ------
    ExportError
        When a step fails, or no calibration/validation spectra can be found.
    AccuracyGateError
        When INT8 loses more than ``max_accuracy_drop`` points; the INT8 file is removed.
    """
    if bundle.has_file(INT8_FILE):  # a new FP32 export makes any older INT8 model stale
        del bundle.manifest["files"][INT8_FILE]
        (bundle.path / INT8_FILE).unlink(missing_ok=True)
    fp32 = export_fp32(bundle)
    if bundle.manifest.get("novelty"):  # the novelty autoencoder travels with the classifier (export/novelty_export.py)
        from .novelty_export import export_novelty

        export_novelty(bundle, int8=int8, calib=calib, val=val, quant=quant, data_dir=data_dir)
    if not int8:
        return {}
    training = bundle.manifest.get("training", {})
    calib = calib or training.get("train_source")
    val = val or training.get("test_source")
    if not calib:
        raise ExportError("no calibration spectra: pass --calib PATH (the bundle records no training set)")
    if not val:
        raise ExportError("no validation spectra for the accuracy gate: pass --val PATH (the bundle records no test set)")
    pre = Preprocessor(bundle.preprocessing)
    grid = bundle.grid
    c = load_spectra(calib, grid, data_dir)
    v = load_spectra(val, grid, data_dir)
    quant = quant or QuantConfig()
    path = quantize_int8(bundle, pre(c.intensities, c.raman_shift_cm1), quant)
    result = compare_models(fp32, path, pre(v.intensities, v.raman_shift_cm1), encode_labels(v.labels, bundle.labels),
                            max_accuracy_drop)
    result.update(validation_source=v.source, calibration_source=c.source, quantization=quant.to_dict())
    bundle.metrics["export"] = result
    if not result["passed"]:
        path.unlink(missing_ok=True)
        bundle.save()
        gate(result)
    bundle.add_file(INT8_FILE, role="onnx-int8-qdq", **quant.to_dict())
    bundle.save()
    return result


def main_impl(argv: Sequence[str] | None = None) -> int:
    """Parse the ``edge-export`` command line and export the bundle; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args)
    bundle = Bundle.load(args.bundle)
    quant = QuantConfig(per_channel=not args.per_tensor, calibrate_method=args.calibrate_method)
    result = export_bundle(bundle, int8=args.int8, calib=args.calib, val=args.val,
                           max_accuracy_drop=args.max_accuracy_drop, quant=quant, data_dir=args.data_dir)
    print(f"FP32 ONNX: {bundle.path / 'model.onnx'}")
    nov = bundle.manifest.get("novelty")
    if nov:
        names = [bundle.path.joinpath(nov["files"][k]).name for k in ("onnx_fp32", "onnx_int8") if k in nov["files"]]
        print(f"novelty autoencoder: {', '.join(names)}")
        gate_ae = bundle.metrics.get("export_novelty")
        if args.int8 and gate_ae:
            print(json.dumps({k: gate_ae[k] for k in ("n", "pearson_log_scores", "novel_rate_fp32", "novel_rate_int8",
                                                      "disagreement_points", "passed")}))
    if result:
        print(f"INT8 QDQ:  {bundle.path / INT8_FILE}")
        print(json.dumps({k: result[k] for k in ("n", "fp32_top1", "int8_top1", "drop_points", "top1_agreement",
                                                  "fp32_bytes", "int8_bytes", "size_ratio", "passed")}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``edge-export``: user errors print one ``error:`` line and exit 1."""
    return run_cli(main_impl, argv, "edge-export")


if __name__ == "__main__":
    sys.exit(main())
