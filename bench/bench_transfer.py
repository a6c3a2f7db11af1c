"""Head-only transfer benchmark, the protocol of the paper's Table 11 (§8).

For each number of new classes c (default 5, 10, 15, 20) and each random draw (default 3): c of the 63
minerals are set aside as "new"; a backbone is trained from scratch on the other 63 − c with the project's
default recipe (``configs/model_compact.toml``) on the 40 % labelled split; then only the head is trained
(:mod:`trainer.transfer`) and scored on ``raw_test``:

* ``new-only`` (paper protocol): a head over the c new classes alone; top-1 on the new-class test spectra.
* ``extend`` (rover use): old + new classes in one head (old rows from the base head, replay of the old
  training spectra); top-1 on new-class and on old-class test spectra, next to the base model's old-class
  top-1 before extension.

The test set is only scored, never used to choose anything. Run::

    python bench/bench_transfer.py --json bench/results/transfer.json [--c 5 10 15 20] [--draws 3]

or call :func:`run`. Paper (Table 11, new-class top-1): 89 / 78 / 63 / 43 % for c = 5 / 10 / 15 / 20.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np

PAPER_NEW_TOP1 = {5: 0.89, 10: 0.78, 15: 0.63, 20: 0.43}
TARGET_NEW_TOP1 = {5: 0.90, 10: 0.88, 15: 0.85, 20: 0.80}
DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "model_compact.toml"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _stats(values: list[float | None]) -> dict[str, Any]:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "values": []}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "values": [float(x) for x in v]}


def run(c_values: Sequence[int] = (5, 10, 15, 20), draws: int = 3, seed: int = 0, *,
        train: str = "rruff_soysal/raw_train_labeled_40pct.npz", test: str = "rruff_soysal/raw_test.npz",
        config: str | None = None, max_epochs: int | None = None, views: int | None = None,
        head_dtype: str = "int8", solver: str = "logistic", data_dir: str | None = None, json_path: str | None = None,
        cache_dir: str | None = None, verbose: bool = True, quick: bool = False) -> dict[str, Any]:
    """Run the Table-11 protocol.

    Parameters
    ----------
    c_values : sequence of int
        Numbers of new classes.
    draws : int
        Random draws of the new classes per c (each trains its own backbone).
    seed : int
        Seed of the draws (the draw of (c, d) uses ``default_rng([seed, c, d])``); backbone and head seeds
        follow the draw index.
    train, test : str
        Splits (paths relative to the data folder work).
    config : str, optional
        Model config TOML (default ``configs/model_compact.toml``).
    max_epochs : int, optional
        Backbone epochs instead of the config's epochs or steps (quick runs; default: the config's).
    views : int, optional
        Augmented views per spectrum for the head (default: :class:`trainer.transfer.TransferConfig`'s).
    head_dtype : str
        Storage of the head weights (the scores use the stored, dequantised weights).
    solver : {"logistic", "lda"}
        Head solver (:class:`trainer.transfer.TransferConfig`).
    json_path : str, optional
        Write the result here as JSON.
    cache_dir : str, optional
        Keep each trained backbone as a bundle here and reuse it on the next run with the same draw, seed,
        data and settings (the backbones are ~95 % of the run time; the heads are always retrained).
    quick : bool
        Smoke run: c = 5 only, one draw, backbones capped at 20 epochs (figures not comparable).

    Returns
    -------
    dict
        ``runs`` (one entry per (c, draw)), ``summary`` by c (mean, std, min, max over draws, and the
        top-1 pooled over all draws' test spectra), the settings and timings.
    """
    views_kw: dict[str, Any] = {} if views is None else {"views": views}
    import torch

    from edge.bundle import Bundle
    from edge.data import load_spectra
    from edge.preprocess import Preprocessor
    from trainer.bundle_io import backbone_sha256, load_model, save_model
    from trainer.settings import TrainerSettings
    from trainer.train import TrainResult, fit
    from trainer.transfer import TransferConfig, embed, evaluate_head, transfer

    t_start = time.perf_counter()
    if quick:
        c_values, draws, max_epochs = (5,), 1, min(max_epochs or 20, 20)
    settings = TrainerSettings.from_toml(config or DEFAULT_CONFIG)
    settings.training.threads = 1
    if max_epochs is not None:
        settings.training.max_epochs = max_epochs
        settings.training.min_epochs = min(settings.training.min_epochs, max_epochs)
        settings.training.steps = 0  # a one-cycle schedule then runs max_epochs epochs
    torch.set_num_threads(1)
    grid = settings.preprocessing.grid
    tr = load_spectra(train, grid, data_dir)
    te = load_spectra(test, grid, data_dir)
    classes = tr.classes
    pre = Preprocessor(settings.preprocessing)
    x_test = pre(te.intensities, te.raman_shift_cm1)
    runs: list[dict[str, Any]] = []
    key = hashlib.sha256(json.dumps([settings.to_dict(), tr.source, seed], sort_keys=True).encode()).hexdigest()[:10]
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        root = pathlib.Path(cache_dir) if cache_dir else pathlib.Path(tmp)
        for c in c_values:
            for d in range(draws):
                rng = np.random.default_rng([seed, c, d])
                new = sorted(rng.choice(classes, size=c, replace=False).tolist())
                old = [k for k in classes if k not in set(new)]
                is_new_tr = np.isin(tr.labels, new)
                is_new_te = np.isin(te.labels, new)
                settings.training.seed = d
                t0 = time.perf_counter()
                where = root / f"c{c}_d{d}_{key}"
                if cache_dir and (where / "manifest.json").is_file():
                    base = Bundle.load(where)
                    res = TrainResult(load_model(base), base.labels)
                    res.history = [{}] * int(base.manifest["training"]["epochs"])
                    t_backbone = float(base.manifest["training"]["seconds"])
                else:
                    res = fit(tr.subset(~is_new_tr), settings.preprocessing, settings.model, settings.training,
                              settings.augmentation, classes=old, progress=False)
                    t_backbone = time.perf_counter() - t0
                    base = save_model(where, res.model, old, settings, {"train_source": tr.source, "epochs": res.epochs,
                                                                        "seconds": t_backbone}, name="bench-base")
                if base.labels != old:
                    raise RuntimeError(f"cached backbone {where} does not hold the drawn old classes")
                sha_before = backbone_sha256(res.model)
                emb_test = embed(res.model, x_test)
                with torch.no_grad():
                    base_pred = np.asarray(old)[res.model.classifier(torch.from_numpy(emb_test[~is_new_te])).argmax(1).numpy()]
                base_old_top1 = float(np.mean(base_pred == te.labels[~is_new_te]))
                entry: dict[str, Any] = {
                    "c": c, "draw": d, "new_classes": new, "n_train_new": int(is_new_tr.sum()),
                    "n_train_old": int((~is_new_tr).sum()), "n_test_new": int(is_new_te.sum()),
                    "n_test_old": int((~is_new_te).sum()), "backbone_epochs": res.epochs,
                    "backbone_seconds": round(t_backbone, 1), "base_old_top1": base_old_top1,
                }
                for mode in ("new-only", "extend"):
                    cfg = TransferConfig(mode=mode, seed=d, head_dtype=head_dtype, solver=solver, **views_kw)
                    t1 = time.perf_counter()
                    r = transfer(base, tr.subset(is_new_tr), cfg, model=res.model,
                                 replay=tr.subset(~is_new_tr) if mode == "extend" else None)
                    t_head = time.perf_counter() - t1
                    if backbone_sha256(r.model) != sha_before or backbone_sha256(res.model) != sha_before:
                        raise RuntimeError("head-only transfer changed the backbone")  # invariant, never expected
                    mask = is_new_te if mode == "new-only" else np.ones(len(te), bool)
                    m = evaluate_head(r.head, emb_test[mask], te.labels[mask], new)
                    entry[mode] = {"top1_new": m["top1_new"], "top1_old": m["top1_old"], "n_new": m["n_new"],
                                   "n_old": m["n_old"], "n_classes": r.head.n_classes,
                                   "head_bytes": len(r.head.to_bytes()), "seconds": round(t_head, 2),
                                   "seconds_embedding": r.info["seconds_embedding"],
                                   "seconds_fit": r.info["seconds_fit"]}
                runs.append(entry)
                if verbose:
                    _log(f"c={c} draw={d}: backbone {res.epochs} ep {t_backbone:.0f} s, base old {100 * base_old_top1:.1f} %; "
                         f"new-only new {100 * entry['new-only']['top1_new']:.1f} % (n={entry['n_test_new']}); "
                         f"extend new {100 * entry['extend']['top1_new']:.1f} % old {100 * entry['extend']['top1_old']:.1f} %")
    summary: dict[str, Any] = {}
    for c in c_values:
        rs = [r for r in runs if r["c"] == c]

        def pooled(mode: str, part: str, rs: list[dict[str, Any]] = rs) -> float | None:
            n = sum(r[mode][f"n_{part}"] for r in rs)
            hits = sum(r[mode][f"top1_{part}"] * r[mode][f"n_{part}"] for r in rs if r[mode][f"top1_{part}"] is not None)
            return hits / n if n else None

        n_old = sum(r["n_test_old"] for r in rs)
        summary[str(c)] = {
            "draws": len(rs),
            "new_only_top1_new": _stats([r["new-only"]["top1_new"] for r in rs]),
            "new_only_top1_new_pooled": pooled("new-only", "new"),
            "extend_top1_new": _stats([r["extend"]["top1_new"] for r in rs]),
            "extend_top1_new_pooled": pooled("extend", "new"),
            "extend_top1_old": _stats([r["extend"]["top1_old"] for r in rs]),
            "extend_top1_old_pooled": pooled("extend", "old"),
            "base_top1_old": _stats([r["base_old_top1"] for r in rs]),
            "base_top1_old_pooled": sum(r["base_old_top1"] * r["n_test_old"] for r in rs) / n_old if n_old else None,
            "head_bytes_extend": int(np.mean([r["extend"]["head_bytes"] for r in rs])),
            "head_bytes_new_only": int(np.mean([r["new-only"]["head_bytes"] for r in rs])),
            "paper_new_top1": PAPER_NEW_TOP1.get(c), "target_new_top1": TARGET_NEW_TOP1.get(c),
        }
    result = {
        "benchmark": "head-only transfer (paper Table 11 protocol)", "quick": quick,
        "train": tr.source, "test": te.source, "c_values": list(c_values), "draws": draws, "seed": seed,
        "settings": settings.to_dict(), "transfer": TransferConfig(head_dtype=head_dtype, solver=solver, **views_kw).to_dict(),
        "runs": runs, "summary": summary, "seconds": round(time.perf_counter() - t_start, 1),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
                    "torch_threads": 1},
    }
    if json_path:
        p = pathlib.Path(json_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _table(result: dict[str, Any]) -> str:
    def pct(x):
        return "  -  " if x is None else f"{100 * x:5.1f}"

    lines = ["  c | new-only new (mean±sd, pooled) | extend new | extend old | base old | paper | head bytes"]
    for c, s in result["summary"].items():
        no, en, eo, bo = s["new_only_top1_new"], s["extend_top1_new"], s["extend_top1_old"], s["base_top1_old"]
        lines.append(f"{int(c):3d} | {pct(no['mean'])} ± {pct(no['std'])}, {pct(s['new_only_top1_new_pooled'])}    | "
                     f"{pct(en['mean'])} ± {pct(en['std'])} | {pct(eo['mean'])} ± {pct(eo['std'])} | {pct(bo['mean'])}    | "
                     f"{pct(s['paper_new_top1'])} | {s['head_bytes_extend']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the head-only transfer benchmark from the command line; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=None, help="write the result as JSON here")
    p.add_argument("--c", type=int, nargs="+", default=[5, 10, 15, 20], help="numbers of new classes")
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default=None, help="model config TOML")
    p.add_argument("--max-epochs", type=int, default=None, help="cap backbone epochs (quick runs)")
    p.add_argument("--views", type=int, default=None)
    p.add_argument("--head-dtype", default="int8", choices=["int8", "float16", "float32"])
    p.add_argument("--solver", default="logistic", choices=["logistic", "lda"])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache-dir", default=None, help="keep/reuse the trained backbones here")
    a = p.parse_args(argv)
    result = run(a.c, a.draws, a.seed, config=a.config, max_epochs=a.max_epochs, views=a.views,
                 head_dtype=a.head_dtype, solver=a.solver, data_dir=a.data_dir, json_path=a.json,
                 cache_dir=a.cache_dir)
    print(_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
