"""Other instruments' spectra, end to end with the shipped commands (issue #14): train, export INT8, evaluate.

For each seed: ``edge-train`` (with ``--novelty``: the daemon's drift compensation and novelty decision need the
bundle's reference spectra and library) on the 40 % split, ``edge-export --int8``, then
``edge-eval instruments`` (:mod:`trainer.eval_instruments`: every row through the daemon's own path, INT8,
daemon defaults unless the recipe says otherwise). Writes per-seed rows and their means.

    python -m bench.bench_instruments [--recipe default] [--seeds 3] [--dev] [--json PATH]

``--dev`` is the selection mode (the test set never chooses): each seed draws 255 of the 40 % split's 340
spectra (≥ 1 per class, :func:`bench.recipe_cv.draw`), trains on them, and the ``raw_test*`` rows are
built from the other 85 (named ``heldout40*``); the cross-instrument rows are the development set.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
TRAIN = "rruff_soysal/raw_train_labeled_40pct.npz"

COMP_TOP3 = {"drift": {"compensate_offset": True, "offset_top_k": 3}}
COMP_ALL = {"drift": {"compensate_offset": True, "offset_top_k": 0}}
COMP_ALL_FAST = {"drift": {"compensate_offset": True, "offset_top_k": 0, "offset_batch": 1, "offset_min_estimates": 3}}
COMP_TOP3_FAST = {"drift": {"compensate_offset": True, "offset_top_k": 3, "offset_batch": 1, "offset_min_estimates": 3}}
COMP_HYBRID_FAST = {"drift": {"compensate_offset": True, "offset_top_k": 3, "offset_fallback_all": True,
                              "offset_all_margin": 0.1, "offset_batch": 1, "offset_min_estimates": 3}}
COMP_HYBRID_MIN3 = {"drift": {"offset_min_estimates": 3, "offset_min_classes": 1}}  # the defaults before
COMP_HYBRID_CLASSES1 = {"drift": {"offset_min_classes": 1}}
COMP_HYBRID_MIN2 = {"drift": {"offset_min_estimates": 2}}
COMP_HYBRID_MIN8 = {"drift": {"offset_min_estimates": 8}}
COMP_HYBRID_MARGIN03 = {"drift": {"offset_all_margin": 0.3}}
NO_COMP = {"drift": {"compensate_offset": False}}

#: Recipes measured for issue #14: extra ``edge-train`` arguments and ``[daemon]`` settings over the defaults.
RECIPES: dict[str, dict[str, Any]] = {
    "default": {"train": [], "daemon": {}},
    "default_no_compensation": {"train": [], "daemon": NO_COMP},
}
for _t in (5, 10, 15, 40):
    RECIPES[f"t{_t}_no_compensation"] = {"train": ["--shift-tolerance-cm1", str(_t)], "daemon": NO_COMP}
    RECIPES[f"t{_t}_compensation_top3"] = {"train": ["--shift-tolerance-cm1", str(_t)], "daemon": COMP_TOP3}
    RECIPES[f"t{_t}_compensation_all"] = {"train": ["--shift-tolerance-cm1", str(_t)], "daemon": COMP_ALL}
    RECIPES[f"t{_t}_compensation_all_fast"] = {"train": ["--shift-tolerance-cm1", str(_t)], "daemon": COMP_ALL_FAST}


RANGE_AUG = {"preprocessing": {"min_coverage": 0.6}, "augmentation": {"range_probability": 0.3}}
for _t in (5, 10, 15, 40):
    _args = ["--shift-tolerance-cm1", str(_t)]
    RECIPES[f"t{_t}_range_no_compensation"] = {"train": _args, "config": RANGE_AUG, "daemon": NO_COMP}
    RECIPES[f"t{_t}_range_compensation_all"] = {"train": _args, "config": RANGE_AUG, "daemon": COMP_ALL}
    RECIPES[f"t{_t}_range_compensation_all_fast"] = {"train": _args, "config": RANGE_AUG, "daemon": COMP_ALL_FAST}
    RECIPES[f"t{_t}_range_compensation_top3"] = {"train": _args, "config": RANGE_AUG, "daemon": COMP_TOP3}
    RECIPES[f"t{_t}_range_compensation_top3_fast"] = {"train": _args, "config": RANGE_AUG, "daemon": COMP_TOP3_FAST}
    RECIPES[f"t{_t}_range_compensation_hybrid_fast"] = {"train": _args, "config": RANGE_AUG, "daemon": COMP_HYBRID_FAST}
    RECIPES[f"t{_t}_compensation_hybrid_fast"] = {"train": _args, "daemon": COMP_HYBRID_FAST}
    RECIPES[f"t{_t}_range_daemon_default"] = {"train": _args, "config": RANGE_AUG, "daemon": {}}
    for _name, _d in (("min3", COMP_HYBRID_MIN3), ("classes1", COMP_HYBRID_CLASSES1), ("min2", COMP_HYBRID_MIN2),
                      ("min8", COMP_HYBRID_MIN8),
                      ("margin03", COMP_HYBRID_MARGIN03)):
        RECIPES[f"t{_t}_range_daemon_default_{_name}"] = {"train": _args, "config": RANGE_AUG, "daemon": _d}


#: Band-ratio augmentation off (the default has 0.3): the synthetic map of issue #16 lost its hematite pixels
#: with it (94 % vs 99 % right away from grain boundaries, one brief seed); measured on the development rows.
RECIPES["default_no_band_ratio"] = {"train": [], "config": {"augmentation": {"band_ratio": 0.0}}, "daemon": {}}

#: Issue #17's flood clause: the development rows fed as a flooded daemon drains them (micro-batches of 64), with
#: the drift bookkeeping on every spectrum and on ``batch_max`` of each micro-batch (the default bundles, no retraining:
#: ``--bundle-dir``). ``default`` feeds one spectrum at a time, where ``batch_max`` changes nothing.
RECIPES["flood64"] = {"train": [], "daemon": {"max_batch": 64}}
for _m in (1, 4, 8, 16, 24, 32):
    RECIPES[f"flood64_batch_max{_m}"] = {"train": [], "daemon": {"max_batch": 64, "drift": {"batch_max": _m}}}


#: Issue #14, second session: the untried levers (docs/instruments.md, "Second session"). Measured over the then
#: default, which had no fluorescence background: NO_FLUO keeps them reproducible now that the default has 1.0.
#: Resolution: CHARISMA's calcite lines are 6-10 cm⁻¹ wide on the BWTek and Horiba-633 instruments, 14-26 in the
#: RRUFF training spectra; broadening them (FWHM 8-12) turned a network's rhodochrosite calls into calcite.
NO_FLUO = {"fluorescence": 0.0}
RECIPES["resolution_aug12"] = {"train": [], "config": {"augmentation": {**NO_FLUO, "resolution_fwhm_cm1": 12.0}},
                               "daemon": {}}
for _w in (6, 8, 12):
    RECIPES[f"resolution_floor{_w}"] = {"train": [], "config": {"preprocessing": {"resolution_fwhm_cm1": float(_w)},
                                                                "augmentation": NO_FLUO}, "daemon": {}}
RECIPES["band_ratio_015"] = {"train": [], "config": {"augmentation": {**NO_FLUO, "band_ratio": 0.15}}, "daemon": {}}
#: The default of the first #14 session (no fluorescence background; the default since the second session has 1.0).
RECIPES["default_no_fluorescence"] = {"train": [], "config": {"augmentation": NO_FLUO}, "daemon": {}}
#: Lever 4: an ensemble of 3 precise members of the ensemble config's size (8/16/32 channels, 16 pointwise:
#: ~27 k parameters each, ~81 k in all, under the spine's 100 k); the served logits are the members' mean.
ENSEMBLE3 = {"model": {"channels": [8, 16, 32], "pointwise_channels": 16, "members": 3}, "augmentation": NO_FLUO}
RECIPES["ensemble3"] = {"train": [], "config": ENSEMBLE3, "daemon": {}}
#: Lever 2: a positive fluorescence-like background (tanh step + cosine, up to this fraction of the spectrum's
#: maximum) on top of the signed baseline (0.4). 1.0 is the default since the second session.
for _f in (0.5, 1.0):
    RECIPES[f"fluorescence_{int(_f * 10):02d}"] = {"train": [], "config": {"augmentation": {"fluorescence": _f}},
                                                  "daemon": {}}

#: The default before issue #14 (T = 40, no range augmentation, no coverage minimum; compensation was off),
#: with the new edge-level extension (it is the one resample now).
OLD_DEFAULT = {"preprocessing": {"min_coverage": 0.0}, "augmentation": {"range_probability": 0.0, "fluorescence": 0.0}}
RECIPES["old_default"] = {"train": ["--shift-tolerance-cm1", "40", "--novelty-quantile", "0.95"], "config": OLD_DEFAULT,
                          "daemon": {"drift": {"compensate_offset": False}}}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def _recipe_config(overrides: dict[str, dict[str, Any]] | None, work: pathlib.Path) -> list[str]:
    """``--config FILE`` for a recipe that overrides settings of the default model config (none: [])."""
    if not overrides:
        return []
    from edge.cli_common import load_toml
    from trainer.cli import DEFAULT_CONFIG

    d = load_toml(DEFAULT_CONFIG)
    for section, values in overrides.items():
        d.setdefault(section, {}).update(values)
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for section, values in d.items():
        if isinstance(values, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    path = work / "model.toml"
    path.write_text("\n".join(lines) + "\n")
    return ["--config", str(path)]


def _train_key(spec: dict[str, Any]) -> str:
    """Folder name of a training recipe: its arguments and a hash of the model config it reads."""
    import hashlib

    from trainer.cli import DEFAULT_CONFIG

    text = pathlib.Path(DEFAULT_CONFIG).read_bytes() + json.dumps([spec["train"], spec.get("config")]).encode()
    name = "_".join(a.lstrip("-") for a in spec["train"]) or "config"
    return name + ("_cfg" if spec.get("config") else "") + "_" + hashlib.sha256(text).hexdigest()[:10]


def _run(cmd: list[str], log: pathlib.Path) -> float:
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        r = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=os.environ.copy())
    if r.returncode:
        raise SystemExit(f"error: {' '.join(cmd)} failed (exit {r.returncode}); see {log}")
    return time.perf_counter() - t0


def _dev_split(seed: int, work: pathlib.Path, data_root: str | None) -> tuple[pathlib.Path, pathlib.Path]:
    """Write a 255-spectrum draw of the 40 % split and its 85-spectrum remainder as ``.npz`` files."""
    from bench.recipe_cv import draw
    from edge.data import load_spectra

    full = load_spectra(TRAIN, data_root=data_root)
    tr, rest = draw(full.labels, 255, seed)
    paths = work / f"dev_train_{seed}.npz", work / f"dev_heldout_{seed}.npz"
    for path, idx in zip(paths, (tr, rest), strict=True):
        np.savez(path, X=full.intensities[idx], y=full.labels[idx], raman_shift_cm1=full.raman_shift_cm1)
    return paths


def synthetic_map_row(bundle: pathlib.Path, data_root: str | None) -> dict[str, Any]:
    """Issue #16's map clause: % of the synthetic basalt map's inner pixels named right (tests/synthetic_map.py).

    The map of ``test_synthetic_map_phase_map_is_right_away_from_boundaries`` (20 × 24 pixels of Forsterite,
    Diopside, Albite and Hematite training spectra, seed 0), classified by :func:`edge.predict.predict` without
    novelty, as the test does. The row's ``errors`` counts the wrong names given to inner pixels.
    """
    import importlib.util
    from collections import Counter

    from edge.data import resolve_data_path
    from edge.predict import predict

    spec = importlib.util.spec_from_file_location(
        "synthetic_map", pathlib.Path(__file__).resolve().parents[1] / "tests" / "synthetic_map.py")
    assert spec is not None and spec.loader is not None  # the repository's own file
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    m = mod.build_map(resolve_data_path(TRAIN, data_root), ["Forsterite", "Diopside", "Albite", "Hematite"],
                      shape=(20, 24), seed=0)
    rows, cols = m["truth"].shape
    path = mod.write_map(pathlib.Path(bundle) / "synthetic_basalt_map.npz", m)
    got = np.array([r.get("predicted") for r in predict([path], bundle, novelty=False).rows],
                   dtype=object).reshape(rows, cols)
    inner = ~m["boundary"]
    wrong = Counter(f"{t}->{g}" for t, g in zip(m["truth"][inner], got[inner], strict=True) if t != g)
    return {"n": int(inner.sum()), "top1": 100.0 * float((got == m["truth"])[inner].mean()), "flagged": None,
            "rejected": 0, "errors": dict(wrong)}


def run(recipe: str = "default", seeds: int = 3, dev: bool = False, json_path: str | None = None,
        work: str | None = None, data_root: str | None = None, retrain: bool = False,
        bundle_dir: str | None = None, cross_only: bool = False) -> dict[str, Any]:
    """Train, export and evaluate ``recipe`` for ``seeds`` seeds; write and return the JSON result.

    ``cross_only``: networks trained on the whole 40 % split (the test mode's bundles) scored on the
    development rows only (RRUFF 2026, CHARISMA, the synthetic map; no ``raw_test`` row is built): selection on
    the cross-instrument set with the shipped training data. JSON ``instruments_cross_R.json``.

    ``bundle_dir``: evaluate the bundles ``seed0``, ``seed1``, ... already in that folder (trained by an earlier
    run of a recipe with the same training settings) instead of the recipe's own folder.
    """
    from edge.bundle import Bundle
    from trainer.eval_instruments import ROW_NAMES, evaluate_instruments

    spec = RECIPES[recipe]
    mode = "dev" if dev else "test"
    # Bundles are shared by the recipes that train alike (they differ in daemon settings only).
    work_dir = (pathlib.Path(bundle_dir) if bundle_dir else
                pathlib.Path(work or "/tmp/raman-edge-bench-instruments") / mode / _train_key(spec))
    work_dir.mkdir(parents=True, exist_ok=True)
    config = [] if bundle_dir else _recipe_config(spec.get("config"), work_dir)
    log = work_dir / "commands.log"
    per_seed = []
    for seed in range(seeds):
        bundle = work_dir / f"seed{seed}"
        train, test = TRAIN, "rruff_soysal/raw_test.npz"
        if dev:
            train_p, test_p = _dev_split(seed, work_dir, data_root)
            train, test = str(train_p), str(test_p)
        data = ["--data-dir", data_root] if data_root else []
        t_train = t_export = None
        if retrain or not (bundle / "model.int8.onnx").exists():
            t_train = _run([sys.executable, "-m", "trainer", "--train", train, "--test", test, "--out", str(bundle),
                            "--novelty", "--seed", str(seed), "--no-progress", *config, *spec["train"], *data], log)
            # In --dev mode the gate's validation set is the 85 held-out spectra (1 spectrum = 1.2 points): it
            # allows 2.5 points there; the test mode keeps the shipped 1-point gate on the 150 test spectra.
            gate = ["--max-accuracy-drop", "2.5"] if dev else []
            t_export = _run([sys.executable, "-m", "export", str(bundle), "--int8", *gate, *data], log)
        b = Bundle.load(bundle)
        names = [n for n in ROW_NAMES if not n.startswith("raw_test")] if cross_only else ROW_NAMES
        result = evaluate_instruments(bundle, data_root, seed, names=names, daemon_settings=spec["daemon"],
                                      test_path=test if dev else None)
        if dev:
            result["rows"] = {k.replace("raw_test", "heldout40"): v for k, v in result["rows"].items()}
        result["rows"]["synthetic_map_inner"] = synthetic_map_row(bundle, data_root)
        result.update({"train_seconds": b.metrics.get("train_seconds"), "train_wall_s": t_train,
                       "export_wall_s": t_export, "export": b.manifest.get("metrics", {}).get("export"),
                       "n_parameters": b.manifest["model"]["n_parameters"]})
        per_seed.append(result)
        print(f"{recipe} seed {seed}: " + ", ".join(f"{k} {v['top1'] if v['top1'] is not None else v['flagged']:.1f}"
                                                    for k, v in result["rows"].items()), flush=True)
    names = list(per_seed[0]["rows"])
    mean = {}
    for k in names:
        vals = [s["rows"][k] for s in per_seed]
        top1 = [v["top1"] for v in vals if v["top1"] is not None]
        flagged = [v["flagged"] for v in vals if v["flagged"] is not None]
        mean[k] = {"n": vals[0]["n"], "top1": float(np.mean(top1)) if top1 else None,
                   "top1_std": float(np.std(top1)) if top1 else None,
                   "flagged": float(np.mean(flagged)) if flagged else None,
                   "rejected": float(np.mean([v["rejected"] for v in vals]))}
    out = {"recipe": recipe, "mode": mode, "spec": spec, "seeds": seeds, "rows": mean, "per_seed": per_seed,
           "load_average": os.getloadavg(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out["mode"] = "cross" if cross_only else mode
    path = pathlib.Path(json_path) if json_path else RESULTS / f"instruments_{out['mode']}_{recipe}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=float) + "\n")
    for k, v in mean.items():
        t = "-" if v["top1"] is None else f"{v['top1']:.1f} ± {v['top1_std']:.1f}"
        f = "-" if v["flagged"] is None else f"{v['flagged']:.1f}"
        print(f"{k:28s} top-1 {t:>12s} %  flagged {f:>5s} %")
    print(f"wrote {path}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m bench.bench_instruments --help``."""
    p = argparse.ArgumentParser(prog="bench_instruments", description=__doc__.splitlines()[0])
    p.add_argument("--recipe", choices=sorted(RECIPES), default="default")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--dev", action="store_true", help="selection mode: held-out part of the 40 %% split, no raw_test")
    p.add_argument("--cross-only", action="store_true",
                   help="train on the 40 %% split, score only the cross-instrument rows and the map (selection)")
    p.add_argument("--json", default=None)
    p.add_argument("--work", default=None, help="folder for the bundles (default under /tmp)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--retrain", action="store_true", help="train again even if the bundle exists")
    p.add_argument("--bundle-dir", default=None, help="evaluate the seed bundles already in this folder")
    a = p.parse_args(argv)
    if a.cross_only and a.dev:
        p.error("--cross-only trains on the whole 40 %% split: not with --dev")
    run(a.recipe, a.seeds, a.dev, a.json, a.work, a.data_dir, a.retrain, a.bundle_dir, a.cross_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
