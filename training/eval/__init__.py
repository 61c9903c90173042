"""Evaluation without TensorFlow: scoring ONNX models through `edge`, metrics, the report,
threshold calibration."""
