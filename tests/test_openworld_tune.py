"""Fine-tuning the HD head on frozen evidence (`training.openworld.tune`): a graph shaped like the real
head (GAP, LayerNorm, Dense, GELU, Dense, Sigmoid) whose head is wrong for its features."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

pytest.importorskip("tensorflow")
ort = pytest.importorskip("onnxruntime")

from head_graphs import head_graph  # noqa: E402

from training.openworld.head_graph import head_weights  # noqa: E402
from training.openworld.tune import tune_head  # noqa: E402

F, H, K = 8, 16, 2


def evidence(rng: np.random.Generator, photos: int) -> dict[str, np.ndarray]:
    """Rows like `run._stack`'s: class 0 is feature 0 > 0, class 1 feature 1 > 0; class 1 unknown in set 1."""
    f = rng.normal(0, 1, (photos, 6, F)).astype(np.float32)
    y = (f[..., :K] > 0).astype(np.float32)
    sets = np.arange(photos) % 2
    y[sets == 1, :, 1] = -1.0
    return {"features": f, "targets": y, "set": sets}


def test_tuning_lowers_the_held_out_loss_and_the_graph_computes_the_tuned_head(tmp_path):
    rng = np.random.default_rng(0)
    onnx.save(head_graph(rng, F, H, K), str(tmp_path / "hd.onnx"))
    names, eps = head_weights(onnx.load(str(tmp_path / "hd.onnx")))
    assert names == ["gamma", "beta", "w1", "b1", "w2", "b2"] and eps == pytest.approx(1e-3)
    fit, held = evidence(rng, 600), evidence(rng, 200)
    report, logits = tune_head(tmp_path / "hd.onnx", fit, held, tmp_path / "tuned.onnx", lr=3e-3, epochs=6, batch=64)
    assert report["kept_epoch"] > 0 and min(report["held_loss"]) < 0.7 * report["held_loss"][0]
    x = held["features"].reshape(-1, F)
    sess = ort.InferenceSession(str(tmp_path / "tuned.onnx"), providers=["CPUExecutionProvider"])
    scores = sess.run(None, {"images": np.repeat(np.repeat(x[:, None, None, :], 4, 1), 4, 2)})[0]
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-logits(x))), atol=1e-4)
    acc = ((scores[:, 0] > 0.5) == (x[:, 0] > 0)).mean()
    assert acc > 0.85  # the tuned head has learnt what feature 0 says (an untuned one: about half)


def test_a_head_of_another_shape_is_refused():
    model = head_graph(np.random.default_rng(0), F, H, K)
    ln = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
    model.graph.node.remove(ln)
    for node in model.graph.node:
        node.input[:] = ["pooled" if i == "ln" else i for i in node.input]
    with pytest.raises(ValueError, match="LayerNorm"):
        head_weights(model)
