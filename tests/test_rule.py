"""The decision rule: resolved once from metadata, and its batch path equal to its per-image path."""

import math

import numpy as np
import pytest

from edge.metadata import ModelMeta
from edge.rule import DecisionRule

VIEWS6 = ("whole", "top_left", "top_right", "bottom_left", "bottom_right", "centre")


def _meta(**kw) -> ModelMeta:
    return ModelMeta(classes=("cat", "dog"), role="hd", input_size=(64, 64), thresholds={"cat": 0.3, "dog": 0.4},
                     precision="fp32", **kw)


def test_of_resolves_the_model_rule_and_its_overrides():
    rule = DecisionRule.of(_meta(presence_threshold=0.25))
    assert rule.classes == ("cat", "dog") and rule.named_thresholds == {"cat": 0.3, "dog": 0.4}
    assert (rule.fallback_min, rule.presence_threshold, rule.guess_in_labels) == (0.2, 0.25, False)
    assert rule.merge == {"kind": "max"}
    assert rule.thresholds == (float(np.float32(0.3)), float(np.float32(0.4)))  # compared as the engine holds them
    over = DecisionRule.of(_meta(), thresholds={"dog": 0.9}, fallback_min=0.1, presence_threshold=0.5,
                           guess_in_labels=True)
    assert over.named_thresholds == {"cat": 0.3, "dog": 0.9}
    assert (over.fallback_min, over.presence_threshold, over.guess_in_labels) == (0.1, 0.5, True)
    assert DecisionRule.of(_meta(), threshold=0.7).named_thresholds == {"cat": 0.7, "dog": 0.7}
    with pytest.raises(ValueError):
        DecisionRule(("a",), (0.5, 0.5), 0.2)


def _random_scores(rng: np.random.Generator, trial: int, n: int, v: int, k: int, dtype) -> np.ndarray:
    kind = trial % 4
    if kind == 0:  # ties, threshold and fallback edges, negative zero
        s = rng.choice([0.0, -0.0, 0.2, 0.19999999, 0.20000001, 0.3, 0.5, 1.0], (n, v, k))
    elif kind == 1:  # nothing passes: the fallback decides
        s = rng.random((n, v, k)) * 0.35
    elif kind == 2:  # NaN scores (a broken model)
        s = rng.random((n, v, k))
        s[rng.random((n, v, k)) < 0.15] = np.nan
    else:
        s = rng.random((n, v, k))
    return s.astype(dtype)


def _same(a: float, b: float) -> bool:
    return (a == b and math.copysign(1, a) == math.copysign(1, b)) or (a != a and b != b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("merge", ["max", "logit_linear"])
@pytest.mark.parametrize("hooked", [False, True])
def test_batch_path_equals_the_per_image_path(dtype, merge, hooked):
    rng = np.random.default_rng(11)
    for trial in range(120):
        n, v, k = int(rng.integers(1, 9)), (1, 6)[trial % 2], int(rng.integers(1, 12))
        classes, names = tuple(f"c{i}" for i in range(k)), VIEWS6[:v]
        m = None if merge == "max" else {"kind": "logit_linear", "w": [1.1, 0.3, 0.2],
                                         "bias": {c: float(rng.normal()) for c in classes}}
        th = tuple(rng.choice([0.0, 0.2, 0.3, 0.5, 1.0], k).tolist())
        rule = DecisionRule(classes, th, (0.2, 0.0, 0.25)[trial % 3], (0.0, 0.4, 0.7, 0.99)[trial % 4],
                            trial % 7 == 0, m)
        hook = (lambda role, row: [x * 0.9 for x in row]) if hooked else None
        vs = _random_scores(rng, trial, n, v, k, dtype)
        batch = rule.decide_views(vs, hook, "hd")
        for i in range(n):
            one = rule.decide(vs[i], names, "hd", hook)
            other = rule.decision(batch, i, names)
            assert one.labels == other.labels and one.guess == other.guess and one.views == other.views, trial
            assert all(_same(one.scores[c], other.scores[c]) for c in classes), trial
            assert _same(one.presence, other.presence), trial
        # the arrays say the same as the Decisions
        for i in range(n):
            d = rule.decide(vs[i], names, "hd", hook)
            confident = [classes[j] for j in np.flatnonzero(batch.confident[i])]
            assert sorted(confident) == sorted(c for c in d.labels if d.guess is None or c != d.guess[0])
            assert (batch.guess[i] >= 0) == (d.guess is not None)
        assert (batch.guess_mask.sum(axis=1) <= 1).all()


def test_decide_merged_is_the_batch_decision_on_merged_scores():
    rng = np.random.default_rng(3)
    rule = DecisionRule(("a", "b", "c"), (0.5, 0.3, 0.5), 0.2, 0.3)
    s = rng.random((200, 3)).astype(np.float32)
    a, b = rule.decide_merged(s), rule.decide_views(s[:, None, :])
    assert np.array_equal(a.confident, b.confident) and np.array_equal(a.guess, b.guess)
    assert np.array_equal(a.presence, b.presence)
    assert not (a.confident.any(axis=1) & (a.guess >= 0)).any()  # a guess only when nothing is confident
    assert (a.presence[(~a.confident.any(axis=1)) & (a.guess < 0) & (s.max(axis=1) > 0.2)] < 0.3).all()
