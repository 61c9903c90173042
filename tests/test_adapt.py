"""`sixview adapt`: class alignment, masking, box-aware crop labels, and a tiny end-to-end run."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from training.data.photos import UNKNOWN, crop_targets, masked_bce  # noqa: E402
from training.errors import DataError, RunError  # noqa: E402
from training.fit.adapt import AdaptConfig, photo_targets, run_adapt, split_indices  # noqa: E402
from training.fit.train import TrainConfig, run_training  # noqa: E402

pytestmark = pytest.mark.train
COLOURS = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}  # BGR


def test_alignment_permutation_and_mask():
    # set order (alphabetical folders) differs from the model's; 'green' is not labelled by the set
    labels = np.array([[1, 0], [0, 1], [1, 1]], np.float32)  # columns: blue, red
    t, known = photo_targets(["blue", "red"], labels, ["red", "green", "blue"], [], None)
    assert known.tolist() == [True, False, True]
    np.testing.assert_array_equal(t, [[0, UNKNOWN, 1], [1, UNKNOWN, 0], [1, UNKNOWN, 1]])
    with pytest.raises(DataError, match="lacks: cyan"):
        photo_targets(["blue", "cyan"], labels, ["red", "green", "blue"], [], None)
    t, known = photo_targets(["blue", "cyan"], labels, ["red", "green", "blue"], ["cyan"], None)
    assert known.tolist() == [False, False, True] and t[:, 2].tolist() == [1, 0, 1]
    t, known = photo_targets(["blue", "red"], labels, ["red", "green", "blue"], [], ["red"])
    assert known.tolist() == [False, True, True] and (t[:, 0] == UNKNOWN).all()


def test_crop_labels_follow_boxes():
    base = np.array([1, 0, UNKNOWN], np.float32)
    boxes = [(0, np.array([0, 0, 10, 10])), (1, np.array([80, 80, 100, 100]))]
    assert crop_targets(base, boxes, (0, 0, 60, 60), whole=False).tolist() == [1, 0, UNKNOWN]
    assert crop_targets(base, boxes, (40, 40, 100, 100), whole=False).tolist() == [0, 1, UNKNOWN]
    assert crop_targets(base, boxes, (5, 5, 100, 100), whole=False)[0] == UNKNOWN  # a quarter of the box
    assert crop_targets(base, boxes, (0, 0, 1, 1), whole=True).tolist() == base.tolist()


def test_masked_bce_ignores_unknown():
    y = np.array([[1.0, UNKNOWN], [0.0, 1.0]], np.float32)
    p = np.array([[0.9, 0.0001], [0.2, 0.7]], np.float32)
    got = np.asarray(masked_bce(y, p))
    want = [-np.log(0.9), (-np.log(0.8) - np.log(0.7)) / 2]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def _thumbs(root, n=12):
    for split in ("train", "test"):
        for c, bgr in COLOURS.items():
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                img = np.random.default_rng(i).integers(90, 160, (32, 32, 3)).astype(np.uint8)
                img[8:24, 8:24] = bgr
                cv2.imwrite(str(root / split / c / f"{i}.png"), img)


def _photos(root, n=16, seed=0):
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows, boxes = [], []
    for i in range(n):
        img = rng.integers(90, 160, (120, 160, 3)).astype(np.uint8)
        labels = []
        for c in ("blue", "red"):
            if rng.random() < 0.5:
                x, y = int(rng.integers(0, 110)), int(rng.integers(0, 70))
                img[y:y + 45, x:x + 45] = COLOURS[c]
                labels.append(c)
                boxes.append([f"images/{i}.png", c, x, y, x + 45, y + 45])
        cv2.imwrite(str(root / "images" / f"{i}.png"), img)
        rows.append([f"images/{i}.png", "|".join(labels)])
    with open(root / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "labels"], *rows])
    with open(root / "boxes.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label", "x0", "y0", "x1", "y1"], *boxes])
    (root / "classes.txt").write_text("blue\nred\n")


ARCHS = {"convnext-edge": ({"width_scale": 0.25, "depths": [1, 1, 1, 1]}, 0),
         "efficientnet-lite0": ({"arch": "efficientnet-lite0", "freeze_backbone": True}, 5)}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_tiny_adaptation_end_to_end(tmp_path, arch):
    _thumbs(tmp_path / "thumbs")
    _photos(tmp_path / "photos_train", seed=1)
    _photos(tmp_path / "photos_val", seed=2)
    cache = str(tmp_path / "cache")
    base = tmp_path / "std"
    model_kw, freeze_stages = ARCHS[arch]
    run_training(TrainConfig(data=str(tmp_path / "thumbs"), out=str(base), input_size=[32, 32], epochs=1,
                             batch_size=16, head_width=32, mlflow_uri="off", cache_dir=cache, verbose=0, **model_kw))
    out = tmp_path / "hd"
    m = run_adapt(AdaptConfig(base=str(base), data=str(tmp_path / "photos_train"), val=str(tmp_path / "photos_val"),
                              out=str(out), epochs=2, batch_size=8, lr=1e-4, mlflow_uri="off", cache_dir=cache,
                              freeze_stages=freeze_stages, verbose=0))
    for name in ("config.json", "best.keras", "last.keras", "history.csv", "metrics.json", "report.md"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["classes"] == ["blue", "green", "red"] and cfg["known_classes"] == ["blue", "red"]
    assert cfg["role"] == "hd" and cfg["input_size"] == [32, 32]
    assert set(m["before"]) == {"photos", "cifar10_test"} and set(m["after"]) == {"photos", "cifar10_test"}
    assert 0.0 <= m["val_map_after"] <= 1.0 and "green" not in m["after"]["photos"]["tiling_on"]["ap"]
    assert "CIFAR-10 test top1" in (out / "report.md").read_text()
    val_map = [float(r["val_map"]) for r in csv.DictReader((out / "history.csv").open())]
    state = json.loads((out / "state.json").read_text())  # names the epoch best.keras holds
    assert state["monitor"] == "val_map" and state["best_epoch"] == 1 + val_map.index(max(val_map))
    from training.fit.run_folder import sample_images  # the converter verifies HD on its own photos
    assert sample_images(cfg, 3).shape == (3, 32, 32, 3)


def test_unlabelled_classes_are_distilled_from_the_teacher():
    from training.data.photos import PhotoCrops

    class Split:
        def image(self, i):
            return np.full((40, 60, 3), 100 + i, np.uint8)

    targets = np.array([[1, UNKNOWN, 0], [0, UNKNOWN, 1]], np.float32)  # class 1: not labelled by the set
    teacher = lambda x, training=False: np.tile([0.9, 0.25, 0.8], (len(x), 1)).astype(np.float32)  # noqa: E731
    unlabelled = np.array([False, True, False])
    crops = PhotoCrops(Split(), np.arange(2), targets, [[], []], (32, 32), 2, teacher=teacher, unlabelled=unlabelled)
    _, y = crops[0]
    assert np.allclose(y[:, 1], 0.25)  # the teacher's score, not a mask
    assert sorted(map(tuple, y[:, [0, 2]].tolist())) == [(0.0, 1.0), (1.0, 0.0)]  # labelled classes untouched
    _, y = PhotoCrops(Split(), np.arange(2), targets, [[], []], (32, 32), 2)[0]
    assert (y[:, 1] == UNKNOWN).all()  # without a teacher: masked


def test_balance_gives_every_set_the_same_share_and_rare_classes_more():
    from training.fit.adapt import balance_weights

    sets = np.array([0] * 8 + [1] * 2)
    targets = np.array([[1, 0]] * 6 + [[0, 1]] * 1 + [[0, 0]] * 1 + [[1, 0]] * 2, np.float32)
    w = balance_weights(sets, targets)
    assert np.isclose(w[sets == 0].sum(), 0.5) and np.isclose(w[sets == 1].sum(), 0.5)
    assert w[6] > w[0]  # the one photo of class 1 is drawn more than each of the six of class 0
    assert np.isclose(w[6], w[7])  # a lone label-free photo weighs like a lone class


def test_each_set_labels_its_own_classes_and_distils_the_rest():
    from training.data.photos import PhotoCrops

    class Split:
        def __init__(self, base):
            self.base = base

        def image(self, i):
            return np.full((40, 60, 3), self.base + i, np.uint8)

    # set 0 labels classes 0 and 2; set 1 labels class 0 only
    targets = np.array([[1, UNKNOWN, 0], [0, UNKNOWN, UNKNOWN]], np.float32)
    teacher = lambda x, training=False: np.tile([0.9, 0.25, 0.8], (len(x), 1)).astype(np.float32)  # noqa: E731
    crops = PhotoCrops([Split(0), Split(100)], np.array([[0, 0], [1, 0]]), targets, [[[]], [[]]], (32, 32), 2,
                       teacher=teacher, unlabelled=targets == UNKNOWN)
    x, y = crops[0]
    by_set = {int(round(float(img.mean()))) >= 100: t for img, t in zip(x, y, strict=True)}
    assert by_set[False].tolist() == pytest.approx([1, 0.25, 0])
    assert by_set[True].tolist() == pytest.approx([0, 0.25, 0.8])


def test_split_indices_without_a_report_part_is_the_split_every_run_made():
    for n, hold in ((10, 0.3), (7, 0.2), (16, 1.0), (5, 0.0)):
        order = np.random.default_rng(3).permutation(n)  # the split as photo_set made it before --report
        n_held = round(n * hold)
        fit, held, report = split_indices(n, hold, 0.0, np.random.default_rng(3))
        assert fit.tolist() == np.sort(order[n_held:]).tolist() and held.tolist() == np.sort(order[:n_held]).tolist()
        assert report.size == 0


def test_split_indices_sets_a_report_part_aside_from_the_fitted_photos():
    fit, held, report = split_indices(50, 0.2, 0.3, np.random.default_rng(0))
    assert (len(fit), len(held), len(report)) == (25, 10, 15)
    assert sorted([*fit, *held, *report]) == list(range(50))  # disjoint and covering the set
    _, held0, _ = split_indices(50, 0.2, 0.0, np.random.default_rng(0))
    assert held.tolist() == held0.tolist()  # the report part comes out of the fitted photos, not the held-out ones
    assert len(split_indices(3, 0.5, 0.49, np.random.default_rng(0))[2]) <= 1  # rounding never overlaps


def test_holdout_and_report_must_leave_photos_to_fit():
    with pytest.raises(DataError, match="--holdout 0.6 and --report 0.4 leave no photo to fit"):
        AdaptConfig(base="b", data=["a"], out="o", holdout=0.6, report=0.4)
    with pytest.raises(DataError, match="--report must be in"):
        AdaptConfig(base="b", data=["a"], out="o", report=1.0)
    AdaptConfig(base="b", data=["a"], out="o", val=["v"], holdout=0.6, report=0.5)  # --val: nothing held out of a
    from click.testing import CliRunner

    from edge.cli import main

    res = CliRunner().invoke(main, ["adapt", "--base", "b", "--data", "a", "--out", "o", "--holdout", "0.5",
                                    "--report", "0.5"])
    assert res.exit_code == 2 and "leave no photo to fit" in res.output, res.output


def test_adaptation_on_several_sets_holds_part_of_each_out(tmp_path, monkeypatch):
    _thumbs(tmp_path / "thumbs", n=6)
    _photos(tmp_path / "a", n=10, seed=1)
    _photos(tmp_path / "b", n=10, seed=2)
    (tmp_path / "b" / "classes.txt").write_text("red\n")  # set b does not label blue
    rows = [r for r in csv.reader(open(tmp_path / "b" / "labels.csv"))]
    with open(tmp_path / "b" / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([rows[0], *([p, "|".join(x for x in lab.split("|") if x == "red")]
                                             for p, lab in rows[1:])])
    cache = str(tmp_path / "cache")
    base = tmp_path / "std"
    run_training(TrainConfig(data=str(tmp_path / "thumbs"), out=str(base), input_size=[32, 32], epochs=1,
                             batch_size=16, head_width=32, mlflow_uri="off", cache_dir=cache, verbose=0,
                             width_scale=0.25, depths=[1, 1, 1, 1]))
    out = tmp_path / "hd"
    run_adapt(AdaptConfig(base=str(base), data=[str(tmp_path / "a"), str(tmp_path / "b")], out=str(out),
                          holdout=0.3, epochs=1, batch_size=8, lr=1e-4, mlflow_uri="off", cache_dir=cache, verbose=0,
                          replay=5, input_size=[40, 40]))
    splits = json.loads((out / "splits.json").read_text())["sets"]
    assert set(splits) == {str((tmp_path / s).resolve()) for s in "ab"}  # replayed images choose nothing
    for part in splits.values():
        assert len(part["heldout"]) == 3 and len(part["fit"]) == 7 and not set(part["fit"]) & set(part["heldout"])
        assert part["report"] == []  # without --report nothing is set aside
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["known_by_set"] == {str((tmp_path / "a").resolve()): ["blue", "red"],
                                   str((tmp_path / "b").resolve()): ["red"]}
    assert cfg["n_train"] == 14 + 5 and cfg["n_val"] == 6 and cfg["n_report"] == 0
    assert cfg["input_size"] == cfg["model"]["input_size"] == [40, 40]  # rebuilt from the 32-pixel base
    assert cfg["replay"] == {"set": str((tmp_path / "thumbs").resolve()), "images": 5}
    with pytest.raises(DataError, match="holdout"):
        AdaptConfig(base=str(base), data=[str(tmp_path / "a")], out=str(out), holdout=0.0)

    # --report: a further part of each set is set aside; it is neither fitted nor rendered for selection
    from click.testing import CliRunner

    import training.fit.adapt as A
    from edge.cli import main

    where, seen = {}, {"fit": set(), "selection": set()}  # photos as (set folder, id): both sets use images/<i>.png
    load, crops, views = A.load_split, A.PhotoCrops, A.six_views

    def record_split(src, *args, **kw):
        split = load(src, *args, **kw)
        where[split.directory] = str(Path(src.path).resolve())
        return split

    def record_crops(splits, rows, *args, **kw):
        seen["fit"] |= {(where[splits[g].directory], splits[g].ids[i]) for g, i in rows}
        return crops(splits, rows, *args, **kw)

    def record_views(split, idx, *args, **kw):
        seen["selection"] |= {(where[split.directory], split.ids[i]) for i in idx}
        return views(split, idx, *args, **kw)

    monkeypatch.setattr(A, "load_split", record_split)
    monkeypatch.setattr(A, "PhotoCrops", record_crops)
    monkeypatch.setattr(A, "six_views", record_views)
    res = CliRunner().invoke(main, ["adapt", "--base", str(base), "--data", str(tmp_path / "a"), "--data",
                                    str(tmp_path / "b"), "--out", str(tmp_path / "hd2"), "--holdout", "0.3",
                                    "--report", "0.2", "--epochs", "1", "--batch-size", "8", "--lr", "1e-4",
                                    "--mlflow-uri", "off", "--cache-dir", cache, "--replay", "5",
                                    "--input-size", "40"])
    assert res.exit_code == 0, res.output
    with_report = json.loads((tmp_path / "hd2" / "splits.json").read_text())["sets"]
    assert set(with_report) == set(splits)
    for path, part in with_report.items():
        fit, held, report = set(part["fit"]), set(part["heldout"]), set(part["report"])
        assert (len(fit), len(held), len(report)) == (5, 3, 2)
        assert not fit & held and not fit & report and not held & report and len(fit | held | report) == 10
        assert held == set(splits[path]["heldout"])  # the same held-out photos as without --report
        assert not {(path, i) for i in report} & (seen["fit"] | seen["selection"])
        assert {i for p, i in seen["fit"] if p == path} == fit
    assert seen["selection"] == {(p, i) for p, part in with_report.items() for i in part["heldout"]}
    cfg = json.loads((tmp_path / "hd2" / "config.json").read_text())
    assert cfg["n_train"] == 10 + 5 and cfg["n_val"] == 6 and cfg["n_report"] == 4
    assert "4 set aside for reporting" in (tmp_path / "hd2" / "report.md").read_text()

    # --no-negatives: photos with none of a set's classes are not fitted; the held-out part is the same
    res = CliRunner().invoke(main, ["adapt", "--base", str(base), "--data", str(tmp_path / "a"), "--data",
                                    str(tmp_path / "b"), "--out", str(tmp_path / "hd3"), "--holdout", "0.3",
                                    "--no-negatives", "--epochs", "1", "--batch-size", "8", "--lr", "1e-4",
                                    "--mlflow-uri", "off", "--cache-dir", cache, "--input-size", "40"])
    assert res.exit_code == 0, res.output
    positives = {s: {p for p, lab in list(csv.reader(open(tmp_path / s / "labels.csv")))[1:] if lab} for s in "ab"}
    without = json.loads((tmp_path / "hd3" / "splits.json").read_text())["sets"]
    for s in "ab":
        part, before = without[str((tmp_path / s).resolve())], splits[str((tmp_path / s).resolve())]
        assert part["heldout"] == before["heldout"]
        assert set(part["fit"]) == set(before["fit"]) & positives[s] != set(before["fit"])


def test_a_run_stopped_before_its_first_epoch_is_started_again(tmp_path):
    out = tmp_path / "hd"
    out.mkdir()
    (out / "config.json").write_text("{}")  # what an adaptation writes before its first epoch ends
    cfg = AdaptConfig(base=str(tmp_path / "no-base"), data=["a"], out=str(out))
    with pytest.raises(RunError) as e:
        run_adapt(cfg)
    assert "already holds a run" not in str(e.value)  # it went on, to the missing base run
    (out / "state.json").write_text("{}")  # an epoch was saved: refused without --resume
    with pytest.raises(RunError, match="already holds a run"):
        run_adapt(cfg)


def _weights(path):
    model = tf.keras.models.load_model(path, compile=False)
    return [w.copy() for w in model.get_weights()]


def _tiny_base(tmp_path):
    """A one-epoch Standard run on thumbnails and a photo set `a` of 12 photos: (run folder, cache)."""
    _thumbs(tmp_path / "thumbs", n=6)
    _photos(tmp_path / "a", n=12, seed=1)
    cache = str(tmp_path / "cache")
    base = tmp_path / "std"
    run_training(TrainConfig(data=str(tmp_path / "thumbs"), out=str(base), input_size=[32, 32], epochs=1,
                             batch_size=16, head_width=32, mlflow_uri="off", cache_dir=cache, verbose=0,
                             width_scale=0.25, depths=[1, 1, 1, 1]))
    return base, cache


def test_init_from_continues_an_adaptation_on_the_same_splits(tmp_path):
    base, cache = _tiny_base(tmp_path)
    kw = dict(base=str(base), data=[str(tmp_path / "a")], holdout=0.25, batch_size=8, mlflow_uri="off",
              cache_dir=cache, verbose=0, input_size=[40, 40])
    first = tmp_path / "hd"
    run_adapt(AdaptConfig(out=str(first), epochs=1, lr=1e-3, **kw))
    # a zero rate changes nothing: the continued run's best weights are the first run's, not the base's
    again = tmp_path / "hd-more"
    run_adapt(AdaptConfig(out=str(again), epochs=1, lr=0.0, init_from=str(first), **{**kw, "input_size": [48, 48]}))
    got, want, base_w = _weights(again / "best.keras"), _weights(first / "best.keras"), _weights(base / "best.keras")
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
    assert not all(np.array_equal(g, b) for g, b in zip(got, base_w, strict=True))
    cfg = json.loads((again / "config.json").read_text())
    assert cfg["input_size"] == [48, 48] and cfg["adapt"]["init_from"] == str(first)
    assert (again / "splits.json").read_text() == (first / "splits.json").read_text()
    # photos split otherwise: refused before anything is fitted
    with pytest.raises(DataError, match="split its photos differently"):
        run_adapt(AdaptConfig(out=str(tmp_path / "other"), epochs=1, init_from=str(first), **{**kw, "holdout": 0.5}))
    assert not (tmp_path / "other" / "last.keras").exists()
    with pytest.raises(RunError, match="not an adaptation run"):
        run_adapt(AdaptConfig(out=str(tmp_path / "other2"), epochs=1, init_from=str(base), **kw))


def test_cosine_schedule_decays_the_adaptation_rate_to_zero(tmp_path):
    base, cache = _tiny_base(tmp_path)
    rates = {}
    for schedule in ("plateau", "cosine"):
        out = tmp_path / schedule
        run_adapt(AdaptConfig(base=str(base), data=[str(tmp_path / "a")], out=str(out), epochs=2, lr=1e-3,
                              batch_size=8, mlflow_uri="off", cache_dir=cache, verbose=0, schedule=schedule,
                              warmup_epochs=0.5))
        opt = tf.keras.models.load_model(out / "last.keras", custom_objects={"masked_bce": masked_bce}).optimizer
        rates[schedule] = float(opt.learning_rate)  # the rate for the next step, after the last epoch
    assert rates["plateau"] == pytest.approx(1e-3)  # no epoch was flat for two epochs
    assert rates["cosine"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(DataError, match="unknown schedule"):
        AdaptConfig(base="b", data=["a"], out="o", schedule="step")
