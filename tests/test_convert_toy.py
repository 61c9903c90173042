"""The synthetic colour-detector model scores as specified (no TensorFlow needed)."""

import time

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from convert.toy import colour_model, save_colour_model  # noqa: E402
from edge.metadata import ModelMeta  # noqa: E402


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _patch(fraction, colour, size=(32, 32)):
    x = np.zeros((*size, 3), np.float32)
    n = int(round(fraction * size[0] * size[1]))
    x.reshape(-1, 3)[:n] = colour
    return x


def test_scores_follow_colour_fraction():
    sess = _session(colour_model())
    batch = np.stack([
        _patch(0.08, (255, 0, 0)),
        _patch(0.025, (0, 255, 0)),
        _patch(0.0, (0, 0, 255)),
        _patch(0.10, (235, 25, 15)),  # near red still counts
        np.full((32, 32, 3), 128, np.float32),  # grey: nothing
    ])
    s = sess.run(None, {"images": batch})[0]
    assert s.shape == (5, 3) and s.dtype == np.float32
    assert s[0, 0] > 0.9 and s[0, 1:].max() < 0.15
    assert s[1, 1] < 0.15
    assert s[2].max() < 0.15
    assert s[3, 0] > 0.9
    assert s[4].max() < 0.15


def test_metadata_round_trip_and_options(tmp_path):
    p = save_colour_model(tmp_path / "hd.onnx", classes=("cyan", "magenta"),
                          colours=((0, 255, 255), (255, 0, 255)), input_size=(24, 40), role="hd")
    sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    meta = ModelMeta.from_props(sess.get_modelmeta().custom_metadata_map, str(p))
    assert meta.classes == ("cyan", "magenta") and meta.role == "hd"
    assert meta.input_size == (24, 40) and meta.thresholds == {"cyan": 0.30, "magenta": 0.30}
    x = _patch(0.5, (0, 255, 255), (24, 40))[None].repeat(3, 0)  # dynamic batch
    s = sess.run(None, {"images": x})[0]
    assert s.shape == (3, 2) and (s[:, 0] > 0.9).all() and (s[:, 1] < 0.15).all()
    with pytest.raises(ValueError):
        colour_model(classes=("a",), colours=((1, 2, 3), (4, 5, 6)))


def test_delay_variant_is_slower_with_same_scores():
    x = _patch(0.08, (255, 0, 0))[None]
    fast, slow = _session(colour_model()), _session(colour_model(delay_ms=40))
    ref = fast.run(None, {"images": x})[0]
    slow.run(None, {"images": x})
    t0 = time.perf_counter()
    out = slow.run(None, {"images": x})[0]
    assert (time.perf_counter() - t0) > 0.015
    np.testing.assert_allclose(out, ref, atol=1e-6)
