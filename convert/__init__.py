"""Keras -> verified, self-describing ONNX (FP32, FP16, optional INT8) for the sixview runtime.

`convert.api.convert_model` is the entry point; `convert.toy` builds synthetic
models without TensorFlow (tests, benchmarks). Importing this package imports
nothing heavy.
"""
