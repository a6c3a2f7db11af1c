"""``edge-calibrate``: fit an instrument's Raman-shift axis correction from spectra of standards.

Examples
--------
python -m edge.calibrate_cli --instrument ICV_BW785-Z050 --polystyrene PST.txt --out cal.json
python -m edge.calibrate_cli --instrument HO785-OP03 --laser-nm 785 --neon Ne.txt --silicon Si.txt --out cal.json
python -m edge.calibrate_cli --instrument HO785-OP03 --polystyrene PST.txt --out cal.json --plot cal.png
python -m edge.calibrate_cli --instrument HO785-OP03 --laser-nm 785 --neon Ne.txt --polystyrene PST.txt --degree cv --out cal.json

With neon and a Raman standard the laser wavelength is fitted (``--no-fit-laser`` holds it at ``--laser-nm``): the
neon lamp calibrates the absolute wavelength axis, polystyrene or silicon the laser line.

Reads the CHARISMA BWTek (semicolon, decimal comma) and Horiba (two tab-separated columns) text files with
:func:`edge.io.read_spectrum` (any format it reads), prints the residual
table and writes the versioned calibration file (:mod:`edge.calibration`) that the daemon's
``[instrument] calibration = FILE`` applies.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np

from .calibration import SILICON_CM1, Calibration, fit_calibration
from .cli_common import add_logging_args, run_cli, setup_logging
from .errors import CalibrationError, ConfigError
from .io import read_spectrum


def _degree(text: str) -> int | str:
    if text == "cv":
        return "cv"
    if text in ("0", "1", "2"):
        return int(text)
    raise argparse.ArgumentTypeError(f"must be 0, 1, 2 or cv, got {text!r}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-calibrate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instrument", required=True, help="instrument (and setup) id recorded in the file")
    p.add_argument("--silicon", action="append", default=[], metavar="FILE", help="silicon spectrum (repeatable)")
    p.add_argument("--polystyrene", action="append", default=[], metavar="FILE", help="polystyrene spectrum")
    p.add_argument("--neon", action="append", default=[], metavar="FILE", help="neon lamp spectrum (needs --laser-nm)")
    p.add_argument("--laser-nm", type=float, default=None, help="laser wavelength, nm (air)")
    p.add_argument("--silicon-cm1", type=float, default=SILICON_CM1, help="silicon reference line (default 520.7)")
    p.add_argument("--degree", type=_degree, default=None, metavar="{0,1,2,cv}",
                   help="polynomial degree, or cv: the degree 0-2 with the smallest leave-one-line-out residual "
                        "on the standards' own lines (default: silicon 0, polystyrene 1, neon 2)")
    p.add_argument("--fit-laser", action=argparse.BooleanOptionalAction, default=None,
                   help="fit the laser wavelength from neon plus a Raman standard (default: on exactly when "
                        "--neon comes with --polystyrene or --silicon)")
    p.add_argument("--max-offset", type=float, default=15.0, help="largest axis error searched, cm⁻¹ (default 15)")
    p.add_argument("--id", default="", help="calibration id (default <instrument>-<UTC time>)")
    p.add_argument("--out", required=True, help="calibration file to write (JSON)")
    p.add_argument("--plot", default=None, metavar="PNG", help="draw the fitted lines and residuals (matplotlib)")
    add_logging_args(p)
    return p


def residual_table(cal: Calibration) -> str:
    """Format the per-line residual table of a calibration (text, one line per fitted line)."""
    rows = [f"{'standard':<12} {'reference':>10} {'measured':>10} {'corrected':>10} {'residual':>9} {'FWHM':>6}"]
    for ln in cal.lines:
        rows.append(f"{ln['standard']:<12} {ln['reference_cm1']:>10.2f} {ln['measured_cm1']:>10.2f} "
                    f"{ln['corrected_cm1']:>10.2f} {ln['residual_cm1']:>+9.3f} {ln['fwhm_cm1']:>6.2f}")
    coeffs = ", ".join(f"{c:.6g}" for c in cal.coefficients_cm1)
    rows.append(f"degree {cal.degree} correction c = [{coeffs}] (cm⁻¹); RMS residual {cal.rms_cm1:.3f} cm⁻¹ "
                f"over {len(cal.lines)} line(s)")
    if "cv_rms_cm1" in cal.fit:
        rows.append("leave-one-line-out RMS by degree: " + ", ".join(f"{d}: {v:.3f}" for d, v in
                                                                     cal.fit["cv_rms_cm1"].items()) + " cm⁻¹")
    if "laser_nm_fitted" in cal.fit:
        rows.append(f"laser fitted from neon + Raman standard: {cal.fit['laser_nm_fitted']:.4f} nm "
                    f"(neon lines offset {cal.fit['laser_offset_cm1']:+.3f} cm⁻¹ from the nominal {cal.laser_nm:g} nm)")
    return "\n".join(rows)


def plot_calibration(cal: Calibration, spectra: list[tuple[str, np.ndarray, np.ndarray]], path: str) -> None:
    """Draw each standard's spectrum on the corrected axis with its reference lines, and the residuals.

    Raises
    ------
    ConfigError
        If matplotlib (the ``train`` extra) is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError("--plot needs matplotlib: pip install 'raman-edge[train]'") from exc
    fig, axes = plt.subplots(len(spectra) + 1, 1, figsize=(9, 2.6 * (len(spectra) + 1)), squeeze=False)
    for ax, (standard, x, y) in zip(axes[:-1, 0], spectra, strict=True):
        ax.plot(cal.apply(x), y, lw=0.8, label=f"{standard} (corrected axis)")
        for ln in cal.lines:
            if ln["standard"] == standard:
                ax.axvline(ln["reference_cm1"], color="r", lw=0.6, alpha=0.6)
        ax.set_ylabel("intensity")
        ax.legend(loc="upper right", fontsize=8)
    ax = axes[-1, 0]
    ax.axhline(0, color="k", lw=0.5)
    ax.plot([ln["reference_cm1"] for ln in cal.lines], [ln["residual_cm1"] for ln in cal.lines], "o")
    ax.set_xlabel("Raman shift (cm⁻¹)")
    ax.set_ylabel("residual (cm⁻¹)")
    ax.set_title(f"{cal.calibration_id}: RMS {cal.rms_cm1:.3f} cm⁻¹", fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from exc
    finally:
        plt.close(fig)


def calibrate_impl(argv: Sequence[str] | None = None) -> int:
    """Run ``edge-calibrate`` (see the module docstring); returns the exit status."""
    args = _parser().parse_args(argv)
    setup_logging(args)
    files = [("silicon", f) for f in args.silicon] + [("polystyrene", f) for f in args.polystyrene] + \
        [("neon", f) for f in args.neon]
    if not files:
        raise ConfigError("give at least one standard's spectrum: --silicon, --polystyrene or --neon FILE")
    if args.neon and args.laser_nm is None:
        raise ConfigError("--neon needs --laser-nm (the neon lines are tabulated in nm)")
    spectra = []
    for standard, f in files:
        axis, intensity = read_spectrum(f)
        spectra.append((standard, axis, intensity))
    try:
        cal = fit_calibration(spectra, instrument_id=args.instrument, laser_nm=args.laser_nm, degree=args.degree,
                              silicon_cm1=args.silicon_cm1, sources=[os.path.basename(f) for _, f in files],
                              calibration_id=args.id, max_offset_cm1=args.max_offset, fit_laser=args.fit_laser)
    except CalibrationError as exc:
        raise CalibrationError(f"calibration failed: {exc}") from exc
    sha = cal.save(args.out)
    print(residual_table(cal))
    print(f"wrote {args.out} (id {cal.calibration_id}, sha256 {sha[:12]})")
    if args.plot:
        plot_calibration(cal, spectra, args.plot)
        print(f"wrote {args.plot}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point of ``edge-calibrate``."""
    return run_cli(calibrate_impl, argv, "edge-calibrate")


if __name__ == "__main__":
    sys.exit(main())
