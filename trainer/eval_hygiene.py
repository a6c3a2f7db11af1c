"""Evaluation rows of instrument hygiene: spikes, quality gate, calibration (issue 15).

:func:`hygiene_rows` returns rows in the ``edge-eval instruments`` format (``{NAME: {"n", "top1", ...}}``)
for that command to merge into its JSON ``rows`` object:

- ``raw_test`` / ``raw_test_no_spike_removal``: the test split with and without spike removal;
- ``raw_test_spikes``: the test split with 1-3 spikes injected per spectrum (heights 0.5-5x the spectrum's
  maximum, widths 1-2 points, seeded), with spike removal (``top1``) and without (``top1_without_removal``);
- ``raw_test_quality``: share of the test split the quality gate rejects;
- ``charisma_not_raman`` (NeonLamp, LED, NIST_SRM), ``charisma_silicon``, ``charisma_polystyrene``,
  ``charisma_calcite``: ``flagged`` = quality not ok or novel (percent);
- ``calibration/<lab_instrument>/<setup>``: fitted on that setup's standards by the default rule of
  :func:`trainer.calibration_study.default_calibration` (polystyrene, neon, or neon + polystyrene with the
  laser fitted; degree 0-2; chosen by the RMS on held-out polystyrene lines, ``cv_rms_cm1``), applied to the
  same setup's silicon spectra: the silicon line (median over the spectra, Lorentzian fit) before and after
  vs the reference, the fit's residual RMS, the chosen ``standard``/``degree``; ``neon/<lab_instrument>/<setup>``
  rows report neon fits.

Every spectrum goes through the daemon's own per-batch path (:meth:`edge.daemon.Daemon._process`: its
calibration, :class:`~edge.preprocess.Preprocessor`, backend, novelty service and quality gate) with a
stand-in publisher that collects the messages, so the rows measure what the daemon publishes. Each row has a
daemon of its own: no drift state (offset compensation, statistics) carries from one row into the next.

Run alone: ``python -m trainer.eval_hygiene --bundle B --json PATH``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from edge.calibration import SILICON_CM1, fit_calibration
from edge.daemon import Daemon, DaemonConfig
from edge.data import data_dir, load_spectra
from edge.errors import CalibrationError
from edge.hygiene import InstrumentConfig
from edge.io import read_spectrum
from edge.preprocess import Preprocessor
from edge.wire import encode_spectrum

from .calibration_study import charisma_setups, default_calibration, read_standard, silicon_reading
from .eval_instruments import MessageCapture, serving

__all__ = ["hygiene_rows", "inject_spikes"]

NOT_RAMAN = ("NeonLamp", "LED", "NIST_SRM")


def _run(daemon: Daemon, spectra: Sequence[tuple[np.ndarray, np.ndarray | None]], batch: int = 32
         ) -> list[dict[str, Any]]:
    """Predictions (one dict per spectrum, in order; an ``error`` dict for a rejection) via the daemon path."""
    pub = MessageCapture()
    frames: list[bytes | list[bytes]] = [
        encode_spectrum(np.asarray(y, dtype=np.float32), None if x is None else np.asarray(x, np.float64), id=str(i))
        for i, (y, x) in enumerate(spectra)]
    for k in range(0, len(frames), batch):
        daemon._process(frames[k:k + batch], pub)
    daemon.join_drift(pub)  # the last micro-batch's drift bookkeeping runs on the daemon's drift thread
    by_id: dict[str, dict[str, Any]] = {}
    for topic, msg in pub.messages:
        if topic in ("prediction", "error") and msg.get("id") is not None:
            by_id[msg["id"]] = msg
    return [by_id.get(str(i), {"type": "error", "reason": "missing"}) for i in range(len(spectra))]


def _row(preds: list[dict[str, Any]], truth: Sequence[str] | np.ndarray | None = None) -> dict[str, Any]:
    ok = [p for p in preds if p.get("type") == "prediction"]
    n = len(preds)
    row: dict[str, Any] = {"n": n, "rejected": n - len(ok)}
    if not ok:
        return row
    not_ok = [not p["quality"]["ok"] for p in ok]
    novel = [bool(p.get("novel", False)) for p in ok]
    row.update(flagged=round(100.0 * sum(a or b for a, b in zip(not_ok, novel, strict=True)) / n, 2),
               novel=round(100.0 * sum(novel) / n, 2), quality_not_ok=round(100.0 * sum(not_ok) / n, 2),
               spikes_removed=int(sum(p["spikes_removed"] for p in ok)))
    reasons: dict[str, int] = defaultdict(int)
    for p in ok:
        for r in p["quality"]["reasons"]:
            reasons[r] += 1
    row["quality_reasons"] = dict(reasons)
    if truth is not None:
        hits = [p.get("type") == "prediction" and p["labels"][0] == t for p, t in zip(preds, truth, strict=True)]
        row["top1"] = round(100.0 * sum(hits) / n, 2)
    return row


def inject_spikes(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add 1-3 cosmic-ray spikes per spectrum: heights 0.5-5x the spectrum's maximum, widths 1-2 points.

    Parameters
    ----------
    x : numpy.ndarray, shape (B, N)
        Spectra (never modified).
    rng : numpy.random.Generator
        Seeded random source.

    Returns
    -------
    numpy.ndarray, shape (B, N)
        A spiked copy.
    """
    y = np.array(x, dtype=np.float64, copy=True)
    n = y.shape[1]
    for i in range(y.shape[0]):
        top = float(np.max(y[i]))
        for j in rng.choice(np.arange(3, n - 4), size=int(rng.integers(1, 4)), replace=False):
            w = int(rng.integers(1, 3))
            y[i, j:j + w] += rng.uniform(0.5, 5.0) * top
    return y


def _calibration_rows(charisma: Path, labels: list[dict[str, str]], silicon_cm1: float) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for r in labels:  # neon fits on their own: residual RMS (the laser wavelength is nominal: offset absorbed)
        if r["label"] != "NeonLamp":
            continue
        axis, intensity = read_spectrum(charisma / r["file"])
        name = f"neon/{r['lab_instrument']}/{r['setup'] or '-'}/{Path(r['file']).stem}"
        try:
            cal = fit_calibration([("neon", axis, intensity)], instrument_id=r["lab_instrument"],
                                  laser_nm=float(r["laser_nm"]))
            rows[name] = {"n": len(cal.lines), "rms_cm1": round(cal.rms_cm1, 3), "degree": cal.degree}
        except CalibrationError as exc:
            rows[name] = {"n": 0, "error": str(exc)}
    # per lab instrument + setup: the default rule (trainer.calibration_study.default_calibration) chooses the
    # standard(s) and degree by held-out polystyrene lines; the silicon spectra of the same setup are the check
    for setup in charisma_setups(charisma):
        name = f"calibration/{setup.name}"
        silicon = [read_standard(p, setup.laser_nm) for p in setup.silicon]
        try:
            cal, info = default_calibration(setup, silicon_cm1=silicon_cm1)
        except CalibrationError as exc:
            rows[name] = {"n": len(silicon), "standard": "polystyrene", "error": str(exc)}
            continue
        before = silicon_reading(silicon, silicon_cm1=silicon_cm1)
        after = silicon_reading(silicon, silicon_cm1=silicon_cm1, calibration=cal)
        row: dict[str, Any] = {
            "n": len(silicon), "silicon_fitted": after["fitted"], "standard": info["standard"],
            "standard_file": ", ".join(s["source"] for s in cal.standards), "lines": len(cal.lines),
            "degree": cal.degree, "rms_cm1": round(cal.rms_cm1, 3), "reference_cm1": silicon_cm1,
            "degree_rule": "held-out polystyrene lines (leave-one-line-out), never silicon",
            "cv_rms_cm1": info["cv_rms_cm1"], "standard_cv_within_0_5": bool(info["cv_rms_cm1"] <= 0.5),
            "silicon_spread_cm1": round(before["spread_cm1"] or 0.0, 2)}
        if "laser_nm_fitted" in info:
            row["laser_nm_fitted"] = info["laser_nm_fitted"]
        if before["median_cm1"] is not None and after["median_cm1"] is not None:
            b, a = before["median_cm1"], after["median_cm1"]
            row.update(silicon_before_cm1=round(b, 2), silicon_after_cm1=round(a, 2),
                       error_before_cm1=round(b - silicon_cm1, 2), error_after_cm1=round(a - silicon_cm1, 2),
                       within_0_5=bool(abs(a - silicon_cm1) <= 0.5))
        rows[name] = row
    return rows


def hygiene_rows(bundle_dir: str | Path, data_root: str | Path | None = None, seed: int = 0,
                 silicon_cm1: float = SILICON_CM1) -> dict[str, dict[str, Any]]:
    """Compute the instrument-hygiene evaluation rows (see the module docstring).

    Parameters
    ----------
    bundle_dir : str or pathlib.Path
        Model bundle (with a novelty section for the ``novel`` flags).
    data_root : str or pathlib.Path, optional
        Shared data folder (default: :func:`edge.data.data_dir`).
    seed : int
        Seed of the injected spikes.
    silicon_cm1 : float
        Silicon reference line, cm⁻¹.

    Returns
    -------
    dict of str to dict
        Rows by name, each with ``n`` and its measures (percentages for top1/flagged/novel/quality_not_ok).

    Raises
    ------
    DataError, BundleError
        When the data folder or the bundle cannot be used.
    """
    root = data_dir(data_root)

    def fresh() -> AbstractContextManager[Daemon]:
        """A new daemon for each row: no drift state (offset compensation, statistics) carries between rows."""
        return serving(Daemon(DaemonConfig(bundle=str(bundle_dir), input="", novelty=True), instrument=InstrumentConfig()))

    rows: dict[str, dict[str, Any]] = {}
    test = load_spectra(root / "rruff_soysal" / "raw_test.npz")
    tx = [(y, test.raman_shift_cm1) for y in test.intensities]
    spiked = [(y, test.raman_shift_cm1) for y in inject_spikes(test.intensities, np.random.default_rng(seed))]
    with fresh() as daemon:
        rows["raw_test"] = _row(_run(daemon, tx), test.labels)
        quality_thresholds = daemon.hygiene.quality_config.to_dict()
    with fresh() as daemon:
        rows["raw_test_spikes"] = _row(_run(daemon, spiked), test.labels)
    rows["raw_test_quality"] = {"n": rows["raw_test"]["n"], "not_ok": rows["raw_test"]["quality_not_ok"],
                                "quality_reasons": rows["raw_test"]["quality_reasons"],
                                "thresholds": quality_thresholds}
    for name, spectra in (("raw_test_no_spike_removal", tx), ("spikes_without_removal", spiked)):
        with fresh() as daemon:
            daemon.preprocessor = Preprocessor(dataclasses.replace(daemon.preprocessor.config, spikes=None))
            rows[name] = _row(_run(daemon, spectra), test.labels)
    rows["raw_test_spikes"]["top1_without_removal"] = rows.pop("spikes_without_removal")["top1"]
    rows["raw_test"]["top1_change_by_spike_removal"] = round(
        rows["raw_test"]["top1"] - rows["raw_test_no_spike_removal"]["top1"], 2)
    rows["raw_test_spikes"]["top1_minus_raw_test"] = round(
        rows["raw_test_spikes"]["top1"] - rows["raw_test"]["top1"], 2)

    charisma = root / "cross_instrument" / "charisma"
    with open(charisma / "labels.csv", newline="", encoding="utf-8") as fh:
        labels = list(csv.DictReader(fh))
    groups = {"charisma_not_raman": [r for r in labels if r["label"] in NOT_RAMAN],
              "charisma_silicon": [r for r in labels if r["label"] == "Silicon"],
              "charisma_polystyrene": [r for r in labels if r["label"] == "Polystyrene"],
              "charisma_calcite": [r for r in labels if r["label"] == "Calcite"]}
    for name, members in groups.items():
        preds: list[dict[str, Any]] = []
        with fresh() as daemon:
            base = daemon.hygiene.quality_config
            for r in members:  # the laser wavelength is the instrument's setting: one spectrum at a time
                daemon.hygiene.quality_config = dataclasses.replace(base, laser_nm=float(r["laser_nm"]))
                axis, intensity = read_spectrum(charisma / r["file"])
                preds += _run(daemon, [(intensity, axis)])
        rows[name] = _row(preds, [r["label"] for r in members] if name == "charisma_calcite" else None)
        if name == "charisma_not_raman":
            rows[name]["by_label"] = {
                lab: _row([p for p, r in zip(preds, members, strict=True) if r["label"] == lab])
                for lab in NOT_RAMAN}
    rows.update(_calibration_rows(root / "cross_instrument" / "charisma", labels, silicon_cm1))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trainer.eval_hygiene --bundle B --json PATH``: print and write the rows."""
    from edge.cli_common import add_data_args, run_cli

    def impl(args_: Sequence[str] | None) -> int:
        p = argparse.ArgumentParser(prog="python -m trainer.eval_hygiene", description=__doc__.split("\n\n")[0])
        p.add_argument("--bundle", required=True, help="model bundle folder")
        p.add_argument("--json", default=None, help="write {'rows': {...}} here")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--silicon-cm1", type=float, default=SILICON_CM1)
        add_data_args(p)
        a = p.parse_args(args_)
        rows = hygiene_rows(a.bundle, a.data_dir, a.seed, a.silicon_cm1)
        text = json.dumps({"rows": rows}, indent=2)
        if a.json:
            Path(a.json).write_text(text + "\n", encoding="utf-8")
        print(text)
        return 0

    return run_cli(impl, argv, "eval_hygiene")


if __name__ == "__main__":
    sys.exit(main())
