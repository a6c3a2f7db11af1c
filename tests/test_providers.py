"""Execution providers of the onnxruntime backend: an ordered list from config, refused when unavailable,
CPU fallback only when configured, and the provider in use named in the daemon's status message."""

import argparse

import onnxruntime as ort
import pytest

from edge.backends import CPU_PROVIDER, OnnxRuntimeBackend, resolve_providers
from edge.bundle import Bundle
from edge.cli import add_daemon_args, config_from_args
from edge.daemon import Daemon, DaemonConfig
from edge.errors import BackendError, BundleError, ConfigError
from edge.preprocess import RamanGrid

MISSING = "TensorrtExecutionProvider"  # not in the CPU build of onnxruntime this suite runs on


@pytest.fixture(autouse=True)
def _cpu_build():
    if MISSING in ort.get_available_providers():
        pytest.skip("this onnxruntime has the TensorRT provider: the tests need one that is missing")


def test_unavailable_provider_is_refused_with_the_fix():
    with pytest.raises(BackendError, match=r"TensorrtExecutionProvider.*not available.*allow_cpu_fallback"):
        resolve_providers([MISSING, "CUDAExecutionProvider"])
    with pytest.raises(BackendError, match="non-empty strings"):
        resolve_providers(["", CPU_PROVIDER])


def test_cpu_fallback_only_when_configured(caplog):
    assert resolve_providers(None) == [CPU_PROVIDER]
    assert resolve_providers([MISSING], allow_cpu_fallback=True) == [CPU_PROVIDER]
    assert "falling back" in caplog.text


def test_backend_runs_on_the_resolved_provider_and_describes_it(synthetic_bundle):
    path, _ = Bundle.load(synthetic_bundle).onnx_model("fp32")
    with pytest.raises(BackendError, match="not available"):
        OnnxRuntimeBackend(path, providers=[MISSING])
    with OnnxRuntimeBackend(path, providers=[MISSING], allow_cpu_fallback=True) as backend:
        d = backend.describe()
    assert d["provider"] == CPU_PROVIDER and d["requested_providers"] == [MISSING]
    assert backend.active_providers == [CPU_PROVIDER]


def test_daemon_refuses_at_start_and_status_names_the_provider(synthetic_bundle):
    from tests.daemon_harness import RunningDaemon

    with pytest.raises(BackendError, match="not available"):
        Daemon(DaemonConfig(bundle=str(synthetic_bundle), providers=[MISSING]))
    with RunningDaemon(synthetic_bundle, providers=[MISSING], allow_cpu_fallback=True) as d:
        assert d.daemon.status()["providers"] == [CPU_PROVIDER]


def _args(argv):
    p = argparse.ArgumentParser()
    add_daemon_args(p)
    return p.parse_args(argv)


def test_daemon_options_and_toml_types(tmp_path, synthetic_bundle):
    cfg, grid = config_from_args(_args(["--bundle", "B", "--providers", f"{MISSING},CUDAExecutionProvider",
                                        "--allow-cpu-fallback"]))
    assert cfg.providers == [MISSING, "CUDAExecutionProvider"] and cfg.allow_cpu_fallback
    assert grid == RamanGrid()  # no config: the default instrument grid is still checked
    toml = tmp_path / "d.toml"
    toml.write_text('[daemon]\nbundle = "B"\nproviders = ["CUDAExecutionProvider"]\nallow_cpu_fallback = true\n'
                    '[instrument]\ngrid = "bundle"\n')
    cfg, grid = config_from_args(_args(["--config", str(toml)]))
    assert cfg.providers == ["CUDAExecutionProvider"] and grid is None
    for bad, msg in (('max_batch = "lots"', "daemon.max_batch must be an integer"),
                     ("providers = \"CPUExecutionProvider\"", "daemon.providers must be a list"),
                     ("novelty = 1", "daemon.novelty must be true or false"),
                     ("status_interval_s = nan", "finite"),
                     ("threads = true", "daemon.threads must be an integer")):
        toml.write_text(f'[daemon]\nbundle = "B"\n{bad}\n')
        with pytest.raises(ConfigError, match=msg):
            config_from_args(_args(["--config", str(toml)]))
    with pytest.raises(ConfigError, match="top_k = 99 exceeds the bundle's 12 classes"):
        Daemon(DaemonConfig(bundle=str(synthetic_bundle), top_k=99))


def test_daemon_axis_is_checked_without_a_config(synthetic_bundle):
    with pytest.raises(BundleError, match="does not match the expected axis"):
        cfg, grid = config_from_args(_args(["--bundle", str(synthetic_bundle), "--instrument-grid", "100,1,1392"]))
        Daemon(cfg, expect_grid=grid)
