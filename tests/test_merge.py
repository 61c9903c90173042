import math

import numpy as np
import pytest

from edge.merge import choose, presence
from edge.rule import DecisionRule


def decide_with(s, classes, names, thresholds, fallback_min, role="", hook=None, presence_threshold=0.0,
                guess_in_labels=False, merge=None):
    """One image's decision by the rule made of these settings."""
    rule = DecisionRule(tuple(classes), tuple(np.asarray(thresholds).tolist()), fallback_min, presence_threshold,
                        guess_in_labels, merge)
    return rule.decide(s, names, role, hook)


def merge_max(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The merge spelled in numpy: per class the max over views and the view that won."""
    winner = s.argmax(axis=0)
    return s[winner, np.arange(s.shape[1])], winner


def decide(scores: np.ndarray, thresholds: np.ndarray, fallback_min: float) -> tuple[list[int], int | None]:
    """The decision rule spelled in numpy (comparisons in the scores' dtype): (confident, guess)."""
    present = np.flatnonzero(scores >= thresholds)
    if present.size:
        return present[np.argsort(-scores[present], kind="stable")].tolist(), None
    top = int(scores.argmax())
    return [], top if scores[top] > fallback_min else None


def presence_np(scores: np.ndarray) -> float:
    """P(at least one class) spelled in numpy: 1 - prod(1 - clip(p, 0, 1))."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(-np.expm1(np.log1p(-np.clip(scores.astype(np.float64), 0.0, 1.0)).sum()))


def test_merge_keeps_the_winning_view():
    s = np.array([[0.1, 0.9, 0.2], [0.7, 0.1, 0.2], [0.3, 0.95, 0.1]], np.float32)
    d = decide_with(s, ("a", "b", "c"), ("v0", "v1", "v2"), np.ones(3, np.float32), 0.2)
    assert d.scores == pytest.approx({"a": 0.7, "b": 0.95, "c": 0.2})
    assert d.views == {"a": "v1", "b": "v2", "c": "v0"}  # ties go to the first view


@pytest.mark.parametrize("scores,thresholds,expected", [
    ([0.6, 0.2, 0.9], [0.5, 0.5, 0.5], ([2, 0], None)),   # several labels, best first
    ([0.5, 0.2, 0.1], [0.5, 0.5, 0.5], ([0], None)),      # >= threshold counts
    ([0.5, 0.2, 0.5], [0.5, 0.5, 0.5], ([0, 2], None)),   # ties in class order
    ([0.45, 0.25, 0.1], [0.5, 0.5, 0.5], ([], 0)),        # nothing passes: the guess, top-1 above 0.20
    ([0.1, 0.25, 0.25], [0.5, 0.5, 0.5], ([], 1)),        # the guess among ties: the first
    ([0.2, 0.1, 0.05], [0.5, 0.5, 0.5], ([], None)),      # top-1 not above 0.20: none of the classes
    ([0.35, 0.4, 0.1], [0.3, 0.9, 0.3], ([0], None)),     # per-class thresholds
    ([0.9, math.nan, 0.1], [0.95, 0.5, 0.5], ([], None)),  # NaN is the top class: no guess
    ([], [], ([], None)),
])
def test_choose(scores, thresholds, expected):
    assert choose(scores, thresholds, 0.20) == expected
    if scores:
        assert decide(np.array(scores, np.float32), np.array(thresholds, np.float32), 0.20) == expected


@pytest.mark.parametrize("scores,expected", [
    ([], 0.0), ([0.0] * 10, 0.0), ([0.5], 0.5), ([0.5, 0.5], 0.75), ([0.2, 0.25], 0.4),
    ([0.1, 0.2, 0.3], 1 - 0.9 * 0.8 * 0.7), ([0.3, 1.0], 1.0), ([1.0, 1.0], 1.0),
    ([-0.5, 0.5], 0.5), ([-0.2, 1.5], 1.0),  # clipped to [0, 1]
])
def test_presence_known_values(scores, expected):
    assert presence(scores) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert presence_np(np.array(scores)) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_presence_is_stable_for_small_scores_and_monotonic_in_the_energy():
    assert presence([1e-12] * 3) == pytest.approx(3e-12, rel=1e-9)  # 1 - prod(1 - p) gives 2.99993e-12
    assert presence([1e-300]) == 1e-300
    assert math.isnan(presence([0.3, math.nan])) and math.isnan(presence([1.0, math.nan]))
    rng = np.random.default_rng(2)
    rows = rng.random((200, 6)) ** 3
    energy = -np.log1p(-rows).sum(axis=1)  # the joint energy sum(-log(1 - p))
    p = np.array([presence(r.tolist()) for r in rows])
    np.testing.assert_allclose(p, -np.expm1(-energy), rtol=1e-12)
    order = np.argsort(energy, kind="stable")
    assert (np.diff(p[order]) >= 0).all()
    assert presence(rows[0].tolist()) >= rows[0].max()  # at least the best class's probability


TH = np.float32([0.5, 0.5, 0.5])


@pytest.mark.parametrize("scores,kwargs,labels,guess", [
    ([0.6, 0.1, 0.9], {}, ["c", "a"], None),                                      # confident
    ([0.6, 0.1, 0.9], {"guess_in_labels": True}, ["c", "a"], None),               # the flag changes nothing
    ([0.45, 0.25, 0.1], {}, [], ("a", 0.45)),                                     # a guess, kept apart
    ([0.45, 0.25, 0.1], {"guess_in_labels": True}, ["a"], ("a", 0.45)),           # the reference system's rule
    ([0.2, 0.1, 0.05], {}, [], None),                                             # none of the classes
    ([0.2, 0.1, 0.05], {"guess_in_labels": True}, [], None),
    ([0.45, 0.25, 0.1], {"presence_threshold": 0.6}, [], ("a", 0.45)),            # presence 0.62875: kept
    ([0.45, 0.25, 0.1], {"presence_threshold": 0.7}, [], None),                   # below: none, no guess
    ([0.45, 0.25, 0.1], {"presence_threshold": 0.7, "guess_in_labels": True}, [], None),
    ([0.6, 0.0, 0.0], {"presence_threshold": 0.7}, [], None),                     # even a confident class
    ([0.6, 0.0, 0.0], {"presence_threshold": 0.6}, ["a"], None),                  # presence 0.6 (float32): kept
])
def test_rule_table(scores, kwargs, labels, guess):
    s = np.float32([scores])
    d = decide_with(s, ("a", "b", "c"), ("whole",), TH, 0.2, **kwargs)
    assert d.labels == labels
    assert d.guess == (None if guess is None else (guess[0], pytest.approx(guess[1])))
    assert d.presence == pytest.approx(presence_np(s[0]), rel=1e-12)


def test_guess_score_is_the_rounded_merged_score():
    s = np.float32([[0.1, 0.27, 0.05], [0.2, 0.05, 0.1]])
    d = decide_with(s, ("a", "b", "c"), ("whole", "centre"), TH, 0.2)
    assert d.labels == [] and d.guess == ("b", d.scores["b"]) and d.scores["b"] == 0.27
    assert d.presence == pytest.approx(1 - 0.8 * 0.73 * 0.9, rel=1e-6)


def test_threshold_override():
    rule = DecisionRule(("a", "b"), (0.5, 0.3), 0.2)
    assert rule.with_threshold(None) is rule and rule.named_thresholds == {"a": 0.5, "b": 0.3}
    assert rule.with_threshold(0.7).named_thresholds == {"a": 0.7, "b": 0.7}
    with pytest.raises(ValueError):
        rule.with_threshold(1.5)


def test_rule_decide_names_views():
    s = np.array([[0.1, 0.6], [0.8, 0.2]], np.float32)
    d = decide_with(s, ("cat", "dog"), ("whole", "centre"), np.array([0.5, 0.5]), 0.2)
    assert d.labels == ["cat", "dog"]
    assert d.views == {"cat": "centre", "dog": "whole"}
    assert d.scores == pytest.approx({"cat": 0.8, "dog": 0.6})


def _reference(s, classes, names, thresholds, fallback_min, presence_threshold=0.0, guess_in_labels=False):
    """The rule spelled with the numpy building blocks it must agree with."""
    merged, winner = merge_max(s)
    present = presence_np(merged)
    chosen, top = ([], None) if present < presence_threshold else decide(merged, thresholds, fallback_min)
    scores = {c: round(float(x), 6) for c, x in zip(classes, merged, strict=True)}
    guess = None if top is None else (classes[top], scores[classes[top]])
    labels = [classes[i] for i in chosen] + ([classes[top]] if top is not None and guess_in_labels else [])
    return scores, {c: names[w] for c, w in zip(classes, winner, strict=True)}, labels, guess, present


def _same_floats(a: dict, b: dict) -> bool:
    pairs = zip(a.values(), b.values(), strict=True)
    return a.keys() == b.keys() and all((x == y and np.signbit(x) == np.signbit(y)) or (x != x and y != y)
                                        for x, y in pairs)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_rule_decide_agrees_with_numpy_merge_and_decision(dtype):
    rng = np.random.default_rng(0)
    for trial in range(1500):
        v, c = int(rng.integers(1, 7)), int(rng.integers(1, 12))
        kind = trial % 4
        if kind == 0:  # ties, threshold and fallback edges, negative zero
            s = rng.choice([0.0, -0.0, 0.2, 0.19999999, 0.20000001, 0.3, 0.5, 1.0], (v, c))
        elif kind == 1:  # nothing passes: the fallback decides
            s = rng.random((v, c)) * 0.35
        elif kind == 2:  # NaN scores (a broken model) behave as numpy's argmax treats them
            s = rng.random((v, c))
            s[rng.random((v, c)) < 0.15] = np.nan
        else:
            s = rng.random((v, c))
        s = s.astype(dtype)
        th = rng.choice([0.0, 0.2, 0.3, 0.5, 1.0], c).astype(np.float32)  # the rule holds float32 thresholds
        fb = (0.2, 0.0, 0.25)[trial % 3]
        kw = {"presence_threshold": (0.0, 0.4, 0.7, 0.99)[trial % 4 if trial % 5 else 0],
              "guess_in_labels": trial % 7 == 0}
        classes, names = tuple(f"c{i}" for i in range(c)), tuple(f"v{i}" for i in range(v))
        scores, views, labels, guess, present = _reference(s, classes, names, th, fb, **kw)
        d = decide_with(s, classes, names, th, fb, **kw)
        assert d.labels == labels and d.views == views and _same_floats(d.scores, scores), (s, th, fb, kw)
        assert d.guess == guess and (d.presence == pytest.approx(present, rel=1e-12, abs=1e-15)
                                     or (math.isnan(d.presence) and math.isnan(present))), (s, th, fb, kw)


def test_rule_decide_rounding_matches_round():
    # float32 scores: round(s * 1e6) / 1e6 must give round(s, 6) exactly, ties (k / 128) included
    rng = np.random.default_rng(1)
    s = np.concatenate([rng.random(20000, dtype=np.float32), np.arange(129, dtype=np.float32) / 128,
                        rng.random(5000, dtype=np.float32) * 1e-5, np.float32([1e-45, 1.0, 4.9999997e-7])])
    d = decide_with(s[None, :], tuple(map(str, range(s.size))), ("whole",), np.ones(s.size, np.float32), 0.2)
    assert list(d.scores.values()) == [round(float(x), 6) for x in s]


def test_rule_decide_rejects_bad_shapes():
    with pytest.raises(ValueError):
        decide_with(np.zeros((0, 3), np.float32), ("a", "b", "c"), (), np.zeros(3, np.float32), 0.2)


def test_hook_sees_merged_scores_before_the_decision():
    seen = []

    def halve(role, merged):
        seen.append((role, merged))
        return [x / 2 for x in merged]

    s = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    d = decide_with(s, ("a", "b"), ("whole", "centre"), np.float32([0.5, 0.5]), 0.2, "hd", halve)
    assert seen == [("hd", pytest.approx([0.9, 0.8]))]
    assert d.scores == pytest.approx({"a": 0.45, "b": 0.4}) and d.labels == []  # nothing passes: the guess
    assert d.guess == ("a", pytest.approx(0.45)) and d.presence == pytest.approx(1 - 0.55 * 0.6)
    assert d.views == {"a": "whole", "b": "centre"}


# --- the model's merge (`merge` metadata): merged_scores, one definition for runtime and evaluation ---

VIEWS6 = ("whole", "top_left", "top_right", "bottom_left", "bottom_right", "centre")


def logit_linear(w=(0.5, 0.25, 0.25), bias=None, classes=("a", "b")) -> dict:
    return {"kind": "logit_linear", "w": list(w), "bias": bias or {c: 0.0 for c in classes}}


def test_merged_scores_max_is_todays_max_exactly():
    from edge.merge import merged_scores

    rng = np.random.default_rng(5)
    many = rng.random((50, 6, 7), dtype=np.float32)
    names = tuple("abcdefg")
    for merge in (None, {"kind": "max"}, {"kind": "max", "fitted_on": "x"}):
        out = merged_scores(many, merge, names)
        assert out.dtype == np.float32 and np.array_equal(out, many.max(axis=1))
        for vs in many[:10]:
            one = merged_scores(vs, merge)
            assert np.array_equal(one, merge_max(vs)[0])
            # the rule: the same merged scores whether the max merge is named or not
            d = decide_with(vs, names, VIEWS6, np.full(7, 0.5, np.float32), 0.2, merge=merge)
            assert d == decide_with(vs, names, VIEWS6, np.full(7, 0.5, np.float32), 0.2)
            assert list(d.scores.values()) == [round(float(x), 6) for x in one]
    assert np.array_equal(merged_scores(many[:, :1], None, names), many[:, 0])  # tiling off: view 0


def test_logit_linear_on_known_parameters():
    from edge.merge import merged_scores

    z = np.array([[2.0, -1.0], [1.0, 0.0], [-1.0, 0.5], [3.0, -2.0], [0.0, 1.0], [0.5, -0.5]])  # (views, classes)
    vs = 1.0 / (1.0 + np.exp(-z))  # float64: the logits come back to within rounding
    merge = logit_linear((0.5, 0.25, 0.125), {"a": 1.0, "b": -1.0})
    crops = z[1:]
    expected_z = 0.5 * z[0] + 0.25 * crops.max(axis=0) + 0.125 * crops.mean(axis=0) + np.array([1.0, -1.0])
    expected = 1.0 / (1.0 + np.exp(-expected_z))
    np.testing.assert_allclose(merged_scores(vs, merge, ("a", "b")), expected, rtol=1e-12)
    # the bias follows the class names, not the dict's order
    swapped = merged_scores(vs[:, ::-1], merge, ("b", "a"))
    np.testing.assert_allclose(swapped, [expected[1], expected[0]], rtol=1e-12)
    # a batch (N, views, K) is the images one by one; float32 in, float32 out
    batch = np.stack([vs, vs[::-1]]).astype(np.float32)
    out = merged_scores(batch, merge, ("a", "b"))
    assert out.dtype == np.float32 and out.shape == (2, 2)
    assert np.array_equal(out[1], merged_scores(batch[1], merge, ("a", "b")))
    # the whole view alone, unchanged (weights 1, 0, 0 and no bias)
    np.testing.assert_allclose(merged_scores(vs, logit_linear((1, 0, 0)), ("a", "b")), vs[0], rtol=1e-12)


def test_logit_linear_clips_scores_before_the_logit():
    from edge.merge import EPS, logit, merged_scores

    assert EPS == 1e-6
    edge_z = math.log((1 - 1e-6) / 1e-6)
    np.testing.assert_allclose(logit(np.array([0.0, 1.0, 1e-9, 1 - 1e-9])), [-edge_z, edge_z, -edge_z, edge_z])
    vs = np.array([[0.0, 1.0], [0.0, 1.0]], np.float32)
    out = merged_scores(vs, logit_linear((1.0, 0.0, 0.0)), ("a", "b"))
    np.testing.assert_allclose(out, [1e-6, 1 - 1e-6], rtol=1e-6)
    assert np.isnan(merged_scores(np.array([[np.nan, 0.5]]), logit_linear((1, 0, 0)), ("a", "b"))[0])


def test_logit_linear_with_one_view_uses_the_whole_view_for_the_crop_features():
    from edge.merge import merge_features, merged_scores

    vs = np.array([[0.8, 0.1]])
    z = np.log(vs[0] / (1 - vs[0]))
    merge = logit_linear((0.5, 0.25, 0.125), {"a": 0.5, "b": -0.5})
    expected = 1 / (1 + np.exp(-((0.5 + 0.25 + 0.125) * z + [0.5, -0.5])))
    np.testing.assert_allclose(merged_scores(vs, merge, ("a", "b")), expected, rtol=1e-12)
    f = merge_features(np.stack([vs, vs]))
    assert f.shape == (2, 3, 2) and np.allclose(f[:, 0], z) and np.allclose(f[:, 1], z) and np.allclose(f[:, 2], z)
    # six views: [z_whole, max z_crops, mean z_crops]
    six = np.random.default_rng(6).uniform(0.01, 0.99, (4, 6, 3))
    zz = np.log(six / (1 - six))
    f6 = merge_features(six)
    assert np.allclose(f6[:, 0], zz[:, 0]) and np.allclose(f6[:, 1], zz[:, 1:].max(axis=1))
    assert np.allclose(f6[:, 2], zz[:, 1:].mean(axis=1))


def test_rule_decide_with_logit_linear_decides_on_the_merged_scores():
    from edge.merge import merged_scores

    vs = np.array([[0.30, 0.05, 0.40], [0.99, 0.10, 0.45], [0.20, 0.95, 0.30], [0.25, 0.06, 0.35],
                   [0.22, 0.07, 0.48], [0.28, 0.08, 0.42]], np.float32)
    names = ("a", "b", "c")
    merge = logit_linear((1.0, 0.2, 0.1), {"a": -0.2, "b": 0.0, "c": 0.3}, names)
    th = np.float32([0.5, 0.5, 0.5])
    merged = merged_scores(vs, merge, names)
    d = decide_with(vs, names, VIEWS6, th, 0.2, merge=merge)
    assert list(d.scores.values()) == [round(float(x), 6) for x in merged]
    assert d.views == {"a": "top_left", "b": "top_right", "c": "bottom_right"}  # the highest view, as for max
    assert d.labels == [names[i] for i in choose(merged.tolist(), th.tolist(), 0.2)[0]]
    assert d.presence == presence(merged.tolist())
    # the max merge would label "a" and "b" from one over-confident corner each; this merge does not
    assert decide_with(vs, names, VIEWS6, th, 0.2).labels == ["a", "b"]
    assert "a" not in d.labels


def test_merged_scores_refuses_what_it_cannot_merge():
    from edge.merge import merged_scores

    vs = np.full((6, 2), 0.5, np.float32)
    with pytest.raises(ValueError, match="class names"):
        merged_scores(vs, logit_linear())
    with pytest.raises(ValueError, match="unknown merge kind"):
        merged_scores(vs, {"kind": "mean"}, ("a", "b"))
    with pytest.raises(ValueError, match="expected"):
        merged_scores(np.zeros((0, 2)), None)


def test_rule_decide_with_logit_linear_is_fast():
    """The whole decision for one frame of (6, 10) float32 scores, within 0.1 ms (generous on a busy CI)."""
    import timeit

    rng = np.random.default_rng(7)
    vs = rng.uniform(0.001, 0.999, (6, 10)).astype(np.float32)
    names = tuple(f"c{i}" for i in range(10))
    merge = logit_linear((1.1, 0.3, 0.2), {c: -0.4 for c in names}, names)
    th = np.full(10, 0.5, np.float32)
    t = min(timeit.repeat(lambda: decide_with(vs, names, VIEWS6, th, 0.2, merge=merge), number=500, repeat=5))
    assert t / 500 < 1e-3  # 10x the budget: a loaded machine must not fail the suite


# --- the `merge` metadata -------------------------------------------------------------------------

def _props(**merge_kw):
    from edge.metadata import ModelMeta

    return ModelMeta(classes=("cat", "dog"), role="hd", input_size=(64, 64), thresholds={"cat": 0.3, "dog": 0.4},
                     precision="fp32", **merge_kw).to_props()


def test_metadata_without_merge_is_max_and_writes_no_key():
    import json

    from edge.metadata import ModelMeta

    props = _props()
    assert "merge" not in props
    assert ModelMeta.from_props(props).merge == {"kind": "max"}
    props["merge"] = json.dumps({"kind": "max"})
    assert ModelMeta.from_props(props).merge == {"kind": "max"}
    assert "merge" not in ModelMeta.from_props(props).to_props()  # the default: not written


def test_metadata_logit_linear_round_trips():
    import json

    from edge.metadata import ModelMeta

    merge = {"kind": "logit_linear", "w": [1.2, 0.3, -0.1], "bias": {"dog": -1, "cat": 0.5}, "fitted_on": "set: 9 ids"}
    props = _props()
    props["merge"] = json.dumps(merge)
    meta = ModelMeta.from_props(props)
    assert meta.merge == {"kind": "logit_linear", "w": [1.2, 0.3, -0.1], "bias": {"cat": 0.5, "dog": -1.0},
                          "fitted_on": "set: 9 ids"}
    assert list(meta.merge["bias"]) == ["cat", "dog"]  # class order
    again = ModelMeta.from_props(meta.to_props())
    assert again.merge == meta.merge and json.loads(meta.to_props()["merge"]) == meta.merge


@pytest.mark.parametrize("value,match", [
    ('"max"', "'kind' is one of"), ('{"kind": "mean"}', "'kind' is one of"), ("[]", "'kind' is one of"),
    ('{"kind": "max", "w": [1, 0, 0]}', "unknown keys: w"),
    ('{"kind": "logit_linear", "bias": {"cat": 0, "dog": 0}}', "'w' must be 3 finite numbers"),
    ('{"kind": "logit_linear", "w": [1, 0], "bias": {"cat": 0, "dog": 0}}', "'w' must be 3"),
    ('{"kind": "logit_linear", "w": [1, 0, NaN], "bias": {"cat": 0, "dog": 0}}', "'w' must be 3 finite"),
    ('{"kind": "logit_linear", "w": [1, 0, Infinity], "bias": {"cat": 0, "dog": 0}}', "'w' must be 3 finite"),
    ('{"kind": "logit_linear", "w": [1, 0, true], "bias": {"cat": 0, "dog": 0}}', "'w' must be 3 finite"),
    ('{"kind": "logit_linear", "w": [1, 0, "0"], "bias": {"cat": 0, "dog": 0}}', "'w' must be 3 finite"),
    ('{"kind": "logit_linear", "w": [1, 0, 0], "bias": {"cat": 0}}', "'bias' must map every class"),
    ('{"kind": "logit_linear", "w": [1, 0, 0], "bias": {"cat": 0, "dog": 0, "cow": 0}}', "'bias' must map every"),
    ('{"kind": "logit_linear", "w": [1, 0, 0], "bias": [0, 0]}', "'bias' must map every class"),
    ('{"kind": "logit_linear", "w": [1, 0, 0], "bias": {"cat": 0, "dog": -Infinity}}', "'bias' values must be finite"),
    ('{"kind": "logit_linear", "w": [1, 0, 0], "bias": {"cat": 0, "dog": null}}', "'bias' values must be finite"),
    ('{"kind": "logit_linear", "w": [1, 0, 0], "bias": {"cat": 0, "dog": 0}, "weights": 1}', "unknown keys: weights"),
    ('{"kind": "logit_linear", "w": [1, 0, 0], "bias": {"cat": 0, "dog": 0}, "fitted_on": 3}', "'fitted_on' must be"),
    ("{not json", "not JSON"),
])
def test_invalid_merge_refused(value, match):
    from edge.metadata import MetadataError, ModelMeta

    props = _props()
    props["merge"] = value
    with pytest.raises(MetadataError, match=match):
        ModelMeta.from_props(props, "m.onnx")
