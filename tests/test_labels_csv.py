"""A labels.csv as people write them: Excel's "CSV UTF-8" (a byte order mark) is read; an image listed
twice is refused with one line naming both lines (it would be scored twice), however its path is spelled."""

from __future__ import annotations

import json

import pytest
from test_faults import colour_csv_set, evaluate

from training.data.datasets import read_labels_csv
from training.errors import DataError

BOM = b"\xef\xbb\xbf"


def test_a_byte_order_mark_is_no_part_of_the_header(tmp_path):
    (tmp_path / "labels.csv").write_bytes(BOM + b"path,labels\r\na.jpg,cat|dog\r\nb.jpg,\r\n")
    assert read_labels_csv(tmp_path / "labels.csv") == [("a.jpg", ("cat", "dog")), ("b.jpg", ())]


@pytest.mark.parametrize("again", ["a.jpg", "./a.jpg", "sub/../a.jpg", " a.jpg "])
def test_an_image_listed_twice_is_refused_naming_the_lines(tmp_path, again):
    (tmp_path / "labels.csv").write_text(f"path,labels\na.jpg,cat\nb.jpg,dog\n{again},dog\n")
    with pytest.raises(DataError, match=r"labels.csv: line 4 lists \S+ again \(first on line 2\)"):
        read_labels_csv(tmp_path / "labels.csv")


def test_eval_reads_an_excel_csv(tmp_path, colour_models):
    data = colour_csv_set(tmp_path / "set")
    for name in ("labels.csv", "classes.txt"):
        (data / name).write_bytes(BOM + (data / name).read_bytes())
    res = evaluate(colour_models, data, "--out", tmp_path / "r")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["images"] == 6 and report["inputs"]["listed"] == 6


def test_eval_refuses_a_duplicated_row_in_one_line(tmp_path, colour_models):
    data = colour_csv_set(tmp_path / "set")
    with open(data / "labels.csv", "a") as fh:
        fh.write("./images/0.png,red\n")
    res = evaluate(colour_models, data, "--out", tmp_path / "r")
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert res.stderr.strip() == (f"Error: {data / 'labels.csv'}: line 8 lists ./images/0.png again (first on "
                                  "line 2): list each image once, its labels '|'-separated")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("how", ["the same set twice", "through a link", "a hard link on another row"])
def test_one_image_file_is_scored_once(tmp_path, colour_models, how):
    data = colour_csv_set(tmp_path / "set")
    second = data
    if how == "through a link":
        second = tmp_path / "link"
        second.symlink_to(data)
    elif how == "a hard link on another row":
        (data / "images" / "6.png").hardlink_to(data / "images" / "0.png")
        with open(data / "labels.csv", "a") as fh:
            fh.write("images/6.png,red\n")
    args = ["--data", second] if how != "a hard link on another row" else []
    res = evaluate(colour_models, data, *args, "--out", tmp_path / "r")
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "each image is scored once" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert ("images/0.png again (one file)" if "hard" in how else "images/0.png is listed twice") in res.stderr
    assert not (tmp_path / "r").exists()
