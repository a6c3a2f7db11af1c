"""A non-Python client (Node.js: npm ``zeromq`` and ``@msgpack/msgpack``, tests/node_client/) written from
docs/wire.md, against a running daemon: the 150 real test spectra are predicted once each, as offline inference
predicts them, and every malformed message is answered as specified. Skips with a reason where ``node`` or its
modules are absent (``npm ci`` in tests/node_client installs them; .ci/run does)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from daemon_harness import RunningDaemon
from test_daemon import offline_top1

from edge.data import load_spectra
from edge.wire_vectors import VECTORS_PATH

CLIENT = Path(__file__).parent / "node_client"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js (node) is not installed")
    for module in ("zeromq", "@msgpack/msgpack"):
        if not (CLIENT / "node_modules" / module).is_dir():
            pytest.skip(f"npm module {module} is not installed: run `npm ci` in {CLIENT}")
    return node


def test_node_client_against_a_running_daemon(rruff_bundle, soysal, tmp_path):
    node = _node()
    test = load_spectra(soysal / "raw_test.npz")
    expected, _ = offline_top1(rruff_bundle, test)
    spectra = tmp_path / "spectra.json"
    spectra.write_text(json.dumps({"raman_shift_cm1": test.raman_shift_cm1.tolist(),
                                   "spectra": [{"id": f"n{i}", "intensity": test.intensities[i].tolist()}
                                               for i in range(len(test))]}))
    with RunningDaemon(rruff_bundle) as d:
        proc = subprocess.run([node, str(CLIENT / "client.mjs"), "--input", d.daemon.endpoints["input"],
                               "--output", d.daemon.endpoints["output"], "--spectra", str(spectra),
                               "--vectors", str(VECTORS_PATH)], cwd=CLIENT, capture_output=True, text=True,
                              timeout=180)
        status = d.daemon.status()
    assert proc.stdout.strip(), proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["failures"] == [] and proc.returncode == 0, (out["failures"], proc.stderr)
    assert sum(k.startswith("n") for k in out["top1"]) == len(test)  # every real spectrum, once
    assert [out["top1"][f"n{i}"] for i in range(len(test))] == list(expected)
    vectors = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))["vectors"]
    assert out["vector_rejections_checked"] == sum("rejected" in v and v["message"] == "spectrum" for v in vectors)
    assert out["events_refused"] == sum(v["message"] == "event" for v in vectors) > 0  # public input: refused
    assert status["counters"]["lost"] == 0
    assert status["counters"]["rejected"] == out["errors"] - status["counters"]["lost"]
