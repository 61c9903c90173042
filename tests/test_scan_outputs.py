"""Where a scan writes: nothing garbled, nothing lost, nothing hangs.

Devices and pipes as outputs (written as they are, never truncated or locked), places that cannot be
written (one line, exit 2), every output held before any is changed (a refused one leaves the others as
they were), annotated copies that never open what stands at their name, and each file scanned once
however it is reached. Cases that could hang run the CLI in a subprocess with a timeout (integration).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner
from conftest import REPO, grey_with_square

from edge.cli import main
from edge.inputs import InputError, collect_keyed, read_file

TIMEOUT = 60  # seconds a subprocess may take before the case counts as hung


def run(*args: object):
    return CliRunner().invoke(main, ["scan", *map(str, args)])


def run_process(*args: object, shell_suffix: str = "", **kw) -> subprocess.CompletedProcess:
    """The CLI in a subprocess (`shell_suffix`: redirections for sh, e.g. `>&-`)."""
    code = "import sys; from edge.cli import main; sys.argv[0] = 'sixview'; main()"
    argv = [sys.executable, "-c", code, "scan", *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if shell_suffix:
        argv = ["sh", "-c", 'exec "$@" ' + shell_suffix, "sh", *argv]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT, **kw)


def photos(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:03d}.png"), grey_with_square())
    return folder


def one_line_exit_2(r, needle: str) -> None:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and needle in r.output, r.output


@pytest.mark.parametrize("args", [["--out", "/dev/null", "--overwrite"], ["--out", "/dev/null"],
                                  ["--out", "{tmp}/r.jsonl", "--csv", "/dev/null", "--resume"],
                                  ["--out", "/dev/null", "--csv", "/dev/null", "--overwrite"]])
def test_a_device_is_written_as_it_is(tmp_path, colour_models, args):
    photos(tmp_path / "imgs", 2)
    r = run(tmp_path / "imgs", "--models", colour_models, *(a.format(tmp=tmp_path) for a in args))
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("where", ["/proc/version", "{tmp}/imgs/000.png/r.jsonl"])
def test_a_place_that_takes_no_results_is_one_line_exit_2(tmp_path, colour_models, where):
    photos(tmp_path / "imgs", 1)
    where = where.format(tmp=tmp_path)
    r = run(tmp_path / "imgs", "--models", colour_models, "--out", where)
    one_line_exit_2(r, f"cannot write {where}")


def test_out_and_csv_cannot_be_one_file(tmp_path, colour_models):
    photos(tmp_path / "imgs", 1)
    r = run(tmp_path / "imgs", "--models", colour_models, "--out", tmp_path / "r", "--csv", tmp_path / "r")
    one_line_exit_2(r, f"--csv {tmp_path / 'r'} is where the JSONL records go too")


@pytest.mark.parametrize("held", ["csv", "annotate"])
def test_a_refused_output_leaves_the_others_untouched(tmp_path, colour_models, held):
    """--resume with a CSV another run holds (or an --annotate place that is a file): the JSONL file keeps
    its error records and its cut line; nothing is compacted, emptied or rebuilt."""
    d = photos(tmp_path / "imgs", 3)
    out, table = tmp_path / "r.jsonl", tmp_path / "r.csv"
    assert run(d, "--models", colour_models, "--out", out, "--csv", table).exit_code == 0
    (d / "001.png").write_bytes(b"broken")
    assert run(d, "--models", colour_models, "--out", out, "--csv", table, "--overwrite").exit_code == 1
    with open(out, "ab") as fh:
        fh.write(b'{"path": "cut')  # an interrupted line
    before, before_csv = out.read_bytes(), table.read_bytes()
    extra: list[object] = []
    with open(table, "a") as other:
        if held == "csv":
            fcntl.flock(other, fcntl.LOCK_EX)  # another run writing the CSV
        else:
            extra = ["--annotate", d / "000.png" / "ann"]
        r = run(d, "--models", colour_models, "--out", out, "--csv", table, "--resume", *extra)
    one_line_exit_2(r, "being written by another run" if held == "csv" else "Not a directory")
    assert out.read_bytes() == before and table.read_bytes() == before_csv


def test_a_file_reached_twice_is_scanned_once(tmp_path, colour_models, monkeypatch):
    """Through a linked folder, a link to a file, a hard link: one file, one record (as first spelled)."""
    d = photos(tmp_path / "photos", 3)
    os.symlink("photos", tmp_path / "link")
    os.symlink("photos/000.png", tmp_path / "alias.png")
    os.link(d / "001.png", tmp_path / "hard.png")
    monkeypatch.chdir(tmp_path)
    assert sorted(collect_keyed(["photos", "link", "alias.png", "hard.png"])) == [
        "photos/000.png", "photos/001.png", "photos/002.png"]
    r = run("photos", "link", "--models", colour_models)
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 3, r.output


def test_a_socket_is_not_an_image_file(tmp_path):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(tmp_path / "sock.png"))
        with pytest.raises(InputError, match="^not an image file: a socket$"):
            read_file(str(tmp_path / "sock.png"))
    finally:
        s.close()


def test_annotated_copies_never_replace_each_other(tmp_path, colour_models):
    for sub in ("a", "b"):
        photos(tmp_path / sub, 1)
    cv2.imwrite(str(tmp_path / "a" / "000.bmp"), grey_with_square())
    ann = tmp_path / "ann"
    r = run(tmp_path / "a" / "000.png", tmp_path / "b" / "000.png", tmp_path / "a" / "000.bmp",
            "--models", colour_models, "--annotate", ann)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in ann.iterdir()) == ["000.bmp", "000.png", "000~2.png"]


def test_an_annotated_copy_that_cannot_be_written_says_why(tmp_path, colour_models):
    d = photos(tmp_path / "imgs" / "sub", 1).parent
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "sub").write_text("a file where the copy's folder would go")
    r = run(d, "--models", colour_models, "--annotate", tmp_path / "ann")
    assert r.exit_code == 1, r.output
    error = json.loads(r.stdout)["error"]
    assert error.startswith(f"cannot write the annotated copy {tmp_path / 'ann' / 'sub' / '000.png'}: ")
    assert "cannot read" not in error


def test_annotating_into_a_file_is_one_line_exit_2(tmp_path, colour_models):
    d = photos(tmp_path / "imgs", 1)
    r = run(d, "--models", colour_models, "--annotate", d / "000.png" / "ann")
    one_line_exit_2(r, f"cannot write annotated copies into {d / '000.png' / 'ann'}: Not a directory")


@pytest.mark.integration
def test_a_named_pipe_where_an_annotated_copy_goes_is_never_opened(tmp_path, colour_models):
    d = photos(tmp_path / "imgs", 2)
    (tmp_path / "ann").mkdir()
    os.mkfifo(tmp_path / "ann" / "000.png")
    r = run_process(d, "--models", colour_models, "--annotate", tmp_path / "ann")
    assert r.returncode == 1, r.stderr
    recs = {Path(x["path"]).name: x for x in map(json.loads, r.stdout.splitlines())}
    assert recs["000.png"]["error"].endswith("000.png: it is a named pipe, not a regular file")
    assert recs["000.png"]["labels"] == ["red"] and recs["001.png"]["error"] is None
    assert (tmp_path / "ann" / "001.png").is_file()


@pytest.mark.integration
def test_a_named_pipe_as_out_is_refused_without_a_reader(tmp_path, colour_models):
    photos(tmp_path / "imgs", 1)
    os.mkfifo(tmp_path / "r.jsonl")
    r = run_process(tmp_path / "imgs", "--models", colour_models, "--out", tmp_path / "r.jsonl")
    assert r.returncode == 2 and r.stderr.strip().endswith("a named pipe with no reader"), r.stderr


@pytest.mark.integration
def test_stdout_pipe_or_closed(tmp_path, colour_models):
    d = photos(tmp_path / "imgs", 2)
    r = run_process(d, "--models", colour_models, "--out", "/dev/stdout", "--overwrite")  # stdout: a pipe
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r.stderr
    r = run_process(d, "--models", colour_models, shell_suffix=">&-")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "Error: cannot write stdout: it is closed (give --out FILE)"
    r = run_process(d, "--models", colour_models, "--out", tmp_path / "r.jsonl", shell_suffix=">&-")
    assert r.returncode == 0 and len((tmp_path / "r.jsonl").read_text().splitlines()) == 2, r.stderr


@pytest.mark.integration
def test_ray_holds_every_output_before_changing_one(tmp_path, colour_models):
    """`--ray --overwrite` with a CSV another run holds: --out keeps its results and no block folder is made."""
    pytest.importorskip("ray.data", reason="Ray is not installed (pip install 'sixview[ray]')")
    d = photos(tmp_path / "imgs", 2)
    out, table = tmp_path / "r.jsonl", tmp_path / "r.csv"
    out.write_text('{"path": "x.png", "error": null}\n')
    with open(table, "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        r = run(d, "--ray", "--models", colour_models, "--out", out, "--csv", table, "--overwrite")
    one_line_exit_2(r, "being written by another run")
    assert out.read_text() == '{"path": "x.png", "error": null}\n' and not (tmp_path / "r.jsonl.blocks").exists()


@pytest.mark.integration
def test_a_closed_stderr_loses_no_record(tmp_path, colour_models):
    d = photos(tmp_path / "imgs", 2)
    r = run_process(d, "--models", colour_models, "--out", tmp_path / "r.jsonl", shell_suffix="2>&-")
    assert r.returncode == 0 and len((tmp_path / "r.jsonl").read_text().splitlines()) == 2


def test_annotating_into_the_scanned_folder_never_replaces_an_image(tmp_path, colour_models):
    d = photos(tmp_path / "imgs", 2)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    r = run(d, "--models", colour_models, "--annotate", d)
    assert r.exit_code == 1, r.output
    errors = [json.loads(line)["error"] for line in r.stdout.splitlines()]
    assert errors == [f"cannot write the annotated copy {d / n}: it is one of the scanned images"
                      for n in ("000.png", "001.png")]
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
