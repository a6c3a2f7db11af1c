"""Per-spectrum classification time as the number of known minerals grows: a trained head against
reference matching.

Onboard identification with a head costs one backbone pass (independent of the number of classes K) plus
one K×D matrix-vector product; matching against a reference library costs a pass over the whole library,
which grows with K × references per class. For K = 10 … 2000 (synthetic heads and libraries: timing does
not depend on the values) this measures, one spectrum at a time, 1 CPU thread everywhere (onnxruntime
intra-op threads = 1, BLAS limited to 1 thread):

* ``backbone``: the served ONNX model (INT8 when the bundle has it) → embedding; constant in K;
* ``head``: :class:`edge.heads.Head` (int8-stored weights, numpy) on the embedding → probabilities;
* ``knn_embedding``: scikit-learn ``NearestNeighbors(algorithm="brute")`` 1-NN over a library of
  ``refs_per_class`` stored embeddings per class;
* ``knn_raw``: the same over ``refs_per_class`` preprocessed raw spectra per class (no backbone needed);
* ``knn_embedding_numpy``: the embedding 1-NN written directly in numpy (squared distances by one
  matrix-vector product, argmin), i.e. reference matching without scikit-learn's per-call overhead.

Run ``python bench/bench_o1.py --json bench/results/o1.json [--bundle DIR]`` (the plot goes next to the JSON,
``.png``) or call :func:`run`. Without ``--bundle`` an untrained model of the default architecture is
exported to a temporary bundle (FP32 and INT8; weights do not change the timing).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import pathlib
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np

CLASS_COUNTS = (10, 20, 50, 100, 200, 500, 1000, 2000)


def _nearest_by_norms(sq_norms: np.ndarray, library: np.ndarray, query: np.ndarray) -> int:
    """Index of the library row nearest to ``query`` (Euclidean), from precomputed squared row norms."""
    return int(np.argmin(sq_norms - 2.0 * (library @ query)))


def _time_per_call(fn: Callable[[], Any], min_time_s: float, min_calls: int = 20) -> dict[str, float]:
    """Median and 90th percentile of one call, microseconds (repeated for ≥ min_time_s and ≥ min_calls)."""
    fn()  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < min_time_s:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    a = np.asarray(times) * 1e6
    return {"median_us": float(np.median(a)), "p90_us": float(np.percentile(a, 90)), "calls": int(a.size)}


def _temporary_bundle(folder: pathlib.Path) -> pathlib.Path:
    """An untrained model of the default config (``configs/model_compact.toml``) exported to FP32 and INT8
    ONNX (timing only).
    """
    import torch

    from export.cli import export_bundle
    from trainer.bundle_io import save_model
    from trainer.model import RamanCNN
    from trainer.settings import TrainerSettings

    torch.manual_seed(0)
    cfg = pathlib.Path(__file__).resolve().parents[1] / "configs" / "model_compact.toml"
    s = TrainerSettings.from_toml(cfg) if cfg.is_file() else TrainerSettings()
    model_cfg = dataclasses.replace(s.model, in_channels=s.preprocessing.n_channels)
    model = RamanCNN(s.preprocessing.grid.n_points, 63, model_cfg).eval()
    b = save_model(folder / "o1", model, [f"class{i:02d}" for i in range(63)], s,
                   {"train_source": "synthetic:train", "test_source": "synthetic:test"}, name="o1-timing")
    export_bundle(b, int8=True, max_accuracy_drop=100.0)  # untrained: the gate is irrelevant here
    return b.path


def run(bundle: str | None = None, class_counts: Sequence[int] = CLASS_COUNTS, refs_per_class: int = 5,
        min_time_s: float = 0.3, precision: str = "auto", json_path: str | None = None,
        png_path: str | None = None, seed: int = 0, quick: bool = False) -> dict[str, Any]:
    """Measure the per-spectrum time of head vs. reference matching for growing numbers of classes.

    Parameters
    ----------
    bundle : str, optional
        Bundle with an ONNX model that has an ``embedding`` output (default: an untrained temporary one).
    class_counts : sequence of int
        Numbers of known classes K.
    refs_per_class : int
        Reference spectra (or embeddings) per class in the matching libraries.
    min_time_s : float
        Minimum time spent per measurement.
    precision : {"auto", "int8", "fp32"}
        ONNX model of the backbone.
    json_path, png_path : str, optional
        Write the result (JSON) and the plot (PNG; default: the JSON path with ``.png``).
    quick : bool
        Shorter measurements (0.05 s each).

    Returns
    -------
    dict
        ``rows`` (one per K with ``head``, ``knn_embedding``, ``knn_raw`` timings and totals with the
        backbone), ``backbone``, the settings and the machine.
    """
    import onnxruntime as ort
    from sklearn.neighbors import NearestNeighbors
    from threadpoolctl import threadpool_limits

    from edge.backends import OnnxRuntimeBackend
    from edge.bundle import Bundle
    from edge.heads import make_head
    from edge.preprocess import Preprocessor

    if quick:
        min_time_s = min(min_time_s, 0.05)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="bench-o1-") as tmp, threadpool_limits(1):
        b = Bundle.load(bundle or _temporary_bundle(pathlib.Path(tmp)))
        model_path, served = b.onnx_model(precision)
        n_points = b.grid.n_points
        x = rng.random((1, n_points), dtype=np.float32)
        x /= x.max()
        x_in = Preprocessor(b.preprocessing)(x, None)  # the model's input: (1, N) or (1, C, N)
        with OnnxRuntimeBackend(model_path, intra_op_threads=1, precision=served) as be:
            out = be.infer(x_in)
            if "embedding" not in out:
                raise SystemExit(f"{model_path} has no 'embedding' output; re-export the bundle with edge-export")
            emb = out["embedding"]
            backbone = _time_per_call(lambda: be.infer(x_in), min_time_s, 50)
        d = emb.shape[1]
        sha = b.manifest["model"].get("backbone_sha256") or "0" * 64
        rows = []
        for k in class_counts:
            head = make_head(rng.standard_normal((k, d)).astype(np.float32) * 0.01, np.zeros(k, np.float32),
                             [f"m{i}" for i in range(k)], sha, f"synthetic-{k}", dtype="int8")
            t_head = _time_per_call(functools.partial(head.predict_proba, emb), min_time_s)
            n_ref = k * refs_per_class
            lib_emb = np.abs(rng.standard_normal((n_ref, d), dtype=np.float32))
            nn_emb = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(lib_emb)
            t_knn_emb = _time_per_call(functools.partial(nn_emb.kneighbors, emb, return_distance=True), min_time_s)
            sq = (lib_emb * lib_emb).sum(axis=1)
            t_knn_np = _time_per_call(functools.partial(_nearest_by_norms, sq, lib_emb, emb[0]), min_time_s)
            lib_raw = rng.random((n_ref, n_points), dtype=np.float32)
            nn_raw = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(lib_raw)
            t_knn_raw = _time_per_call(functools.partial(nn_raw.kneighbors, x, return_distance=True), min_time_s)
            row = {"classes": k, "references": n_ref, "head": t_head, "knn_embedding": t_knn_emb, "knn_raw": t_knn_raw,
                   "knn_embedding_numpy": t_knn_np,
                   "head_bytes_int8": len(head.to_bytes()),
                   "total_us": {"backbone+head": backbone["median_us"] + t_head["median_us"],
                                "backbone+knn_embedding": backbone["median_us"] + t_knn_emb["median_us"],
                                "knn_raw": t_knn_raw["median_us"]}}
            rows.append(row)
            print(f"K={k:5d}: head {t_head['median_us']:8.1f} µs | kNN embedding ({n_ref} refs) "
                  f"{t_knn_emb['median_us']:9.1f} µs | kNN raw {t_knn_raw['median_us']:9.1f} µs | "
                  f"backbone {backbone['median_us']:.0f} µs", file=sys.stderr, flush=True)
        import sklearn

        result = {
            "benchmark": "per-spectrum classification time vs number of classes (batch 1, 1 thread)",
            "bundle": str(bundle) if bundle else "untrained temporary bundle (default architecture)",
            "model": model_path.name, "precision": served, "embedding_size": int(d), "n_points": int(n_points),
            "refs_per_class": refs_per_class, "backbone": backbone, "rows": rows,
            "machine": {"python": platform.python_version(), "platform": platform.platform(),
                        "processor": platform.processor(), "onnxruntime": ort.__version__, "numpy": np.__version__,
                        "sklearn": sklearn.__version__, "threads": 1},
        }
    if json_path:
        p = pathlib.Path(json_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        png_path = png_path or str(p.with_suffix(".png"))
    if png_path:
        result["plot"] = str(plot(result, png_path))
    return result


def plot(result: dict[str, Any], path: str) -> pathlib.Path:
    """Per-spectrum time against the number of classes, log-log, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    k = [r["classes"] for r in rows]
    bb = result["backbone"]["median_us"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.plot(k, [r["total_us"]["backbone+head"] for r in rows], "o-", color="tab:blue", lw=2,
            label=f"backbone ({result['precision']}) + head: ours")
    ax.plot(k, [r["head"]["median_us"] for r in rows], "o:", color="tab:blue", label="head alone (numpy, int8-stored)")
    ax.plot(k, [r["total_us"]["backbone+knn_embedding"] for r in rows], "s-", color="tab:red", lw=2,
            label=f"backbone + 1-NN over {result['refs_per_class']} embeddings/class")
    ax.plot(k, [r["knn_embedding_numpy"]["median_us"] for r in rows], "s:", color="tab:red",
            label="1-NN over embeddings alone (numpy, no backbone)")
    ax.plot(k, [r["knn_raw"]["median_us"] for r in rows], "^-", color="tab:orange", lw=2,
            label=f"1-NN over {result['refs_per_class']} raw spectra/class")
    ax.axhline(bb, color="grey", ls="--", lw=1, label="backbone alone")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("known minerals (classes)")
    ax.set_ylabel("time per spectrum (µs, median, 1 thread)")
    ax.set_title("Classification cost vs number of known minerals")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = pathlib.Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the O(1)-inference benchmark from the command line; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=None, help="write the result as JSON here (and the plot as .png beside it)")
    p.add_argument("--png", default=None, help="plot path (default: the JSON path with .png)")
    p.add_argument("--bundle", default=None, help="bundle with an embedding-output ONNX model")
    p.add_argument("--classes", type=int, nargs="+", default=list(CLASS_COUNTS))
    p.add_argument("--refs-per-class", type=int, default=5)
    p.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement")
    p.add_argument("--precision", choices=["auto", "int8", "fp32"], default="auto")
    a = p.parse_args(argv)
    r = run(a.bundle, a.classes, a.refs_per_class, a.min_time, a.precision, a.json, a.png)
    print(json.dumps({str(row["classes"]): {"head_us": round(row["head"]["median_us"], 1),
                                            "knn_embedding_us": round(row["knn_embedding"]["median_us"], 1),
                                            "knn_embedding_numpy_us": round(row["knn_embedding_numpy"]["median_us"], 1),
                                            "knn_raw_us": round(row["knn_raw"]["median_us"], 1)} for row in r["rows"]}
                     | {"backbone_us": round(r["backbone"]["median_us"], 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
