"""edge.stats and the benchmark helpers against hand-computed values."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.stats import machine_info, machine_name, pipeline_efficiency, scan_efficiency, summarize

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(REPO))


def test_summarize_hand_computed():
    # sorted 1 2 3 4 10; linear interpolation at rank q*(n-1)
    s = summarize([10, 3, 1, 4, 2])
    assert s["n"] == 5
    assert s["mean"] == pytest.approx(4.0)
    assert s["std"] == pytest.approx(math.sqrt((9 + 4 + 1 + 0 + 36) / 5))  # population std
    assert s["p50"] == pytest.approx(3.0)
    assert s["p90"] == pytest.approx(4 + 0.6 * 6)  # rank 3.6
    assert s["p95"] == pytest.approx(4 + 0.8 * 6)  # rank 3.8
    assert s["p99"] == pytest.approx(4 + 0.96 * 6)  # rank 3.96
    assert (s["min"], s["max"]) == (1.0, 10.0)


def test_summarize_keeps_outliers_and_single_sample():
    s = summarize([1.0] * 99 + [1000.0])
    assert s["max"] == 1000.0 and s["mean"] == pytest.approx(10.99)
    assert s["p99"] == pytest.approx(1.0 + 0.01 * 999)  # rank 98.01
    one = summarize(np.array([5.0]))
    assert one == {"n": 1, "mean": 5.0, "std": 0.0, "p50": 5.0, "p90": 5.0, "p95": 5.0, "p99": 5.0,
                   "min": 5.0, "max": 5.0}


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")]])
def test_summarize_refuses_empty_or_non_finite(bad):
    with pytest.raises(ValueError):
        summarize(bad)


@pytest.mark.parametrize("infer, total, decode, expected", [
    (9.0, 12.0, 2.0, 0.9),
    (17.0, 25.0, 5.0, 0.85),
    (10.0, 10.0, 0.0, 1.0),
])
def test_pipeline_efficiency(infer, total, decode, expected):
    assert pipeline_efficiency(infer, total, decode) == pytest.approx(expected)


def test_pipeline_efficiency_refuses_decode_only():
    with pytest.raises(ValueError):
        pipeline_efficiency(1.0, 5.0, 5.0)


@pytest.mark.parametrize("rate, infer, expected", [(45.0, 20.0, 0.9), (100.0, 10.0, 1.0), (10.0, 50.0, 0.5)])
def test_scan_efficiency(rate, infer, expected):
    assert scan_efficiency(rate, infer) == pytest.approx(expected)
    with pytest.raises(ValueError):
        scan_efficiency(rate, 0.0)


@pytest.mark.parametrize("cpu, cores, slug", [
    ("AMD EPYC 9R14 96-Core Processor", 2, "amd-epyc-9r14-2c"),
    ("Intel(R) Core(TM) i7-8700K CPU @ 3.70GHz", 12, "intel-core-i7-8700k-12c"),
    ("Intel(R) Xeon(R) Processor", 2, "intel-xeon-2c"),
    ("ARMv8 Processor rev 1 (v8l)", 6, "armv8-rev-1-v8l-6c"),
    ("", 4, "cpu-4c"),
])
def test_machine_name(cpu, cores, slug):
    assert machine_name(cpu, cores) == slug


def test_machine_name_tells_cpu_classes_apart():
    """Two CPUs sold as 'AMD EPYC' (Zen 4 with BF16, Zen 3 with AVX2 only) get their own results folders."""
    assert machine_name("AMD EPYC", 2, "avx512_bf16") == "amd-epyc-avx512-bf16-2c"
    assert machine_name("AMD EPYC", 2, "avx2") == "amd-epyc-avx2-2c"


def test_machine_info_keys():
    m = machine_info()
    for k in ("name", "cpu", "cores", "onnxruntime", "numpy", "opencv", "python", "platform"):
        assert m[k], k
    assert m["cores"] >= 1 and m["name"].endswith(f"-{m['cpu_class'].replace('_', '-')}-{m['cores']}c")


def test_time_calls_runs_and_budget():
    from benchmarks.latency import time_calls

    calls = []
    assert len(time_calls(lambda: calls.append(1), warmup=3, runs=7)) == 7
    assert len(calls) == 10
    assert len(time_calls(lambda: None, warmup=0, runs=1, budget_s=1e-6)) >= 10  # budget keeps >= 10 runs


def test_frames_without_voc_are_synthetic_and_sized(monkeypatch, tmp_path):
    import benchmarks._common as common

    monkeypatch.setattr(common, "VOC_IMAGES", tmp_path / "absent")
    said = []
    frames = common.bench_frames(None, ("voc", "1080p"), log=said.append)
    assert list(frames) == ["1080p"] and "skipping the VOC frame" in said[0]
    img = cv2.imdecode(np.frombuffer(frames["1080p"][0], np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (1080, 1920, 3)


def test_upscaled_frame_crops_to_aspect():
    from benchmarks._common import upscaled_frame

    img = np.zeros((375, 500, 3), np.uint8)
    img[:, 250:] = 255  # right half white: a centre crop keeps both halves
    out = upscaled_frame(img, 192, 108)
    assert out.shape == (108, 192, 3)
    assert out[:, :80].max() < 20 and out[:, 112:].min() > 235
