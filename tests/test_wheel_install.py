"""A wheel of the project installs in a fresh venv WITHOUT extras (an onboard install) and serves a bundle.

The venv is plain (no --system-site-packages): ``pip install <wheel>`` fetches numpy, scipy, onnxruntime,
pyzmq, ... from the package index; without network the test skips with the reason.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def onboard_venv(tmp_path_factory):
    """A venv holding only the wheel and its required dependencies; returns its bin folder and clean env."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # build from a copy: no build/ or egg-info in the checkout, no race with other runs
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                                             ".pytest_cache", ".ruff_cache", "tests", "bench*results",
                                                             ".benchmarks", "edge-demo-work", "bundles"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    wheel = next((tmp / "dist").glob("raman_edge-*.whl"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    bin_dir = venv / "bin"
    r = subprocess.run([str(bin_dir / "pip"), "install", "-q", str(wheel)], capture_output=True, text=True,
                       timeout=600, env=env, cwd=tmp)
    if r.returncode != 0:
        pytest.skip(f"pip could not install the wheel's dependencies (network?): {r.stderr.strip()[-300:]}")
    return bin_dir, env, tmp


def test_wheel_ships_configs_and_license(onboard_venv):
    bin_dir, env, tmp = onboard_venv
    code = ("import edge.cli_common as c, importlib.metadata as m; print(c.config_file('daemon.toml').is_file(), "
            "c.config_file('model_compact.toml').is_file(), any('LICENSE' in str(f) for f in m.files('raman-edge')))")
    r = subprocess.run([str(bin_dir / "python"), "-c", code], capture_output=True, text=True, env=env, cwd=tmp)
    assert r.stdout.split() == ["True", "True", "True"], r.stderr
    r = subprocess.run([str(bin_dir / "python"), "-c", "import torch"], capture_output=True, env=env, cwd=tmp)
    assert r.returncode != 0, "the onboard venv must not have torch"


def test_workstation_commands_name_the_missing_extra(onboard_venv, tmp_path):
    bin_dir, env, tmp = onboard_venv
    r = subprocess.run([str(bin_dir / "edge-train"), "--help"], capture_output=True, text=True, env=env, cwd=tmp)
    assert r.returncode == 0 and "pip install 'raman-edge[train]'" in r.stdout
    for cmd, extra in ((["edge-train", "--train", "synthetic:train", "--out", str(tmp_path / "b")], "train"),
                       (["edge-export", str(tmp_path)], "export"),
                       (["edge-demo", "--workdir", str(tmp_path / "w")], "export")):
        r = subprocess.run([str(bin_dir / cmd[0]), *cmd[1:]], capture_output=True, text=True, env=env, cwd=tmp)
        errors = [line for line in r.stderr.splitlines() if "error:" in line]
        assert r.returncode == 1 and len(errors) == 1 and f"raman-edge[{extra}]" in errors[0], r.stderr
        assert "Traceback" not in r.stderr


def test_onboard_daemon_serves_a_bundle(onboard_venv, synthetic_bundle):
    from edge.bundle import Bundle
    from edge.client import PredictionSubscriber, SpectrumSender
    from edge.data import load_spectra

    bin_dir, env, tmp = onboard_venv
    inp, out = f"tcp://127.0.0.1:{_free_port()}", f"tcp://127.0.0.1:{_free_port()}"
    proc = subprocess.Popen([str(bin_dir / "edge-daemon"), "--bundle", str(synthetic_bundle), "--input", inp,
                             "--output", out, "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp)
    try:
        spectra = load_spectra("synthetic:test", Bundle.load(synthetic_bundle).grid)
        with PredictionSubscriber(out) as rx:
            rx.wait_ready(timeout_s=60)
            with SpectrumSender(inp) as tx:
                for i in range(5):
                    tx.send(spectra.intensities[i], spectra.raman_shift_cm1, id=f"w{i}", label=str(spectra.labels[i]))
            got = {}
            deadline = time.monotonic() + 30
            while len(got) < 5 and time.monotonic() < deadline:
                m = rx.recv(timeout_s=0.5)
                if m is not None and m[0] == "prediction":
                    got[m[1]["id"]] = m[1]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert len(got) == 5, err
    assert np.mean([p["labels"][0] == p["label"] for p in got.values()]) >= 0.6
