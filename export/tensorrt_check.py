"""Static check: does a QDQ ONNX model meet what TensorRT's explicit quantisation needs?

A workstation without a GPU cannot build a TensorRT engine, but it can read the graph and tell whether the
device will be able to. The rules (NVIDIA TensorRT Developer Guide, "Explicit Quantization" / "Q/DQ Layer
Placement"; onnx-tensorrt operator support matrix):

1. **Q/DQ only**: quantisation is expressed with ``QuantizeLinear``/``DequantizeLinear`` pairs; the
   QOperator forms (``QLinearConv``, ``ConvInteger``, ``QLinearMatMul``, ``MatMulInteger``, ...) are not
   parsed.
2. **Symmetric int8**: every zero point is 0 and of type int8 (TensorRT has no asymmetric quantisation and
   no uint8 or int32 Q/DQ; a quantised int32 bias, onnxruntime's default, is refused).
3. **Scales** are positive and finite.
4. **Standard operators**: every node is in the default ONNX domain (no ``com.microsoft`` contrib ops).
5. **Opset** of the default domain in :data:`SUPPORTED_OPSETS` (per-axis Q/DQ needs opset 13; the
   TensorRT 10 ONNX parser reads opsets up to 20).

``edge-export --int8`` runs :func:`check_tensorrt_qdq` on the INT8 model, prints the verdict and records it
in the manifest's export section (``metrics.export.tensorrt``); ``--tensorrt`` quantises so that the rules
are met (symmetric activations, float bias).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExportError

__all__ = ["QOPERATOR_OPS", "SUPPORTED_OPSETS", "check_tensorrt_qdq", "describe_check"]

#: Default-domain opsets the TensorRT 10 ONNX parser reads that also allow per-axis Q/DQ (opset ≥ 13).
SUPPORTED_OPSETS = range(13, 21)
#: Quantised operators of the QOperator format, which TensorRT does not parse.
QOPERATOR_OPS = frozenset({"QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "QLinearAdd",
                           "QLinearMul", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearLeakyRelu",
                           "QLinearSigmoid", "QLinearSoftmax", "QLinearConcat", "QGemm", "DynamicQuantizeLinear"})
_QDQ = ("QuantizeLinear", "DequantizeLinear")


def check_tensorrt_qdq(path: str | Path) -> dict[str, Any]:
    """Check an ONNX model against TensorRT's explicit-quantisation rules (see the module docstring).

    Parameters
    ----------
    path : path-like
        ONNX model (static QDQ INT8, as written by :func:`export.quantize.quantize_int8`).

    Returns
    -------
    dict
        ``meets_rules`` (bool), ``violations`` (list of str, one per broken rule, with counts and examples),
        ``opset`` (int), ``qdq_nodes`` (int), ``rules`` (str: what was checked).

    Raises
    ------
    ExportError
        If onnx is not installed or the file is not a readable ONNX model.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise ExportError("the TensorRT check needs onnx: pip install 'raman-edge[export]'") from exc
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise ExportError(f"{path}: not a readable ONNX model: {exc}") from exc
    graph = model.graph
    consts = {i.name: i for i in graph.initializer}
    for node in graph.node:  # Constant nodes hold scales/zero points in some exporters
        value = next((a.t for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is not None:
            consts[node.output[0]] = value
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    violations: list[str] = []

    def note(rule: str, examples: list[str]) -> None:
        if examples:
            more = f" (and {len(examples) - 3} more)" if len(examples) > 3 else ""
            violations.append(f"{rule}: {len(examples)} node(s), e.g. {', '.join(examples[:3])}{more}")

    note("QOperator nodes (TensorRT parses only QuantizeLinear/DequantizeLinear)",
         [f"{n.op_type} {n.name!r}" for n in graph.node if n.op_type in QOPERATOR_OPS])
    note("non-standard operator domains", [f"{n.domain}:{n.op_type}" for n in graph.node if n.domain not in ("", "ai.onnx")])
    nonzero, not_int8, bad_scale = [], [], []
    qdq = [n for n in graph.node if n.op_type in _QDQ]
    for n in qdq:
        zp = consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zp is None:  # no zero point: uint8 per the ONNX spec for QuantizeLinear; DequantizeLinear of a weight
            if n.op_type == "QuantizeLinear":
                not_int8.append(f"{n.name!r} (no zero point: uint8)")
            continue
        if zp.data_type != onnx.TensorProto.INT8:
            not_int8.append(f"{n.name!r} ({onnx.TensorProto.DataType.Name(zp.data_type).lower()})")
        if np.any(numpy_helper.to_array(zp) != 0):
            nonzero.append(repr(n.name))
        scale = consts.get(n.input[1])
        if scale is not None:
            s = numpy_helper.to_array(scale)
            if not (np.all(np.isfinite(s)) and np.all(s > 0)):
                bad_scale.append(repr(n.name))
    note("non-zero zero points (TensorRT quantisation is symmetric)", nonzero)
    note("Q/DQ of a type other than int8 (e.g. uint8, or an int32 quantised bias)", not_int8)
    note("scales not positive and finite", bad_scale)
    if not qdq:
        violations.append("no QuantizeLinear/DequantizeLinear nodes: not a QDQ model")
    if opset not in SUPPORTED_OPSETS:
        violations.append(f"opset {opset} outside {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")
    return {"meets_rules": not violations, "violations": violations, "opset": int(opset), "qdq_nodes": len(qdq),
            "rules": "Q/DQ only (no QOperator ops); symmetric int8 (zero points 0, int8); positive scales; "
                     f"default ONNX domain; opset {SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1}"}


def describe_check(result: dict[str, Any]) -> str:
    """One line for the terminal: the verdict and, when not met, the broken rules."""
    if result["meets_rules"]:
        return f"TensorRT explicit quantisation: rules met ({result['qdq_nodes']} Q/DQ nodes, opset {result['opset']})"
    return ("TensorRT explicit quantisation: rules NOT met (" + "; ".join(result["violations"])
            + "); export with --tensorrt for a model TensorRT can build")
