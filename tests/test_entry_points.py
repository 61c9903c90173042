"""One pipeline under every entry point: the same photos through `sixview scan`, the server, Ray
and `sixview eval`'s scoring give the same verdicts (labels, guess, scores), and eval's figures
come from those very decisions. Real photos (../shared/data/voc07_val) and the shipped models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO, need_shared

from edge.cli import main
from edge.engine import Engine
from edge.tiling import VIEW_NAMES

pytestmark = pytest.mark.integration  # the real models and photos

MODELS = REPO / "models"
PHOTOS = 5


def _verdict(rec: dict) -> tuple:
    return rec["engine"], rec["labels"], rec["guess"], rec["scores"], rec["views"], rec["presence"]


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory) -> Path:
    """A small labelled set: the first photos of voc07_val (with their labels) and one thumbnail."""
    voc = need_shared("voc07_val")
    if not (MODELS / "hd.onnx").is_file() or not (MODELS / "standard.onnx").is_file():
        pytest.skip(f"the shipped models are absent from {MODELS}")
    d = tmp_path_factory.mktemp("photo_set")
    (d / "images").mkdir()
    lines = (voc / "labels.csv").read_text().splitlines()
    keep = [line for line in lines[1:] if (voc / line.split(",")[0]).is_file()][:PHOTOS]
    for line in keep:
        shutil.copy(voc / line.split(",")[0], d / line.split(",")[0])
    (d / "labels.csv").write_text("\n".join([lines[0], *keep]) + "\n")
    shutil.copy(voc / "classes.txt", d / "classes.txt")
    thumb = cv2.resize(cv2.imread(str(d / keep[0].split(",")[0])), (32, 32), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(tmp_path_factory.mktemp("thumb") / "thumb.png"), thumb)
    return d


@pytest.fixture(scope="module")
def images(photo_set) -> list[Path]:
    thumb = next(Path(photo_set).parent.glob("thumb*/thumb.png"))
    return [*sorted((photo_set / "images").iterdir()), thumb]


@pytest.fixture(scope="module")
def scanned(images, tmp_path_factory) -> dict[str, dict]:
    """`sixview scan`'s records, by file name."""
    out = tmp_path_factory.mktemp("scan") / "r.jsonl"
    r = CliRunner().invoke(main, ["scan", *map(str, images), "--models", str(MODELS), "--device", "cpu",
                                  "--batch", "3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert {rec["engine"] for rec in recs} == {"hd", "standard"}
    return {Path(rec["path"]).name: rec for rec in recs}


def test_the_server_gives_the_scans_verdicts(images, scanned):
    pytest.importorskip("fastapi")
    with warnings.catch_warnings():  # starlette's TestClient on httpx warns when imported
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from edge.serve.app import create_app

    with TestClient(create_app(Engine(MODELS, device="cpu"))) as client:
        for _ in range(600):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.1)
        files = [("image", (p.name, p.read_bytes())) for p in images]
        r = client.post("/v1/classify", files=files)
        assert r.status_code == 200, r.text
        served = {rec["path"]: rec for rec in r.json()["results"]}
    assert served.keys() == scanned.keys()
    for name, rec in served.items():
        assert _verdict(rec) == _verdict(scanned[name]), name


def test_evals_scoring_gives_the_scans_verdicts_and_its_figures_come_from_them(photo_set, images, scanned):
    from training.data.datasets import open_source
    from training.eval import metrics as M
    from training.eval.scoring import decisions, evaluate_role, view_scores
    from training.eval.sets import load_set

    engine = Engine(MODELS, device="cpu", precision="fp32", tiling=True)
    for role in ("hd", "standard"):  # each image sent to the role the scan routed it to
        mine = [p for p in images if scanned[p.name]["engine"] == role]
        data = SimpleNamespace(records=[SimpleNamespace(id=p.name, read=p.read_bytes) for p in mine])
        vs = view_scores(engine, role, data, batch=2)
        d = decisions(vs, engine.rule(role))["on"]
        for i, p in enumerate(mine):
            decision = engine.rule(role).decision(d, i, VIEW_NAMES)
            rec = scanned[p.name]
            guess = None if decision.guess is None else {"label": decision.guess[0], "score": decision.guess[1]}
            assert (decision.labels, guess, decision.scores, decision.views) == \
                (rec["labels"], rec["guess"], rec["scores"], rec["views"]), p.name
            assert round(decision.presence, 6) == rec["presence"]
    # the report's figures: computed from the decisions the scan wrote
    source = open_source(photo_set, strict=False)
    ds = load_set(source, "test" if "test" in source.splits else source.splits[0], engine.model("hd").meta.classes)
    res, vs = evaluate_role(engine, "hd", ds)
    classes = engine.model("hd").meta.classes
    recs = [scanned[Path(r.path).name] for r in ds.records]
    confident = np.array([[c in rec["labels"] for c in classes] for rec in recs])
    guess = np.array([[rec["guess"] is not None and rec["guess"]["label"] == c for c in classes] for rec in recs])
    cols = ds.known
    names = [c for c, k in zip(classes, cols, strict=True) if k]
    y, mask = ds.targets[:, cols], ds.mask[:, cols]
    on = res["tiling_on"]
    assert on["exact_match"] == M.exact_match(y, confident[:, cols], mask)
    assert on["prf"] == M.prf_at(y, confident[:, cols], names, mask)
    trust = M.trust(y, mask, confident[:, cols], guess[:, cols], np.array([rec["presence"] for rec in recs]))
    assert json.dumps(on["decision"], sort_keys=True) == json.dumps(trust, sort_keys=True)  # NaN as NaN


def test_ray_gives_the_scans_verdicts(images, scanned, tmp_path):
    """`sixview scan --ray` in a process of its own (a local Ray, its files and token out of the home)."""
    pytest.importorskip("ray.data", reason="Ray is not installed (pip install 'sixview[ray]')")
    folder = tmp_path / "in"
    folder.mkdir()
    for p in images:
        shutil.copy(p, folder / p.name)
    out = tmp_path / "ray.jsonl"
    temp = tempfile.mkdtemp(prefix="sxray")  # short: Ray's socket paths must stay under 107 bytes
    env = {**os.environ, "HOME": temp, "SIXVIEW_RAY_TMP": os.path.join(temp, "r")}
    args = ["scan", "--ray", "local", str(folder), "--models", str(MODELS), "--device", "cpu", "--batch", "3",
            "--actors", "1", "--block-size", "4", "--out", str(out)]
    try:
        r = subprocess.run([sys.executable, "-c", "from edge.cli import main; main()", *args], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert recs.keys() == scanned.keys()
    for name, rec in recs.items():
        assert _verdict(rec) == _verdict(scanned[name]), name
