"""The accuracy benchmark's driver and command line."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.data import load_spectra
from edge.preprocess import RamanGrid, resample
from edge.shift import shift_spectra

from .base import Method, _Data
from .cells import _cell_key, _CellCache, _json_default, _metrics, _summarise, _targets, _versus_peers, _write_atomic
from .classical import _PeakFeatureCache
from .constants import (
    COLUMNS,
    CURVE_SHIFTS_CM1,
    INT8_CHECKS,
    OUR_ROWS,
    PAPER_TOP1,
    RESULTS,
    SPLITS,
    TEAM_EARLIER_TOP1,
    TEST_FILE,
    TRAIN_FILE,
)
from .methods import build_methods
from .report import _plots, markdown


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _machine() -> dict[str, Any]:
    import scipy
    import sklearn
    import torch

    cpu = platform.processor()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": 1,
            "numpy": np.__version__, "scipy": scipy.__version__, "scikit_learn": sklearn.__version__,
            "aeon": None, "onnxruntime": None}
    for mod in ("aeon", "onnxruntime"):
        if importlib.util.find_spec(mod) is not None:
            info[mod] = __import__(mod).__version__
    info["summary"] = f"{cpu}, {os.cpu_count()} CPU cores (shared), 1 thread per job"
    return info


def run(quick: bool = False, seeds: int = 3, splits: Sequence[int] = SPLITS, out_dir: str | os.PathLike = RESULTS, *,
        json_path: str | os.PathLike | None = None, methods: Sequence[str] | None = None,
        data_dir: str | None = None, config: str | os.PathLike | None = None, resume: bool = True,
        int8: bool = True, pooling: bool = True) -> dict[str, Any]:
    """Train and score every method on every split and seed; write JSON, markdown and plots.

    Parameters
    ----------
    quick : bool
        A fast check: one seed, the 10 % and 40 % splits, paper CNNs with small dense layers (256 units;
        64 at n = 1) and 15 epochs, MiniRocket with 2 000 kernels; our model unchanged. Files get the stem
        ``accuracy_quick``.
    seeds : int
        Seeds 0 … seeds−1 for the seeded methods.
    splits : sequence of int
        Training splits, % (10, 20, 30, 40).
    out_dir : path-like
        Folder for ``accuracy.json``/``.md``, the PNGs and the cell cache ``accuracy_cells.json``.
    json_path : path-like, optional
        JSON file (default ``out_dir/<stem>.json``).
    methods : sequence of str, optional
        Method keys to run (default all; see :func:`build_methods`).
    data_dir : str, optional
        Data folder (default: ``RAMAN_EDGE_DATA`` or ``../shared/data``).
    config : path-like, optional
        Our model's config (default ``configs/model_compact.toml``).
    resume : bool
        Reuse finished cells from the cache (same settings fingerprint).
    int8 : bool
        Export our 40 %-split model to INT8 and score it.
    pooling : bool
        Train the pooling-study variants (m = 64; n = 1 and 10).

    Returns
    -------
    dict
        Settings, per-cell results, summary (mean ± std per method, split, shift and metric), targets,
        INT8 figures, pooling-study curves, timings, machine.
    """
    from threadpoolctl import threadpool_limits

    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    with threadpool_limits(1):
        return _run(quick, seeds, splits, pathlib.Path(out_dir), json_path, methods, data_dir, config, resume,
                    int8, pooling)


def _run(quick: bool, n_seeds: int, splits: Sequence[int], out_dir: pathlib.Path,
         json_path: str | os.PathLike[str] | None, only: Sequence[str] | None, data_dir: str | None,
         config: str | os.PathLike[str] | None, resume: bool, int8: bool, pooling: bool) -> dict[str, Any]:
    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_start = os.getloadavg()
    if quick:
        n_seeds = 1
        splits = tuple(s for s in splits if s in (10, 40)) or tuple(splits)[-1:]
    splits = tuple(int(s) for s in splits)
    seeds = list(range(max(1, int(n_seeds))))
    stem = "accuracy_quick" if quick else "accuracy"
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = pathlib.Path(json_path) if json_path else out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    all_methods = build_methods(quick, config)
    methods = [m for m in all_methods if (only is None or m.key in only) and (m.table or pooling)]
    shifts = tuple(float(s) for s in CURVE_SHIFTS_CM1)
    cache = _CellCache(out_dir / "accuracy_cells.json")
    grid = RamanGrid()
    test_set = load_spectra(TEST_FILE, grid, data_dir)
    x_test = resample(test_set.intensities, test_set.raman_shift_cm1, grid)
    tests = {sh: (x_test if sh == 0 else shift_spectra(x_test, sh, grid.step_cm1)) for sh in shifts}
    peaks = _PeakFeatureCache(grid.axis)
    trains = {sp: load_spectra(TRAIN_FILE.format(sp), grid, data_dir) for sp in splits}
    do_int8 = int8 and 40 in splits and any(m.key in INT8_CHECKS for m in methods)

    # Plan: deterministic peers; then per seed: each seeded table method over all splits; the pooling
    # variants right after the first seed (so a partial run already has the plots).
    plan: list[tuple[Method, int, int]] = []
    for m in methods:
        if m.table and not m.seeded:
            plan += [(m, sp, seeds[0]) for sp in splits]
    for i, sd in enumerate(seeds):
        for m in methods:
            if m.table and m.seeded:
                plan += [(m, sp, sd) for sp in splits]
        if i == 0 and 40 in splits:
            plan += [(m, 40, sd) for m in methods if not m.table]
    _log(f"accuracy benchmark{' (quick)' if quick else ''}: {len(plan)} cells, seeds {seeds}, splits {splits}; "
         f"cache {cache.path}")

    result: dict[str, Any] = {}
    reused = 0

    def write(complete: bool) -> dict[str, Any]:
        nonlocal result
        cells = {k: v for k, v in cache.cells.items()}
        summary = _summarise(methods, cells, splits, seeds, shifts)
        int8_res = None
        c0 = cells.get(_cell_key(next((m for m in methods if m.key == "compact"), all_methods[0]), 40, seeds[0], shifts))
        if c0 and c0.get("int8"):
            int8_res = c0["int8"]
        int8_by_method = {}
        for m in methods:
            c = cells.get(_cell_key(m, 40, seeds[0], shifts)) if m.key in INT8_CHECKS else None
            if c and c.get("int8"):
                int8_by_method[m.key] = c["int8"]
        pool_keys = ["paper_m2", "paper_m16", "paper_m64", "paper_m2_n1", "paper_m2_n10", "compact"]
        by_key = {m.key: m for m in methods}
        curves, labels, params = {}, {}, {}
        for k in pool_keys:
            if k in by_key:
                c = cells.get(_cell_key(by_key[k], 40, seeds[0], shifts))
                if c and not c.get("status"):
                    curves[k] = [{"shift_cm1": sh, "top1": c["shifts"][f"{sh:g}"]["top1"] / 100.0} for sh in shifts]
                    labels[k] = by_key[k].label
                    n = c.get("n_parameters")
                    params[k] = (f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.0f} k") if n else None
        timings: dict[str, float] = {}
        planned_keys = {_cell_key(m, sp, sd, shifts) for m, sp, sd in plan}
        run_cells = {}
        for m, sp, sd in plan:
            c = cells.get(_cell_key(m, sp, sd, shifts))
            if c is not None:
                run_cells[f"{m.key}|{sp}|{sd}"] = c
                timings[m.key] = timings.get(m.key, 0.0) + c.get("cell_seconds", 0.0)
        result = {
            "benchmark": "accuracy (issue #5): ours vs paper CNN and classical peers",
            "quick": quick, "complete": complete, "started": started,
            "cells_planned": len(planned_keys), "cells_done": sum(k in cells for k in planned_keys),
            "wall_seconds": round(time.perf_counter() - t_start, 1),
            "cells_reused_from_cache": reused,
            "cell_seconds_total": round(sum(c.get("cell_seconds", 0.0) for c in run_cells.values()), 1),
            "train_files": {str(sp): trains[sp].source for sp in splits}, "test_file": test_set.source,
            "n_test": len(test_set), "n_classes": len(test_set.classes),
            "splits": list(splits), "seeds": seeds, "table_columns": [list(c) for c in COLUMNS],
            "curve_shifts_cm1": list(shifts),
            "shift_function": "edge.shift.shift_spectra (right shift, left edge padded with each row's first value)",
            "methods": [{"key": m.key, "label": m.label, "seeded": m.seeded, "table": m.table,
                         "settings": m.settings} for m in methods],
            "summary": summary, "targets": _targets(summary, len(seeds)),
            "targets_by_row": {r: _targets(summary, len(seeds), r) for r in OUR_ROWS},
            "versus_peers": _versus_peers(summary),
            "int8": int8_res, "int8_by_method": int8_by_method,
            "int8_target": "INT8 top-1 within 1 point of FP32 (40 % split)",
            "pooling_study": {"split": 40, "seed": seeds[0], "curves": curves, "labels": labels, "params": params},
            "team_earlier_top1": {k: list(v) for k, v in TEAM_EARLIER_TOP1.items()}, "paper_top1": PAPER_TOP1,
            "timings": {k: round(v, 1) for k, v in timings.items()},
            "cells": run_cells,
            "machine": {**_machine(), "loadavg_start": load_start, "loadavg_now": os.getloadavg()},
            "json_path": str(json_path), "markdown_path": str(md_path),
            "command": "python bench/bench_accuracy.py" + (" --quick" if quick else "") + f" --json {json_path}",
        }
        try:
            result["plots"] = _plots(result, out_dir, stem)
        except Exception as exc:  # a plotting failure must not lose the numbers
            result["plots"] = []
            result["plot_error"] = repr(exc)
        _write_atomic(json_path, json.dumps(result, indent=2, default=_json_default) + "\n")
        _write_atomic(md_path, markdown(result))
        return result

    for m, sp, sd in plan:
        key = _cell_key(m, sp, sd, shifts)
        want_int8 = do_int8 and m.key in INT8_CHECKS and sp == 40 and sd == seeds[0]
        cached = cache.cells.get(key)
        if resume and cached is not None and (not want_int8 or cached.get("int8")):
            reused += 1
            continue
        d = _Data(trains[sp], resample(trains[sp].intensities, trains[sp].raman_shift_cm1, grid),
                  trains[sp].classes, _encode(trains[sp].labels, trains[sp].classes), tests,
                  _encode(test_set.labels, trains[sp].classes), grid, peaks, trains[sp].source, test_set.source)
        t0 = time.perf_counter()
        try:
            out = m.fn(m, d, sd, int8=want_int8, data_dir=data_dir)
        except Exception as exc:  # one failing peer must not sink the benchmark
            _log(f"{m.key} {sp}% seed {sd}: FAILED: {exc!r}")
            out = {"status": f"failed: {type(exc).__name__}: {exc}"[:300]}
        cell: dict[str, Any] = {k: v for k, v in out.items() if k != "scores"}
        cell.update(method=m.key, split=sp, seed=sd, n_train=len(d.train),
                    cell_seconds=round(time.perf_counter() - t0, 2))
        if "scores" in out:
            cell["shifts"] = {f"{sh:g}": _metrics(out["scores"][sh], d.y_test, d.classes) for sh in shifts}
            s = cell["shifts"]
            _log(f"{m.key} {sp}% seed {sd}: top-1 0/15/30 cm-1 = {s['0']['top1']:.1f}/{s['15']['top1']:.1f}/"
                 f"{s['30']['top1']:.1f} %, cell {cell['cell_seconds']:.0f} s"
                 + (f", INT8 {out['int8'].get('int8_top1') or float('nan'):.1f} vs FP32 "
                    f"{out['int8']['fp32_torch_top1']:.1f} %" if out.get("int8") else ""))
        else:
            _log(f"{m.key} {sp}% seed {sd}: {cell.get('status')}")
        if cell.get("status") == "not installed":
            cache.cells[key] = cell  # not persisted: installing aeon later makes the row run
        else:
            cache.put(key, cell)
        write(False)
    return write(True)


def _encode(labels: np.ndarray, classes: list[str]) -> np.ndarray:
    from trainer.train import encode_labels

    return encode_labels(labels, classes)


METHODS = ["default", "compact", "compact_calibrated", "compact_compensated", "ensemble_compensated", "ensemble",
           "ensemble_calibrated", "paper_m2", "paper_m16", "knn_peaks", "svm_peaks", "lr_snv_deriv", "minirocket",
           "paper_m64", "paper_m2_n1", "paper_m2_n10"]


def main(argv: Sequence[str] | None = None) -> int:
    """``edge-bench accuracy``'s own command line (``python -m bench.bench_accuracy``): run, print the markdown.

    Returns
    -------
    int
        Exit status 0.
    """
    from . import __doc__ as about

    p = argparse.ArgumentParser(description=(about or "").split("\n\n")[0])
    p.add_argument("--json", default=None, help="JSON file (default: OUT/accuracy.json, or accuracy_quick.json)")
    p.add_argument("--out", default=str(RESULTS), help="folder for markdown, plots and the cell cache")
    p.add_argument("--quick", action="store_true", help="1 seed, 10 %% and 40 %% splits, small paper CNNs")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--splits", type=int, nargs="+", default=list(SPLITS))
    p.add_argument("--methods", nargs="+", default=None, choices=METHODS)
    p.add_argument("--no-resume", action="store_true", help="retrain every cell (the cache is rewritten)")
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--no-pooling", action="store_true", help="skip the m=64, n=1, n=10 pooling variants")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--config", default=None, help="our model's config (default configs/model_compact.toml)")
    a = p.parse_args(argv)
    r = run(a.quick, a.seeds, a.splits, a.out, json_path=a.json, methods=a.methods, data_dir=a.data_dir,
            config=a.config, resume=not a.no_resume, int8=not a.no_int8, pooling=not a.no_pooling)
    print(pathlib.Path(r["markdown_path"]).read_text(encoding="utf-8"))
    return 0
