"""The OpenVINO backend: parity with ONNX Runtime, `auto`'s choice and fallback, the precision gate,
the compiled-model cache, and `sixview scan --device openvino` end to end (toy colour models)."""

from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO, grey_with_square

from edge import openvino_backend as ovb
from edge.cli import main
from edge.engine import Engine
from edge.gates import gate_path, gate_status, passes, write_gate
from edge.inputs import file_sha256
from edge.model import ModelError, open_model, open_role
from edge.onnx_props import PropsError, read_props
from edge.providers import ProviderError

pytest.importorskip("openvino", reason="the OpenVINO backend needs the openvino package (extra cpu)")
needs_bf16 = pytest.mark.skipif(not ovb.native_bf16(), reason="this CPU has no native BF16 (avx512_bf16/amx_bf16)")


@pytest.fixture
def models(tmp_path, colour_models) -> Path:
    """A private copy of the toy models (gate files written here stay out of the shared fixture)."""
    d = tmp_path / "models"
    shutil.copytree(colour_models, d)
    return d


@pytest.fixture
def no_openvino(monkeypatch):
    """`import openvino` fails, as where the package is not installed."""
    monkeypatch.setitem(sys.modules, "openvino", None)
    ovb.core.cache_clear()
    yield
    ovb.core.cache_clear()


def views(size: int) -> np.ndarray:
    """Six-ish views of real-looking content: noise and coloured squares, float32 0..255."""
    rng = np.random.default_rng(1)
    out = rng.uniform(0, 255, (7, size, size, 3)).astype(np.float32)
    for i, corner in enumerate(("top_left", "top_right", "bottom_left", "bottom_right", "centre")):
        img = grey_with_square(size * 4, size * 4, corner, side=size, colour_rgb=((255, 0, 0), (0, 255, 0))[i % 2])
        out[i] = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)[..., ::-1]
    return out


@pytest.mark.parametrize("role,size", [("standard", 32), ("hd", 64)])
def test_fp32_parity_with_onnx_runtime(colour_models, role, size):
    ort_model = open_model(colour_models / f"{role}.onnx", "cpu")
    ov_model = open_model(colour_models / f"{role}.onnx", "openvino", precision="fp32")
    assert (ov_model.provider, ov_model.precision) == ("openvino", "fp32")
    assert ov_model.meta == ort_model.meta  # the metadata comes from the ONNX file either way
    x = views(size)
    for batch in (x, x[:1], x[:6]):
        np.testing.assert_allclose(ov_model(batch), ort_model(batch), atol=1e-4, rtol=0)


def test_props_read_without_onnx_match_onnx(colour_models, tmp_path):
    onnx = pytest.importorskip("onnx")
    for f in colour_models.glob("*.onnx"):
        assert read_props(f) == {p.key: p.value for p in onnx.load(f).metadata_props}
    (tmp_path / "junk.onnx").write_bytes(b"not a model at all" * 4)
    with pytest.raises(PropsError):
        read_props(tmp_path / "junk.onnx")
    with pytest.raises(ModelError, match="not an ONNX file"):
        open_model(tmp_path / "junk.onnx", "openvino")


def test_one_request_per_thread_gives_the_same_scores(colour_models):
    m = open_model(colour_models / "hd.onnx", "openvino", precision="fp32")
    x = views(64)
    want = m(x)
    got: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: got.extend(m(x) for _ in range(5))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 15 and all(np.array_equal(g, want) for g in got)


def test_auto_picks_openvino_on_a_cpu(colour_models, cpu_class_is):
    cpu_class_is("avx512")  # a class whose FP32 runs on OpenVINO (on avx2, ONNX Runtime: below)
    m = Engine(colour_models, device="auto").model("hd")
    assert m.provider == "openvino" and m.precision == "fp32"  # no gate file: FP32


def test_auto_falls_back_to_onnx_runtime_without_openvino(colour_models, no_openvino):
    m = open_role(colour_models, "hd", "auto")
    assert m.provider == "cpu" and m.session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(ProviderError, match="needs the openvino package.*pip install"):
        open_role(colour_models, "hd", "openvino")
    res = CliRunner().invoke(main, ["scan", str(REPO / "README.md"), "--models", str(colour_models),
                                    "--device", "openvino"])
    assert res.exit_code == 2 and "openvino package" in res.output and "Traceback" not in res.output


def test_auto_falls_back_when_openvino_fails_to_start(colour_models, monkeypatch):
    def broken(*a, **k):
        raise ProviderError("OpenVINO could not compile: simulated")

    monkeypatch.setattr(ovb, "compile_onnx", broken)
    assert open_role(colour_models, "standard", "auto").provider == "cpu"
    with pytest.raises(ProviderError, match="simulated"):
        open_role(colour_models, "standard", "openvino")


def test_precision_requests_that_cannot_run_are_clear_errors(colour_models, monkeypatch):
    with pytest.raises(ProviderError, match="bf16 runs on OpenVINO only"):
        open_role(colour_models, "hd", "cpu", "bf16")
    with pytest.raises(ProviderError, match="fp16 is for GPUs"):
        open_role(colour_models, "hd", "openvino", "fp16")
    monkeypatch.setattr(ovb, "native_bf16", lambda: False)
    with pytest.raises(ProviderError, match="native BF16"):
        open_role(colour_models, "hd", "openvino", "bf16")


def _gate(models: Path, role: str, passed: bool, sha: str | None = None) -> Path:
    path = models / f"{role}.onnx"
    return write_gate(path, "bf16", {"passed": passed, "map_fp32": 0.9, "map": 0.899 if passed else 0.8,
                                     "flips": 1, "set": "synthetic", "date": "2026-01-01", "cpu": "test",
                                     "sha256": sha or file_sha256(path)})


@needs_bf16
def test_auto_takes_bf16_only_when_the_gate_passed(models):
    assert gate_path(models / "hd.onnx") == models / "hd.gates.json"
    assert open_role(models, "hd", "openvino").precision == "fp32"  # no gate: FP32
    _gate(models, "hd", passed=True)
    assert gate_status(models / "hd.onnx", "bf16")[0]
    assert open_role(models, "hd", "openvino").precision == "bf16"
    assert open_role(models, "hd", "auto").precision == "bf16"
    assert open_role(models, "hd", "openvino", "fp32").precision == "fp32"  # an explicit precision wins
    assert open_role(models, "standard", "openvino").precision == "fp32"  # gates are per file
    _gate(models, "hd", passed=False)
    assert open_role(models, "hd", "openvino").precision == "fp32"
    _gate(models, "hd", passed=True, sha="0" * 64)  # measured on another version of the file
    passed, why = gate_status(models / "hd.onnx", "bf16")
    assert not passed and "another version" in why
    assert open_role(models, "hd", "openvino").precision == "fp32"


def test_a_passed_gate_is_ignored_without_native_bf16(models, monkeypatch):
    _gate(models, "hd", passed=True)
    monkeypatch.setattr(ovb, "native_bf16", lambda: False)
    assert open_role(models, "hd", "openvino").precision == "fp32"  # never emulated


def test_gate_rule_and_file():
    assert passes(0.90, 0.896) and passes(0.90, 0.91) and not passes(0.90, 0.894)


@needs_bf16
def test_bf16_runs_and_stays_close(colour_models):
    m = open_model(colour_models / "hd.onnx", "openvino", precision="bf16")
    assert m.precision == "bf16"  # read back from the compiled model
    ref = open_model(colour_models / "hd.onnx", "cpu")
    x = views(64)
    assert np.abs(m(x) - ref(x)).max() < 0.1


def test_compiled_model_cache_is_written(colour_models, tmp_path, monkeypatch):
    cache = tmp_path / "ov-cache"
    monkeypatch.setenv("SIXVIEW_OV_CACHE", str(cache))
    first = open_model(colour_models / "hd.onnx", "openvino", precision="fp32")
    assert any(cache.iterdir()) and first.session.from_cache is False
    again = open_model(colour_models / "hd.onnx", "openvino", precision="fp32")
    assert again.session.from_cache is True


def test_scan_device_openvino_end_to_end(tmp_path, colour_models):
    cv2.imwrite(str(tmp_path / "red.png"), grey_with_square(corner="top_right"))
    cv2.imwrite(str(tmp_path / "thumb.png"), np.full((32, 32, 3), (0, 255, 0), np.uint8))
    out = tmp_path / "r.jsonl"
    res = CliRunner().invoke(main, ["scan", str(tmp_path / "red.png"), str(tmp_path / "thumb.png"), "--models",
                                    str(colour_models), "--device", "openvino", "--out", str(out)])
    assert res.exit_code == 0, res.output
    recs = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert {r["provider"] for r in recs.values()} == {"openvino"}
    assert {r["precision"] for r in recs.values()} == {"fp32"}
    assert recs["red.png"]["engine"] == "hd" and recs["red.png"]["labels"] == ["red"]
    assert recs["red.png"]["views"]["red"] == "top_right"
    assert recs["thumb.png"]["engine"] == "standard" and recs["thumb.png"]["labels"] == ["green"]


def _labelled_set(tmp_path: Path) -> Path:
    """Five labelled synthetic photos, a set `training.data.datasets.open_source` reads."""
    data = tmp_path / "set"
    (data / "images").mkdir(parents=True)
    rows = ["path,labels"]
    photos = [("top_left", (255, 0, 0), "red"), ("centre", (0, 255, 0), "green"),
              ("bottom_right", (0, 0, 255), "blue"), ("top_right", (255, 0, 0), "red"), ("centre", (128, 128, 128), "")]
    for i, (corner, colour, name) in enumerate(photos):
        cv2.imwrite(str(data / "images" / f"{i}.png"), grey_with_square(corner=corner, colour_rgb=colour))
        rows.append(f"images/{i}.png,{name}")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    (data / "classes.txt").write_text("red\ngreen\nblue\n")
    return data


@needs_bf16
def test_precision_gate_script_writes_the_gate_auto_reads(models, tmp_path):
    pytest.importorskip("sklearn")
    from benchmarks.precision_gate import main as gate_main

    data = _labelled_set(tmp_path)
    assert gate_main(["--models", str(models), "--data", str(data), "--roles", "hd", "--threads", "1"]) == 0
    gate = json.loads((models / "hd.gates.json").read_text())["bf16"]
    assert gate["passed"] is True and gate["images"] == 5 and gate["flips"] == 0
    assert {"map_fp32", "map", "flips", "set", "date", "cpu", "sha256"} <= set(gate)
    assert open_role(models, "hd", "auto").precision == "bf16"
    assert gate["set"] == f"{data} (all)"  # the set as given


@needs_bf16
def test_a_gate_knows_another_split_of_the_calibration_set_is_other_images(models, tmp_path):
    pytest.importorskip("sklearn")
    from benchmarks.precision_gate import main as gate_main
    from training.data.datasets import open_source
    from training.eval.calibrate import write_thresholds

    data = _labelled_set(tmp_path)
    source = open_source(data, strict=False)
    ids = [r.id for r in source.records("all")]
    for split, chose in (("all", True), ("train", False)):  # gated on split "all"
        write_thresholds(models / "hd.onnx", models / "hd.onnx", {}, f"{data} ({split})",
                         sets=[{"path": str(source.path), "split": split, "ids": ids[:2]}])
        assert gate_main(["--models", str(models), "--data", str(data), "--roles", "hd", "--threads", "1"]) == 0
        gate = json.loads((models / "hd.gates.json").read_text())["bf16"]
        assert gate["thresholds_calibrated_on_set"] is chose, split


# OpenVINO INT8: the toy models quantized by NNCF (convert/int8_ov.py) on a few synthetic photos.

@pytest.fixture(scope="module")
def int8_models(colour_models, tmp_path_factory) -> Path:
    """A copy of the toy models with each role's INT8 IR (`<role>.int8-ov.xml/.bin`) beside its ONNX file."""
    pytest.importorskip("nncf", reason="OpenVINO INT8 needs nncf (extra quantize)")
    from convert.int8_ov import calibration_batches, quantize

    root = tmp_path_factory.mktemp("int8")
    d = root / "models"
    shutil.copytree(colour_models, d)
    photos = []
    colours = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128))
    for i, corner in enumerate(("top_left", "top_right", "bottom_left", "bottom_right", "centre") * 2):
        for w, h in ((600, 450), (120, 90)):  # both roles' routes
            f = root / f"{i}_{w}.png"
            cv2.imwrite(str(f), grey_with_square(w, h, corner, side=w // 6, colour_rgb=colours[i % 4]))
            photos.append(f)
    for role in ("standard", "hd"):
        xml = quantize(d / f"{role}.onnx", calibration_batches(d, role, [(f.name, f.read_bytes()) for f in photos]))
        assert xml == d / f"{role}.int8-ov.xml" and xml.with_suffix(".bin").is_file()
    return d


@pytest.fixture
def int8_copy(int8_models, tmp_path) -> Path:
    d = tmp_path / "models"
    shutil.copytree(int8_models, d)
    return d


def _int8_gate(models: Path, role: str, passed: bool, ir_sha: str | None = None) -> Path:
    path = models / f"{role}.onnx"
    return write_gate(path, "int8", {"passed": passed, "map_fp32": 0.9, "map": 0.899 if passed else 0.8,
                                     "flips": 1, "set": "synthetic", "date": "2026-01-01", "cpu": "test",
                                     "sha256": file_sha256(path),
                                     "ir_sha256": ir_sha or file_sha256(models / f"{role}.int8-ov.bin")})


@pytest.mark.parametrize("role,size", [("standard", 32), ("hd", 64)])
def test_int8_ir_runs_close_to_fp32(int8_models, role, size):
    m = open_role(int8_models, role, "openvino", "int8")
    assert (m.provider, m.precision, m.path.name) == ("openvino", "int8", f"{role}.onnx")
    ref = open_model(int8_models / f"{role}.onnx", "cpu")
    assert m.meta == ref.meta  # the metadata comes from the ONNX file beside the IR
    x = views(size)
    got, want = m(x), ref(x)
    assert np.abs(got - want).max() < 0.35  # loose: a toy model of a few weights, quantized on 20 photos
    sure = want.max(axis=1) > 0.3
    assert sure.any() and (got[sure].argmax(axis=1) == want[sure].argmax(axis=1)).all()


def test_scan_device_openvino_precision_int8(tmp_path, int8_models):
    cv2.imwrite(str(tmp_path / "red.png"), grey_with_square(corner="top_right"))
    out = tmp_path / "r.jsonl"
    res = CliRunner().invoke(main, ["scan", str(tmp_path / "red.png"), "--models", str(int8_models),
                                    "--device", "openvino", "--precision", "int8", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rec = json.loads(out.read_text().splitlines()[0])
    assert (rec["provider"], rec["precision"], rec["labels"]) == ("openvino", "int8", ["red"])


def test_auto_takes_int8_only_when_its_gate_passed(int8_copy, monkeypatch):
    monkeypatch.setattr(ovb, "native_bf16", lambda: False)
    assert open_role(int8_copy, "hd", "openvino").precision == "fp32"  # no gate: FP32
    _int8_gate(int8_copy, "hd", passed=True)
    assert open_role(int8_copy, "hd", "openvino").precision == "int8"
    assert open_role(int8_copy, "hd", "auto").precision == "int8"
    assert open_role(int8_copy, "hd", "openvino", "fp32").precision == "fp32"  # an explicit precision wins
    _int8_gate(int8_copy, "hd", passed=True, ir_sha="0" * 64)  # measured on another IR
    passed, why = gate_status(int8_copy / "hd.onnx", "int8")
    assert not passed and "hd.int8-ov.bin" in why
    assert open_role(int8_copy, "hd", "openvino").precision == "fp32"
    _int8_gate(int8_copy, "hd", passed=False)
    assert open_role(int8_copy, "hd", "openvino").precision == "fp32"


def test_auto_on_an_avx2_cpu_takes_openvino_int8_when_gated_else_fp32(int8_copy, cpu_class_is):
    cpu_class_is("avx2")
    _gate(int8_copy, "hd", passed=True)  # bf16 gated, but not native on the class: never taken
    m = open_role(int8_copy, "hd", "auto")
    assert (m.provider, m.precision) == ("openvino", "fp32")
    _int8_gate(int8_copy, "hd", passed=True)
    m = open_role(int8_copy, "hd", "auto")
    assert (m.provider, m.precision, m.session.float_parts) == ("openvino", "int8", "fp32")
    _int8_gate(int8_copy, "hd", passed=False)
    assert open_role(int8_copy, "hd", "auto").precision == "fp32"


@needs_bf16
def test_auto_falls_back_from_a_failed_int8_gate_to_a_passed_bf16(int8_copy):
    _int8_gate(int8_copy, "hd", passed=False)
    _gate(int8_copy, "hd", passed=True)
    assert open_role(int8_copy, "hd", "openvino").precision == "bf16"
    _int8_gate(int8_copy, "hd", passed=True)
    assert open_role(int8_copy, "hd", "openvino").precision == "int8"  # int8 > bf16


def test_an_ir_of_another_onnx_file_is_refused(int8_copy):
    ov = pytest.importorskip("openvino")
    xml = int8_copy / "hd.int8-ov.xml"
    ir = ov.Core().read_model(str(xml))
    ir.set_rt_info("0" * 64, ovb.IR_SHA_KEY)
    ov.save_model(ir, str(int8_copy / "tmp.xml"), compress_to_fp16=False)
    (int8_copy / "tmp.xml").replace(xml)
    (int8_copy / "tmp.bin").replace(xml.with_suffix(".bin"))
    with pytest.raises(ProviderError, match="was not made from this hd.onnx"):
        open_role(int8_copy, "hd", "openvino", "int8")
    xml.unlink()
    with pytest.raises(ModelError, match="hd.int8.onnx"):  # no IR, no INT8 ONNX file
        open_role(int8_copy, "hd", "openvino", "int8")


def test_precision_gate_script_gates_int8(int8_copy, tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    from benchmarks.precision_gate import main as gate_main

    monkeypatch.setattr(ovb, "native_bf16", lambda: False)
    data = _labelled_set(tmp_path)
    assert gate_main(["--models", str(int8_copy), "--data", str(data), "--roles", "hd", "--threads", "1",
                      "--precisions", "int8"]) == 0
    gate = json.loads((int8_copy / "hd.gates.json").read_text())["int8"]
    assert gate["images"] == 5 and gate["ir"] == "hd.int8-ov.xml" and gate["float_parts"] == "fp32"
    assert gate["ir_sha256"] == file_sha256(int8_copy / "hd.int8-ov.bin")
    assert open_role(int8_copy, "hd", "openvino").precision == ("int8" if gate["passed"] else "fp32")
    assert gate_main(["--models", str(int8_copy), "--data", str(data), "--precisions", "fp16"]) == 2
