"""sixview's training stack: data, models, training, adaptation, evaluation, release.

TensorFlow's C++ log level is set here, once, before anything in the package imports TensorFlow.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow logs errors only (no info, no warnings)
