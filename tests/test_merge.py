import numpy as np
import pytest

from edge.merge import choose, decide_image, resolve_thresholds


def merge_max(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The merge spelled in numpy: per class the max over views and the view that won."""
    winner = s.argmax(axis=0)
    return s[winner, np.arange(s.shape[1])], winner


def decide(scores: np.ndarray, thresholds: np.ndarray, fallback_min: float) -> np.ndarray:
    """The decision rule spelled in numpy (comparisons in the scores' dtype)."""
    present = np.flatnonzero(scores >= thresholds)
    if present.size:
        return present[np.argsort(-scores[present], kind="stable")]
    top = int(scores.argmax())
    return np.array([top]) if scores[top] > fallback_min else np.array([], dtype=int)


def test_merge_keeps_the_winning_view():
    s = np.array([[0.1, 0.9, 0.2], [0.7, 0.1, 0.2], [0.3, 0.95, 0.1]], np.float32)
    d = decide_image(s, ("a", "b", "c"), ("v0", "v1", "v2"), np.ones(3, np.float32), 0.2)
    assert d.scores == pytest.approx({"a": 0.7, "b": 0.95, "c": 0.2})
    assert d.views == {"a": "v1", "b": "v2", "c": "v0"}  # ties go to the first view


@pytest.mark.parametrize("scores,thresholds,expected", [
    ([0.6, 0.2, 0.9], [0.5, 0.5, 0.5], [2, 0]),       # several labels, best first
    ([0.5, 0.2, 0.1], [0.5, 0.5, 0.5], [0]),          # >= threshold counts
    ([0.45, 0.25, 0.1], [0.5, 0.5, 0.5], [0]),        # nothing passes: top-1 above 0.20
    ([0.2, 0.1, 0.05], [0.5, 0.5, 0.5], []),          # top-1 not above 0.20: no label
    ([0.35, 0.4, 0.1], [0.3, 0.9, 0.3], [0]),         # per-class thresholds
])
def test_choose(scores, thresholds, expected):
    assert choose(scores, thresholds, 0.20) == expected
    assert decide(np.array(scores, np.float32), np.array(thresholds, np.float32), 0.20).tolist() == expected


def test_threshold_override():
    np.testing.assert_allclose(resolve_thresholds([0.5, 0.3], None), [0.5, 0.3])
    np.testing.assert_allclose(resolve_thresholds([0.5, 0.3], 0.7), [0.7, 0.7])
    with pytest.raises(ValueError):
        resolve_thresholds([0.5], 1.5)


def test_decide_image_names_views():
    s = np.array([[0.1, 0.6], [0.8, 0.2]], np.float32)
    d = decide_image(s, ("cat", "dog"), ("whole", "centre"), np.array([0.5, 0.5]), 0.2)
    assert d.labels == ["cat", "dog"]
    assert d.views == {"cat": "centre", "dog": "whole"}
    assert d.scores == pytest.approx({"cat": 0.8, "dog": 0.6})


def _reference(s, classes, names, thresholds, fallback_min):
    """decide_image spelled with the numpy building blocks it must agree with."""
    merged, winner = merge_max(s)
    chosen = decide(merged, thresholds, fallback_min)
    return ({c: round(float(x), 6) for c, x in zip(classes, merged, strict=True)},
            {c: names[w] for c, w in zip(classes, winner, strict=True)}, [classes[i] for i in chosen])


def _same_floats(a: dict, b: dict) -> bool:
    pairs = zip(a.values(), b.values(), strict=True)
    return a.keys() == b.keys() and all((x == y and np.signbit(x) == np.signbit(y)) or (x != x and y != y)
                                        for x, y in pairs)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_decide_image_agrees_with_numpy_merge_and_decision(dtype):
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
        th = rng.choice([0.0, 0.2, 0.3, 0.5, 1.0], c).astype(np.float32 if trial % 3 else np.float64)
        fb = (0.2, 0.0, 0.25)[trial % 3]
        classes, names = tuple(f"c{i}" for i in range(c)), tuple(f"v{i}" for i in range(v))
        scores, views, labels = _reference(s, classes, names, th, fb)
        d = decide_image(s, classes, names, th, fb)
        assert d.labels == labels and d.views == views and _same_floats(d.scores, scores), (s, th, fb)


def test_decide_image_rounding_matches_round():
    # float32 scores: round(s * 1e6) / 1e6 must give round(s, 6) exactly, ties (k / 128) included
    rng = np.random.default_rng(1)
    s = np.concatenate([rng.random(20000, dtype=np.float32), np.arange(129, dtype=np.float32) / 128,
                        rng.random(5000, dtype=np.float32) * 1e-5, np.float32([1e-45, 1.0, 4.9999997e-7])])
    d = decide_image(s[None, :], tuple(map(str, range(s.size))), ("whole",), np.ones(s.size, np.float32), 0.2)
    assert list(d.scores.values()) == [round(float(x), 6) for x in s]


def test_decide_image_rejects_bad_shapes():
    with pytest.raises(ValueError):
        decide_image(np.zeros((0, 3), np.float32), ("a", "b", "c"), (), np.zeros(3, np.float32), 0.2)


def test_hook_sees_merged_scores_before_the_decision():
    seen = []

    def halve(role, merged):
        seen.append((role, merged))
        return [x / 2 for x in merged]

    s = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    d = decide_image(s, ("a", "b"), ("whole", "centre"), np.float32([0.5, 0.5]), 0.2, "hd", halve)
    assert seen == [("hd", pytest.approx([0.9, 0.8]))]
    assert d.scores == pytest.approx({"a": 0.45, "b": 0.4}) and d.labels == ["a"]  # nothing passes: fallback
    assert d.views == {"a": "whole", "b": "centre"}
