"""`sixview scan` end to end on synthetic images with the colour-detector models."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO, grey_with_square, need_shared

from edge.cli import main
from edge.inputs import collect, in_shard, parse_shard
from edge.records import FIELDS


def run(*args: str):
    return CliRunner().invoke(main, ["scan", *map(str, args)])


def rerun(*args: str):
    """A scan that replaces the results of an earlier one."""
    return run(*args, "--overwrite")


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("corner", ["top_left", "top_right", "bottom_left", "bottom_right", "centre"])
def test_small_object_found_by_its_view_and_missed_without_tiling(tmp_path, colour_models, corner):
    cv2.imwrite(str(tmp_path / "img.png"), grey_with_square(corner=corner))
    out = tmp_path / "r.jsonl"
    assert run(tmp_path / "img.png", "--models", colour_models, "--out", out).exit_code == 0
    rec = records(out)[0]
    assert rec["engine"] == "hd" and rec["labels"] == ["red"]
    assert rec["views"]["red"] == corner and rec["scores"]["red"] > 0.9
    assert rerun(tmp_path / "img.png", "--models", colour_models, "--out", out, "--no-tiling").exit_code == 0
    rec = records(out)[0]
    assert rec["labels"] == [] and rec["scores"]["red"] < 0.2 and rec["tiling"] is False


def test_several_labels_and_threshold_override(tmp_path, colour_models):
    img = grey_with_square(corner="top_left")
    img[-100:, -100:] = (255, 0, 0)  # blue (BGR) bottom-right
    cv2.imwrite(str(tmp_path / "two.png"), img)
    out = tmp_path / "r.jsonl"
    assert run(tmp_path / "two.png", "--models", colour_models, "--out", out).exit_code == 0
    rec = records(out)[0]
    assert sorted(rec["labels"]) == ["blue", "red"]
    assert rec["views"]["red"] == "top_left" and rec["views"]["blue"] == "bottom_right"
    assert rerun(tmp_path / "two.png", "--models", colour_models, "--out", out, "--threshold", "0.999").exit_code == 0
    rec = records(out)[0]  # nothing passes: the top class is the guess, kept apart from labels
    assert rec["labels"] == [] and rec["guess"]["label"] in ("red", "blue")
    assert rec["thresholds"] == {"red": 0.999, "green": 0.999, "blue": 0.999}


def test_guess_in_labels_end_to_end_and_the_summary_counts_images_with_no_label(tmp_path, colour_models):
    cv2.imwrite(str(tmp_path / "a_red.png"), grey_with_square())  # red 0.96
    cv2.imwrite(str(tmp_path / "b_grey.png"), np.full((450, 600, 3), 128, np.uint8))  # every class 0.007
    cv2.imwrite(str(tmp_path / "c_big.png"), grey_with_square(side=300, corner="centre"))  # red 1.0
    out, table = tmp_path / "r.jsonl", tmp_path / "r.csv"
    res = run(tmp_path / "*.png", "--models", colour_models, "--out", out, "--csv", table, "--threshold", "0.99",
              "--device", "cpu")  # the exact scores below are ONNX Runtime's
    assert res.exit_code == 0
    by = {Path(r["path"]).name: r for r in records(out)}
    assert by["a_red.png"]["labels"] == [] and by["a_red.png"]["guess"] == {"label": "red", "score": 0.958478}
    assert by["b_grey.png"]["labels"] == [] and by["b_grey.png"]["guess"] is None  # none of the classes
    assert by["c_big.png"]["labels"] == ["red"] and by["c_big.png"]["guess"] is None
    assert [r["presence"] for r in by.values()] == pytest.approx([0.959032, 0.019945, 1.0], abs=1e-6)
    assert "none of the classes (no label): 2 images (1 of them with a guess)" in res.stderr
    rows = {Path(r["path"]).name: r for r in csv.DictReader(table.open(newline=""))}
    assert (rows["a_red.png"]["labels"], rows["a_red.png"]["guess"], rows["a_red.png"]["presence"]) == \
        ("", "red", "0.959032")
    assert rerun(tmp_path / "*.png", "--models", colour_models, "--out", out, "--csv", table, "--threshold", "0.99",
                 "--guess-in-labels", "--device", "cpu").exit_code == 0
    by = {Path(r["path"]).name: r for r in records(out)}
    assert by["a_red.png"]["labels"] == ["red"] and by["a_red.png"]["guess"]["label"] == "red"  # the reference rule
    assert by["b_grey.png"]["labels"] == [] and by["c_big.png"]["labels"] == ["red"]
    assert run("--help").output.count("--guess-in-labels") == 1


def test_thumbnails_go_to_standard_photos_to_hd(tmp_path, colour_models):
    cv2.imwrite(str(tmp_path / "thumb.png"), np.full((32, 32, 3), (0, 255, 0), np.uint8))
    cv2.imwrite(str(tmp_path / "photo.png"), grey_with_square())
    out = tmp_path / "r.jsonl"
    assert run(tmp_path, "--models", colour_models, "--out", out, "--batch", "2").exit_code == 0
    by = {Path(r["path"]).name: r for r in records(out)}
    assert by["thumb.png"]["engine"] == "standard" and by["thumb.png"]["labels"] == ["green"]
    assert by["photo.png"]["engine"] == "hd"
    assert rerun(tmp_path, "--models", colour_models, "--out", out, "--engine", "standard").exit_code == 0
    assert {r["engine"] for r in records(out)} == {"standard"}


def test_bad_inputs_get_error_records_and_exit_1(tmp_path, colour_models):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    cv2.imwrite(str(d / "good.jpg"), grey_with_square())
    (d / "empty.jpg").write_bytes(b"")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (d / "text.jpg").write_text("hello")
    os.symlink(d / "missing.jpg", d / "dangling.jpg")
    os.symlink(d, d / "sub" / "loop")  # a symlink loop back to the top
    out, table = tmp_path / "r.jsonl", tmp_path / "r.csv"
    res = run(d, "--models", colour_models, "--out", out, "--csv", table)
    assert res.exit_code == 1, res.output
    recs = records(out)
    assert len(recs) == 5
    errors = {Path(r["path"]).name: r["error"] for r in recs if r["error"]}
    assert set(errors) == {"empty.jpg", "corrupt.png", "text.jpg", "dangling.jpg"}
    assert "empty" in errors["empty.jpg"] and "cannot read" in errors["dangling.jpg"]
    assert "5 images" in res.stderr and "4 errors" in res.stderr
    rows = table.read_text().splitlines()
    assert rows[0].split(",")[:6] == ["path", "engine", "labels", "guess", "presence", "error"] and len(rows) == 6


def test_record_schema(tmp_path, colour_models):
    cv2.imwrite(str(tmp_path / "a.png"), grey_with_square())
    (tmp_path / "b.png").write_bytes(b"")
    out = tmp_path / "r.jsonl"
    res = run(tmp_path, "--models", colour_models, "--out", out)
    assert res.exit_code == 1, res.output  # one unreadable image
    recs = records(out)
    assert sorted((Path(r["path"]).name, r["error"] is None) for r in recs) == [("a.png", True), ("b.png", False)]
    for rec in recs:
        assert tuple(rec) == FIELDS
        assert set(rec["timings_ms"]) >= {"total"}
        if rec["error"] is None:
            assert set(rec["timings_ms"]) == {"decode", "preprocess", "infer", "postprocess", "total"}
            assert rec["provider"] in ("cpu", "openvino") and rec["precision"] == "fp32"  # auto on a CPU
            assert set(rec["scores"]) == set(rec["views"]) == set(rec["thresholds"]) == {"red", "green", "blue"}


def test_resume_skips_done_and_repairs_a_cut_line(tmp_path, colour_models):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(6):
        cv2.imwrite(str(d / f"{i}.png"), grey_with_square())
    out = tmp_path / "r.jsonl"
    assert run(d / "[0-2].png", "--models", colour_models, "--out", out).exit_code == 0
    with out.open("a") as fh:
        fh.write('{"path": "cut sh')  # an interrupted write
    res = run(d, "--models", colour_models, "--out", out, "--resume")
    assert res.exit_code == 0 and "3 images already done" in res.stderr
    paths = [r["path"] for r in records(out)]
    assert sorted(Path(p).name for p in paths) == [f"{i}.png" for i in range(6)]
    before = out.read_bytes()
    res = run(d, "--models", colour_models, "--out", out, "--resume")
    assert res.exit_code == 0 and "nothing to do" in res.stderr
    assert out.read_bytes() == before  # a scan with nothing left leaves the results as they were


def test_shards_are_disjoint_and_cover(tmp_path, colour_models):
    paths = [f"/data/img_{i:05d}.jpg" for i in range(1000)]
    n = 4
    parts = [{p for p in paths if in_shard(p, (i, n))} for i in range(n)]
    assert set().union(*parts) == set(paths)
    assert sum(map(len, parts)) == len(paths) and min(map(len, parts)) > 150
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "a/b", "1", "-1/2"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(10):
        cv2.imwrite(str(d / f"{i}.png"), grey_with_square())
    seen = []
    for i in range(3):
        out = tmp_path / f"s{i}.jsonl"
        assert run(d, "--models", colour_models, "--out", out, "--shard", f"{i}/3").exit_code == 0
        seen += [r["path"] for r in records(out)] if out.exists() else []
    assert sorted(seen) == sorted(collect([str(d)]))


def test_annotate_writes_copies(tmp_path, colour_models):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    cv2.imwrite(str(d / "sub" / "a.png"), grey_with_square())
    Image = pytest.importorskip("PIL.Image")
    Image.new("P", (200, 100)).save(d / "b.gif")
    assert run(d, "--models", colour_models, "--out", tmp_path / "r.jsonl",
               "--annotate", tmp_path / "ann").exit_code == 0
    a = cv2.imread(str(tmp_path / "ann" / "sub" / "a.png"))
    assert a is not None and a.shape == (450, 600, 3)
    assert not np.array_equal(a, grey_with_square())  # something was drawn
    assert (tmp_path / "ann" / "b.gif.png").is_file()  # OpenCV writes no GIF: a PNG, named apart from b.png


@pytest.mark.parametrize("args,needle", [
    (["no/such/dir"], "no such file"),
    (["{img}", "--shard", "5/2"], "shard"),
    (["{img}", "--resume"], "--resume needs --out"),
    (["{img}", "--device", "tpu"], "Invalid value"),
])
def test_usage_errors_exit_2(tmp_path, colour_models, args, needle):
    cv2.imwrite(str(tmp_path / "a.png"), grey_with_square())
    args = [a.replace("{img}", str(tmp_path / "a.png")) for a in args]
    res = run(*args, "--models", colour_models)
    assert res.exit_code == 2 and needle in res.output
    assert "Traceback" not in res.output


def test_missing_or_bare_models_exit_2_with_one_line(tmp_path, colour_models):
    cv2.imwrite(str(tmp_path / "a.png"), grey_with_square())
    res = run(tmp_path / "a.png", "--models", tmp_path / "empty")
    assert res.exit_code == 2 and "no standard model in" in res.output
    import onnx
    m = onnx.load(colour_models / "hd.onnx")
    del m.metadata_props[:]
    (tmp_path / "bare").mkdir()
    onnx.save(m, tmp_path / "bare" / "hd.onnx")
    res = run(tmp_path / "a.png", "--models", tmp_path / "bare", "--engine", "hd")
    assert res.exit_code == 2 and "metadata missing: sixview.format" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    res = run(tmp_path / "a.png", "--models", tmp_path / "bare")  # auto needs both models
    assert res.exit_code == 2 and "no standard model in" in res.output


def test_runtime_never_imports_tensorflow(tmp_path, colour_models):
    cv2.imwrite(str(tmp_path / "a.png"), grey_with_square())
    modules = sorted(f"edge.{p.stem}" for p in (REPO / "edge").glob("*.py"))
    code = (
        "import importlib, sys\n"
        "from click.testing import CliRunner\n"
        "from edge.cli import main\n"
        f"r = CliRunner().invoke(main, ['scan', {str(tmp_path / 'a.png')!r}, '--models', {str(colour_models)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'training', 'tf2onnx')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_scan_voc07_val(tmp_path, colour_models):
    images = need_shared("voc07_val", "images")
    out = tmp_path / "voc.jsonl"
    res = run(images, "--models", colour_models, "--out", out, "--batch", "4")
    assert res.exit_code == 0, res.output
    recs = records(out)
    assert len(recs) == len(list(images.glob("*.jpg"))) == 669
    assert all(r["error"] is None and r["engine"] == "hd" and r["width"] > 64 for r in recs)
