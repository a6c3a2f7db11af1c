"""The bundle contract: schema version, Raman-shift axis and file hashes are checked at load."""

import json

import pytest

from edge.bundle import SCHEMA_VERSION, Bundle
from edge.errors import BundleError
from edge.preprocess import PreprocessConfig, RamanGrid


@pytest.fixture
def bundle(tmp_path):
    b = Bundle.create(tmp_path / "b", preprocessing=PreprocessConfig(), labels=["Quartz", "Calcite"], model={"architecture": "x"})
    (b.path / "weights.bin").write_bytes(b"\x00" * 64)
    b.add_file("weights.bin")
    b.save()
    return b.path


def test_round_trip(bundle):
    b = Bundle.load(bundle)
    assert b.labels == ["Quartz", "Calcite"] and b.grid == RamanGrid()
    assert b.manifest["schema_version"] == SCHEMA_VERSION
    assert b.preprocessing == PreprocessConfig()


def _edit(bundle, fn):
    m = json.loads((bundle / "manifest.json").read_text())
    fn(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


def test_other_schema_version_is_refused(bundle):
    _edit(bundle, lambda m: m.update(schema_version=99))
    with pytest.raises(BundleError, match="schema version 99 is not supported"):
        Bundle.load(bundle)


def test_axis_mismatch_is_refused(bundle):
    with pytest.raises(BundleError, match=r"Raman-shift axis .* does not match"):
        Bundle.load(bundle, expect_grid=RamanGrid(100.0, 2.0, 1392))


def test_tampered_file_is_refused(bundle):
    (bundle / "weights.bin").write_bytes(b"\x01" * 64)
    with pytest.raises(BundleError, match="SHA-256"):
        Bundle.load(bundle)


def test_missing_pieces(tmp_path, bundle):
    with pytest.raises(BundleError, match="not a model bundle"):
        Bundle.load(tmp_path)
    _edit(bundle, lambda m: m.pop("labels"))
    with pytest.raises(BundleError, match="lacks"):
        Bundle.load(bundle)


def test_missing_precision_is_an_error_not_a_downgrade(bundle):
    b = Bundle.load(bundle)
    with pytest.raises(BundleError, match="no INT8 ONNX"):
        b.onnx_model("int8")
