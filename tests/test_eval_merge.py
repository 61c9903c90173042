"""`sixview eval --calibrate --fit-merge`: the view-aware merge fitted with the thresholds on synthetic
photos whose crops are over-confident, carried by the calibrated model and used by the runtime."""

import csv
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("sklearn")


from edge.cli import main  # noqa: E402
from edge.model import open_model  # noqa: E402

# --- --fit-merge: the view-aware merge fitted with the thresholds, carried by the model, used by the runtime ---

def overconfident_set(root, n, seed):
    """Photos whose labels follow the whole image: a class is present when a square of its colour
    covers 12-25% of the photo; a smaller square (8-10%) inside one corner view is not labelled, yet
    that corner view scores it as high as a real one (the crops are over-confident; the max over
    the views cannot tell them apart)."""
    rng = np.random.default_rng(seed)
    bgr = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        h, w = 120, 160
        img = np.full((h, w, 3), 128, np.uint8)
        labels = []
        for c in rng.permutation(list(bgr)):
            if rng.random() < 0.35:
                side = int(np.sqrt(rng.uniform(0.12, 0.25) * h * w))
                x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
                labels.append(str(c))
            elif rng.random() < 0.6:
                side = int(np.sqrt(rng.uniform(0.08, 0.10) * h * w))
                x, y = int(rng.choice([0, w - side])), int(rng.choice([0, h - side]))  # inside one corner view
            else:
                continue
            img[y:y + side, x:x + side] = bgr[str(c)]
        cv2.imwrite(str(root / "images" / f"{i:03d}.png"), img)
        rows.append([f"images/{i:03d}.png", "|".join(sorted(labels))])
    (root / "classes.txt").write_text("red\ngreen\nblue\n")
    with open(root / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "labels"], *rows])
    return root


def _eval(*args):
    res = CliRunner().invoke(main, ["eval", *map(str, args), "--engines", "hd", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return res


def test_fit_merge_beats_max_on_heldout_photos_and_the_runtime_uses_it(tmp_path, colour_models):
    from edge.engine import Engine
    from edge.merge import merged_scores
    from edge.tiling import VIEW_NAMES

    cal_set, test_set = overconfident_set(tmp_path / "cal_set", 120, 1), overconfident_set(tmp_path / "test_set", 80, 2)
    cal_dir = tmp_path / "cal"
    res = _eval(colour_models, "--data", cal_set, "--out", tmp_path / "r_cal", "--calibrate", "--fit-merge",
                "--calibrated-out", cal_dir)
    assert "merge logit_linear" in res.output
    report = json.loads((tmp_path / "r_cal" / "report.json").read_text())
    cal = report["calibration"]["hd"]
    assert cal["merge_fitted"] and cal["merge"]["kind"] == "logit_linear"
    assert cal["merge_own_bias"] == ["red", "green", "blue"]  # >= 20 positives and negatives each
    assert "fitted here first" in (tmp_path / "r_cal" / "report.md").read_text()
    # the written model carries the merge, with where it was fitted
    meta = open_model(cal_dir / "hd.onnx", "cpu").meta
    assert meta.merge == cal["merge"] and set(meta.merge["bias"]) == {"red", "green", "blue"}
    assert str(cal_set) in meta.merge["fitted_on"] and "120 images, ids sha256 " in meta.merge["fitted_on"]
    assert meta.provenance["calibration"]["merge"] == "logit_linear"
    # the thresholds were chosen on the fitted merge's scores: the calibrated model, scored on the same
    # photos, decides exactly as the calibration said it would
    _eval(cal_dir, "--data", cal_set, "--out", tmp_path / "r_again")
    again = json.loads((tmp_path / "r_again" / "report.json").read_text())["roles"]["hd"]
    assert again["merge"] == meta.merge and again["tiling_on"]["decision"] == cal["after"]
    assert "logit_linear" in (tmp_path / "r_again" / "report.md").read_text()
    # held-out photos: the fitted merge beats the max
    _eval(colour_models, "--data", test_set, "--out", tmp_path / "r_max")
    _eval(cal_dir, "--data", test_set, "--out", tmp_path / "r_fit")
    base = json.loads((tmp_path / "r_max" / "report.json").read_text())["roles"]["hd"]["tiling_on"]
    fit = json.loads((tmp_path / "r_fit" / "report.json").read_text())["roles"]["hd"]["tiling_on"]
    assert fit["mAP"] > base["mAP"] + 0.1, (fit["mAP"], base["mAP"])
    assert fit["decision"]["confident"]["f1"] > base["decision"]["confident"]["f1"]
    # the runtime uses it: each record's scores are merged_scores of the image's view scores
    out = tmp_path / "scan.jsonl"
    res = CliRunner().invoke(main, ["scan", str(test_set / "images"), "--models", str(cal_dir), "--engine", "hd",
                                    "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    engine = Engine(cal_dir, routing="hd", device="cpu")
    classes = engine.model("hd").meta.classes
    differs = 0
    for r in records:
        (vs,), _ = engine.view_scores([engine.load((test_set / "images" / r["path"].split("/")[-1]).read_bytes())])
        merged = merged_scores(vs, meta.merge, classes)
        assert r["scores"] == {c: round(float(s), 6) for c, s in zip(classes, merged, strict=True)}
        assert r["views"] == {c: VIEW_NAMES[i] for c, i in zip(classes, vs.argmax(axis=0), strict=True)}
        differs += not np.allclose(merged, vs.max(axis=0), atol=1e-3)
    assert len(records) == 80 and differs > 40


def test_fit_merge_needs_calibrate(tmp_path, colour_models, colour_set):
    res = CliRunner().invoke(main, ["eval", str(colour_models), "--data", str(colour_set), "--fit-merge"])
    assert res.exit_code == 2 and "--fit-merge" in res.output and "--calibrate" in res.output


def test_fit_merge_on_few_photos_uses_the_pooled_bias_and_says_which_thresholds_it_kept(tmp_path, colour_models,
                                                                                         colour_set):
    res = _eval(colour_models, "--data", colour_set, "--out", tmp_path / "r", "--calibrate", "--fit-merge",
                "--calibrated-out", tmp_path / "cal")
    assert "no calibration photo is labelled with green" in res.stderr  # green: masked (not in classes.txt)
    meta = open_model(tmp_path / "cal" / "hd.onnx", "cpu").meta
    bias = meta.merge["bias"]
    assert bias["red"] == bias["green"] == bias["blue"]  # fewer than 20 positives each: the pooled bias
    assert meta.thresholds["green"] == 0.3
    cal = json.loads((tmp_path / "r" / "report.json").read_text())["calibration"]["hd"]
    assert cal["merge_own_bias"] == [] and cal["merge_kept_thresholds"] == ["green"]


def test_fit_logistic_is_sklearns_logistic_regression():
    """The merge's regression (Newton, ridge l2 * n on the weights, the bias free) is sklearn's
    LogisticRegression with C = 1 / (l2 * n) on the same rows."""
    from sklearn.linear_model import LogisticRegression

    from edge.merge import sigmoid
    from training.eval.merge_fit import L2, fit_logistic

    rng = np.random.default_rng(4)
    x = rng.normal(0, 2, (3000, 3))
    y = rng.random(3000) < sigmoid(x @ [1.0, 0.5, -0.3] - 0.7)
    w, b = fit_logistic(x, y)
    ref = LogisticRegression(C=1 / (L2 * len(y)), tol=1e-10, max_iter=1000).fit(x, y)
    np.testing.assert_allclose(w, ref.coef_[0], atol=1e-4)
    assert b == pytest.approx(ref.intercept_[0], abs=1e-4)
