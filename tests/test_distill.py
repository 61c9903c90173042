"""The backbone read back from its exported graph (`training.models.from_onnx`) and distilled for one pass
(`training.openworld.distill`), and the open-world run (`training.openworld.run`) on it: a real
EfficientNet-Lite0 with random batch-norm statistics, exported as the shipped HD file is."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
ort = pytest.importorskip("onnxruntime")

import keras  # noqa: E402
import onnx  # noqa: E402

from convert.export import export_onnx  # noqa: E402
from convert.metadata import attach, build_meta  # noqa: E402
from convert.onepass import one_pass  # noqa: E402
from training.models.factory import build_model  # noqa: E402
from training.models.from_onnx import load_backbone, write_kernels  # noqa: E402

ARCH, K, SIZE = "efficientnet-lite0", 3, 64


def _run(model, images: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: images})[0]


@pytest.fixture(scope="module")
def exported():
    """(Keras model with random weights and batch-norm statistics, its exported ONNX graph)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(ARCH, K, SIZE)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c),
                               rng.uniform(0.5, 2.0, c)])
    for name in ("head_dense", "predictions"):  # biases that are not zero, which tf2onnx would drop
        w, b = model.get_layer(name).get_weights()
        model.get_layer(name).set_weights([w, rng.normal(0, 0.1, b.shape)])
    return model, export_onnx(model, (SIZE, SIZE))


def test_the_backbone_read_back_computes_what_the_graph_does(exported):
    model, graph = exported
    fresh = build_model(ARCH, K, SIZE)
    fresh.get_layer("head_layernorm").set_weights(model.get_layer("head_layernorm").get_weights())
    for name in ("head_dense", "predictions"):
        fresh.get_layer(name).set_weights(model.get_layer(name).get_weights())
    assert load_backbone(fresh, graph) == sum(isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D |
                                                         keras.layers.BatchNormalization) for layer in fresh.layers)
    images = np.random.default_rng(1).uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32)
    want = _run(graph, images)
    np.testing.assert_allclose(np.asarray(fresh(images)), want, atol=2e-5)
    assert np.ptp(want) > 0.05  # the comparison is not between constant outputs


def _perturbed(graph, seed: int):
    """(Keras model read back from `graph` with every kernel scaled by U(0.7, 1.3), a copy of `graph` holding
    those kernels)."""
    fresh = build_model(ARCH, K, SIZE)
    load_backbone(fresh, graph)
    rng = np.random.default_rng(seed)
    for layer in fresh.layers:  # what training changes: the kernels
        if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D):
            w = layer.get_weights()[0]
            layer.set_weights([w * rng.uniform(0.7, 1.3, w.shape).astype(np.float32)])
    copy = onnx.ModelProto()
    copy.CopyFrom(graph)
    assert write_kernels(fresh, copy) == sum(isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D)
                                             for layer in fresh.layers)
    return fresh, copy


def test_kernels_written_back_are_the_graphs(exported):
    model, graph = exported
    fresh, copy = _perturbed(graph, 2)
    feats = keras.Model(fresh.input, fresh.get_layer("head_gap").output)
    images = np.random.default_rng(3).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    assert not np.allclose(_run(graph, images), _run(copy, images), atol=1e-4)  # the kernels changed the graph
    again = build_model(ARCH, K, SIZE)
    load_backbone(again, copy)  # and reading the rewritten graph gives the changed network back
    np.testing.assert_allclose(np.asarray(keras.Model(again.input, again.get_layer("head_gap").output)(images)),
                               np.asarray(feats(images)), atol=2e-5)


def test_distillation_learns_the_views_features_and_the_one_pass_graph_computes_the_student(exported, tmp_path):
    from edge.preprocess import render_views
    from edge.tiling import view_boxes
    from training.openworld.distill import Rows, distil, student
    from training.openworld.head_graph import head_tensors

    model, graph = exported
    graph = attach(graph, build_meta(["a", "b", "c"], "hd", (SIZE, SIZE), "fp32"))
    src = tmp_path / "hd.onnx"  # the student starts away from the teacher (`graph`), which it can match
    src.write_bytes(attach(_perturbed(graph, 5)[1], build_meta(["a", "b", "c"], "hd", (SIZE, SIZE), "fp32"))
                    .SerializeToString())
    rng = np.random.default_rng(4)
    frames = rng.uniform(0, 255, (6, 320, 320, 3)).astype(np.uint8)  # fine detail: seen whole, not in the views
    views = np.empty((6 * 6, SIZE, SIZE, 3), np.uint8)  # each frame's six views, as the per-view model sees them
    for n, f in enumerate(frames):
        render_views(f, view_boxes(320, 320), (SIZE, SIZE), views[6 * n:6 * n + 6])
    probe = onnx.ModelProto()
    probe.CopyFrom(graph)
    probe.graph.output.extend([onnx.helper.make_empty_tensor_value_info(n) for n in head_tensors(probe)])
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    f, z = sess.run(list(head_tensors(probe)), {"images": views.astype(np.float32)})
    rows = Rows(frames, f.reshape(6, 6, -1), z.reshape(6, 6, -1))
    first = distil(src, rows, rows, tmp_path / "distill", ARCH, 10, 0.6, epochs=1, lr=1e-4, batch=3)[1]
    out, state = distil(src, rows, rows, tmp_path / "distill", ARCH, 10, 0.6, epochs=2, lr=1e-4, batch=3)
    assert state["held"][:2] == first["held"] and len(state["held"]) == 3  # resumed after the saved epoch
    assert int(np.load(tmp_path / "distill" / "last_optimizer.npz")["arr_0"]) == 2 * 2  # Adam's step: 2 epochs x 2
    held = [h["total"] for h in state["held"]]
    assert state["best_epoch"] > 0 and held[state["best_epoch"]] < 0.8 * held[0]  # it learnt the views' features
    rewritten = one_pass(onnx.load(str(out)), grid=10)
    net = student(onnx.load(str(out)), ARCH, K, 10, 0.6)
    got = _run(rewritten, frames.astype(np.float32))  # (N * 6, K): the head on the student's window means
    pooled = np.asarray(net(frames.astype(np.float32))).reshape(-1, f.shape[-1])
    head = keras.Model(model.get_layer("head_layernorm").input, model.get_layer("predictions").output)
    np.testing.assert_allclose(got, np.asarray(head(pooled)), atol=1e-4)



class _Teacher:
    """Stands in for the ImageNet teacher (its weights are not needed to test the run): random probabilities."""

    def __init__(self):
        self.rng = np.random.default_rng(7)

    def predict_on_batch(self, views: np.ndarray) -> np.ndarray:
        return self.rng.dirichlet(np.ones(1000), len(views)).astype(np.float32)


def test_the_open_world_run_pays_for_its_head_with_hidden_units_and_reruns_the_same(exported, colour_set,
                                                                                     tmp_path, monkeypatch):
    from convert.macs import graph_macs
    from convert.metadata import read_meta
    from training.openworld.plan import SetPlan
    from training.openworld.run import run_open

    monkeypatch.setattr("training.openworld.extract.imagenet_teacher", lambda arch, size: _Teacher())
    hd = tmp_path / "hd.onnx"  # the colour set labels blue and red; green is unknown there
    hd.write_bytes(attach(exported[1], build_meta(["blue", "green", "red"], "hd", (SIZE, SIZE), "fp32"))
                   .SerializeToString())
    report = run_open(hd, [SetPlan(str(colour_set), 0.25, 0.25)], tmp_path / "run")
    written = onnx.load(str(tmp_path / "run" / "onnx" / "hd.onnx"))
    units, width = len(report["pruned_units"]), 1280  # Lite0's pooled features; its LayerNorm keeps the width
    assert units == -(-width * K // (width + K))  # the fewest units that pay for the (F, K) product
    added = graph_macs(written) - graph_macs(onnx.load(str(hd)))
    assert report["macs_per_view"] == added == width * K - units * (width + K) <= 0
    assert read_meta(written).provenance["open_world"]["macs_per_view"] == report["macs_per_view"]
    first = (tmp_path / "run" / "onnx" / "hd.onnx").read_bytes()
    run_open(hd, [SetPlan(str(colour_set), 0.25, 0.25)], tmp_path / "run")  # from the cached evidence
    assert (tmp_path / "run" / "onnx" / "hd.onnx").read_bytes() == first  # the same graph, from the cache


def test_a_graph_that_names_no_keras_layers_is_refused_in_one_line():
    from onnx import TensorProto, helper, numpy_helper

    from training.models.from_onnx import conv_map

    w = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv0")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    with pytest.raises(ValueError, match="names no Keras layer"):
        conv_map(helper.make_model(graph))
    fresh = build_model(ARCH, K, SIZE)
    with pytest.raises(ValueError, match="no weights for the Keras layer"):
        load_backbone(fresh, helper.make_model(helper.make_graph([], "empty", [], [])))
