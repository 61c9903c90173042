"""benchmarks/frame_budget.py: its --quick run writes a consistent table; bad options are usage errors."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(REPO))


def test_frame_budget_quick(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    pytest.importorskip("openvino", reason="the OpenVINO backend needs the openvino package (extra cpu)")
    int8 = importlib.util.find_spec("nncf") is not None  # OpenVINO INT8 too where nncf is installed
    args = ["--quick", "--out", str(tmp_path), *(["--int8"] if int8 else [])]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-m", "benchmarks.frame_budget", *args],
                         capture_output=True, text=True, timeout=240, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads((tmp_path / "frame_budget.json").read_text(encoding="utf-8"))
    md = (tmp_path / "frame_budget.md").read_text(encoding="utf-8")

    assert data["benchmark"] == "frame_budget" and data["quick"] is True
    assert {"name", "cpu", "cores", "onnxruntime"} <= set(data["machine"])
    s = data["settings"]
    assert s["budget_ms"] == 33 and s["batch"] == 6 and s["sizes"] == [64, 96]
    assert s["backends"] == ["ort-fp32", "ov-fp32", *(["ov-int8"] if int8 else [])]
    assert data["skipped"] == []
    cands = data["candidates"]
    assert [(c["arch"], c["input_size"]) for c in cands] == [("efficientnet-lite0", 64), ("efficientnet-lite0", 96)]
    for c in cands:
        assert c["params"] > 4e6 and c["onnx_mb"] > 0  # the real Lite0 graph, not a toy
        assert set(c["latency_ms"]) == set(c["fits"]) == set(s["backends"])
        for b, lat in c["latency_ms"].items():
            assert lat["p50"] > 0 and lat["n"] == s["runs"]
            assert c["fits"][b] == (lat["p50"] <= s["budget_ms"])  # the flag is the budget test, per cell
        assert f"| efficientnet-lite0 | {c['input_size']}x{c['input_size']} |" in md

    assert data["command"].startswith("python -m benchmarks.frame_budget --quick")
    assert f"`{data['command']}`" in md
    assert md.startswith("# Frame budget") and "Machine `" in md and "Budget 33 ms" in md
    assert ("OpenVINO INT8 p50" in md) == int8 and ("INT8 not timed here" in md) == (not int8)


@pytest.mark.parametrize("argv, message", [
    (["--archs", "resnet50"], "unknown arch resnet50"),
    (["--backends", "ort-fp32,tensorrt"], "unknown backend tensorrt"),
    (["--sizes", "16,128"], "--sizes 16 is below 32 px"),
    (["--runs", "0"], "must be positive"),
])
def test_frame_budget_bad_options(tmp_path, capsys, argv, message):
    from benchmarks.frame_budget import main

    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "frame_budget.json").exists()
