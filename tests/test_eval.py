"""`sixview eval`: metric functions against hand-computed cases, the decision and calibration on arrays
whose answers are known, and runs on synthetic sets (one, several, an adaptation run's held-out photos)."""

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
    # without --fit-merge the merge is not touched: the file has no `merge` key (max), as before
    assert cal.merge == {"kind": "max"} and cal.provenance["calibration"]["merge"] == "max"
    assert "merge" not in {p.key for p in onnx.load(tmp_path / "cal" / "hd.onnx").metadata_props}
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
            "training.eval.calibrate, training.eval.sets, training.eval.decision, training.commands.eval; "
            "heavy = sorted({'tensorflow', 'keras'} & set(sys.modules)); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- metrics of trust, on arrays whose answers are known ------------------------------------------

Y = np.array([[1, 0], [0, 1], [0, 0], [0, 0], [1, 1]])
KNOWN = np.array([[1, 1], [1, 1], [1, 1], [1, 0], [1, 0]], bool)  # rows 3-4: a set that knows only class a


@pytest.mark.parametrize(("name", "fn", "expected"), [
    # row 4's b is unknown there: not a positive; row 3 is label-free (its only known class absent)
    ("label_free", lambda: M.label_free(Y, KNOWN).tolist(), [False, False, True, True, False]),
    ("label_free_unmasked", lambda: M.label_free(Y).tolist(), [False, False, True, True, False]),
    # confident: row 0 a (TP), row 2 a (FP), row 3 b (unknown: masked), row 4 a (TP); positives a0, b1, a4
    ("micro_pr", lambda: M.micro_pr(Y, np.array([[1, 0], [0, 0], [1, 0], [0, 1], [1, 0]]), KNOWN),
     {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3}),
    ("share_confident", lambda: M.share_with_label(Y, np.array([[1, 0], [0, 0], [1, 0], [0, 1], [1, 0]]), KNOWN),
     0.5),  # rows 2 and 3 are label-free; row 3's "b" is unknown to its set
    ("share_none_free", lambda: M.share_with_label(np.ones((2, 1)), np.ones((2, 1))), float("nan")),
    ("auroc_perfect", lambda: M.presence_auroc(Y, np.array([0.9, 0.8, 0.1, 0.2, 0.7]), KNOWN), 1.0),
    ("auroc_half", lambda: M.presence_auroc(Y, np.array([0.9, 0.1, 0.5, 0.2, 0.3]), KNOWN), 0.5),
    ("auroc_nan_row_left_out", lambda: M.presence_auroc(Y, np.array([0.9, np.nan, 0.1, 0.2, 0.7]), KNOWN), 1.0),
    ("auroc_one_group", lambda: M.presence_auroc(np.ones((3, 1)), np.array([0.1, 0.5, 0.9])), float("nan")),
    ("exact_match_masked", lambda: M.exact_match(Y, np.array([[1, 0], [0, 1], [0, 0], [0, 1], [1, 0]]), KNOWN), 1.0),
    ("exact_match_unmasked", lambda: M.exact_match(Y, np.array([[1, 0], [0, 1], [0, 0], [0, 1], [1, 0]])), 0.6),
    # row 4 is single-label once b is masked; its top over known classes is a even though b scores more
    ("top1_masked", lambda: M.top1_accuracy(Y, np.array([[.9, .1], [.2, .8], [.5, .5], [.1, .9], [.3, .9]]), KNOWN),
     1.0),
    ("ap_masked", lambda: M.per_class_ap(Y, np.array([[.9, .1], [.2, .8], [.25, .3], [.1, .9], [.3, .9]]), "ab",
                                         KNOWN), {"a": 1.0, "b": 1.0}),  # row 3's b (0.9, unknown) is no negative
    ("ap_unmasked", lambda: M.per_class_ap(Y, np.array([[.9, .1], [.2, .8], [.25, .3], [.1, .9], [.3, .9]]), "ab"),
     {"a": 1.0, "b": pytest.approx((1 / 2 + 2 / 3) / 2)}),
])
def test_trust_metrics_table(name, fn, expected):
    got = fn()
    if isinstance(expected, float) and np.isnan(expected):
        assert np.isnan(got)
    elif isinstance(expected, dict):
        assert got == {k: pytest.approx(v) for k, v in expected.items()}
    else:
        assert got == pytest.approx(expected)


def test_prf_with_a_row_mask_is_prf_on_the_known_rows():
    rng = np.random.default_rng(3)
    y, pred = rng.integers(0, 2, (60, 3)), rng.integers(0, 2, (60, 3))
    known = np.ones((60, 3), bool)
    known[40:, 2] = False
    masked = M.prf_at(y, pred, "abc", known)
    assert masked["a"] == M.prf_at(y, pred, "abc")["a"]
    assert masked["c"] == M.prf_at(y[:40, 2:], pred[:40, 2:], "c")["c"]
    tp = int((y[known] & pred[known]).sum())
    assert masked["micro"]["precision"] == pytest.approx(tp / pred[known].sum())
    assert masked["micro"]["recall"] == pytest.approx(tp / y[known].sum())


def test_trust_bundle():
    conf = np.array([[1, 0], [0, 0], [0, 0], [0, 0], [1, 0]])
    guess = np.array([[0, 0], [0, 1], [1, 0], [0, 0], [0, 0]])
    t = M.trust(Y, KNOWN, conf, guess, np.array([0.9, 0.6, 0.4, 0.1, 0.8]))
    assert t["confident"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8)}
    assert t["confident_or_guess"]["recall"] == 1.0 and t["confident_or_guess"]["precision"] == 0.75
    assert (t["labelled"], t["label_free"]) == (3, 2)
    assert t["label_free_confident"] == 0.0 and t["label_free_confident_or_guess"] == 0.5
    assert t["presence_auroc"] == 1.0


# --- the decision and calibration ------------------------------------------------------------------

def test_decide_rows_is_the_runtime_rule():
    from edge.merge import presence
    from training.eval.decision import decide_rows

    s = np.array([[0.9, 0.6, 0.1], [0.4, 0.25, 0.1], [0.1, 0.15, 0.05], [0.3, 0.3, 0.3]], np.float32)
    conf, guess, pres = decide_rows(s, [0.5, 0.5, 0.5], 0.2)
    assert conf.tolist() == [[True, True, False], [False] * 3, [False] * 3, [False] * 3]
    assert guess.tolist() == [[False] * 3, [True, False, False], [False] * 3, [True, False, False]]  # ties: first
    assert pres[1] == pytest.approx(1 - 0.6 * 0.75 * 0.9) and pres[0] == presence(s[0].tolist())
    conf, guess, _ = decide_rows(s, [0.5, 0.5, 0.5], 0.2, presence_threshold=0.6)
    # presence 0.595 < 0.6: row 1 says nothing; row 3 (0.657) keeps its guess
    assert conf[0].any() and guess.tolist() == [[False] * 3, [False] * 3, [False] * 3, [True, False, False]]


def test_presence_threshold_rule():
    from training.eval.decision import presence_threshold

    # 10 labelled rows (class a, said right), 6 label-free rows said wrong (a guess of a)
    pres = np.array([0.1, 0.2, 0.25, 0.3, 0.35, 0.4] + [0.9] * 9)
    y = np.zeros((15, 1))
    y[2] = y[6:] = 1
    said = np.ones((15, 1), bool)
    known = np.ones((15, 1), bool)
    # best F1 that keeps recall within 0.01: gate the two label-free rows below the labelled one at 0.25
    assert presence_threshold(y, known, said, pres) == pytest.approx(0.225)
    # a looser recall budget lets it drop that labelled row too, and the three label-free rows above it
    assert presence_threshold(y, known, said, pres, tolerance=0.2) == pytest.approx(0.65)
    assert presence_threshold(np.zeros((3, 1)), known[:3], said[:3], pres[:3]) == 0.0  # nothing labelled


def calibration_rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores that separate perfectly at a 0.75 (class a) and 0.625 (class b); label-free rows whose top
    class would be a wrong guess, at low presence; and rows of a set that knows only a, scoring b high."""
    rows = [  # (targets, known, scores)
        *[((1, 0), (1, 1), (sa, 0.1)) for sa in (0.75, 0.8, 0.9, 0.95)],
        *[((0, 1), (1, 1), (0.2, sb)) for sb in (0.625, 0.7, 0.85)],
        ((1, 1), (1, 1), (0.9, 0.9)),
        *[((0, 0), (1, 1), sc) for sc in ((0.5, 0.1), (0.45, 0.6), (0.1, 0.55))],  # hard negatives, no target
        ((0, 0), (1, 1), (0.35, 0.1)), ((0, 0), (1, 1), (0.3, 0.05)),  # label-free, low presence: a guess of a
        # b unknown there: no negative of b (were they, b's best threshold would be 0.7, above both)
        *[((1, 0), (1, 0), (0.8, 0.65)), ((0, 0), (1, 0), (0.6, 0.66))],
    ]
    y, known, s = (np.array([r[i] for r in rows]) for i in range(3))
    return y.astype(np.float32), known.astype(bool), s


def test_calibration_finds_the_separating_thresholds_and_removes_label_free_guesses():
    from edge.merge import presence
    from training.eval.decision import calibrate

    y, known, s = calibration_rows()
    cal = calibrate(y, known, s, ("a", "b"), {"a": 0.5, "b": 0.5}, 0.2)
    assert cal["thresholds"] == {"a": 0.75, "b": 0.625}
    # every row below the lowest labelled presence (0.2, 0.625) is label-free with a wrong guess: all gated,
    # midway between the highest of them (0.1, 0.55) and it
    assert cal["presence_threshold"] == pytest.approx((presence([0.1, 0.55]) + presence([0.2, 0.625])) / 2, abs=1e-6)
    # label-free rows: the five without targets guess (class thresholds alone), the sixth's "b" is unknown to it
    assert cal["class_thresholds"]["label_free"] == 6
    assert cal["class_thresholds"]["label_free_confident_or_guess"] == pytest.approx(5 / 6)
    assert cal["after"]["label_free_confident_or_guess"] == pytest.approx(1 / 6)  # (0.45, 0.6): presence 0.78
    assert cal["after"]["confident_or_guess"]["recall"] == cal["class_thresholds"]["confident_or_guess"]["recall"]
    assert cal["after"]["confident"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert cal["before"]["confident"]["precision"] < 1.0  # the model's 0.5 thresholds: hard negatives pass


# --- several sets, an adaptation run's held-out photos, calibration written into the files ---------

def csv_set(root, labels, classes_txt):
    """A labels.csv set (training.data.synthetic), one photo per entry, filled with the toy models' colour of
    `labels[i]` (grey for none); labels a set does not list are written as no label (the photo still shows
    the colour)."""
    from training.data.synthetic import write_labels_csv

    write_labels_csv(root, [(f"images/{i}.png", [c] if c else []) for i, c in enumerate(labels)],
                     ["red", "green", "blue"], seed=len(labels))
    bgr = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0), None: (128, 128, 128)}
    for i, c in enumerate(labels):  # the palette's colours are not quite the toy models' ones
        img = cv2.imread(str(root / "images" / f"{i}.png"))
        img[:] = bgr[c]
        cv2.imwrite(str(root / "images" / f"{i}.png"), img)
    listed = classes_txt.split()
    rows = (root / "labels.csv").read_text().splitlines()
    (root / "labels.csv").write_text("\n".join([rows[0]] + [r if r.split(",")[1] in listed else r.split(",")[0] + ","
                                                            for r in rows[1:]]) + "\n")
    (root / "classes.txt").write_text(classes_txt)
    return root


@pytest.fixture()
def adapted_run(tmp_path):
    """Set A knows red/green/blue; set B's classes.txt lists only red (its green photos are label-free
    there); RUN/splits.json holds out part of each."""
    a = csv_set(tmp_path / "a", ["red", "green", "blue", None, "red", "green", "blue", None], "red\ngreen\nblue\n")
    b = csv_set(tmp_path / "b", ["red", "green", None, "red", "green", None, "green"], "red\n")
    run = tmp_path / "run"
    run.mkdir()
    held = {str(a): [f"images/{i}.png" for i in (1, 2, 3, 4, 5, 6, 7)], str(b): [f"images/{i}.png" for i in range(7)]}
    (run / "splits.json").write_text(json.dumps({"sets": {
        str(a): {"fit": ["images/0.png"], "heldout": held[str(a)]}, str(b): {"fit": [], "heldout": held[str(b)]}}}))
    return run, a, b, held


def test_eval_heldout_of_an_adaptation_run_scores_every_set_with_its_own_classes(tmp_path, colour_models,
                                                                                 adapted_run):
    run, a, b, held = adapted_run
    out = tmp_path / "report"
    res = CliRunner().invoke(main, ["eval", str(colour_models), "--heldout-of", str(run), "--engines", "hd",
                                    "--out", str(out), "--calibrate", "--calibrated-out", str(tmp_path / "cal")])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    hd = report["roles"]["hd"]
    assert hd["images"] == 14 and report["classes"] == ["red", "green", "blue"] and report["masked"] == []
    on = hd["tiling_on"]
    # B's green photos score green highly but green is unknown there: no false positive, AP stays 1
    assert on["ap"] == {"red": 1.0, "green": 1.0, "blue": 1.0}
    assert on["decision"]["confident"]["precision"] == 1.0 and on["decision"]["label_free_confident"] == 0.0
    per_set = on["per_set"]
    assert list(per_set) == [f"{a}:all", f"{b}:all"]
    assert per_set[f"{b}:all"]["masked"] == ["green", "blue"] and per_set[f"{a}:all"]["masked"] == []
    assert per_set[f"{b}:all"]["ap"] == {"red": 1.0, "green": None, "blue": None}
    assert per_set[f"{b}:all"]["decision"]["label_free"] == 5  # 3 green + 2 grey photos
    # presence is the runtime's (every class): B's green photos are label-free there, yet "present"
    assert per_set[f"{a}:all"]["decision"]["presence_auroc"] == 1.0
    assert per_set[f"{b}:all"]["decision"]["presence_auroc"] < 1.0
    md = (out / "report.md").read_text()
    assert "Per set" in md and "Trust at the model's decision" in md and "## Calibration" in md
    # calibrated files: a presence threshold (a JSON number), and which sets and ids chose them
    cal_file = tmp_path / "cal" / "hd.onnx"
    props = {p.key: p.value for p in onnx.load(cal_file).metadata_props}
    assert isinstance(json.loads(props["presence_threshold"]), float)
    meta = open_model(cal_file, "cpu").meta
    assert meta.presence_threshold == report["calibration"]["hd"]["presence_threshold"]
    sets = meta.provenance["calibration"]["sets"]
    assert [(s["path"], s["split"], s["heldout"]) for s in sets] == [(str(a), "all", True), (str(b), "all", True)]
    assert [sorted(s["ids"]) for s in sets] == [sorted(held[str(a)]), sorted(held[str(b)])]
    # the calibrated models, scored on the same photos, say so
    res = CliRunner().invoke(main, ["eval", str(tmp_path / "cal"), "--heldout-of", str(run), "--engines", "hd",
                                    "--out", str(tmp_path / "r2")])
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert again["roles"]["hd"]["calibration_overlap"] == 14
    assert again["roles"]["hd"]["presence_threshold"] == meta.presence_threshold  # grey photos guess nothing: 0
    assert "14 of the 14 scored images chose the hd model's thresholds" in (tmp_path / "r2" / "report.md").read_text()


def test_eval_several_data_sets_and_heldout_ids_the_set_lost(tmp_path, colour_models, adapted_run):
    run, a, b, held = adapted_run
    res = CliRunner().invoke(main, ["eval", str(colour_models), "--data", str(a), "--data", str(b),
                                    "--engines", "hd", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["images"] == 15 and len(report["sets"]) == 2
    assert set(report["roles"]["hd"]["tiling_off"]["per_set"]) == {f"{a}:all", f"{b}:all"}
    # a held-out id the set no longer lists is missing, never dropped silently
    splits = json.loads((run / "splits.json").read_text())
    splits["sets"][str(b)]["heldout"].append("images/gone.png")
    (run / "splits.json").write_text(json.dumps(splits))
    res = CliRunner().invoke(main, ["eval", str(colour_models), "--heldout-of", str(run), "--engines", "hd",
                                    "--out", str(tmp_path / "r3")])
    assert res.exit_code == 1 and f"{b}/images/gone.png (not listed by the set)" in res.stderr, res.output
    res = CliRunner().invoke(main, ["eval", str(colour_models), "--heldout-of", str(run), "--data", str(a)])
    assert res.exit_code == 2 and "leave out --data" in res.output


def test_eval_report_of_scores_only_the_photos_set_aside_and_calibrates_nothing(tmp_path, colour_models, adapted_run,
                                                                              monkeypatch):
    from training.commands.eval import input_specs
    from training.eval.sets import heldout_sets

    run, a, b, _ = adapted_run
    res = CliRunner().invoke(main, ["eval", str(colour_models), "--report-of", str(run), "--engines", "hd"])
    assert res.exit_code == 2 and "set no photos aside for reporting" in res.output, res.output  # an older run
    # A: one photo fitted, three held out, four set aside (red, green, blue, none); B sets none aside
    (run / "splits.json").write_text(json.dumps({"sets": {
        str(a): {"fit": ["images/0.png"], "heldout": [f"images/{i}.png" for i in (1, 2, 3)],
                 "report": [f"images/{i}.png" for i in (4, 5, 6, 7)]},
        str(b): {"fit": [], "heldout": [f"images/{i}.png" for i in range(7)], "report": []}}}))
    assert heldout_sets(run, "report") == [(str(a), None, {f"images/{i}.png" for i in (4, 5, 6, 7)})]
    [(name, _, sp, only)] = input_specs((), None, None, str(run))
    assert name == f"{a} (all, report part of {run})" and only == {f"images/{i}.png" for i in (4, 5, 6, 7)}
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["eval", str(colour_models), "--report-of", str(run), "--engines", "hd"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "eval_out" / "run-report" / "report.json").read_text())
    assert report["images"] == 4 and report["set"] == f"{a} (all, report part of {run})"
    assert report["roles"]["hd"]["tiling_on"]["decision"]["label_free"] == 1  # images/7.png, grey
    assert report["sets"] == [{"path": str(a), "split": "all", "heldout_of": None, "report_of": str(run)}]
    assert "calibration" not in report
    res = CliRunner().invoke(main, ["eval", str(colour_models), "--heldout-of", str(run), "--engines", "hd",
                                    "--out", str(tmp_path / "held")])
    assert res.exit_code == 0, res.output  # the held-out part leaves the report photos out
    assert json.loads((tmp_path / "held" / "report.json").read_text())["images"] == 3 + 7
    for extra, says in ((["--calibrate"], "report photos must choose nothing"),
                        (["--data", str(a)], "leave out --data"), (["--heldout-of", str(run)], "exclude each other")):
        res = CliRunner().invoke(main, ["eval", str(colour_models), "--report-of", str(run), *extra])
        assert res.exit_code == 2 and says in res.output, res.output
    (tmp_path / "train_run").mkdir()
    res = CliRunner().invoke(main, ["eval", str(colour_models), "--report-of", str(tmp_path / "train_run")])
    assert res.exit_code == 2 and "no splits.json" in res.output, res.output


def test_calibration_keeps_the_threshold_of_a_class_without_positives():
    from training.eval.decision import calibrate

    y, known, s = calibration_rows()
    y[:, 1] = 0  # b: known, never present
    cal = calibrate(y, known, s, ("a", "b"), {"a": 0.5, "b": 0.3}, 0.2)
    assert cal["thresholds"] == {"a": 0.75, "b": 0.3}
