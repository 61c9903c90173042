"""Keras -> verified, self-describing ONNX (FP32, FP16, optional INT8) for the sixview runtime.

`convert.api.convert_model` is the entry point; `convert.toy` builds synthetic
models without TensorFlow (tests, benchmarks). Importing this package imports
nothing heavy. TensorFlow's C++ log level is set here, once, before anything in the
package imports TensorFlow.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow logs errors only (no info, no warnings)
