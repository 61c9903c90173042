"""CPU classes (`edge.providers`): the class from /proc/cpuinfo's flags, `--device auto`'s choice per class and
gates, the environment override; and the multiply-adds beside the latency (benchmarks, model card)."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from edge import openvino_backend as ovb
from edge import providers
from edge.providers import ProviderError, auto_cpu_precision, classify_cpu, cpu_class

ZEN4 = {"fma", "avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
SAPPHIRE_RAPIDS = ZEN4 | {"amx_tile", "amx_bf16", "amx_int8"}
CASCADE_LAKE = {"fma", "avx2", "avx512f", "avx512_vnni"}
SKYLAKE_SP = {"fma", "avx2", "avx512f"}
ZEN3 = {"fma", "avx2", "sse4_2"}


@pytest.mark.parametrize("flags,name", [(SAPPHIRE_RAPIDS, "amx"), (ZEN4, "avx512_bf16"),
                                        (CASCADE_LAKE, "avx512_vnni"), (SKYLAKE_SP, "avx512"), (ZEN3, "avx2"),
                                        ({"sse4_2", "avx"}, "other"), ({"avx2"}, "other"), (None, "other")])
def test_the_class_comes_from_the_flags(flags, name):
    assert classify_cpu(flags).name == name


@pytest.mark.parametrize("name,gates,want", [
    ("amx", {"int8", "bf16"}, "int8"), ("amx", {"bf16"}, "bf16"),
    ("avx512_bf16", {"int8"}, "int8"), ("avx512_bf16", {"bf16"}, "bf16"), ("avx512_bf16", set(), "fp32"),
    ("avx512_vnni", {"int8", "bf16"}, "int8"), ("avx512_vnni", {"bf16"}, "fp32"),
    ("avx512", {"bf16"}, "fp32"),
    ("avx2", {"int8"}, "int8"), ("avx2", {"bf16"}, "fp32"), ("avx2", set(), "fp32"),
    ("other", set(), "fp32"),
])
def test_auto_precision_per_class_and_gates(name, gates, want):
    klass = next(c for c in providers.CPU_CLASSES if c.name == name)
    assert auto_cpu_precision(gates, klass.bf16) == want


def test_only_classes_with_native_bf16_take_bf16():
    assert {c.name for c in providers.CPU_CLASSES if c.bf16} == {"amx", "avx512_bf16"}


def test_the_environment_names_the_class(cpu_class_is, monkeypatch):
    monkeypatch.setattr(providers, "cpu_flags", lambda: set(ZEN4))
    cpu_class_is(None)
    assert cpu_class().name == "avx512_bf16"
    cpu_class_is("avx2")
    assert cpu_class().name == "avx2" and not ovb.native_bf16()  # BF16 follows the class: never emulated
    cpu_class_is("amx")
    assert ovb.native_bf16()
    cpu_class_is("pentium")
    with pytest.raises(ProviderError, match="not a CPU class.*avx2"):
        cpu_class()


def test_auto_opens_openvino_in_fp32_on_avx2(cpu_class_is, colour_models):
    """AVX2-only CPUs get OpenVINO like every class (it was as fast as ONNX Runtime or faster in FP32 on a real one):
    a file with no gate computes in FP32 there, never in BF16."""
    from edge.model import open_role

    cpu_class_is("avx2")
    for precision in ("auto", "fp32"):
        m = open_role(colour_models, "hd", "auto", precision)
        assert (m.provider, m.precision) == ("openvino", "fp32")
    assert open_role(colour_models, "hd", "cpu").provider == "cpu"  # ONNX Runtime when asked for


def _conv_model() -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv 3->4, 3x3, pad 1 -> Flatten -> MatMul 256x5: 4*8*8*27 + 256*5 multiply-adds."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], [0.1] * 108)
    m = helper.make_tensor("m", TensorProto.FLOAT, [256, 5], [0.1] * 1280)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["c"], ["f"]), helper.make_node("MatMul", ["f", "m"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], [w, m])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_gmac_per_frame_is_six_views_of_the_graph(tmp_path):
    from benchmarks.latency_report import frame_gmac, gmac_cell, markdown

    path = tmp_path / "hd.onnx"
    onnx.save(_conv_model(), str(path))
    macs = 4 * 8 * 8 * 27 + 256 * 5
    assert frame_gmac(path) == pytest.approx(6 * macs / 1e9)
    assert frame_gmac(tmp_path / "missing.onnx") is None
    assert gmac_cell({"gmac_per_frame": 3.4594}) == "3.459" and gmac_cell({}) == ""
    stats = {"mean": 2.0, "std": 0.1, "p50": 2.0, "p90": 2.1, "p95": 2.2, "p99": 2.3, "n": 10}
    row = {"file": "hd.onnx", "precision": "fp32", "provider": "cpu", "io_binding": False, "threads": 2,
           "batch": 6, "session_ms": 1.0, "first_infer_ms": 1.0, "stats_ms": stats, "views_per_s": 3000.0,
           "frames_per_s": 500.0, "gmac_per_frame": 3.4594}
    machine = {"name": "m", "cpu": "c", "cores": 2, "cpu_flags": ["avx2"], "onnxruntime": "1", "numpy": "2",
               "opencv": "4", "python": "3", "cpu_class": "avx2", "onednn_max_cpu_isa": "AVX2"}
    text = markdown({"machine": machine, "results": [row], "skipped": [],
                     "settings": {"warmup": 1, "runs": 10, "budget_s": None}})
    assert "| model | GMAC/frame | precision |" in text and "| hd.onnx | 3.459 | fp32 | cpu |" in text
    assert "CPU class `avx2`" in text and "oneDNN capped at AVX2" in text


def test_the_model_card_gives_each_shipped_file_its_gmac(tmp_path):
    from training.release.model_card import card

    models = tmp_path / "models"
    models.mkdir()
    onnx.save(_conv_model(), str(models / "hd.onnx"))
    (models / "hd.int8-ov.xml").write_text("<net/>")
    (models / "hd.int8-ov.bin").write_bytes(b"0")
    text = card(tmp_path / "runs", models, None)
    gmac = f"{6 * (4 * 8 * 8 * 27 + 256 * 5) / 1e9:.3g}"
    assert "| file | role | what | GMAC/frame |" in text
    assert f"| `hd.onnx` | hd | FP32 (CPU), 0.0 MB | {gmac} |" in text
    assert "INT8 OpenVINO IR of `hd.onnx`" in text and text.count(f"| {gmac} |") == 2
