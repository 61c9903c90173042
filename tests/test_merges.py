"""benchmarks/merges.py: the merges' fitting on synthetic view scores with a known answer, the
thresholds, and the script end to end (--quick) and its protocol guards."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import merge_strategies as MS  # noqa: E402
from benchmarks import merges as MG  # noqa: E402
from edge import merge as EM  # noqa: E402
from training.eval import merge_fit as MF  # noqa: E402


def synthetic(n: int, k: int = 4, seed: int = 0, crop_bias: float = 3.0, crop_noise: float = 2.0,
              whole_noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 6, k) view scores and (n, k) labels: every view's logit carries the same signal (+2 when
    the class is present, -2 when not); the crops add `crop_bias` (over-confident) and more noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < 0.3).astype(np.float32)
    signal = np.where(y > 0, 2.0, -2.0)
    whole = signal + rng.normal(0, whole_noise, (n, k))
    crops = signal[:, None, :] + crop_bias + rng.normal(0, crop_noise, (n, 5, k))
    return EM.sigmoid(np.concatenate([whole[:, None], crops], axis=1)), y


def _evaluate(name: str, pf, yf, pt, yt) -> dict:
    merge = next(m for m in MS.MERGES if m.name == name)
    mf, mt = np.ones(yf.shape, bool), np.ones(yt.shape, bool)
    params = merge.fit(pf, yf, mf, 20)
    thr, _ = MS.choose_thresholds(yf, merge.apply(params, pf), mf, 20)
    names = [f"c{i}" for i in range(yt.shape[1])]
    return MS.merge_metrics(yt, merge.apply(params, pt), mt, thr, names)


def test_fit_logistic_recovers_known_parameters():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 40000)
    y = rng.random(z.size) < EM.sigmoid(0.7 * z - 1.2)
    (a,), b = MF.fit_logistic(z[:, None], y)
    assert a == pytest.approx(0.7, abs=0.04) and b == pytest.approx(-1.2, abs=0.05)
    # a bias alone, on top of a fixed offset
    _, b2 = MF.fit_logistic(np.zeros((z.size, 0)), y, offset=0.7 * z)
    assert b2 == pytest.approx(-1.2, abs=0.05)


def test_fit_logistic_stays_finite_on_separable_data():
    x = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])[:, None]
    w, b = MF.fit_logistic(x, x[:, 0] > 0)
    assert np.isfinite(w).all() and np.isfinite(b) and w[0] > 0
    _, b_all = MF.fit_logistic(x, np.ones(6))  # one class only: finite, strongly positive
    assert np.isfinite(b_all) and b_all > 3


def test_platt_of_calibrated_views_is_the_identity():
    """Views whose scores are already calibrated probabilities: a ~ 1 and b ~ 0 for the whole view."""
    rng = np.random.default_rng(2)
    n, k = 20000, 2
    z = rng.normal(0, 2, (n, 6, k))
    y = (rng.random((n, k)) < EM.sigmoid(z[:, 0])).astype(np.float32)
    params = MS.fit_platt_shared(EM.sigmoid(z), y, np.ones((n, k), bool))
    assert params["a_whole"] == pytest.approx(np.ones(k), abs=0.05)
    assert params["b_whole"] == pytest.approx(np.zeros(k), abs=0.05)
    assert (params["a_crop"] < 0.2).all()  # crops carry no information here: their map is flat


def test_merges_apply_as_documented():
    p = EM.sigmoid(np.random.default_rng(3).normal(0, 2, (7, 6, 5)))
    assert np.array_equal(MS.apply_max({}, p), p.max(axis=1))
    assert np.array_equal(MS.apply_whole({}, p), p[:, 0])
    top2 = np.sort(p, axis=1)[:, -2:].mean(axis=1)
    assert np.allclose(MS.apply_top2_mean({}, p), top2)
    ident = {"a_whole": np.ones(5), "b_whole": np.zeros(5), "a_crop": np.ones(5), "b_crop": np.zeros(5)}
    assert np.allclose(MS.apply_platt(ident, p), p.max(axis=1), atol=1e-6)
    whole_only = {"w": np.array([[1.0] * 5, [0.0] * 5, [0.0] * 5]), "b": np.zeros(5)}
    assert np.allclose(MS.apply_learned(whole_only, p), p[:, 0], atol=1e-6)
    # one image (6, K), as the runtime would call it
    assert MS.apply_learned(whole_only, p[0]).shape == (5,) and MS.apply_platt(ident, p[0]).shape == (5,)
    f = MS.features(p)
    assert f.shape == (7, 3, 5)
    assert np.allclose(f[:, 1], EM.logit(p[:, 1:]).max(axis=1))
    assert np.allclose(f[:, 2], EM.logit(p[:, 1:]).mean(axis=1))


def test_over_confident_crops_view_aware_merges_beat_max():
    """Crops that are over-confident and noisier: the max is dominated by them; per view kind
    calibration (b) and the learned merge (c) weight the whole view back in and must beat it."""
    pf, yf = synthetic(3000, seed=10)
    pt, yt = synthetic(3000, seed=11)
    res = {m.name: _evaluate(m.name, pf, yf, pt, yt) for m in MS.MERGES}
    base = res["max"]
    for name in ("platt_shared", "platt_class", "learned_shared", "learned_class"):
        assert res[name]["mAP"] > base["mAP"] + 0.03, (name, res[name]["mAP"], base["mAP"])
        assert res[name]["f1"] > base["f1"] + 0.02, (name, res[name]["f1"], base["f1"])
        assert res[name]["label_free_labelled"] <= base["label_free_labelled"], name
    # the learned merge can weight the views freely: at least as good as Platt-then-max here
    assert res["learned_shared"]["mAP"] >= res["platt_shared"]["mAP"] - 0.005


def test_learned_merge_finds_the_informative_view():
    """When only the whole view carries the labels, the learned weights say so."""
    pf, yf = synthetic(4000, seed=12, crop_bias=0.0)
    rng = np.random.default_rng(13)
    pf[:, 1:] = EM.sigmoid(rng.normal(1.0, 2.0, pf[:, 1:].shape))  # crops: pure noise
    params = MS.fit_learned_shared(pf, yf, np.ones(yf.shape, bool))
    w = params["w"][:, 0]
    assert w[0] > 1.0 and abs(w[1]) < 0.1 and abs(w[2]) < 0.1


def test_unknown_entries_are_not_fitted():
    """Entries a set does not label are masked: garbage there changes nothing."""
    pf, yf = synthetic(2000, seed=14)
    mask = np.ones(yf.shape, bool)
    mask[:1000, 1] = False
    garbage = yf.copy()
    garbage[:1000, 1] = 1 - garbage[:1000, 1]
    for fit in (MS.fit_platt_shared, MS.fit_platt_class, MS.fit_learned_shared, MS.fit_learned_class):
        a, b = fit(pf, yf, mask, 20), fit(pf, garbage, mask, 20)
        for key in a:
            assert np.allclose(a[key], b[key]), (fit.__name__, key)


def test_classes_without_enough_data_fall_back_to_shared_parameters():
    pf, yf = synthetic(2000, seed=15)
    yf[:, 3] = 0  # class 3: no positive in the fit set
    mask = np.ones(yf.shape, bool)
    assert MF.eligible(yf, mask, 20).tolist() == [True, True, True, False]
    shared = MS.fit_platt_shared(pf, yf, mask, 20)
    per_class = MS.fit_platt_class(pf, yf, mask, 20)
    for key in shared:
        assert per_class[key][3] == pytest.approx(shared[key][3])
        assert not np.allclose(per_class[key][:3], shared[key][:3])
    learned = MS.fit_learned_class(pf, yf, mask, 20)
    pooled = MS.fit_learned_shared(pf, yf, mask, 20)
    assert np.allclose(learned["w"][:, 3], pooled["w"][:, 3]) and learned["b"][3] == pytest.approx(pooled["b"][3])
    assert np.allclose(pooled["w"], pooled["w"][:, :1])  # shared weights
    assert not np.allclose(pooled["b"][:3], pooled["b"][0])  # own biases


def test_thresholds_per_class_and_pooled():
    from training.eval.metrics import best_f1_thresholds

    pf, yf = synthetic(1000, seed=16)
    s = pf[:, 0]
    yf[:, 3] = 0
    mask = np.ones(yf.shape, bool)
    thr, own = MS.choose_thresholds(yf, s, mask, 20)
    assert own.tolist() == [True, True, True, False]
    ref = best_f1_thresholds(yf, s, [0.5] * 4, mask)
    assert thr[:3] == pytest.approx(np.clip(thr[:3], 0.01, 0.99)) and thr[:3] == pytest.approx(ref[:3])
    pooled = MS._best_f1(yf[:, :3].ravel(), s[:, :3].ravel())
    assert thr[3] == pytest.approx(pooled)


def test_bootstrap_is_paired_against_max():
    pf, yf = synthetic(300, k=3, seed=17)
    mask = np.ones(yf.shape, bool)
    scores = {"max": pf.max(axis=1), "same": pf.max(axis=1), "whole": pf[:, 0]}
    thr = {k: np.full(3, 0.5) for k in scores}
    ci = MS.bootstrap_deltas(yf, scores, mask, thr, ["a", "b", "c"], n=20)
    assert set(ci) == {"same", "whole"}
    assert ci["same"]["mAP"] == [0.0, 0.0, 0.0]  # paired: identical scores differ by exactly 0
    assert ci["whole"]["mAP"][0] <= ci["whole"]["mAP"][1] <= ci["whole"]["mAP"][2]


def test_merge_cost_is_measured():
    merge = next(m for m in MS.MERGES if m.name == "max")
    assert 0 < MS.merge_cost_us(merge, {}, 10, number=50, repeat=2) < 1e4


# ---------------------------------------------------------------------------------------------
# The script


def test_quick_end_to_end(tmp_path):
    assert MG.main(["--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "merges.json").read_text())
    assert data["benchmark"] == "merges" and data["quick"] is True
    names = [m["name"] for m in data["merges"]]
    assert names == [m.name for m in MS.MERGES]
    assert data["fit"]["images"] > 0 and data["test"]["images"] > 0 and data["test"]["classes"]
    for m in data["merges"]:
        t = m["test"]
        assert 0 <= t["mAP"] <= 1 and 0 <= t["precision"] <= 1 and 0 <= t["recall"] <= 1
        assert m["cost_us"] > 0 and len(m["thresholds"]) == len(data["settings"]["classes"])
    assert set(data["bootstrap"]) == set(names) - {"max"}
    md = (tmp_path / "merges.md").read_text()
    assert md.startswith("# View merges") and "| platt_shared |" in md and "Verdict" in md


@pytest.fixture(scope="module")
def toy_sets(tmp_path_factory):
    from benchmarks._common import toy_models

    root = tmp_path_factory.mktemp("merges")
    fit, test = MG.synthetic_sets(root, fit=24, test=12)
    return toy_models(MG.ROLE, (32, 32)), fit, test


def test_fit_and_test_must_be_disjoint(toy_sets, tmp_path, capsys):
    models, fit, _ = toy_sets
    rc = MG.main(["--models", str(models), "--fit", str(fit), "--test", str(fit), "--out", str(tmp_path)])
    assert rc == 2 and "in both the FIT and the TEST set" in capsys.readouterr().err
    assert not (tmp_path / "merges.json").exists()


def test_fit_on_a_runs_heldout_photos(toy_sets, tmp_path):
    models, fit, test = toy_sets
    run = tmp_path / "run"
    run.mkdir()
    held = [f"images/fit_{i:03d}.png" for i in range(0, 24, 2)]
    (run / "splits.json").write_text(json.dumps({"sets": {str(fit): {"fit": [], "heldout": held}}}))
    out = tmp_path / "out"
    assert MG.main(["--models", str(models), "--fit-heldout-of", str(run), "--test", str(test),
                    "--bootstrap", "0", "--min-positives", "3", "--out", str(out)]) == 0
    data = json.loads((out / "merges.json").read_text())
    assert data["fit"]["images"] == len(held) and data["test"]["images"] == 12 and data["bootstrap"] == {}


def test_scores_cache_is_reused(toy_sets, tmp_path, capsys):
    models, fit, test = toy_sets
    args = ["--models", str(models), "--fit", str(fit), "--test", str(test), "--bootstrap", "0",
            "--scores-cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    assert MG.main(args) == 0
    first = json.loads((tmp_path / "out" / "merges.json").read_text())
    capsys.readouterr()
    assert MG.main(args) == 0
    assert capsys.readouterr().err.count("scores from") == 2
    again = json.loads((tmp_path / "out" / "merges.json").read_text())
    assert [m["test"] for m in again["merges"]] == [m["test"] for m in first["merges"]]


def test_usage_errors(capsys):
    with pytest.raises(SystemExit):
        MG.main(["--test", "x"])
    with pytest.raises(SystemExit):
        MG.main(["--fit", "x", "--fit-heldout-of", "y", "--test", "z"])
    assert "exclude each other" in capsys.readouterr().err
