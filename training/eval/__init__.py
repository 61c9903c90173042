"""Evaluation without TensorFlow: the sets scored (sets), scoring ONNX models through `edge`
(scoring), the runtime's decision and threshold calibration (decision), metrics, the report,
writing calibrated thresholds (calibrate)."""
