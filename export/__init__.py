"""Workstation exporter: ONNX FP32, static QDQ INT8 with an accuracy gate, TensorRT engines."""
