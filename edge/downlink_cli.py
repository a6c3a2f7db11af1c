"""``edge-downlink``: write what a thin link should carry first, within a byte budget, and mark it exported.

Examples
--------
python -m edge.downlink_cli --store store.sqlite --budget-bytes 200000 --out pass-0042.rdl
python -m edge.downlink_cli --store store.sqlite --budget-bytes 200000 --out x.rdl --dry-run

Order: novel spectra with their predictions, low-quality or low-confidence ones, drift alarms and link/lost events,
rejected inputs (their error messages), then a seeded sample of nominal predictions spread over time; only what no
earlier package carried (unless ``--include-exported``). Runs beside the daemon (SQLite WAL). The package format and
the choices are in docs/store.md, "Downlink package"; :func:`edge.downlink.read_package` reads it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .cli_common import CliParser, add_logging_args, non_negative_int, positive_float, positive_int, run_cli, setup_logging
from .downlink import KINDS, Plan, mark_exported, plan_downlink, write_package


def _parser() -> argparse.ArgumentParser:
    p = CliParser(prog="edge-downlink", description=__doc__.split("\n\n")[0],
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, help="the daemon's store (SQLite file)")
    p.add_argument("--budget-bytes", type=positive_int, required=True, help="the package's size on disk never exceeds this")
    p.add_argument("--out", required=True, help="package file to write (refused when it exists)")
    p.add_argument("--include-exported", action="store_true", help="also carry what earlier packages carried")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the nominal sample (default 0)")
    p.add_argument("--max-rejected", type=non_negative_int, default=100,
                   help="at most this many rejected inputs per package (default 100)")
    p.add_argument("--no-compress", action="store_true", help="plain msgpack records (default: one zlib stream)")
    p.add_argument("--busy-timeout-s", type=positive_float, default=30.0,
                   help="wait this long for the daemon's write to finish when marking (default 30)")
    p.add_argument("--dry-run", action="store_true", help="print what would go; write and mark nothing")
    add_logging_args(p)
    return p


def summary(plan: Plan, budget_bytes: int) -> str:
    """Items and bytes by kind, and what is left for a later package (text table)."""
    h = plan.header
    rows = [f"{'kind':<10} {'items':>7} {'bytes':>10} {'left':>7}"]
    for kind in KINDS:
        rows.append(f"{kind:<10} {h['counts'][kind]:>7} {h['bytes'][kind]:>10} {h['left'][kind]:>7}")
    total = plan.size_bytes
    rows.append(f"{'total':<10} {sum(h['counts'].values()):>7} {total:>10}   of a {budget_bytes}-byte budget "
                f"({100.0 * total / budget_bytes:.1f} %), compression {h['compression']}")
    return "\n".join(rows)


def downlink_impl(argv: Sequence[str] | None = None) -> int:
    """Run ``edge-downlink`` (see the module docstring); returns the exit status."""
    args = _parser().parse_args(argv)
    setup_logging(args)
    plan = plan_downlink(args.store, args.budget_bytes, include_exported=args.include_exported, seed=args.seed,
                         compress=not args.no_compress, max_rejected=args.max_rejected)
    if args.dry_run:
        for kind, row, seq, sid, n in plan.items:
            print(f"{kind:<10} result row {row:<8} seq {seq if seq is not None else '-':<8} id {sid or '-'}  {n} B")
        print(summary(plan, args.budget_bytes))
        print(f"dry run: nothing written to {args.out}, nothing marked")
        return 0
    written = write_package(plan, args.out)
    marked = mark_exported(args.store, plan, busy_timeout_s=args.busy_timeout_s)
    print(summary(plan, args.budget_bytes))
    print(f"wrote {args.out} ({written} bytes); marked {marked} store rows exported "
          f"({len(plan.result_rows)} results, {len(plan.spectrum_rows)} spectra)")
    if not plan.items:  # still written: the header tells the ground what is left and the last seq (a heartbeat)
        print("nothing new to send: the package holds its header only (--include-exported sends earlier items again)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``edge-downlink``: user errors print one ``error:`` line and exit 1."""
    return run_cli(downlink_impl, argv, "edge-downlink")


if __name__ == "__main__":
    sys.exit(main())
