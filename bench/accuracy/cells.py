"""Benchmark cells (one method, split and seed): fingerprint, cache, metrics and their aggregation."""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import Method
from .constants import CELL_VERSION, COLUMNS, DIAL_ROWS, OUR_ROWS, PEER_KEYS, TARGETS_TOP1, TEST_FILE, TRAIN_FILE

#: Settings added after cells were first cached, with the value that trains exactly as before: dropped from
#: the fingerprint at that value, so adding a setting does not invalidate hours of cached peer cells.
NEUTRAL_SETTINGS = {("model", "members"): 1, ("training", "mixup_alpha"): 0.0, ("model", "pool_blur"): 0,
                    ("augmentation", "band_ratio"): 0.0}


def _fingerprint(method: Method, shifts: Sequence[float]) -> str:
    settings = {k: (dict(v) if isinstance(v, dict) else v) for k, v in method.settings.items()}
    for (section, name), neutral in NEUTRAL_SETTINGS.items():
        if isinstance(settings.get(section), dict) and settings[section].get(name, neutral) == neutral:
            settings[section].pop(name, None)
    blob = json.dumps({"v": CELL_VERSION, "settings": settings, "shifts": [float(s) for s in shifts],
                       "train": TRAIN_FILE, "test": TEST_FILE}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _cell_key(method: Method, split: int, seed: int, shifts: Sequence[float]) -> str:
    return f"{method.key}|{split}|{seed}|{_fingerprint(method, shifts)}"


class _CellCache:
    def __init__(self, path: pathlib.Path | None) -> None:
        self.path = path
        self.cells: dict[str, dict[str, Any]] = {}
        if path is not None and path.is_file():
            try:
                self.cells = json.loads(path.read_text(encoding="utf-8")).get("cells", {})
            except (OSError, ValueError):
                self.cells = {}

    def put(self, key: str, cell: dict[str, Any]) -> None:
        self.cells[key] = cell
        if self.path is not None:
            _write_atomic(self.path, json.dumps({"cells": self.cells}, indent=1, default=_json_default) + "\n")


def _write_atomic(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _metrics(scores: np.ndarray, y: np.ndarray, classes: list[str]) -> dict[str, float]:
    from trainer.report import classification_metrics

    s = np.where(np.isfinite(scores), scores, np.nanmin(np.where(np.isfinite(scores), scores, np.inf)) - 1.0)
    m = classification_metrics(s, y, classes)
    return {"top1": 100.0 * m["top1"], "top3": 100.0 * m["top3"], "macro_f1": 100.0 * m["macro_f1"]}


def _stats(values: list[float]) -> dict[str, Any]:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size),
            "values": [round(float(x), 3) for x in v]}


def _summarise(methods: list[Method], cells: dict[str, dict[str, Any]], splits: Sequence[int],
               seeds: Sequence[int], shifts: Sequence[float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in methods:
        per_split: dict[str, Any] = {}
        status = None
        for split in splits:
            found = [cells.get(_cell_key(m, split, sd, shifts)) for sd in (seeds if m.seeded else seeds[:1])]
            runs = [r for r in found if r is not None]
            if any(r.get("status") for r in runs):
                status = next(r["status"] for r in runs if r.get("status"))
                continue
            if not runs:
                continue
            per_split[str(split)] = {
                "n_runs": len(runs),
                "shifts": {f"{float(sh):g}": {k: _stats([r["shifts"][f"{float(sh):g}"][k] for r in runs])
                                               for k in ("top1", "top3", "macro_f1")} for sh in shifts},
                "train_seconds": _stats([r["train_seconds"] for r in runs]),
                "n_parameters": runs[0].get("n_parameters"),
            }
        out[m.key] = {"label": m.label, "seeded": m.seeded, "table": m.table, "splits": per_split}
        if status:
            out[m.key]["status"] = status
    return out


def _value(summary: dict[str, Any], key: str, split: int, shift: float, metric: str = "top1") -> dict[str, Any] | None:
    s = summary.get(key, {}).get("splits", {}).get(str(split))
    return None if s is None else s["shifts"].get(f"{float(shift):g}", {}).get(metric)


def _row_value(summary: dict[str, Any], row: str, split: int, shift: float, metric: str = "top1") -> dict[str, Any] | None:
    """A method's value, or for a dial-matched row (:data:`DIAL_ROWS`) that of the method matching the shift."""
    if row in DIAL_ROWS:
        d = DIAL_ROWS[row]
        return _value(summary, d["shifted"] if shift else d["at_zero"], split, shift, metric)
    return _value(summary, row, split, shift, metric)


def _versus_peers(summary: dict[str, Any]) -> dict[str, Any]:
    """Per column: the best peer's mean top-1 and whether each of our rows (:data:`OUR_ROWS`) is ahead."""
    out = {}
    for split, shift in COLUMNS:
        values = {k: _value(summary, k, split, shift) for k in PEER_KEYS}
        peers: dict[str, float] = {k: v["mean"] for k, v in values.items() if v and v.get("mean") is not None}
        best = max(peers, key=peers.__getitem__) if peers else None
        row: dict[str, Any] = {"best_peer": best, "best_peer_top1": None if best is None else round(peers[best], 2)}
        for key in OUR_ROWS:
            v = _row_value(summary, key, split, shift)
            mean = None if v is None else v.get("mean")
            row[key] = None if mean is None else round(mean, 2)
            row[f"{key}_ahead"] = None if mean is None or best is None else bool(mean > peers[best])
        out[_colname((split, shift))] = row
    return out


def _targets(summary: dict[str, Any], n_seeds: int, row: str = "compact") -> dict[str, Any]:
    res = {}
    for (split, shift), target in TARGETS_TOP1.items():
        v = _row_value(summary, row, split, shift)
        name = f"{split}%" + (f"+{shift}" if shift else "")
        if v is None or v["mean"] is None:
            res[name] = {"target": target, "mean": None, "met": None, "n_seeds": 0}
        else:
            res[name] = {"target": target, "mean": round(v["mean"], 2), "std": round(v["std"], 2),
                         "met": bool(v["mean"] >= target), "n_seeds": v["n"],
                         "provisional": v["n"] < n_seeds or n_seeds < 3}
    return res


def _colname(c: tuple[int, int]) -> str:
    split, shift = c
    return f"{split} %" + (f" +{shift}" if shift else "")
