"""Hostile input and faults: nothing hangs, nothing already written is lost, one clear line.

Every case builds its input here (named pipes, decompression bombs, names that
are not UTF-8, concurrent writers, unwritable outputs) and runs a real scan;
runs that could hang go to a subprocess with a timeout.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import REPO, grey_with_square

from benchmarks.memory import png_declaring
from edge.cli import main
from edge.engine import Engine
from edge.frames import FrameSource
from edge.inputs import InputError, collect_keyed, read_file
from edge.metadata import MetadataError
from edge.sources import SourceSpec

TIMEOUT = 60  # seconds a scan subprocess may take before the case counts as hung


def run(*args: object):
    return CliRunner().invoke(main, ["scan", *map(str, args)])


def run_process(*args: object, cwd: Path = REPO) -> subprocess.CompletedProcess:
    code = "import sys; from edge.cli import main; sys.argv[0] = 'sixview'; main()"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, "scan", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def photos(folder: Path, n: int, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        cv2.imwrite(str(folder / f"{i:03d}.png"), grey_with_square())
    return folder


def test_named_pipes_and_devices_get_a_record_and_never_block(tmp_path, colour_models):
    d = photos(tmp_path / "imgs", 2)
    os.mkfifo(d / "pipe.jpg")
    os.symlink("/dev/zero", d / "zero.png")  # endless bytes behind an image name
    out = tmp_path / "r.jsonl"
    r = run_process(d, "--models", colour_models, "--out", out)
    assert r.returncode == 1, r.stderr
    by = {Path(x["path"]).name: x for x in records(out)}
    assert by["pipe.jpg"]["error"] == "not an image file: a named pipe"
    assert by["zero.png"]["error"] == "not an image file: a character device"
    assert by["000.png"]["error"] is None and by["001.png"]["labels"] == ["red"]


def test_read_limit(tmp_path):
    (tmp_path / "big.jpg").write_bytes(b"\xff" * 4096)
    with pytest.raises(InputError, match="file too large"):
        read_file(str(tmp_path / "big.jpg"), max_bytes=1000)
    assert read_file(str(tmp_path / "big.jpg")) == b"\xff" * 4096


def test_decompression_bombs_are_refused_from_the_header(tmp_path, colour_models):
    d = photos(tmp_path / "imgs", 3)
    (d / "001b_bomb.png").write_bytes(png_declaring(50000, 50000))  # over Pillow's own limit
    (d / "001c_huge.png").write_bytes(png_declaring(20000, 15000))  # under it: would be decoded
    out = tmp_path / "r.jsonl"
    r = run(d, "--models", colour_models, "--out", out, "--batch", "8")
    assert r.exit_code == 1 and "Traceback" not in r.output
    by = {Path(x["path"]).name: x for x in records(out)}
    assert len(by) == 5
    assert by["001b_bomb.png"]["error"].startswith("image too large: 50000x50000 is 2500 megapixels")
    assert by["001c_huge.png"]["error"].startswith("image too large: 20000x15000")
    assert all(by[f"{i:03d}.png"]["labels"] == ["red"] for i in range(3))
    r = run(d / "000.png", "--models", colour_models, "--out", tmp_path / "small.jsonl", "--max-pixels", 1000)
    assert r.exit_code == 1 and "over the limit of 0.001" in records(tmp_path / "small.jsonl")[0]["error"]


@pytest.mark.parametrize("problem", ["no models", "model without metadata", "gpu that is not here"])
def test_setup_errors_leave_an_existing_out_untouched(tmp_path, colour_models, problem):
    d = photos(tmp_path / "imgs", 1)
    out = tmp_path / "r.jsonl"
    out.write_text("".join(json.dumps({"path": f"old{i}.png", "error": None}) + "\n" for i in range(200)))
    before = out.read_bytes()
    models, extra = colour_models, []
    if problem == "no models":
        models = tmp_path / "empty"
    elif problem == "model without metadata":
        models = tmp_path / "bare"
        models.mkdir()
        m = onnx.load(colour_models / "hd.onnx")
        del m.metadata_props[:]
        onnx.save(m, models / "hd.onnx")
        extra = ["--engine", "hd"]
    else:
        import onnxruntime as ort
        if "CUDAExecutionProvider" in ort.get_available_providers():
            pytest.skip("this machine has CUDA")
        extra = ["--device", "cuda"]
    for flags in ([], ["--overwrite"], ["--resume"]):
        r = run(d, "--models", models, "--out", out, *extra, *flags)
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
        assert out.read_bytes() == before


def test_an_existing_out_needs_resume_or_overwrite(tmp_path, colour_models):
    d = photos(tmp_path / "imgs", 2)
    out, table = tmp_path / "r.jsonl", tmp_path / "r.csv"
    assert run(d, "--models", colour_models, "--out", out, "--csv", table).exit_code == 0
    before = out.read_bytes()
    r = run(d, "--models", colour_models, "--out", out)
    assert r.exit_code == 2 and "--resume" in r.output and "--overwrite" in r.output
    assert out.read_bytes() == before
    r = run(d, "--models", colour_models, "--out", tmp_path / "other.jsonl", "--csv", table)
    assert r.exit_code == 2 and "r.csv already holds results" in r.output
    assert run(d, "--models", colour_models, "--out", out, "--overwrite").exit_code == 0
    assert len(records(out)) == 2


def test_names_that_are_not_utf8_are_written_losslessly_and_resumed(tmp_path, colour_models):
    d = photos(tmp_path / "imgs", 1)
    raw = os.fsencode(d) + b"/caf\xe9 \xff.png"
    with open(raw, "wb") as fh:
        fh.write(cv2.imencode(".png", grey_with_square())[1].tobytes())
    out, table = tmp_path / "r.jsonl", tmp_path / "r.csv"
    r = run(d, "--models", colour_models, "--out", out, "--csv", table, "--annotate", tmp_path / "ann")
    assert r.exit_code == 0, r.output
    out.read_bytes().decode("utf-8")  # the JSONL stays valid UTF-8
    paths = [os.fsencode(x["path"]) for x in records(out)]
    assert raw in paths and all(x["labels"] == ["red"] for x in records(out))
    assert b"caf\xe9 \xff.png" in table.read_bytes()  # the CSV holds the file's own bytes
    assert (tmp_path / "ann").joinpath(os.fsdecode(b"caf\xe9 \xff.png")).is_file()
    r = run(d, "--models", colour_models, "--out", out, "--resume")
    assert r.exit_code == 0 and "nothing to do" in r.output


def test_a_second_writer_is_refused_not_interleaved(tmp_path, colour_models):
    d = photos(tmp_path / "imgs", 40)
    out = tmp_path / "r.jsonl"
    out.touch()
    with open(out, "ab") as held:  # another run holds the file
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        r = run(d, "--models", colour_models, "--out", out, "--overwrite")
        assert r.exit_code == 2 and "being written by another run" in r.output
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = "import sys; from edge.cli import main; sys.argv[0] = 'sixview'; main()"
    args = [sys.executable, "-c", code, "scan", str(d), "--models", str(colour_models), "--out", str(out),
            "--batch", "1"]
    procs = [subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    codes = sorted(p.wait(timeout=TIMEOUT) for p in procs)
    for p in procs:
        p.stderr.close()
    assert codes == [0, 2]  # one scan ran, the other was refused (locked, or the results already there)
    recs = records(out)
    assert len(recs) == 40 and len({x["path"] for x in recs}) == 40


def test_csv_columns_come_from_the_models_and_resume_keeps_one_row_per_path(tmp_path, colour_models):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "000_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")  # the first record is an error
    photos(d, 2, start=1)
    out, table = tmp_path / "r.jsonl", tmp_path / "r.csv"
    assert run(d / "000_broken.png", d / "001.png", "--models", colour_models, "--out", out,
               "--csv", table).exit_code == 1
    rows = list(csv.reader(table.open(newline="")))
    assert rows[0] == ["path", "engine", "labels", "guess", "presence", "error", "red", "green", "blue"]
    cv2.imwrite(str(d / "000_broken.png"), grey_with_square())  # repaired: --resume retries it
    r = run(d, "--models", colour_models, "--out", out, "--csv", table, "--resume")
    assert r.exit_code == 0 and "1 images already done" in r.output
    recs = records(out)
    assert sorted(Path(x["path"]).name for x in recs) == ["000_broken.png", "001.png", "002.png"]
    assert all(x["error"] is None for x in recs)
    rows = list(csv.DictReader(table.open(newline="")))
    assert sorted(Path(x["path"]).name for x in rows) == ["000_broken.png", "001.png", "002.png"]
    assert all(x["labels"] == "red" and x["error"] == "" for x in rows)


@pytest.mark.parametrize("where", ["/dev/full", "/proc/sixview/r.jsonl", "a_file/r.jsonl"])
def test_unwritable_output_is_one_line_exit_2(tmp_path, colour_models, where):
    d = photos(tmp_path / "imgs", 2)
    (tmp_path / "a_file").write_text("a regular file, not a folder")
    out = where if where.startswith("/") else tmp_path / where
    r = run(d, "--models", colour_models, "--out", out)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert "cannot write" in r.output


def test_metadata_that_disagrees_with_the_graph_is_refused_at_load(tmp_path, colour_models):
    m = onnx.load(colour_models / "hd.onnx")
    props = {p.key: p.value for p in m.metadata_props}
    props["input_size"] = "[224, 224]"
    onnx.helper.set_model_props(m, props)
    (tmp_path / "m").mkdir()
    onnx.save(m, tmp_path / "m" / "hd.onnx")
    with pytest.raises(MetadataError, match=r"input_size \[224, 224\], the graph takes \[64, 64\]"):
        Engine(tmp_path / "m", routing="hd").check()
    cv2.imwrite(str(tmp_path / "a.png"), grey_with_square())
    r = run(tmp_path / "a.png", "--models", tmp_path / "m", "--engine", "hd")
    assert r.exit_code == 2 and "the graph takes [64, 64]" in r.output


def test_shards_do_not_depend_on_how_the_folder_is_spelled(tmp_path, colour_models, monkeypatch):
    d = photos(tmp_path / "photos", 12)
    photos(d / "sub", 12, start=100)
    spellings = {tmp_path: "photos", tmp_path / "x": str(d), d: ".", d / "sub": ".."}
    (tmp_path / "x").mkdir()
    keys = set()
    for cwd, arg in spellings.items():
        monkeypatch.chdir(cwd)
        keys.add(tuple(collect_keyed([arg]).values()))
    assert len(keys) == 1 and "sub/100.png" in next(iter(keys))
    seen = []
    for cwd, arg in ((tmp_path, "photos"), (d, ".")):
        monkeypatch.chdir(cwd)
        out = tmp_path / f"{len(seen)}.jsonl"
        assert run(arg, "--models", colour_models, "--out", out, "--shard", "1/3").exit_code == 0
        seen.append(sorted(os.path.relpath(os.path.join(cwd, x["path"]), d) for x in records(out)))
    assert seen[0] == seen[1] and 0 < len(seen[0]) < 24


def test_the_same_file_spelled_twice_is_scanned_once(tmp_path, colour_models, monkeypatch):
    photos(tmp_path / "imgs", 1)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r.jsonl"
    assert run("imgs/000.png", tmp_path / "imgs" / "000.png", "imgs", "--models", colour_models,
               "--out", out).exit_code == 0
    assert [x["path"] for x in records(out)] == ["imgs/000.png"]


def test_a_stalled_reconnect_reports_the_time_it_took(colour_models):
    import time

    def opener(spec):
        time.sleep(0.3)  # an open that hangs until its own timeout
        return None

    src = FrameSource(SourceSpec("camera", 0), backoff=(0.01, 0.01), opener=opener, log=lambda m: None)
    src._cap = None
    assert not src._recover()
    took = float(src.error.split(" over ")[1].split(" s")[0])
    assert took >= 0.6


def test_camera_counts_add_up_after_sigterm(tmp_path, colour_models):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (128, 96))
    for _ in range(300):
        writer.write(np.full((96, 128, 3), (0, 0, 255), np.uint8))
    writer.release()
    code = "import sys; from edge.cli import main; sys.argv[0] = 'sixview'; main()"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, "-c", code, "camera", "--source", str(video), "--headless", "--realtime",
                          "--models", str(colour_models)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()  # a frame processed: the loop is running
    assert json.loads(first)["frame"] == 0
    p.terminate()
    out, err = p.communicate(timeout=TIMEOUT)
    line = next(x for x in err.splitlines() if x.startswith("camera:"))
    captured, processed, dropped = (int(line.split(f" {w}")[0].split()[-1])
                                    for w in ("frames captured", "processed", "dropped"))
    assert captured == processed + dropped and processed >= 1


# --- sixview eval: nothing listed is dropped silently ------------------------------------------

def colour_csv_set(root: Path, n: int = 6, classes_txt: bool = True) -> Path:
    """A labels.csv set of n synthetic images labelled red/green/blue in turn (and classes.txt)."""
    from training.data.synthetic import write_labels_csv

    colours = ["red", "green", "blue"]
    write_labels_csv(root, [(f"images/{i}.png", [colours[i % 3]]) for i in range(n)], colours)
    if classes_txt:
        (root / "classes.txt").write_text("red\ngreen\nblue\n")
    return root


def evaluate(colour_models: Path, data: Path, *args: object):
    """`sixview eval` in-process on the toy models, bounded by an alarm (a blocking read fails the case)."""
    import signal

    pytest.importorskip("sklearn")

    def hung(*_: object) -> None:
        raise TimeoutError(f"sixview eval took over {TIMEOUT} s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(TIMEOUT)
    try:
        return CliRunner().invoke(main, ["eval", str(colour_models), "--data", str(data), *map(str, args)])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_eval_missing_files_are_an_error_unless_allowed(tmp_path, colour_models):
    data = colour_csv_set(tmp_path / "set")
    (data / "images" / "1.png").unlink()  # the only other green one is 4.png
    (data / "images" / "4.png").unlink()
    (data / "images" / "5.png").unlink()
    os.mkfifo(data / "images" / "5.png")  # listed, there, but no image: must not block
    out = tmp_path / "report"
    res = evaluate(colour_models, data, "--out", out)
    assert res.exit_code == 1, res.output
    assert "3 of 6 listed images missing or unreadable" in res.stderr
    assert "images/1.png (missing)" in res.stderr and "images/5.png (not a regular file)" in res.stderr
    assert "--allow-missing" in res.stderr and not out.exists()  # nothing scored, nothing written
    res = evaluate(colour_models, data, "--out", out, "--allow-missing")
    assert res.exit_code == 0, res.output
    assert "3 of 6 listed images missing or unreadable, left out" in res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 3 and report["inputs"]["missing"] == 3 and report["inputs"]["listed"] == 6
    md = (out / "report.md").read_text()
    assert "missing or unreadable (left out): 3" in md and "`images/4.png` (missing)" in md
    assert "no scored image is labelled with" in md and "green" in md.split("no scored image")[1].split("\n")[0]


def test_eval_unknown_label_names_are_named_then_ignored_on_request(tmp_path, colour_models):
    data = colour_csv_set(tmp_path / "set")
    shutil.copyfile(data / "images" / "0.png", data / "images" / "6.png")
    with open(data / "labels.csv", "a") as fh:
        fh.write("images/6.png,red|purple\n")  # purple: not in classes.txt
    res = evaluate(colour_models, data, "--out", tmp_path / "r0")
    assert res.exit_code == 1 and "purple (1 image" in res.stderr and "classes.txt" in res.stderr, res.output
    res = evaluate(colour_models, data, "--out", tmp_path / "r1", "--ignore-class", "Purple")
    assert res.exit_code == 0, res.output
    assert "ignored 1 label name" in res.stderr and "purple" in res.stderr
    report = json.loads((tmp_path / "r1" / "report.json").read_text())
    assert report["inputs"]["ignored_labels"] == {"purple": 1} and report["images"] == 7
    assert "label names ignored (not classes of this set): purple" in (tmp_path / "r1" / "report.md").read_text()
    # a class of the set is not a label to ignore
    res = evaluate(colour_models, data, "--ignore-class", "red")
    assert res.exit_code == 2 and "red is a class of this set" in res.output
    # without classes.txt the set's classes are its labels: one the models do not know is named too
    typo = colour_csv_set(tmp_path / "typo", classes_txt=False)
    (typo / "labels.csv").write_text((typo / "labels.csv").read_text().replace("green", "gren"))
    res = evaluate(colour_models, typo, "--out", tmp_path / "r2")
    assert res.exit_code == 1 and "gren (2 images" in res.stderr and "no classes.txt" in res.stderr, res.output
    res = evaluate(colour_models, typo, "--out", tmp_path / "r2", "--ignore-unknown-classes")
    assert res.exit_code == 0 and "gren" in res.stderr, res.output
    assert json.loads((tmp_path / "r2" / "report.json").read_text())["inputs"]["ignored_labels"] == {"gren": 2}


def test_eval_undecodable_images_are_reported_and_fail_unless_allowed(tmp_path, colour_models):
    data = colour_csv_set(tmp_path / "set")
    (data / "images" / "2.png").write_bytes(b"not a png at all")
    res = evaluate(colour_models, data, "--out", tmp_path / "r")
    assert res.exit_code == 1 and "1 of 6 listed images could not be read or decoded" in res.stderr, res.output
    assert "images/2.png" in res.stderr
    report = json.loads((tmp_path / "r" / "report.json").read_text())  # the scoring is kept
    assert report["inputs"]["failed"] == 1 and report["roles"]["hd"]["failed"] == 1 and report["images"] == 5
    assert "failed when read or decoded (left out of the metrics): 1" in (tmp_path / "r" / "report.md").read_text()
    res = evaluate(colour_models, data, "--out", tmp_path / "r", "--allow-missing")
    assert res.exit_code == 0 and "images/2.png" in res.stderr, res.output


@pytest.mark.parametrize("case", ["header_only", "no_rows_no_classes", "all_missing", "all_missing_allowed"])
def test_eval_with_nothing_to_score_is_one_line_exit_2(tmp_path, colour_models, case):
    data = colour_csv_set(tmp_path / "set", classes_txt=case != "no_rows_no_classes")
    if case in ("header_only", "no_rows_no_classes"):
        (data / "labels.csv").write_text("path,labels\n")
    else:
        for f in (data / "images").iterdir():
            f.unlink()
    res = evaluate(colour_models, data, "--out", tmp_path / "r", *(["--allow-missing"] if "allowed" in case else []))
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)  # a clean exit, not a crash
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "no images to score" in res.stderr
    assert not (tmp_path / "r").exists()
