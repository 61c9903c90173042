"""`sixview eval`: metric functions against hand-computed cases, and a run on a synthetic set."""

import csv
import json

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner

pytest.importorskip("sklearn")


from edge.cli import main  # noqa: E402
from edge.model import open_model  # noqa: E402
from training.eval import metrics as M  # noqa: E402


def test_ap_by_hand():
    y = np.array([[1], [0], [1], [0]])
    s = np.array([[0.9], [0.8], [0.7], [0.1]])
    # ranks: TP (P=1), FP, TP (P=2/3) -> AP = (1 + 2/3) / 2
    assert M.per_class_ap(y, s, ["a"])["a"] == pytest.approx(5 / 6)
    assert M.per_class_ap(np.zeros((3, 1)), np.ones((3, 1)), ["a"])["a"] is None
    assert M.mean_ap({"a": 0.5, "b": None, "c": 1.0}) == 0.75


def test_prf_exact_match_top1_by_hand():
    y = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    pred = np.array([[1, 0], [1, 0], [1, 0], [0, 1]])
    prf = M.prf_at(y, pred, ["a", "b"])
    assert prf["a"]["precision"] == pytest.approx(2 / 3) and prf["a"]["recall"] == 1.0
    assert prf["b"]["precision"] == 1.0 and prf["b"]["recall"] == 0.5
    assert prf["micro"]["precision"] == pytest.approx(3 / 4) and prf["micro"]["recall"] == pytest.approx(3 / 4)
    assert M.exact_match(y, pred) == 0.5
    s = np.array([[0.9, 0.1], [0.5, 0.6], [0.2, 0.1], [0.3, 0.4]])
    assert M.top1_accuracy(y, s) == 1.0  # rows 0 and 3 are single-label, both right


def test_recall_by_size():
    pred = np.array([[1, 0], [0, 1]])
    boxes = [(0, 0, 0.1), (0, 1, 0.1), (1, 1, 0.3), (1, 0, 0.9)]
    r = M.recall_by_size(boxes, pred)
    assert r["small"] == {"recall": 0.5, "objects": 2}
    assert r["medium"] == {"recall": 1.0, "objects": 1} and r["large"] == {"recall": 0.0, "objects": 1}


def test_calibration_improves_f1():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (400, 3))
    s = np.clip(0.25 * y + rng.normal(0.3, 0.1, y.shape), 0, 1)  # positives score ~0.55, negatives ~0.3
    th = M.best_f1_thresholds(y, s, [0.9, 0.9, 0.9])
    f1 = lambda t: M.prf_at(y, (s >= np.array(t)).astype(int), "abc")["macro"]["f1"]  # noqa: E731
    assert f1(th) > f1([0.9, 0.9, 0.9]) + 0.3 and f1(th) >= f1([0.5, 0.5, 0.5])


@pytest.fixture()
def colour_set(tmp_path):
    """Photos with small/large red and blue squares; labels.csv, boxes.csv; 'green' is not labelled."""
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    rows, boxes = [], []
    rng = np.random.default_rng(1)
    for i in range(24):
        img = np.full((300, 400, 3), 128, np.uint8)
        labels = []
        for colour, bgr in (("red", (0, 0, 255)), ("blue", (255, 0, 0))):
            if rng.random() < 0.5:
                side = int(rng.choice([55, 150]))
                x, y = int(rng.choice([3, 400 - side - 3])), int(rng.choice([3, 300 - side - 3]))
                img[y:y + side, x:x + side] = bgr
                labels.append(colour)
                boxes.append([f"images/{i}.png", colour, x, y, x + side, y + side])
        cv2.imwrite(str(root / "images" / f"{i}.png"), img)
        rows.append([f"images/{i}.png", "|".join(labels)])
    (root / "classes.txt").write_text("blue\nred\n")  # alphabetical: not the model's order
    with open(root / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "labels"], *rows])
    with open(root / "boxes.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label", "x0", "y0", "x1", "y1"], *boxes])
    return root


def test_eval_report_and_calibration(tmp_path, colour_models, colour_set):
    out = tmp_path / "report"
    res = CliRunner().invoke(main, ["eval", str(colour_models), "--data", str(colour_set), "--out", str(out),
                                    "--calibrate", "--calibrated-out", str(tmp_path / "cal")])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["classes"] == ["red", "blue"] and report["masked"] == ["green"]
    hd = report["roles"]["hd"]
    assert hd["images"] == 24
    assert hd["tiling_on"]["mAP"] > 0.9  # the colour model sees its colours
    small_on = hd["tiling_on"]["recall_by_size"]["small"]
    small_off = hd["tiling_off"]["recall_by_size"]["small"]
    assert small_on["objects"] > 0 and small_on["recall"] > small_off["recall"]
    assert (out / "pr.png").stat().st_size > 1000 and "Standard vs HD" in (out / "report.md").read_text()
    cal = open_model(tmp_path / "cal" / "hd.onnx", "cpu").meta
    assert cal.provenance["calibration"]["set"].startswith(str(colour_set))
    assert cal.thresholds["green"] == 0.3  # a masked class keeps its threshold
    assert set(cal.thresholds) == {"red", "green", "blue"}
    assert onnx.load(colour_models / "hd.onnx").graph == onnx.load(tmp_path / "cal" / "hd.onnx").graph
    # a later evaluation says which set the thresholds came from
    res = CliRunner().invoke(main, ["eval", str(tmp_path / "cal"), "--data", str(colour_set),
                                    "--out", str(tmp_path / "r2"), "--engines", "hd"])
    assert res.exit_code == 0 and "calibrated on" in (tmp_path / "r2" / "report.md").read_text()


def test_eval_bad_data_is_one_line(tmp_path, colour_models):
    res = CliRunner().invoke(main, ["eval", str(colour_models), "--data", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "data not found" in res.output and "Traceback" not in res.output


def test_eval_does_not_import_tensorflow():
    """Scoring, metrics, report and calibration (and the eval command) run on the runtime's stack."""
    import subprocess
    import sys

    code = ("import sys, training.eval.scoring, training.eval.metrics, training.eval.report, "
            "training.eval.calibrate, training.commands.eval; "
            "heavy = sorted({'tensorflow', 'keras'} & set(sys.modules)); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
