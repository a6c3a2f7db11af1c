"""``edge-train``: train a compact Raman CNN and write a model bundle.

Examples
--------
edge-train --train rruff_soysal/raw_train_labeled_40pct.npz --test rruff_soysal/raw_test.npz --out bundles/rruff40
edge-train --train synthetic:train --test synthetic:test --out bundles/synthetic --epochs 40
edge-train transfer --base bundles/rruff40 --train NEW.npz --test NEW_TEST.npz --out bundles/rruff40+new
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edge.cli_common import (
    CliParser,
    add_data_args,
    add_logging_args,
    config_file,
    missing_extra_note,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    require_extra,
    run_cli,
    setup_logging,
)

from .errors import TrainerError

if TYPE_CHECKING:
    from .settings import TrainerSettings

# torch, and the modules that import it, are imported after parsing: --help stays fast and, on an onboard
# install without the [train] extra, the command says which extra to install (edge.cli_common.require_extra).

log = logging.getLogger("trainer")
DEFAULT_CONFIG = config_file("model_compact.toml")  # configs/ of a checkout, or edge/configs/ of a wheel


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Add the model and training options (each overrides the config file) to ``parser``."""
    g = parser.add_argument_group("model and training (override the config file)")
    g.add_argument("--config", default=None, help=f"model config TOML (default: {DEFAULT_CONFIG.name} if present)")
    g.add_argument("--seed", type=non_negative_int, default=None)
    g.add_argument("--epochs", type=positive_int, default=None, help="maximum epochs")
    g.add_argument("--steps", type=positive_int, default=None, help="optimiser steps (one-cycle schedule)")
    g.add_argument("--pool-size", type=positive_int, default=None, help="max-pooling size m (paper §3)")
    g.add_argument("--n-pool", type=positive_int, default=None, help="number of pooling stages n")
    g.add_argument("--head", choices=["positions", "dense"], default=None)
    g.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    g.add_argument("--shift-tolerance-cm1", type=positive_float, default=None,
                   help="the instrument's largest Raman-shift drift, cm⁻¹: chooses augmentation and pooling")


def settings_from_args(args: argparse.Namespace) -> TrainerSettings:
    """The training settings: the model config TOML with the command-line overrides applied."""
    from .settings import TrainerSettings, apply_shift_tolerance

    cfg = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    s = TrainerSettings.from_toml(cfg) if cfg else TrainerSettings()
    for attr, target, key in [("seed", s.training, "seed"), ("epochs", s.training, "max_epochs"),
                              ("steps", s.training, "steps"),
                              ("pool_size", s.model, "pool_size"), ("n_pool", s.model, "n_pool"),
                              ("head", s.model, "head"), ("threads", s.training, "threads")]:
        value = getattr(args, attr, None)
        if value is not None:
            setattr(target, key, value)
    if getattr(args, "shift_tolerance_cm1", None) is not None:
        apply_shift_tolerance(s, args.shift_tolerance_cm1)
    if args.epochs is not None:
        s.training.min_epochs = min(s.training.min_epochs, args.epochs)
        if args.steps is None:
            s.training.steps = 0  # --epochs alone means epochs, also under the one-cycle schedule
    s.model.__post_init__()
    return s


def build_parser() -> argparse.ArgumentParser:
    """Build the ``edge-train`` argument parser (imports no torch)."""
    p = CliParser(prog="edge-train", description="Train a compact Raman CNN into a model bundle.",
                  formatter_class=argparse.RawDescriptionHelpFormatter,  # the note below keeps its pip command whole
                  epilog="subcommands: edge-train explain --help, edge-train transfer --help\n"
                         + missing_extra_note("torch", "train"))
    p.add_argument("--train", required=True,
                   help=".npz split, synthetic:train, or spectrum files/folders of any edge.io format")
    p.add_argument("--labels", default=None,
                   help="labels of --train files: a file,label CSV, or 'subfolders' (one sub-folder per mineral); "
                        "RRUFF files name their own")
    p.add_argument("--test", default=None, help="held-out spectra to score (never used for training decisions)")
    p.add_argument("--test-labels", default=None, help="labels of --test files (as --labels)")
    p.add_argument("--strict", action="store_true",
                   help="refuse a folder with an unreadable file (default: train on the rest; each skipped file is "
                        "reported with its reason and recorded in the bundle)")
    p.add_argument("--out", required=True, help="bundle folder to write (an existing bundle only with --force)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle in --out (its files are removed)")
    p.add_argument("--name", default=None, help="model name (default: the config's name)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("novelty detection (trainer/autoencoder.py)")
    g.add_argument("--novelty", action=argparse.BooleanOptionalAction, default=True,
                   help="also fit the novelty autoencoder, its nominal-only threshold and the spectral library "
                        "(~20-60 s on 1 thread). On by default: the daemon's default drift compensation and "
                        "novelty decision need the bundle's reference spectra (issue #14); --no-novelty skips it")
    g.add_argument("--novelty-epochs", type=positive_int, default=None, help="autoencoder epochs (default 60)")
    g.add_argument("--novelty-quantile", type=probability, default=0.9,
                   help="threshold quantile of the nominal training scores (default 0.9: chosen on the "
                        "cross-instrument development set, docs/instruments.md)")
    add_model_args(p)
    add_data_args(p)
    add_logging_args(p)
    return p


def train_main(argv: Sequence[str] | None = None) -> int:
    """``edge-train``: train a model and write its bundle; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args)
    require_extra("torch", "train", "edge-train")
    from edge.data import load_spectra
    from edge.preprocess import Preprocessor

    from .bundle_io import prepare_out_dir, save_model
    from .report import classification_metrics, shift_curve, write_report
    from .train import encode_labels, fit, predict_proba

    prepare_out_dir(args.out, force=args.force)
    settings = settings_from_args(args)
    grid = settings.preprocessing.grid
    train = load_spectra(args.train, grid, args.data_dir, labels=args.labels, strict=args.strict)
    test = (load_spectra(args.test, grid, args.data_dir, labels=args.test_labels, strict=args.strict)
            if args.test else None)
    for data in (train, test):
        for file, reason in (data.skipped if data is not None else []):
            print(f"skipped {file}: {reason}", file=sys.stderr)
    if len(train.classes) < 2:
        raise TrainerError(f"--train {args.train}: {len(train)} spectra of {len(train.classes)} class(es) "
                           f"{list(train.classes)[:3]}; a classifier needs at least 2 classes (an .npz split, a folder "
                           "of RRUFF .txt files, or synthetic:train)")
    log.info("training on %d spectra, %d classes (%s)", len(train), len(train.classes), train.source)
    t0 = time.perf_counter()
    result = fit(train, settings.preprocessing, settings.model, settings.training, settings.augmentation,
                 progress=False if args.no_progress else ("bar" if sys.stderr.isatty() else "lines"))
    metrics: dict = {"train_seconds": round(result.seconds, 2)}
    pre = Preprocessor(settings.preprocessing)
    if test is not None:
        proba = predict_proba(result.model, pre(test.intensities, test.raman_shift_cm1))
        metrics["test"] = classification_metrics(proba, encode_labels(test.labels, result.labels), result.labels)
        metrics["test"]["source"] = test.source
        metrics["shift_curve"] = shift_curve(result.model, pre, test, result.labels)
    name = args.name or _config_name(args) or "raman-cnn"
    bundle = save_model(args.out, result.model, result.labels, settings, {
        "train_source": train.source, "test_source": test.source if test else None,
        "n_train": len(train), "epochs": result.epochs, "seconds": round(result.seconds, 2),
        "protocol": "LR schedule and early stopping on training loss; test set never used for decisions",
        "history": result.history,
    }, name=name)
    report = write_report(bundle.path / "report", metrics, result.labels, result.history)
    for role, rel in report.items():
        bundle.add_file(rel, role=f"report-{role}")
    bundle.metrics.update({k: v for k, v in metrics.items() if k != "test"})
    if test is not None:
        t = metrics["test"]
        bundle.metrics["test"] = {k: t[k] for k in ("n", "top1", "top3", "macro_f1", "confidence_gap", "source")}
    bundle.save()
    if args.novelty:
        from .autoencoder import add_novelty_to_bundle

        print(add_novelty_to_bundle(bundle, train, test, result.model, settings, epochs=args.novelty_epochs,
                                    quantile=args.novelty_quantile))
    n_par = bundle.manifest["model"]["n_parameters"]
    msg = f"bundle {bundle.path} ({bundle.model_id}): {n_par} parameters, {result.epochs} epochs, {result.seconds:.1f} s"
    if test is not None:
        t = metrics["test"]
        msg += f"; test top-1 {100 * t['top1']:.1f} %, top-3 {100 * t['top3']:.1f} %, macro-F1 {t['macro_f1']:.3f}"
    print(msg)
    log.debug("total %.1f s", time.perf_counter() - t0)
    return 0


def _config_name(args: argparse.Namespace) -> str | None:
    from edge.cli_common import load_toml

    cfg = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    return load_toml(cfg).get("name") if cfg else None


def _transfer_main(argv: Sequence[str] | None = None) -> int:
    require_extra("torch", "train", "edge-train transfer")
    from .transfer import transfer_main

    return transfer_main(argv)


def explain_main(argv: Sequence[str] | None = None) -> int:
    """``edge-train explain``: Grad-CAM importance curves (paper §4.2.1) for chosen spectra, as PNGs."""
    p = CliParser(prog="edge-train explain", description="Grad-CAM curves over chosen spectra.")
    p.add_argument("--bundle", required=True)
    p.add_argument("--data", required=True, help="spectra (.npz, RRUFF .txt folder, synthetic:test)")
    p.add_argument("--index", type=non_negative_int, nargs="+", default=[0], help="rows of --data to explain")
    p.add_argument("--out", default=None, help="folder for PNGs (default: BUNDLE/report/gradcam)")
    add_data_args(p)
    args = p.parse_args(argv)
    require_extra("torch", "train", "edge-train explain")
    from edge.bundle import Bundle
    from edge.data import load_spectra
    from edge.errors import DataError
    from edge.preprocess import Preprocessor

    from .bundle_io import load_model
    from .explain import grad_cam, plot_grad_cam

    bundle = Bundle.load(args.bundle)
    spectra = load_spectra(args.data, bundle.grid, args.data_dir)
    bad = [i for i in args.index if not 0 <= i < len(spectra)]
    if bad:
        raise DataError(f"--index {bad} outside 0..{len(spectra) - 1}")
    x = Preprocessor(bundle.preprocessing)(spectra.intensities[args.index], spectra.raman_shift_cm1)
    curves, cls = grad_cam(load_model(bundle), x)
    out = Path(args.out) if args.out else bundle.path / "report" / "gradcam"
    out.mkdir(parents=True, exist_ok=True)
    spec0 = x[:, 0] if x.ndim == 3 else x
    for k, i in enumerate(args.index):
        title = f"#{i}: true {spectra.labels[i]}, predicted {bundle.labels[cls[k]]}"
        print(plot_grad_cam(bundle.grid.axis, spec0[k], curves[k], title, out / f"gradcam_{i:04d}.png"))
    return 0


SUBCOMMANDS = {"train": train_main, "explain": explain_main, "transfer": _transfer_main}


def dispatch(argv: Sequence[str] | None = None) -> int:
    """Run the subcommand named first in ``argv`` (train by default); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    return train_main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``edge-train``: user errors print one ``error:`` line and exit 1."""
    return run_cli(dispatch, argv, "edge-train")


if __name__ == "__main__":
    sys.exit(main())
