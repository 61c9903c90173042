"""benchmarks/operating_points.py: the sweep on scores with a known answer, and a smoke run."""

from __future__ import annotations

import json

import numpy as np

from benchmarks import operating_points as OP

GOAL = {"recall": 0.85, "precision": 0.85, "label_free": 0.10}


def _scores(overlap: bool, n: int = 200, seed: int = 0):
    """Two classes; a third of the photos hold none. Positives score ~0.8; label-free photos ~0.2,
    or, with `overlap`, as high as positives (nothing can tell them apart)."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, 2), np.float32)
    free = np.arange(n) % 3 == 0
    y[~free, 0] = rng.random((~free).sum()) < 0.6
    y[~free & (y[:, 0] == 0), 1] = 1
    s = np.where(y == 1, rng.uniform(0.6, 0.95, y.shape), rng.uniform(0.01, 0.3, y.shape)).astype(np.float32)
    if overlap:
        s[free] = rng.uniform(0.6, 0.95, (free.sum(), 2))
    return y, s, np.ones_like(y, bool)


def test_separable_scores_reach_the_goal_and_overlapping_ones_cannot():
    y, s, mask = _scores(overlap=False)
    points = OP.grid(s, y, mask, np.array([0.5, 0.5]), 0.2)
    assert any(OP.meets(p, GOAL) for p in points)
    y, s, mask = _scores(overlap=True)
    points = OP.grid(s, y, mask, np.array([0.5, 0.5]), 0.2)
    assert not any(OP.meets(p, GOAL) for p in points)
    near = OP.closest(points, GOAL)
    assert near["recall"] >= GOAL["recall"] and near["label_free_labelled"] > 0.5


def test_shift_zero_without_presence_is_the_plain_thresholds():
    y, s, mask = _scores(overlap=False, seed=1)
    th = np.array([0.7, 0.4])
    p = OP.grid(s, y, mask, th, 0.2, shifts=(0.0,), presence=(0.0,))[0]
    pred = s >= th
    tp = (pred & (y == 1)).sum()
    assert np.isclose(p["precision"], tp / pred.sum()) and np.isclose(p["recall"], tp / (y == 1).sum())
    lower = OP.grid(s, y, mask, th, 0.2, shifts=(-1.0,), presence=(0.0,))[0]
    assert lower["recall"] >= p["recall"]  # lower thresholds never find less


def test_quick_run_writes_its_report(tmp_path):
    assert OP.main(["--quick", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "operating_points.json").read_text())
    assert r["benchmark"] == "operating_points" and r["images"] > 0
    assert r["reachable"] == any(OP.meets(p, r["goal"]) for p in r["points"])
    own = next(p for p in r["points"] if p["shift"] == 0.0 and p["presence"] == 0.0)
    assert own == r["own"]  # the toy model has no presence threshold: its own point is on the grid
    assert "Goal reachable on this set by thresholds alone" in (tmp_path / "operating_points.md").read_text()
