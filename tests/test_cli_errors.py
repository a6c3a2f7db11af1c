"""Every user error of every console script ends in exit status 1, exactly one ``error:`` line on stderr and
no traceback; nothing wrong is accepted silently (issue 18).

The cases run in-process through each script's ``main(argv)`` with stderr captured, so the table stays fast.
``{B}`` is a bundle (the session's synthetic bundle), ``{T}`` this test's scratch folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from bench.__main__ import main as bench_main
from edge.bridge_cli import main as bridge_main
from edge.cli import daemon_main
from edge.demo import main as demo_main
from edge.keys_cli import main as keys_main
from edge.keys_cli import new_key_pair
from export.cli import main as export_main
from trainer.cli import main as train_main
from trainer.evaluate import main as eval_main

TRAIN = ["--train", "synthetic:train", "--out", "{T}/new"]
D = ["--bundle", "{B}", "--input", "tcp://127.0.0.1:*", "--output", "tcp://127.0.0.1:*"]

# (script, argv, substring the error line must contain)
CASES: list[tuple[str, list[str], str]] = [
    # edge-train
    ("train", [], "--train"),
    ("train", [*TRAIN, "--steps", "-5"], "--steps: must be a positive integer"),
    ("train", [*TRAIN, "--steps", "0"], "positive integer"),
    ("train", [*TRAIN, "--steps", "many"], "not an integer"),
    ("train", [*TRAIN, "--epochs", "0"], "--epochs"),
    ("train", [*TRAIN, "--threads", "0"], "--threads"),
    ("train", [*TRAIN, "--seed", "-1"], "--seed"),
    ("train", [*TRAIN, "--pool-size", "0"], "--pool-size"),
    ("train", [*TRAIN, "--head", "round"], "invalid choice"),
    ("train", [*TRAIN, "--shift-tolerance-cm1", "-3"], "must be a number > 0"),
    ("train", [*TRAIN, "--novelty-quantile", "1.5"], "probability in [0, 1]"),
    ("train", [*TRAIN, "--novelty-epochs", "0"], "--novelty-epochs"),
    ("train", [*TRAIN, "--config", "{T}/no-such.toml"], "config file not found"),
    ("train", ["--train", "{T}/no/such.npz", "--out", "{T}/new"], "no such file"),
    ("train", ["--train", "{T}/not-a-zip.npz", "--out", "{T}/new"], "not an .npz archive"),
    # a headerless tab file (axis 200-1591: shift or wavelength?) is refused by edge.io before any label question
    ("train", ["--train", "{T}/headerless.txt", "--out", "{T}/new"], "pass axis_unit='cm-1'"),
    ("train", ["--train", "synthetic:train", "--out", "{B}"], "pass --force"),
    ("train", ["--train", "synthetic:train", "--out", "{T}/a-file"], "is a file"),
    ("train", ["--train", "synthetic:train", "--out", "{T}/full"], "holds no bundle"),
    ("train", ["explain", "--bundle", "{T}/none", "--data", "synthetic:test"], "not a model bundle"),
    ("train", ["explain", "--bundle", "{B}", "--data", "synthetic:test", "--index", "-1"], "--index"),
    ("train", ["explain", "--bundle", "{B}", "--data", "synthetic:test", "--index", "100000"], "outside"),
    ("train", ["transfer", "--base", "{B}", "--train", "synthetic:train", "--out", "{T}/t", "--views", "0"], "--views"),
    ("train", ["transfer", "--base", "{B}", "--train", "synthetic:train", "--out", "{T}/t", "--steps", "-1"], "--steps"),
    ("train", ["transfer", "--base", "{T}/none", "--train", "synthetic:train", "--out", "{T}/t"], "not a model bundle"),
    # edge-export
    ("export", ["{B}", "--int8", "--max-accuracy-drop", "-5"], "must be a number ≥ 0"),
    ("export", ["{B}", "--int8", "--max-accuracy-drop", "nan"], "not a finite number"),
    ("export", ["{T}/none"], "not a model bundle"),
    ("export", ["{B}", "--calibrate-method", "guess"], "invalid choice"),
    ("export", ["{B}", "--int8", "--val", "{T}/foreign.npz"], "validation labels do not match"),
    ("export", ["{B}", "--int8", "--val", "{T}/no/such.npz"], "no such file"),
    ("export", ["{B}", "--int8", "--calib", "{T}/not-a-zip.npz"], "not an .npz archive"),
    ("export", ["{B}", "--frobnicate"], "unrecognized arguments"),
    # edge-daemon
    ("daemon", [], "no model bundle"),
    ("daemon", ["--bundle", "{T}/none"], "not a model bundle"),
    ("daemon", [*D, "--top-k", "500"], "top_k = 500 exceeds the bundle's 12 classes"),
    ("daemon", [*D, "--top-k", "0"], "--top-k"),
    ("daemon", [*D, "--max-batch", "0"], "--max-batch"),
    ("daemon", [*D, "--threads", "-1"], "--threads"),
    ("daemon", [*D, "--precision", "int4"], "invalid choice"),
    ("daemon", [*D, "--providers", "TensorrtExecutionProvider"], "not available"),
    ("daemon", [*D, "--providers", ","], "comma-separated"),
    ("daemon", [*D, "--instrument-grid", "100,1"], "START,STEP,N"),
    ("daemon", [*D, "--instrument-grid", "100,1,1392"], "does not match the expected axis"),
    ("daemon", ["--bundle", "{T}/other-axis"], "does not match the expected axis"),
    ("daemon", [*D, "--novelty-detector", "magic"], "invalid choice"),
    ("daemon", [*D, "--ack-input", "tcp://127.0.0.1:5999"], "needs a store"),
    ("daemon", [*D, "--head", "{T}/no-head.npz"], "head"),
    ("daemon", ["--config", "{T}/no-such.toml"], "config file not found"),
    ("daemon", ["--config", "{T}/broken.toml"], "invalid config"),
    ("daemon", ["--config", "{T}/lots.toml"], "daemon.max_batch must be an integer"),
    ("daemon", ["--config", "{T}/unknown.toml"], "unknown daemon setting"),
    ("daemon", ["--config", "{T}/bool-threads.toml"], "daemon.threads must be an integer"),
    ("daemon", ["--config", "{T}/bad-grid.toml"], "instrument.grid"),
    ("daemon", ["--config", "{T}/bad-instrument.toml"], "[instrument] must be a table"),
    # edge-demo
    ("demo", ["--timeout", "0"], "--timeout: must be a number > 0"),
    ("demo", ["--timeout", "soon"], "not a number"),
    ("demo", ["--rate", "-5"], "--rate: must be a number ≥ 0"),
    ("demo", ["--limit", "0"], "--limit: must be a positive integer"),
    ("demo", ["--steps", "-1"], "--steps"),
    ("demo", ["--data", "{T}/no/such"], "no such folder"),
    ("demo", ["--no-train"], "--no-train needs --bundle"),
    ("demo", ["--line-faults"], "--serial only"),
    ("demo", ["--json", "{T}/no/such/summary.json"], "cannot write"),
    ("demo", ["--bundle", "{T}/none", "--no-train"], "not a model bundle"),
    # edge-bridge
    ("bridge", ["simulate", "--pty", "--bit-flip-rate", "2"], "must be in [0, 1]"),
    ("bridge", ["simulate", "--pty", "--rate", "-1"], "--rate"),
    ("bridge", ["simulate", "--pty", "--count", "0"], "--count"),
    ("bridge", ["simulate", "--pty", "--byte-error-rate", "-0.1"], "must be in [0, 1]"),
    ("bridge", ["simulate", "--pty", "--heartbeat", "0"], "--heartbeat"),
    ("bridge", ["simulate", "--tcp", "70000"], "--tcp"),
    ("bridge", ["simulate"], "one of the arguments --pty --tcp is required"),
    ("bridge", ["listen"], "url"),
    ("bridge", ["listen", "loop://", "--baudrate", "0"], "--baudrate"),
    ("bridge", ["--data", "x.npz", "listen", "loop://"], "--data applies to 'edge-bridge simulate' only"),
    ("bridge", ["simulate", "--pty", "--data", "{T}/no/such.npz"], "no such file"),
    ("bridge", ["teleport"], "invalid choice"),
    # edge-bench
    ("bench", ["fastest"], "invalid choice"),
    ("bench", ["crash", "--kills", "0"], "--kills"),
    ("bench", ["latency", "--out", "/proc/no-such-dir"], "cannot write results"),
    ("bench", ["latency", "--bundle", "{T}/none"], "no such folder"),
    ("bench", ["latency", "--bundle", "{B}", "--json", "{T}/no/such/x.json", "--out", "{T}/bench"], "--json"),
    # edge-keys, and the daemon's CurveZMQ settings (docs/security.md)
    ("keys", [], "required"),
    ("keys", ["new", "--dir", "{T}/keys", "--name", "daemon"], "already exists"),
    ("keys", ["new", "--dir", "{T}/keys", "--name", "a/b"], "use letters, digits"),
    ("keys", ["show", "{T}/a-file"], "not a ZeroMQ certificate"),
    ("daemon", [*D, "--control", "tcp://0.0.0.0:*"], "never served unauthenticated"),
    ("daemon", [*D, "--curve", "input,journal"], "unknown socket(s) ['journal']"),
    ("daemon", [*D, "--curve", "output", "--curve-secret-key", "{T}/keys/daemon.key",
                "--curve-authorized-dir", "{T}/keys"], "holds only a public key"),
    # edge-eval
    ("eval", [], "required"),
    ("eval", ["novelty"], "--out"),
    ("eval", ["novelty", "--out", "{T}/e", "--quantile", "2"], "probability"),
    ("eval", ["novelty", "--out", "{T}/e", "--ks", "0"], "--ks"),
    ("eval", ["novelty", "--out", "{T}/e", "--folds", "0"], "--folds"),
]

MAINS = {"train": train_main, "export": export_main, "daemon": daemon_main, "demo": demo_main,
         "bridge": bridge_main, "bench": bench_main, "eval": eval_main, "keys": keys_main}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, synthetic_bundle):
    """The files the cases point at."""
    t = tmp_path_factory.mktemp("cli_errors")
    (t / "not-a-zip.npz").write_bytes(b"this is not a zip archive\n" * 4)
    axis = np.arange(200.0, 1592.0)
    (t / "headerless.txt").write_text("".join(f"{x:.1f}\t{np.exp(-((x - 900) / 20) ** 2):.5f}\n" for x in axis))
    np.savez(t / "foreign.npz", X=np.random.default_rng(0).random((6, axis.size)).astype(np.float32),
             y=np.array(["Quartz", "Calcite"] * 3), raman_shift_cm1=axis)
    (t / "a-file").write_text("x")
    new_key_pair(t / "keys", "daemon")
    (t / "full").mkdir()
    (t / "full" / "notes.txt").write_text("mine")
    (t / "broken.toml").write_text("[daemon\nbundle = ")
    (t / "lots.toml").write_text(f'[daemon]\nbundle = "{synthetic_bundle}"\nmax_batch = "lots"\n')
    (t / "unknown.toml").write_text(f'[daemon]\nbundle = "{synthetic_bundle}"\nbundel = "x"\n')
    (t / "bool-threads.toml").write_text(f'[daemon]\nbundle = "{synthetic_bundle}"\nthreads = true\n')
    (t / "bad-grid.toml").write_text(f'[daemon]\nbundle = "{synthetic_bundle}"\n[instrument]\ngrid = 5\n')
    (t / "bad-instrument.toml").write_text(f'instrument = 5\n[daemon]\nbundle = "{synthetic_bundle}"\n')
    other = t / "other-axis"  # the same model, recorded on another Raman-shift axis
    shutil.copytree(synthetic_bundle, other)
    m = json.loads((other / "manifest.json").read_text())
    m["raman_shift"]["start_cm1"] = m["preprocessing"]["grid"]["start_cm1"] = 150.0
    (other / "manifest.json").write_text(json.dumps(m))
    return t


def run_main(script: str, argv: list[str]) -> tuple[int, str, str]:
    """Run a console script's main in-process; returns (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = MAINS[script](argv)
    finally:
        for h in root.handlers[:]:  # setup_logging's handler points at the captured stream
            if h not in handlers:
                root.removeHandler(h)
    return code, out.getvalue(), err.getvalue()


def test_the_table_covers_every_console_script_and_at_least_60_cases():
    assert len(CASES) >= 60 and {c[0] for c in CASES} == set(MAINS)


@pytest.mark.parametrize(("script", "argv", "expect"), CASES,
                         ids=[f"{c[0]}:{' '.join(c[1])[:60]}" for c in CASES])
def test_user_error_is_one_line_and_exit_1(script, argv, expect, scratch, synthetic_bundle):
    argv = [a.replace("{B}", str(synthetic_bundle)).replace("{T}", str(scratch)) for a in argv]
    code, out, err = run_main(script, argv)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 1, (code, out[-500:], err[-1500:])
    assert len(errors) == 1, err
    assert expect in errors[0], errors[0]
    assert "Traceback" not in err + out
    assert "allow_pickle" not in err


def test_help_of_every_script_prints_and_exits_0():
    for script, argv in (("train", ["--help"]), ("export", ["--help"]), ("daemon", ["--help"]), ("demo", ["--help"]),
                         ("bridge", ["simulate", "--help"]), ("bench", ["--help"]), ("eval", ["novelty", "--help"]),
                         ("keys", ["new", "--help"])):
        code, out, err = run_main(script, argv)
        assert code == 0 and "usage:" in out and "Traceback" not in err, (script, err)
        assert "{'" not in out, f"{script} --help is garbled: {out[:300]}"  # an unescaped % dumps argparse's dict


def test_bundle_refused_without_force_is_untouched_and_force_replaces_it(tmp_path, synthetic_bundle):
    from edge.bundle import Bundle

    copy = tmp_path / "b"
    shutil.copytree(synthetic_bundle, copy)
    (copy / "stale.onnx").write_bytes(b"old")
    code, _, err = run_main("train", ["--train", "synthetic:train", "--out", str(copy), "--steps", "5", "-q",
                                      "--no-progress"])
    assert code == 1 and "pass --force" in err and (copy / "stale.onnx").exists()
    code, _out, err = run_main("train", ["--train", "synthetic:train", "--out", str(copy), "--steps", "5", "-q",
                                        "--no-progress", "--force"])
    assert code == 0, err
    assert not (copy / "stale.onnx").exists() and not (copy / "model.onnx").exists()
    assert set(Bundle.load(copy).manifest["files"]) >= {"model.pt"}


def test_demo_where_nothing_arrives_is_one_error_line(monkeypatch):
    import edge.demo

    nothing = {"sent": 3, "received": 0, "lost": 3, "rejected": 0, "top1_accuracy": None, "matches_offline": False,
               "latency_ms": {"p50": None, "p99": None, "max": None}, "throughput_spectra_per_s": None,
               "send_rate_hz": 500.0}
    monkeypatch.setattr(edge.demo, "run_demo", lambda args: dict(nothing))
    code, out, err = run_main("demo", ["--timeout", "0.5"])
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 1 and len(errors) == 1 and "no prediction arrived within --timeout 0.5 s" in errors[0]
    assert "Traceback" not in err
    # a run where some arrived but no latency figure exists still prints its summary
    monkeypatch.setattr(edge.demo, "run_demo", lambda args: {**nothing, "received": 1, "lost": 2})
    code, out, err = run_main("demo", [])
    assert code == 2 and "p50 n/a" in out and "throughput n/a" in out


def test_run_cli_maps_exits_to_the_convention():
    from edge.cli_common import run_cli

    def raising(code):
        def main(argv):
            raise SystemExit(code)
        return main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert run_cli(raising(2), [], "x") == 1  # argparse's usage error
        assert run_cli(raising(0), [], "x") == 0  # --help
        assert run_cli(raising(None), [], "x") == 0
        assert run_cli(raising("no embedding output"), [], "x") == 1
    assert err.getvalue() == "x: error: no embedding output\n"
