"""Accuracy benchmark (issue #5): the entry point kept where it always was; the code is in
:mod:`bench.accuracy` (runner, report, cells, our and the paper's CNN rows, the classical peers).

Run::

    edge-bench accuracy [--quick]
    python -m bench.bench_accuracy --json bench/results/accuracy.json [--quick] [--seeds 3] [--splits 10 20 30 40]
"""

from __future__ import annotations

import pathlib
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.accuracy import *  # noqa: F403 (the package's public names, bench.accuracy.__all__)
from bench.accuracy import __all__ as _public

# the tests' names for the cell fingerprint and the table's aggregates (re-exported)
from bench.accuracy.cells import _fingerprint as _fingerprint
from bench.accuracy.cells import _targets as _targets
from bench.accuracy.cells import _versus_peers as _versus_peers
from bench.accuracy.constants import COLUMNS, CURVE_SHIFTS_CM1, PEAK_BIN_CM1
from bench.accuracy.runner import main

__all__ = [*_public, "COLUMNS", "CURVE_SHIFTS_CM1", "PEAK_BIN_CM1"]

if __name__ == "__main__":
    sys.exit(main())
