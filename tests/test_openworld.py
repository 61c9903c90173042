"""The open-world head: synsets, the distilled other-mass logit, the per-class gate, the graft into an
ONNX graph (scores as the head says), the splits it reproduces, and its quick check."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from head_graphs import head_graph, set_weight
from onnx import TensorProto, helper, numpy_helper

from convert.macs import graph_macs
from training.eval.sets import ids_sha256
from training.openworld import check
from training.openworld.extract import SetEvidence
from training.openworld.graft import graft
from training.openworld.head import OpenHead, fit_gate, fit_other
from training.openworld.head_graph import head_tensors
from training.openworld.prune import hidden_layer, pay
from training.openworld.splits import check_reproduced
from training.openworld.synsets import AMBIGUOUS, other_mask, other_mass

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_other_synsets_follow_the_mapping():
    mask = other_mask(CLASSES)
    assert mask[277] and mask[340] and mask[147]  # red fox, zebra, grey whale: none of the classes
    assert not mask[151] and not mask[717] and not mask[404]  # Chihuahua (dog), pickup (truck), airliner
    assert not mask[AMBIGUOUS].any()  # impala and friends: what photos of deer look like to ImageNet
    probs = np.zeros((2, 1000))
    probs[0, 277], probs[0, 151], probs[1, 352] = 0.7, 0.3, 1.0
    np.testing.assert_allclose(other_mass(probs, CLASSES), [0.7, 0.0])


def test_fit_other_recovers_a_linear_teacher():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 16))
    true_w = rng.normal(size=16)
    mass = 1 / (1 + np.exp(-(x @ true_w - 0.5)))
    w, b = fit_other(x, mass, l2=1e-3)
    pred = 1 / (1 + np.exp(-(x @ w + b)))
    assert np.abs(pred - mass).max() < 0.05


def test_gate_learns_to_reject_what_the_teacher_calls_other():
    # the HD logit fires for dogs and foxes alike; only the "other" logit tells them apart
    rng = np.random.default_rng(1)
    n = 3000
    dog = rng.random(n) < 0.5
    z = np.where(dog, 2.0, 1.5)[:, None] + rng.normal(0, 0.5, (n, 1))
    other = np.where(dog, -3.0, 3.0) + rng.normal(0, 0.5, n)
    targets = dog.astype(float)[:, None]
    noise = rng.normal(size=(n, 3))  # features that say nothing: their weights stay near 0
    a, b, d, u = fit_gate(z, other, noise, targets, np.zeros(n, int))
    assert b[0] < -0.5 and a[0] >= 0 and np.abs(u).max() < 0.2
    gated = a * z + b * other[:, None] + noise @ u + d
    assert (gated[dog] > 0).mean() > 0.95 and (gated[~dog] < 0).mean() > 0.95


def test_gate_leaves_a_class_no_set_labels_alone():
    z = np.zeros((10, 2))
    targets = np.c_[np.r_[np.ones(5), np.zeros(5)], np.full(10, -1.0)]
    a, b, d, u = fit_gate(z, np.zeros(10), np.ones((10, 4)), targets, np.zeros(10, int))
    assert (a[1], b[1], d[1]) == (1.0, 0.0, 0.0) and not u[:, 1].any()


def test_gate_uses_the_features_where_they_tell_the_classes_apart():
    # hard negatives: the HD logit and the other logit are the same for both; one feature differs
    rng = np.random.default_rng(4)
    n = 2000
    pos = rng.random(n) < 0.5
    f = np.c_[np.where(pos, 1.0, -1.0) + rng.normal(0, 0.3, n), rng.normal(size=n)]
    a, b, d, u = fit_gate(np.zeros((n, 1)), np.zeros(n), f, pos.astype(float)[:, None], np.zeros(n, int))
    gated = f @ u + d
    assert (gated[pos, 0] > 0).mean() > 0.95 and (gated[~pos, 0] < 0).mean() > 0.95


def _tiny_hd(k: int = 3, c: int = 4) -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    w, bias = rng.normal(size=(c, k)).astype(np.float32), rng.normal(size=k).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("GlobalAveragePool", ["nchw"], ["gap"]),
             helper.make_node("Squeeze", ["gap", "axes"], ["pooled"]),
             helper.make_node("MatMul", ["pooled", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "bias"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["scores"])]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "bias"),
             numpy_helper.from_array(np.array([2, 3], np.int64), "axes")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                            ["N", 2, 2, c])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", k])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_graft_computes_the_head_in_the_graph():
    model = _tiny_hd()
    assert head_tensors(model) == ("pooled", "logits")
    head = OpenHead(np.array([1.0, -1.0, 0.5, 0.0]), 0.25, np.array([1.0, 0.5, 2.0]),
                    np.array([0.0, -1.0, -0.5]), np.array([0.1, 0.0, -0.2]),
                    np.arange(12, dtype=float).reshape(4, 3) / 10)
    x = np.random.default_rng(3).normal(size=(5, 2, 2, 4)).astype(np.float32)
    run = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    before = run.run(None, {"images": x})[0]
    grafted = ort.InferenceSession(graft(model, head).SerializeToString(), providers=["CPUExecutionProvider"])
    after = grafted.run(None, {"images": x})[0]
    pooled = x.mean(axis=(1, 2))
    z = np.log(before) - np.log1p(-before)
    expected = 1 / (1 + np.exp(-head.logits(z, pooled)))
    np.testing.assert_allclose(after, expected, atol=1e-5)
    assert graph_macs(graft(model, head)) - graph_macs(model) == 4 * 3  # folded: one (F, K) product
    assert hidden_layer(model) is None  # no hidden layer to pay for it with


def _hidden_hd(c: int = 4, h: int = 8, k: int = 3) -> onnx.ModelProto:
    """`head_graph` (the HD head's shape) whose units 2 and 5 send nothing on and unit 6 is constant."""
    model = head_graph(np.random.default_rng(4), c, h, k, spatial=2)
    w = {i.name: numpy_helper.to_array(i).copy() for i in model.graph.initializer}
    w["w2"][[2, 5]] = 0.0
    w["w1"][:, 6] = 0.0
    w["b1"][6] = 0.7
    for name in ("w1", "b1", "w2"):
        set_weight(model, name, w[name])
    return model


def _scores(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x})[0]


def _evidence(model: onnx.ModelProto, x: np.ndarray) -> SetEvidence:
    """The cached evidence of images `x` taken as photos of two views each: pooled features and logits."""
    s, photos = _scores(model, x), len(x) // 2
    return SetEvidence("set", [str(i) for i in range(photos)], np.zeros((photos, 2, 3), np.float32),
                       x.mean(axis=(1, 2)).reshape(photos, 2, -1), (np.log(s) - np.log1p(-s)).reshape(photos, 2, 3),
                       np.zeros((photos, 2, 1000), np.float16))


def test_pruned_units_pay_for_the_head_and_the_graph_computes_what_was_fitted():
    model = _hidden_hd()
    assert hidden_layer(model) is not None
    x = np.random.default_rng(5).normal(size=(10, 2, 2, 4)).astype(np.float32)
    ev = _evidence(model, x)
    z0 = ev.logits.copy()
    # the (F, K) product costs 12 multiply-adds; a unit saves F + K = 7, so two go: of the three whose removal
    # changes nothing (2 and 5 send nothing on, 6 is constant), the first two, ties kept in unit order
    layer, units, means = pay(model, [ev], [np.array([False, False, True, False, True])], 12)
    assert units.tolist() == [2, 5]
    np.testing.assert_allclose(ev.logits, z0, atol=1e-6)  # their removal moves no logit
    head = OpenHead(np.array([1.0, -1.0, 0.5, 0.0]), 0.25, np.array([1.0, 0.5, 2.0]),
                    np.array([0.0, -1.0, -0.5]), np.array([0.1, 0.0, -0.2]),
                    np.arange(12, dtype=float).reshape(4, 3) / 10)
    grafted = graft(model, head, (layer, units, means))
    assert graph_macs(grafted) - graph_macs(model) == 12 - 2 * 7
    expected = 1 / (1 + np.exp(-head.logits(ev.logits.reshape(-1, 3), x.mean(axis=(1, 2)))))
    np.testing.assert_allclose(_scores(grafted, x), expected, atol=1e-5)


def test_pruned_units_are_replaced_by_their_means_and_the_cached_logits_follow_the_graph():
    model = _hidden_hd()
    w2 = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w2")).copy()
    x = np.random.default_rng(6).normal(size=(8, 2, 2, 4)).astype(np.float32)
    ev = _evidence(model, x)
    z0 = ev.logits.copy()
    layer, units, means = pay(model, [ev], [np.zeros(4, bool)], 22)  # four units of 7
    assert units.size == 4 and {2, 5, 6} < set(units.tolist())  # the three that change nothing, and one more
    np.testing.assert_allclose(means[units.tolist().index(6)], 0.35 * (1 + math.erf(0.7 / math.sqrt(2))),
                               rtol=1e-5)  # the constant unit's mean is its value, GELU(0.7)
    assert np.abs(ev.logits - z0).max() > 1e-3  # the fourth unit mattered: the cached logits moved ...
    identity = OpenHead(np.zeros(4), 0.0, np.ones(3), np.zeros(3), np.zeros(3), np.zeros((4, 3)))
    pruned = graft(model, identity, (layer, units, means))  # ... to what the pruned graph computes
    np.testing.assert_allclose(_scores(pruned, x), 1 / (1 + np.exp(-ev.logits.reshape(-1, 3))), atol=1e-5)
    assert graph_macs(pruned) - graph_macs(model) == 12 - 4 * 7
    np.testing.assert_array_equal(numpy_helper.to_array(next(i for i in model.graph.initializer
                                                             if i.name == "w2")), w2)  # the model is left as it was


def test_check_reproduced_refuses_other_splits():
    splits = {"sets": {"/a": {"fit": ["1"], "heldout": ["2", "3"], "report": []}}}
    check_reproduced(splits, [ids_sha256(["3", "2"])])
    with pytest.raises(ValueError, match="not reproduced"):
        check_reproduced(splits, [ids_sha256(["2"])])


def test_quick_check_counts_label_free_photos():
    targets = np.array([[1, 0], [0, 1], [0, 0], [0, 0]], float)
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.95, 0.1], [0.1, 0.1]])
    fig = check.figures(scores, targets)
    assert fig["n_free"] == 2 and fig["labelled_free"] == 0.5  # the best-F1 threshold keeps the 0.95 photo
    assert fig["recall"] == 1.0


def _report(lab_free: float, groups: list[tuple[str, int, float]]) -> dict:
    dec = {"label_free": 10, "label_free_confident": lab_free, "confident": {"precision": 0.9, "recall": 0.8}}
    per_set = {"/d/animals_train:all": {"images": 40, "mAP": 0.95, "decision": dec}}
    table = [{"group": g, "photos": n, "labelled": share, "label_free": 1.0 if g != "deer" else 0.0,
              "top_labels": [{"label": "dog", "photos": round(n * share), "share": share}] if share else []}
             for g, n, share in groups]
    return {"roles": {"hd": {"tiling_on": {"per_set": per_set}}}, "groups": {"hd": table}}


def test_table_pairs_sources_and_groups_before_and_after():
    from training.openworld.table import compare, markdown

    table = compare([_report(0.5, [("fox", 10, 0.9), ("wolf", 4, 0.5), ("deer", 8, 0.5), ("bat", 1, 1.0)])],
                    [_report(0.1, [("fox", 10, 0.1), ("wolf", 4, 0.0), ("deer", 8, 1.0), ("bat", 1, 0.0)])])
    assert table["sources"]["animals_train"]["before"]["label_free_labelled"] == 0.5
    assert table["sources"]["animals_train"]["after"]["label_free_labelled"] == 0.1
    text = markdown(table)
    assert "| animals_train | 40 | 95.0 -> **95.0** | 50.0 -> **10.0** (n=10) |" in text
    assert "| fox | 10 | 90.0 -> **10.0** | dog 1 |" in text
    assert "Most often labelled after: fox." in text
    assert "| 1 groups of fewer than 3 photos | 1 | 100.0 -> **0.0** | |" in text
    free, held = text.split("Groups of the classes")
    assert "| deer | 8 | 50.0 -> **100.0** | dog 8 |" in held and "deer" not in free
