"""Head files (edge.heads) as an untrusted input: integrity of every array that decides the output (issue #17)."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile

import msgpack
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


def test_load_head_paths_only_inside_the_heads_folder(tmp_path):
    """Inside the folder (absolute or relative) a head loads; outside it, through a symlink or ``..`` too, the
    refusal is the same message whether or not the file exists (no existence oracle)."""
    from edge.heads import HeadSwitch

    heads_dir, outside = tmp_path / "heads", tmp_path / "elsewhere"
    heads_dir.mkdir()
    outside.mkdir()
    h = _head()
    manifest = {"model": {"backbone_sha256": BACKBONE, "embedding_size": 16},
                "files": {"model.onnx": {"outputs": ["logits", "probabilities", "embedding"]}}, "labels": []}
    sw = HeadSwitch(manifest, heads_dir=heads_dir)
    h.save(heads_dir / "ok.npz")
    h.save(outside / "real.npz")
    (heads_dir / "link.npz").symlink_to(outside / "real.npz")

    def load(path: str) -> dict:
        return sw.handle(msgpack.packb({"cmd": "load_head", "path": path}))

    assert load(str(heads_dir / "ok.npz"))["ok"] is True
    assert load("ok.npz")["ok"] is True  # relative to the heads folder
    refused = {p: load(p) for p in (str(outside / "real.npz"), str(outside / "missing.npz"), str(heads_dir / "link.npz"),
                                    str(heads_dir / ".." / "elsewhere" / "real.npz"), "../elsewhere/missing.npz")}
    for p, reply in refused.items():
        assert reply["ok"] is False and reply["reason"] == "invalid_head", (p, reply)
        assert reply["error"] == f"head path {p!r} is not inside the heads folder {str(heads_dir)!r} (set [daemon] " \
            "heads_dir, or send the head inline)"
    assert load(str(heads_dir / "missing.npz"))["reason"] == "invalid_head"  # inside: the reader says why
    assert sw.handle(msgpack.packb({"cmd": "load_head", "head": h.to_bytes()}))["ok"] is True  # inline: not confined
    assert HeadSwitch(manifest).handle(msgpack.packb({"cmd": "load_head", "path": "ok.npz"}))["ok"] is False


def _bomb(declared_shape: tuple[int, ...], payload_bytes: int) -> bytes:
    """A head archive whose ``weight`` member inflates to ``payload_bytes`` zeros (a ~1000:1 deflate ratio)."""
    good = _arrays(_head("float32").to_bytes())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, a in good.items():
            if name != "weight":
                with zf.open(f"{name}.npy", "w") as f:
                    np.lib.format.write_array(f, a)
        with zf.open("weight.npy", "w", force_zip64=True) as f:
            hdr = io.BytesIO()
            np.lib.format.write_array_header_1_0(hdr, {"descr": "<f4", "fortran_order": False, "shape": declared_shape})
            f.write(hdr.getvalue())
            chunk = bytes(1 << 20)
            for _ in range(payload_bytes >> 20):
                f.write(chunk)
    return buf.getvalue()


def test_a_decompression_bomb_is_refused_before_inflating():
    """A ~1 MB head whose weight inflates to 1 GB is refused from the zip's sizes: peak Python memory (numpy
    allocations included, via tracemalloc) stays far below 64 MB. A member whose .npy header claims more than
    the member holds is refused too (numpy would otherwise allocate the claimed shape)."""
    bomb = _bomb((1 << 18, 1024), 1 << 30)
    assert len(bomb) < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(HeadError, match=r"inflate to 10737\d{5} bytes"):
            load_head(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak
    liar = _bomb((1 << 28, 64), 1 << 20)  # header: 64 GB of float32; member: 1 MB
    with pytest.raises(HeadError, match="needs 68719476736 bytes"):
        load_head(liar)
