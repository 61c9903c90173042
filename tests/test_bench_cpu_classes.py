"""`python -m benchmarks.cpu_classes --quick`: the latency benchmark under each oneDNN cap in child processes,
one report per cap and model, the class each cap stands for and `auto`'s choice on it."""

from __future__ import annotations

import json

import pytest

from benchmarks.cpu_classes import cap_class, main


@pytest.mark.integration
def test_cpu_classes_quick(tmp_path):
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "cpu_classes.json").read_text(encoding="utf-8"))
    assert data["benchmark"] == "cpu_classes" and data["quick"] is True and data["machine"]["cpu_class"]
    caps = {c["cap"]: c for c in data["caps"]}
    assert set(caps) == {"native", "AVX2"} and caps["AVX2"]["class"] == "avx2"
    assert caps["AVX2"]["onednn_max_cpu_isa"] == "AVX2" and caps["native"]["onednn_max_cpu_isa"] is None
    for c in data["caps"]:
        (row,) = c["models"]
        assert row["file"] == "hd.onnx" and row["p50_ms"]["ONNX Runtime fp32"] > 0
        assert row["gates_passed"] == [] and row["fastest_allowed"] in row["p50_ms"]
    assert caps["AVX2"]["models"][0]["auto"] == "OpenVINO fp32"  # no gate on an AVX2-only CPU
    assert "OpenVINO bf16" not in caps["AVX2"]["models"][0]["p50_ms"]  # BF16 is not native there
    text = (tmp_path / "cpu_classes.md").read_text(encoding="utf-8")
    assert text.startswith("# CPU classes") and "| AVX2 | avx2 | hd.onnx |" in text


@pytest.mark.integration
def test_cpu_classes_usage_errors(tmp_path, capsys):
    assert main(["--caps", "AVX9", "--out", str(tmp_path)]) == 2
    assert "unknown caps" in capsys.readouterr().err
    assert main(["--models", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert cap_class("AVX2") == "avx2"
