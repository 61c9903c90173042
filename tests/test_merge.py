import numpy as np
import pytest

from edge.merge import decide, decide_image, merge_max, resolve_thresholds


def test_merge_max_and_winner():
    s = np.array([[0.1, 0.9, 0.2], [0.7, 0.1, 0.2], [0.3, 0.95, 0.1]], np.float32)
    merged, winner = merge_max(s)
    np.testing.assert_allclose(merged, [0.7, 0.95, 0.2])
    assert winner.tolist() == [1, 2, 0]  # ties go to the first view


@pytest.mark.parametrize("scores,thresholds,expected", [
    ([0.6, 0.2, 0.9], [0.5, 0.5, 0.5], [2, 0]),       # several labels, best first
    ([0.5, 0.2, 0.1], [0.5, 0.5, 0.5], [0]),          # >= threshold counts
    ([0.45, 0.25, 0.1], [0.5, 0.5, 0.5], [0]),        # nothing passes: top-1 above 0.20
    ([0.2, 0.1, 0.05], [0.5, 0.5, 0.5], []),          # top-1 not above 0.20: no label
    ([0.35, 0.4, 0.1], [0.3, 0.9, 0.3], [0]),         # per-class thresholds
])
def test_decide(scores, thresholds, expected):
    got = decide(np.array(scores, np.float32), np.array(thresholds, np.float32), 0.20)
    assert got.tolist() == expected


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
