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
from edge.inputs import InputError, collect_keyed, read_file
from edge.metadata import MetadataError
from edge.sources import FrameSource, SourceSpec

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
    assert rows[0] == ["path", "engine", "labels", "error", "red", "green", "blue"]
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
