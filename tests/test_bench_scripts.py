"""Each benchmark script's --quick smoke mode runs and writes well-formed JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(REPO))


def _load(path: Path) -> dict:
    assert path.is_file(), path
    return json.loads(path.read_text(encoding="utf-8"))


def test_latency_quick(tmp_path):
    from benchmarks.latency import main

    assert main(["--quick", "--out", str(tmp_path)]) == 0
    data = _load(tmp_path / "latency.json")
    assert data["benchmark"] == "latency" and data["quick"] is True
    assert {"name", "cpu", "cores", "onnxruntime"} <= set(data["machine"])
    rows = data["results"]
    assert {r["batch"] for r in rows} == {1, 6} and {r["precision"] for r in rows} >= {"fp32"}
    for r in rows:
        assert {"session_ms", "first_infer_ms", "provider", "threads", "views_per_s", "frames_per_s"} <= set(r)
        assert {"n", "mean", "std", "p50", "p90", "p95", "p99"} <= set(r["stats_ms"])
        assert r["stats_ms"]["n"] == 10 and r["provider"] in ("cpu", "openvino")  # the CPU backends installed
        assert r["frames_per_s"] == pytest.approx(r["views_per_s"] / 6)
    if any(r["provider"] == "openvino" for r in rows):  # side by side with ONNX Runtime, interleaved
        ov = [r for r in rows if r["provider"] == "openvino"]
        assert {r["file"] for r in ov} == {"hd.onnx"} and all(r["interleaved"] and r["speedup"] > 0 for r in ov)
        assert "## Side by side" in (tmp_path / "latency.md").read_text()
    assert (tmp_path / "latency.md").read_text().startswith("# Model latency")
    assert (tmp_path / "latency.png").stat().st_size > 1000
    assert _load(tmp_path / "raw" / "latency_samples.json")["samples"][0]["samples_ms"]


def test_latency_without_models_is_a_usage_error(tmp_path, capsys):
    from benchmarks.latency import main

    assert main(["--models", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no .onnx files" in capsys.readouterr().err


def test_pipeline_quick(tmp_path):
    from benchmarks.pipeline import main

    scan_dir = tmp_path / "imgs"
    scan_dir.mkdir()
    from benchmarks._common import encode_jpeg, synthetic_photo

    for i in range(3):
        (scan_dir / f"{i}.jpg").write_bytes(encode_jpeg(synthetic_photo(seed=i)))
    assert main(["--quick", "--out", str(tmp_path), "--scan-dir", str(scan_dir), "--frames", "voc,1080p"]) == 0
    data = _load(tmp_path / "pipeline.json")
    assert data["benchmark"] == "pipeline"
    names = [f["frame"] for f in data["frames"]]
    assert "1080p" in names and set(names) <= {"voc", "1080p"}
    for f in data["frames"]:
        assert set(f["stages_ms"]) == {"decode", "preprocess", "batch", "infer", "merge", "total"}
        assert f["stages_ms"]["total"]["n"] == 5 and 0 < f["efficiency"] <= 1.5
    sc = data["scan"]
    assert sc["images"] == 3 and sc["errors"] == 0 and sc["images_per_s"] > 0 and sc["efficiency"] > 0
    assert (tmp_path / "pipeline.md").is_file() and (tmp_path / "pipeline.png").is_file()


def test_backbones_quick(tmp_path):
    from benchmarks.backbones import main
    from convert.toy import save_colour_model

    for name, side in (("a", 32), ("b", 48)):  # two recipes with different input sizes
        save_colour_model(tmp_path / name / "hd.onnx", role="hd", input_size=(side, side))
    assert main(["--quick", "--recipe", f"a={tmp_path / 'a'}", "--recipe", f"b={tmp_path / 'b'}",
                 "--out", str(tmp_path)]) == 0
    data = _load(tmp_path / "backbones.json")
    assert data["benchmark"] == "backbones" and data["quick"] is True
    assert data["settings"]["real_inputs"] is False  # sizes differ: noise inputs, still one interleaved run
    assert [r["name"] for r in data["recipes"]] == ["a", "b"]
    assert [r["input_size"] for r in data["recipes"]] == [[32, 32], [48, 48]]
    for r in data["recipes"]:
        assert set(r["file_mb"]) == {"fp32", "int8"} and r["params"] > 0
        for p in ("fp32", "int8"):
            assert r["latency_ms"][p]["runs"] == 10 and r["latency_ms"][p]["batch"] == 6
            assert {"mean", "p50", "p95"} <= set(r["latency_ms"][p])
            assert 0 <= r["map"][p]["six_views"] <= 1 and 0 <= r["map"][p]["whole"] <= 1
        assert r["eval"]["int8"]["model"].endswith("hd.int8.onnx") and r["images"] == 16
        assert r["int8_speedup"] == pytest.approx(r["latency_ms"]["fp32"]["mean"] / r["latency_ms"]["int8"]["mean"])
    md = (tmp_path / "backbones.md").read_text()
    assert md.startswith("# Backbones") and "Absolute times vary" in md and "| b | 48x48 |" in md


def test_backbones_quick_toy_and_usage_errors(tmp_path, capsys):
    from benchmarks.backbones import main

    assert main(["--quick", "--out", str(tmp_path)]) == 0
    r = _load(tmp_path / "backbones.json")["recipes"][0]
    assert r["name"] == "toy" and r["map"]["fp32"]["six_views"] > 0.5  # the toy sees its colours
    assert main(["--out", str(tmp_path)]) == 2
    assert main(["--recipe", "x", "--recipe", f"a={tmp_path}", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "NAME=DIR" in err and "hd.onnx" in err


def test_scripts_run_as_files_with_help():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "latency.py"), "--help"],
                         capture_output=True, text=True, timeout=60, cwd=REPO.parent)
    assert out.returncode == 0 and "--budget-s" in out.stdout and "--quick" in out.stdout


def test_reference_quick(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-m", "benchmarks.reference", "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=180, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    data = _load(tmp_path / "reference.json")
    assert data["benchmark"] == "reference" and data["conversion_max_abs_diff"] < 1e-4
    f = data["frames"][0]
    assert set(f["paths"]) == {"reference (Keras)", "sixview FP32"}
    ratio = f["ratios"]["reference / sixview FP32"]
    assert ratio["p50"] > 0 and f["paths"]["sixview FP32"]["stages_ms"]["total"]["n"] == 5
    assert set(data["cold_start_s"]) == {"reference (Keras)", "sixview FP32"}


def test_serve_quick(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from benchmarks.serve import main

    assert main(["--quick", "--out", str(tmp_path), "--runs", "5", "--requests", "16"]) == 0
    data = _load(tmp_path / "serve.json")
    assert data["benchmark"] == "serve" and data["quick"] is True
    lat = data["latency"]
    assert set(lat["stages_ms"]) == {"in_process", "http_multipart", "http_raw"}
    assert lat["stages_ms"]["http_raw"]["n"] == 5 and lat["ratio_p50"]["http_raw"] > 0
    (rnd,) = data["rounds"]
    assert rnd["server"]["requests"] == 16 and rnd["server"]["errors"] == 0 and rnd["scan"]["images"] == 16
    assert data["throughput_ratio"] > 0 and data["rss_mb"]["end"] > 0
    assert (tmp_path / "serve.md").read_text().startswith("# Serving benchmark")
