"""``edge-bench``: run benchmarks and write JSON.

edge-bench latency  [--bundle DIR] [--json PATH]   classifier and daemon speed (issue 2 targets)
edge-bench bridge   [--json PATH]                  serial decoder and pty throughput
edge-bench serial   [--bundle DIR] [--json PATH]   spectra/s classified end to end: simulator -> pty -> edge-daemon --serial
edge-bench novelty  [--bundle DIR] [--json PATH]   what the novelty autoencoder adds to daemon latency (issue 4)
edge-bench crash-serial [--kills N] [--bundle DIR] [--json PATH]   edge-daemon --serial --store SIGKILLed N times
                                                   under a faulty custody instrument: lost, duplicated, seq_reused (#17)
edge-bench accuracy [--quick] [--json PATH]        ours vs paper CNN and peers on the RRUFF splits (issue 5; full: ~1 h)
edge-bench transfer [--quick] [--json PATH]        head-only transfer, the paper's Table 11 protocol (issue 5)
edge-bench o1       [--bundle DIR] [--json PATH]   per-spectrum time of our head vs kNN as classes grow (issue 5)
edge-bench predict  [--bundle DIR] [--json PATH]   edge-predict spectra/s: 1 process, Dask 1 and 2 workers (#16)
edge-bench malformed [--messages N] [--seed S] [--store-cap BYTES]
                                                   malformed-message mix vs edge-daemon: crash, answers, peak RSS (#17)
edge-bench crash    [--bundle DIR] [--json PATH] [--kills 20] [--per-kill 2000] [--seed 0]
                    SIGKILL edge-daemon under an acknowledged flood and restart it: lost/duplicated/seq_reused (#17)
edge-bench catchup  [--bundle DIR] [--json PATH]   catch-up: backlog messages/s, daemon latency while serving it (#17)
edge-bench all      [--bundle DIR] [--out DIR]     every benchmark above

Without --bundle, a bundle is trained on the real 40 % split (and exported to INT8) under bench/results/.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge.cli_common import CliParser, existing_dir, non_negative_int, positive_int, run_cli
from edge.errors import ConfigError

RESULTS = Path(__file__).resolve().parent / "results"


def default_bundle(out: Path) -> Path:
    """The benchmark bundle: the default model trained on the real 40 % split and exported to INT8 (reused
    when already built), made the same way as ``edge-demo --data``.
    """
    from edge.demo import ensure_bundle

    bdir = out / "bundle-rruff40"
    ensure_bundle(bdir, "rruff_soysal/raw_train_labeled_40pct.npz", "rruff_soysal/raw_test.npz", None, None,
                  force=True)  # its own results folder: a stale bundle there is replaced
    return bdir


def _bench(name: str):
    return importlib.import_module(f"bench.{name}")


def _bundle(args) -> Path:
    return Path(args.bundle) if args.bundle else default_bundle(Path(args.out))


def _accuracy(args) -> dict[str, Any]:
    from .accuracy import run

    if args.which == "accuracy" and args.quick and not args.json:  # keep the full run's accuracy.json
        args.json = str(Path(args.out) / "accuracy_quick.json")
    return run(quick=args.quick, out_dir=args.out, json_path=args.json if args.which == "accuracy" else None)


#: Every benchmark: name -> callable(parsed args) -> JSON-able dict.
BENCHES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "accuracy": _accuracy,
    "latency": lambda a: _bench("bench_latency").run(_bundle(a), quick=a.quick),
    "batchcpu": lambda a: _bench("bench_batch_cpu").run(_bundle(a), quick=a.quick),
    "bridge": lambda a: _bench("bench_bridge").run({}, quick=a.quick),
    "serial": lambda a: _bench("bench_serial_daemon").run(quick=a.quick, bundle=_bundle(a)),
    "novelty": lambda a: _bench("bench_novelty").run(a.bundle, quick=a.quick),
    "crash-serial": lambda a: _bench("bench_crash_serial").run(_bundle(a), kills=a.kills if not a.quick else min(a.kills, 5)),
    "transfer": lambda a: _bench("bench_transfer").run(quick=a.quick, verbose=False,
                                                       cache_dir=str(Path(a.out) / "transfer_backbones")),
    "predict": lambda a: _bench("bench_predict").run(_bundle(a), quick=a.quick),
    "crash": lambda a: _bench("bench_crash").run(_bundle(a), kills=a.kills, per_kill=a.per_kill, seed=a.seed),
    "catchup": lambda a: _bench("bench_catchup").run(_bundle(a), quick=a.quick),
    "o1": lambda a: _bench("bench_o1").run(str(_bundle(a)), quick=a.quick, png_path=str(Path(a.out) / "o1.png")),
    "malformed": lambda a: _bench("bench_malformed").run(_bundle(a), n_messages=a.messages, seed=a.seed,
                                                         store_cap=a.store_cap),
}


def bench_impl(argv: Sequence[str] | None = None) -> int:
    """Parse the ``edge-bench`` command line and run the chosen benchmarks; returns the exit code."""
    p = CliParser(prog="edge-bench", description="Run benchmarks; results as JSON.")
    p.add_argument("which", choices=[*sorted(BENCHES), "all"])
    p.add_argument("--bundle", type=existing_dir, default=None, help="model bundle (default: build one on the 40 %% split)")
    p.add_argument("--out", default=str(RESULTS), help="folder for JSON results")
    p.add_argument("--json", default=None, help="JSON file (single benchmark)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--messages", type=positive_int, default=10000, help="malformed: messages in the mix")
    p.add_argument("--store-cap", type=positive_int, default=None, metavar="BYTES",
                   help="malformed: run the daemon with a store, rejected frames cut to BYTES")
    p.add_argument("--kills", type=non_negative_int, default=20,
                   help="crash, crash-serial: SIGKILLs of the daemon (default 20)")
    p.add_argument("--per-kill", type=positive_int, default=2000, help="crash: spectra flooded per kill (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="crash: seed of the kill points; malformed: of the mix (default 0)")
    args = p.parse_args(argv)
    if args.which in ("crash", "all") and args.kills < 1:  # before a bundle is built for it
        raise ConfigError(f"--kills must be ≥ 1 for crash (crash-serial accepts 0: a run without kills), got {args.kills}")
    out = Path(args.out)
    try:  # before any benchmark runs: an unwritable --out must not cost an hour of measurements
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".edge-bench-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write results there: {exc.strerror or exc}") from exc
    if args.json and not (Path(args.json).parent.is_dir() and os.access(Path(args.json).parent, os.W_OK)):
        raise ConfigError(f"--json {args.json}: its folder does not exist or is not writable")
    names = sorted(BENCHES) if args.which == "all" else [args.which]
    for name in names:
        t = time.perf_counter()
        result = {"benchmark": name, **BENCHES[name](args), "wall_seconds": None}
        result["wall_seconds"] = round(time.perf_counter() - t, 1)
        path = Path(args.json) if args.json and len(names) == 1 else Path(args.out) / f"{name}.json"
        try:
            path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot write the result: {exc.strerror or exc}") from exc
        print(f"{name}: written to {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``edge-bench``: user errors print one ``error:`` line and exit 1."""
    return run_cli(bench_impl, argv, "edge-bench")


if __name__ == "__main__":
    sys.exit(main())
