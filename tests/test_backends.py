"""Every registered inference backend meets the InferenceBackend protocol (parity test)."""

import numpy as np
import pytest

from edge.backends import BACKENDS, InferenceBackend, OnnxRuntimeBackend, create_backend
from edge.bundle import Bundle
from edge.errors import BackendError


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_backend_meets_protocol(name):
    cls = BACKENDS[name]
    for method in ("load", "infer", "warmup", "describe", "close", "__enter__", "__exit__"):
        assert callable(getattr(cls, method, None)), f"{name} lacks {method}"
    assert isinstance(cls.name, str)


def test_onnxruntime_backend_lifecycle(synthetic_bundle):
    b = Bundle.load(synthetic_bundle)
    path, precision = b.onnx_model("fp32")
    backend = create_backend("onnxruntime", path, precision=precision)
    assert isinstance(backend, InferenceBackend)
    shape = b.preprocessing.sample_shape
    with pytest.raises(BackendError, match="before load"):
        backend.infer(np.zeros((1, *shape), np.float32))
    with backend:
        with pytest.raises(BackendError, match="inference failed"):
            backend.infer(np.zeros((3, 7), np.float32))  # wrong shape: a clear error, not a crash
        out = backend.infer(np.zeros((3, *shape), np.float32))
        assert out["probabilities"].shape == (3, len(b.labels))
        np.testing.assert_allclose(out["probabilities"].sum(1), 1.0, rtol=1e-5)
        assert backend.describe()["backend"] == "onnxruntime"


def test_unknown_backend_and_bad_model(tmp_path):
    with pytest.raises(BackendError, match="unknown inference backend"):
        create_backend("cuda-magic", "x.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(BackendError, match="cannot load"):
        OnnxRuntimeBackend(bad).load()
