"""Step 1 of the export: PyTorch model of a bundle → FP32 ONNX with a dynamic batch and metadata."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import torch

from edge.bundle import Bundle
from trainer.bundle_io import backbone_sha256, load_model
from trainer.model import RamanCNN

from .errors import ExportError

__all__ = ["FP32_FILE", "INPUT_NAME", "OPSET", "OUTPUT_NAMES", "export_fp32"]

FP32_FILE = "model.onnx"
INPUT_NAME = "spectra"  # also export.quantize.INPUT_NAME (kept free of torch)
OUTPUT_NAMES = ("logits", "probabilities", "embedding")  # embedding: for onboard head swaps (edge.heads)
OPSET = 18
log = logging.getLogger("export")


class _NoTorchvisionNotice(logging.Filter):
    """Drops the exporter's "torchvision is not installed. Skipping torchvision::nms" (and roi_align, roi_pool,
    deform_conv2d) warnings: the registry announces every torchvision op it cannot register, on every export,
    though these models use none of them. Only that message of that one logger is filtered.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("torchvision is not installed")


_REGISTRATION_LOGGER = logging.getLogger("torch.onnx._internal.exporter._registration")
if not any(isinstance(f, _NoTorchvisionNotice) for f in _REGISTRATION_LOGGER.filters):
    _REGISTRATION_LOGGER.addFilter(_NoTorchvisionNotice())


class _WithSoftmax(torch.nn.Module):
    def __init__(self, model: RamanCNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, spectra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        embedding = self.model.embedding(spectra)
        logits = self.model.classifier(embedding)
        return logits, torch.softmax(logits, dim=1), embedding


def onnx_metadata(bundle: Bundle) -> dict[str, str]:
    """Metadata written into every ONNX file: grid, preprocessing, labels, model id (JSON strings)."""
    m = bundle.manifest
    return {
        "raman_edge.schema_version": str(m["schema_version"]),
        "raman_edge.model_id": bundle.model_id,
        "raman_edge.raman_shift": json.dumps(m["raman_shift"]),
        "raman_edge.preprocessing": json.dumps(m["preprocessing"]),
        "raman_edge.labels": json.dumps(m["labels"]),
    }


def set_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Replace the model's metadata with ``metadata`` and strip what an edge device does not need: per-node
    metadata (the dynamo exporter stores stack traces there), doc strings, intermediate value_info, and long
    internal tensor and node names (renamed ``t0, t1, …`` / ``n0, n1, …``; graph inputs and outputs keep theirs).
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    internal = [i.name for i in graph.initializer] + [o for n in graph.node for o in n.output]
    short = {name: f"t{i}" for i, name in enumerate(dict.fromkeys(x for x in internal if x and x not in keep))}
    for i in graph.initializer:
        i.name = short.get(i.name, i.name)
    for k, node in enumerate(graph.node):
        del node.metadata_props[:]
        node.doc_string = ""
        node.name = f"n{k}"
        for j, x in enumerate(node.input):
            node.input[j] = short.get(x, x)
        for j, x in enumerate(node.output):
            node.output[j] = short.get(x, x)
    del graph.value_info[:]
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def export_fp32(bundle: Bundle, out_name: str = FP32_FILE) -> Path:
    """Export the bundle's PyTorch classifier to FP32 ONNX and record it in the manifest.

    Input ``spectra`` shape (batch, N), or (batch, C, N) with C preprocessing channels, float32 (preprocessed,
    N = grid points); outputs ``logits`` and
    ``probabilities``, shape (batch, K) float32, and ``embedding``, shape (batch, D) float32 (the backbone
    features the classifier reads; the daemon applies an uplinked head to it, see :mod:`edge.heads`).
    Records ``manifest["model"]["backbone_sha256"]`` when an older bundle lacks it.

    Raises
    ------
    ExportError
        If the exporter fails.
    """
    model = load_model(bundle)
    bundle.manifest["model"].setdefault("backbone_sha256", backbone_sha256(model))
    path = bundle.path / out_name
    channels = bundle.preprocessing.n_channels
    example = torch.zeros((2, channels, bundle.grid.n_points) if channels > 1 else (2, bundle.grid.n_points))
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "torch._export"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _WithSoftmax(model), (example,), str(path), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, opset_version=OPSET,
                external_data=False, verbose=False,
            )
    except Exception as exc:  # the exporter raises many unrelated types
        raise ExportError(f"ONNX export failed: {exc}") from exc
    set_metadata(path, onnx_metadata(bundle))
    bundle.add_file(out_name, role="onnx-fp32", opset=OPSET, input=INPUT_NAME, outputs=list(OUTPUT_NAMES))
    bundle.save()
    log.info("wrote %s (%d bytes)", path, path.stat().st_size)
    return path
