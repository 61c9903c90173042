"""`sixview eval`'s group breakdown: per group of photos (species.csv or groups.csv), the share the
model labelled and the labels it gave most, on a tiny synthetic set whose answer is known."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("sklearn")

from edge.cli import main  # noqa: E402
from training.errors import DataError  # noqa: E402
from training.eval.groups import group_table, read_groups  # noqa: E402

RED, BLUE = (0, 0, 255), (255, 0, 0)
# image -> (colour of its large square or None, group or None)
PHOTOS = {"r0": (RED, "fox"), "r1": (RED, "fox"), "r2": (RED, "fox"), "b0": (BLUE, "fox"),
          "b1": (BLUE, "jay"), "g0": (None, "jay"), "g1": (None, "mole"), "g2": (None, "mole"),
          "r3": (RED, None)}


def _write_set(root, group_file: str = "species.csv", column: str = "species"):
    (root / "images").mkdir(parents=True)
    rows, groups = [], []
    for name, (bgr, group) in PHOTOS.items():
        img = np.full((300, 400, 3), 128, np.uint8)
        if bgr is not None:
            img[50:250, 100:300] = bgr
        cv2.imwrite(str(root / "images" / f"{name}.png"), img)
        rows.append([f"images/{name}.png", {RED: "red", BLUE: "blue"}.get(bgr, "")])
        if group is not None:
            groups.append([f"images/{name}.png", group])
    (root / "classes.txt").write_text("red\nblue\n")
    with open(root / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "labels"], *rows])
    with open(root / group_file, "w", newline="") as fh:
        csv.writer(fh).writerows([["path", column], *groups])
    return root


def test_group_table_by_hand():
    conf = np.array([[1, 0], [1, 0], [0, 1], [0, 0], [0, 0]], bool)
    guess = np.array([[0, 0], [0, 0], [0, 0], [0, 1], [0, 0]], bool)
    table = group_table(["a", "a", "a", "b", None], conf, guess, ["red", "blue"])
    assert [r["group"] for r in table] == ["a", "b"]  # the row without a group is left out
    a, b = table
    assert a["photos"] == 3 and a["labelled"] == 1.0 and a["labelled_or_guessed"] == 1.0
    assert a["top_labels"] == [{"label": "red", "photos": 2, "share": pytest.approx(2 / 3)},
                               {"label": "blue", "photos": 1, "share": pytest.approx(1 / 3)}]
    assert b["photos"] == 1 and b["labelled"] == 0.0 and b["labelled_or_guessed"] == 1.0 and b["top_labels"] == []


def test_read_groups_files(tmp_path):
    assert read_groups(tmp_path) is None
    (tmp_path / "species.csv").write_text("path,species\n./images/a.jpg,fox\nimages/b.jpg,\n")
    assert read_groups(tmp_path) == {"images/a.jpg": "fox"}  # an empty group: no group
    (tmp_path / "groups.csv").write_text("path,group\nimages/a.jpg,canid\n")
    assert read_groups(tmp_path) == {"images/a.jpg": "canid"}  # groups.csv first
    (tmp_path / "groups.csv").write_text("path,kind\nimages/a.jpg,canid\n")
    with pytest.raises(DataError, match="expected the columns path,group"):
        read_groups(tmp_path)


@pytest.mark.parametrize("group_file, column", [("species.csv", "species"), ("groups.csv", "group")])
def test_eval_reports_groups(tmp_path, colour_models, group_file, column):
    data = _write_set(tmp_path / "set", group_file, column)
    out = tmp_path / "report"
    res = CliRunner().invoke(main, ["eval", str(colour_models), "--data", str(data), "--engines", "hd",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    table = json.loads((out / "report.json").read_text())["groups"]["hd"]
    got = {r["group"]: (r["photos"], r["labelled"], [(t["label"], t["photos"]) for t in r["top_labels"]])
           for r in table}
    assert got == {"fox": (4, 1.0, [("red", 3), ("blue", 1)]), "jay": (2, 0.5, [("blue", 1)]),
                   "mole": (2, 0.0, [])}
    assert [r["group"] for r in table] == ["fox", "jay", "mole"]  # by the share labelled
    md = (out / "report.md").read_text()
    assert "## Groups" in md and "| hd | fox | 4 | 100.0 |" in md and "red 75.0, blue 25.0 |" in md


def test_eval_without_groups_has_no_table(tmp_path, colour_models, colour_set):
    out = tmp_path / "report"
    res = CliRunner().invoke(main, ["eval", str(colour_models), "--data", str(colour_set), "--engines", "hd",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "groups" not in json.loads((out / "report.json").read_text())
    assert "## Groups" not in (out / "report.md").read_text()


def test_a_group_says_how_many_of_its_photos_hold_none_of_the_classes():
    from training.eval.groups import group_table

    confident = np.array([[True, False], [False, False], [False, False], [False, True]])
    guess = np.zeros_like(confident)
    table = group_table(["fox", "fox", "cat", "cat"], confident, guess, ["cat", "dog"],
                        positive=np.array([False, False, True, True]))
    by = {r["group"]: r for r in table}
    assert by["fox"]["label_free"] == 1.0 and by["fox"]["labelled"] == 0.5
    assert by["cat"]["label_free"] == 0.0 and by["cat"]["labelled"] == 0.5
