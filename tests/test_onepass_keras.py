"""Parity of the one-pass graph with Keras: a Keras model exported as the runtime's per-view graph, rewritten
by `convert.onepass`, against the same Keras layers run on the frame with each view's window averaged."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
ort = pytest.importorskip("onnxruntime")

import keras  # noqa: E402

from convert.export import export_onnx  # noqa: E402
from convert.onepass import STRIDE, one_pass, windows  # noqa: E402


def test_one_pass_graph_matches_keras_on_the_views_windows():
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    for filters in (8, 12, 16, 16, 24):  # stride 32, as the real backbones
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu6")(x)
    backbone = keras.Model(inp, x)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(4, activation="sigmoid")
    model = keras.Model(inp, dense(pooled))
    graph = one_pass(export_onnx(model, (224, 224)), grid=10)
    frames = np.random.default_rng(1).uniform(0, 255, (3, 320, 320, 3)).astype(np.float32)
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": frames})[0]
    fmap = np.asarray(backbone(frames))  # (N, 10, 10, C)
    rows = np.stack([fmap[:, y0:y1, x0:x1].mean((1, 2)) for x0, y0, x1, y1 in windows(10, 0.6)], 1)
    want = np.asarray(dense(rows.reshape(-1, rows.shape[-1])))
    assert got.shape == (3 * 6, 4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert fmap.shape[1] * STRIDE == 320
