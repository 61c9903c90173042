"""The reference system's path in `benchmarks.reference`: Keras imported and loaded, its preprocessing
(PIL) and timing, the checkpoint an ONNX file came from, and a tiny model for --quick."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks._cli import SetupError
from edge.metadata import ModelMeta
from edge.tiling import view_boxes

QUICK_SIZE = (64, 64)
QUICK_CLASSES = ("airplane", "automobile", "bird")


def import_keras() -> tuple[Any, float]:
    """Keras with sixview's custom layers, and the seconds the import took (the reference path's first
    cold-start cost); SetupError without the training extras."""
    import training  # noqa: F401  (sets TensorFlow's log level; imports nothing heavy)

    t0 = time.perf_counter()  # TensorFlow's import is the reference path's first cold-start cost
    try:
        import keras

        import training.models.layers  # noqa: F401  (registers sixview's custom layers)
    except ImportError as e:
        raise SetupError(f"the reference path needs the training extras: pip install -e '.[train]' ({e})") from e
    return keras, time.perf_counter() - t0


def load_keras(keras: Any, path: Path, size: tuple[int, int], x6: np.ndarray) -> tuple[Any, dict[str, float]]:
    """The Keras model, and its load and first six-view result (s); SetupError when its input is not `size`."""
    t0 = time.perf_counter()
    kmodel = keras.models.load_model(path, compile=False)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    kmodel.predict(x6, verbose=0)
    first_s = time.perf_counter() - t0
    if tuple(kmodel.input_shape[1:3]) != tuple(size):
        raise SetupError(f"Keras input {kmodel.input_shape[1:3]} != ONNX input {size}: not the same model")
    return kmodel, {"load": load_s, "first": first_s}


def _views(im: Image.Image, input_size: tuple[int, int], fraction: float) -> np.ndarray:
    """The six crops of an RGB image, each resized (bicubic) to the model input, as one float32 batch."""
    h, w = input_size
    crops = [im.crop((v.x0, v.y0, v.x1, v.y1)).resize((w, h), Image.BICUBIC)
             for v in view_boxes(im.width, im.height, fraction)]
    return np.stack([np.asarray(c, dtype=np.float32) for c in crops])


def time_reference(model: Any, data: bytes, input_size: tuple[int, int], fraction: float
                   ) -> tuple[dict[str, float], np.ndarray]:
    """One frame the reference way; ms per stage and the merged scores."""
    t0 = time.perf_counter()
    im = Image.open(io.BytesIO(data))
    im.load()
    t1 = time.perf_counter()
    batch = _views(im.convert("RGB"), input_size, fraction)
    t2 = time.perf_counter()
    scores = model.predict(batch, verbose=0)
    t3 = time.perf_counter()
    merged = scores.max(axis=0)
    t4 = time.perf_counter()
    ms = {"decode": (t1 - t0) * 1e3, "preprocess": (t2 - t1) * 1e3, "infer": (t3 - t2) * 1e3,
          "merge": (t4 - t3) * 1e3, "total": (t4 - t0) * 1e3}
    return ms, merged


def quick_models(tmp: Path) -> tuple[Path, Path]:
    """A tiny Keras model (0..255 input, sigmoid head) saved as .keras, and its ONNX
    conversion (tf2onnx) with sixview metadata, for --quick."""
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    from convert.keras3_fixes import keras3_fixes

    keras.utils.set_random_seed(0)
    h, w = QUICK_SIZE
    inp = keras.Input((h, w, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(32, activation="relu")(x)
    out = keras.layers.Dense(len(QUICK_CLASSES), activation="sigmoid", name="scores")(x)
    model = keras.Model(inp, out, name="quick_reference")
    keras_path = tmp / "quick.keras"
    model.save(keras_path)
    spec = (tf.TensorSpec((None, h, w, 3), tf.float32, name="image"),)
    with keras3_fixes():
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    meta = ModelMeta(classes=QUICK_CLASSES, role="hd", input_size=QUICK_SIZE,
                     thresholds={c: 0.3 for c in QUICK_CLASSES}, precision="fp32",
                     provenance={"source": "benchmarks.reference --quick (random weights)"})
    onnx.helper.set_model_props(proto, meta.to_props())
    onnx_path = tmp / "hd.onnx"
    onnx.save(proto, str(onnx_path))
    return keras_path, onnx_path


def keras_from_provenance(meta: ModelMeta, onnx_path: Path) -> Path | None:
    """A .keras checkpoint named in the ONNX file's provenance that exists here, if any."""
    for v in meta.provenance.values():
        if isinstance(v, str) and v.endswith(".keras"):
            for p in (Path(v), onnx_path.parent / v, Path(__file__).resolve().parent.parent / v):
                if p.is_file():
                    return p
    return None
