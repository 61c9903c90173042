"""The package as a user installs it: `python -m build` (sdist, then the wheel from it), a fresh virtualenv
outside the repository, `pip install sixview-*.whl[cpu]`, then `sixview scan` on photos with the shipped models
(packaged as `sixview/models/`), run from a folder that is not the checkout.

`SIXVIEW_WHEEL=path/to/sixview-*.whl` tests that wheel instead of building one (e.g. after `make wheel`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import pytest
from conftest import REPO, SHARED_DATA, grey_with_square

pytestmark = pytest.mark.system

RUNTIME_FILES = {"standard.onnx", "hd.onnx", "standard.gates.json", "hd.gates.json"}
TOP_LEVEL = {"sixview", "edge", "convert", "training"}  # docs/ARCHITECTURE.md: why not all under `sixview.`


def run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SIXVIEW_MODELS", "VIRTUAL_ENV")}
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("SIXVIEW_WHEEL")
    if given:
        return Path(given).resolve()
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", out, REPO], cwd=out, timeout=900)
    [whl] = out.glob("sixview-*.whl")
    return whl


@pytest.fixture(scope="session")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv in a temporary folder with the wheel and its `cpu` extra."""
    root = tmp_path_factory.mktemp("venv")
    assert REPO not in root.parents  # never inside the repository
    run([sys.executable, "-m", "venv", root / "venv"], cwd=root, timeout=300)
    py = root / "venv" / "bin" / "python"
    run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{wheel}[cpu]"], cwd=root, timeout=1200)
    return root / "venv"


def test_the_wheel_holds_the_models_and_its_packages(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == TOP_LEVEL, tops
    models = {n.removeprefix("sixview/models/") for n in names if n.startswith("sixview/models/")}
    assert RUNTIME_FILES <= models, models
    assert not any("/eval/" in m or m.endswith(".md") for m in models), models  # no evaluation outputs, no card
    assert "edge/serve/static/index.html" in names  # the web page ships too


def test_installed_sixview_scans_photos_with_the_shipped_models(venv, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "square.jpg"), grey_with_square(640, 480, "centre", side=200))
    real = sorted((SHARED_DATA / "voc07_val" / "images").glob("*.jpg"))[:2]  # real photos where ../shared has them
    for p in real:
        (photos / p.name).write_bytes(p.read_bytes())
    run([venv / "bin" / "python", "-m", "pip", "check"], cwd=tmp_path, timeout=120)
    where = run([venv / "bin" / "python", "-c", "import edge.engine as e; print(e.DEFAULT_MODELS)"], cwd=tmp_path,
                timeout=120).stdout.strip()
    assert Path(where).is_relative_to(venv) and (Path(where) / "hd.onnx").is_file(), where  # not the checkout's

    out = tmp_path / "r.jsonl"
    run([venv / "bin" / "sixview", "scan", photos, "--out", out], cwd=tmp_path, timeout=600)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in recs) == sorted(p.name for p in photos.iterdir())
    for r in recs:
        assert r["error"] is None and r["engine"] == "hd", r
        assert len(r["scores"]) == 10 and set(r["labels"]) <= set(r["scores"]), r  # the shipped models' classes
        assert all(0.0 <= s <= 1.0 for s in r["scores"].values()), r
    if real:
        assert any(r["labels"] for r in recs if Path(r["path"]).name != "square.jpg"), recs  # real photos: labelled
