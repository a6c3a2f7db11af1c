"""``edge-predict``: classify spectrum files, folders and Raman maps with a model bundle.

Examples
--------
edge-predict --bundle bundles/rruff40 ../shared/data/cross_instrument/charisma --out results.csv
edge-predict --bundle bundles/rruff40 map.wdf --out map.csv            # + map.phase.png, map.pixels.csv
edge-predict --bundle bundles/rruff40 archive/ --out r.jsonl --scheduler tcp://HOST:8786
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cli_common import CliParser, add_logging_args, positive_float, positive_int, run_cli, setup_logging
from .errors import ConfigError
from .hygiene import InstrumentConfig
from .predict import OUTPUT_FORMATS, predict, write_rows

__all__ = ["build_parser", "main"]


def _map_shape(text: str) -> tuple[int, int]:
    try:
        r, c = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS (e.g. 6x6), got {text!r}") from exc
    return r, c


def build_parser() -> argparse.ArgumentParser:
    """Build the ``edge-predict`` argument parser."""
    p = CliParser(prog="edge-predict", description="Classify spectrum files, folders and maps.")
    p.add_argument("paths", nargs="+", help="files (any edge.io format), folders (recursive) or glob patterns")
    p.add_argument("--bundle", required=True, help="model bundle folder")
    p.add_argument("--out", default=None, help=f"results file ({', '.join(OUTPUT_FORMATS)}); default: CSV on stdout")
    p.add_argument("--map-dir", default=None, help="where phase maps go (default: next to --out, else .)")
    p.add_argument("--strict", action="store_true", help="refuse the run when a file is unreadable")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--summary-json", default=None, help="also write the summary as JSON")
    g = p.add_argument_group("model (as the daemon's settings)")
    g.add_argument("--precision", choices=["auto", "int8", "fp32"], default="auto")
    g.add_argument("--batch-size", type=positive_int, default=64, help="spectra per batch (the daemon's max_batch)")
    g.add_argument("--top-k", type=positive_int, default=3)
    g.add_argument("--threads", type=positive_int, default=1, help="inference threads")
    g.add_argument("--no-novelty", action="store_true", help="skip novelty scoring")
    g.add_argument("--novelty-detector", choices=["auto", "library", "autoencoder"], default="auto")
    g.add_argument("--head", default="", help="head file to serve instead of the bundle's")
    g.add_argument("--calibration", default="", help="instrument calibration file from edge-calibrate")
    r = p.add_argument_group("reading (edge.io options; see docs/formats.md)")
    r.add_argument("--laser-nm", type=positive_float, default=None, help="laser wavelength, nm (for nm axes)")
    r.add_argument("--axis-unit", choices=["auto", "cm-1", "nm"], default=None, help="x unit of text files")
    r.add_argument("--x-column", default=None, help="text files: x column name or 0-based index")
    r.add_argument("--y-column", default=None, help="text files: intensity column name or 0-based index")
    r.add_argument("--delimiter", default=None, help="text files: ';' '\\t' ',' or ' '")
    r.add_argument("--decimal", choices=[".", ","], default=None, help="text files: decimal separator")
    r.add_argument("--map-shape", type=_map_shape, default=None, help="ROWSxCOLS of a multi-spectrum SPC map")
    r.add_argument("--allow-non-raman", action="store_true", help="JCAMP-DX: read non-Raman spectra too")
    d = p.add_argument_group("cluster (extra [distributed])")
    d.add_argument("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://HOST:8786")
    add_logging_args(p)
    return p


def _read_options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for name in ("laser_nm", "axis_unit", "x_column", "y_column", "delimiter", "decimal", "map_shape"):
        v = getattr(args, name)
        if v is not None:
            opts[name] = "\t" if (name == "delimiter" and v == "\\t") else v
    if args.allow_non_raman:
        opts["allow_non_raman"] = True
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``edge-predict``; returns the exit status."""
    args = build_parser().parse_args(argv)
    setup_logging(args)
    if args.out is not None and Path(args.out).suffix.lower() not in OUTPUT_FORMATS:
        raise ConfigError(f"--out {args.out}: must end in one of {', '.join(OUTPUT_FORMATS)}")
    result = predict(args.paths, args.bundle, strict=args.strict, progress=not args.no_progress,
                     scheduler=args.scheduler, read_options=_read_options(args), precision=args.precision,
                     batch_size=args.batch_size, top_k=args.top_k, threads=args.threads,
                     novelty=not args.no_novelty, novelty_detector=args.novelty_detector, head=args.head,
                     instrument=InstrumentConfig(calibration=args.calibration) if args.calibration else None)
    if args.out is None:
        import csv

        from .predict import _columns, _flat

        w = csv.DictWriter(sys.stdout, fieldnames=_columns(result.rows), extrasaction="ignore")
        w.writeheader()
        for row in result.rows:
            w.writerow(_flat(row))
    else:
        write_rows(result.rows, args.out)
    map_dir = Path(args.map_dir) if args.map_dir else (Path(args.out).parent if args.out else Path("."))
    if result.maps:
        from .phase_map import write_phase_map

        map_dir.mkdir(parents=True, exist_ok=True)
        for m in result.maps:
            rows = [r for r in result.rows if r["file"] == m.source]
            stem = Path(m.source).stem
            step = m.metadata.get("step_um")
            write_phase_map(rows, m.map_shape, map_dir / f"{stem}.phase.png",  # type: ignore[arg-type]
                            step_um=tuple(step) if step else None, title=f"{Path(m.source).name}: phase map")
            write_rows(rows, map_dir / f"{stem}.pixels.csv")
            print(f"map {m.source}: {map_dir / (stem + '.phase.png')}, {map_dir / (stem + '.pixels.csv')}",
                  file=sys.stderr)
    summary = result.summary()
    for f, reason in result.unreadable:
        print(f"unreadable: {f}: {reason}", file=sys.stderr)
    print(f"summary: {json.dumps(summary)}", file=sys.stderr)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps({**summary, "unreadable": result.unreadable}, indent=2))
    return 0


def cli() -> int:
    """Console-script entry point."""
    return run_cli(main, prog="edge-predict")


if __name__ == "__main__":
    sys.exit(cli())
