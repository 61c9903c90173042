"""Video files that are not what they seem: frames that cannot be read are skipped where the file goes on
and counted as lost (exit 1, never "0 failed" and exit 0); a named pipe or a folder as --source is named
for what it is (a named pipe would block the open forever)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from test_camera import jsonl, make_video, models, run_cli  # noqa: F401 (models: a fixture)

from edge.sources import SourceError, parse_source


def garbled(path, start: float, end: float = 1.0):
    """Overwrite the bytes from `start` to `end` (fractions of the file) with noise."""
    data = bytearray(path.read_bytes())
    a, b = int(len(data) * start), int(len(data) * end)
    data[a:b] = np.random.default_rng(0).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def test_a_file_garbled_after_its_first_third_says_frames_were_lost(models, tmp_path):  # noqa: F811
    video = garbled(make_video(tmp_path / "v.avi", 40), 1 / 3)
    r = run_cli("--source", video, "--headless", "--models", models)
    played = len(jsonl(r.stdout))
    assert 0 < played < 40 and r.exit_code == 1, r.stderr
    assert f"{40 - played} lost (unreadable)" in r.stderr
    assert f"error: video file {video}: {40 - played} of its 40 frames could not be read" in r.stderr


def test_a_damaged_stretch_is_skipped_and_the_rest_played(models, tmp_path):  # noqa: F811
    video = make_video(tmp_path / "v.avi", 40)
    size = video.stat().st_size
    data = bytearray(video.read_bytes())
    data[size // 3:size // 3 + 3000] = bytes(3000)  # a few frames in the middle
    video.write_bytes(bytes(data))
    r = run_cli("--source", video, "--headless", "--models", models)
    frames = [x["frame"] for x in jsonl(r.stdout)]
    assert r.exit_code == 1 and frames and len(frames) < 40, r.stderr
    assert f"{40 - len(frames)} of its 40 frames could not be read" in r.stderr
    assert frames[-1] >= 36  # it went on past the damage


def test_a_whole_file_exits_0(models, tmp_path):  # noqa: F811
    r = run_cli("--source", make_video(tmp_path / "v.avi", 12), "--headless", "--models", models)
    assert r.exit_code == 0 and len(jsonl(r.stdout)) == 12 and "lost" not in r.stderr, r.stderr


@pytest.mark.parametrize("kind,made", [("a named pipe", os.mkfifo), ("a folder", os.mkdir)])
def test_a_source_that_is_no_file_is_named(tmp_path, kind, made):
    made(tmp_path / "v.avi")
    with pytest.raises(SourceError, match=f"^not a video file: {tmp_path / 'v.avi'} is {kind}$"):
        parse_source(str(tmp_path / "v.avi"))


@pytest.mark.integration
@pytest.mark.parametrize("kind,made", [("a named pipe", os.mkfifo), ("a folder", os.mkdir)])
def test_the_camera_refuses_a_source_that_is_no_file_at_once(tmp_path, models, kind, made):  # noqa: F811
    """In a subprocess with a timeout: opening a named pipe with no writer would block forever."""
    made(tmp_path / "v.avi")
    code = "import sys; from edge.cli import main; sys.argv[0] = 'sixview'; main()"
    r = subprocess.run([sys.executable, "-c", code, "camera", "--source", str(tmp_path / "v.avi"), "--headless",
                        "--models", str(models)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip() == f"sixview camera: not a video file: {tmp_path / 'v.avi'} is {kind}"
