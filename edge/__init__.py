"""sixview's runtime: ONNX Runtime, OpenCV and Pillow; never TensorFlow (docs/ARCHITECTURE.md)."""

import os

MAX_PIXELS = 100_000_000  # images declaring more pixels are refused before decoding (--max-pixels)
# OpenCV reads its own decoding limit once, when it is imported: set it before any module imports cv2.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))
