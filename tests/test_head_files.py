"""Head files (edge.heads) as an untrusted input: integrity of every array that decides the output (issue #17)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from edge.errors import HeadError
from edge.heads import load_head, make_head

BACKBONE = "ab" * 32


def _head(dtype: str = "int8"):
    rng = np.random.default_rng(3)
    return make_head(rng.standard_normal((5, 16)), rng.standard_normal(5), [f"m{i}" for i in range(5)], BACKBONE,
                     "v-test", dtype=dtype)


def _arrays(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {n: z[n] for n in z.files}


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_an_edited_bias_is_refused(dtype):
    h = _head(dtype)
    assert np.array_equal(load_head(h.to_bytes()).bias, h.bias)  # the untouched file loads
    arrays = _arrays(h.to_bytes())
    arrays["bias"] = arrays["bias"].copy()
    arrays["bias"][2] += 50.0  # would make class m2 win every prediction
    with pytest.raises(HeadError, match="SHA-256"):
        load_head(_npz(arrays))


def test_format_version_1_is_refused_with_its_reason():
    """Version 1's hash left the bias out: such a file could carry an edited bias, so it is refused, clearly."""
    arrays = _arrays(_head().to_bytes())
    meta = json.loads(str(arrays["meta"][()]))
    arrays["meta"] = np.array(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(HeadError, match=r"format version 1 is no longer accepted.*bias"):
        load_head(_npz(arrays))
