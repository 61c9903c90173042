"""Keras -> verified FP32/FP16 ONNX with metadata: convnext-edge (ours) and keras.applications
ConvNeXt (grouped convolutions), a tampered conversion, the CLI, INT8 and ConvNeXt-Base (slow)."""

import json
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
pytest.importorskip("onnxconverter_common")
ort = pytest.importorskip("onnxruntime")

import keras  # noqa: E402
import onnx  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from conftest import SHARED_DATA  # noqa: E402

from convert import api  # noqa: E402
from convert.api import convert_model  # noqa: E402
from convert.export import export_onnx, unsupported_ops  # noqa: E402
from convert.int8 import int8_earned, quantize_int8  # noqa: E402
from convert.metadata import build_provenance, read_meta  # noqa: E402
from convert.verify import VerificationError, images_from_dir, run_onnx  # noqa: E402
from edge.metadata import ModelMeta  # noqa: E402
from training.data.synthetic import randomize_constant_weights  # noqa: E402

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def real_images(size: tuple[int, int], n: int, folder: str = "voc07_val") -> np.ndarray:
    """n real photos resized to `size` (uint8 RGB); synthetic scenes when ../shared/data is absent."""
    if (SHARED_DATA / folder / "images").is_dir():
        return images_from_dir(SHARED_DATA / folder / "images", size, n)
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size[0], 0:size[1]] / max(size)
    out = []
    for _ in range(n):
        base = rng.uniform(0, 255, 3) * (0.5 + 0.5 * np.sin(6 * xx + rng.uniform(0, 6)))[..., None]
        out.append(np.clip(base + rng.normal(0, 20, (*size, 3)), 0, 255))
    return np.stack(out).astype(np.uint8)


def edge_model(size=(32, 32)) -> keras.Model:
    models = pytest.importorskip("training.models.factory")
    keras.utils.set_random_seed(0)
    m = models.build_model("convnext-edge", len(CLASSES), size, weights="none", width_scale=0.5,
                           depths=(1, 1, 2, 1), head_width=64)
    return randomize_constant_weights(m)


@pytest.fixture(scope="module")
def edge_converted(tmp_path_factory):
    model = edge_model()
    out = tmp_path_factory.mktemp("edge")
    imgs = real_images((32, 32), 24)
    prov = build_provenance(None, {"arch": "convnext-edge", "epochs": 3, "data": "test"}, {"auc": 0.5})
    files = convert_model(model, CLASSES, (32, 32), "standard", out, prov, imgs)
    return model, out, files, imgs


@pytest.fixture(scope="module")
def tiny_converted(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = keras.applications.ConvNeXtTiny(weights=None, input_shape=(64, 64, 3), classes=3,
                                            classifier_activation="sigmoid")
    out = tmp_path_factory.mktemp("tiny")
    imgs = real_images((64, 64), 16)
    t0 = time.perf_counter()
    files = convert_model(model, ("cat", "dog", "bird"), (64, 64), "hd", out, {}, imgs)
    return model, out, files, imgs, time.perf_counter() - t0


def _props(path: Path) -> dict:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.get_modelmeta().custom_metadata_map


def test_edge_writes_verified_fp32_and_fp16(edge_converted):
    model, out, files, imgs = edge_converted
    assert sorted(p.name for p in files.paths) == ["standard.fp16.onnx", "standard.onnx"]
    assert sorted(p.name for p in out.iterdir()) == ["standard.fp16.onnx", "standard.onnx"]
    want = model(imgs.astype(np.float32), training=False).numpy()
    fp32 = run_onnx(onnx.load(str(out / "standard.onnx")), imgs)
    fp16 = run_onnx(onnx.load(str(out / "standard.fp16.onnx")), imgs)
    assert np.abs(fp32 - want).max() <= 1e-4
    assert np.isfinite(fp16).all() and np.abs(fp16 - fp32).max() <= 2e-3
    assert files.report.ok and files.graph["layernorm"] > 0 and files.graph["gelu"] > 0
    assert files.graph["nodes_after"] < files.graph["nodes_before"]
    assert (out / "standard.fp16.onnx").stat().st_size < 0.6 * (out / "standard.onnx").stat().st_size
    g = onnx.load(str(out / "standard.onnx")).graph
    assert [i.name for i in g.input] == ["images"] and [o.name for o in g.output] == ["scores"]
    assert g.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert run_onnx(onnx.load(str(out / "standard.onnx")), imgs[:1]).shape == (1, len(CLASSES))


def test_metadata_round_trips_into_the_runtime(edge_converted):
    _, out, _, _ = edge_converted
    for name, precision in (("standard.onnx", "fp32"), ("standard.fp16.onnx", "fp16")):
        meta = ModelMeta.from_props(_props(out / name), name)
        assert meta.classes == CLASSES and meta.role == "standard" and meta.input_size == (32, 32)
        assert meta.precision == precision and set(meta.thresholds.values()) == {0.5}
        assert meta.input_layout == "NHWC" and meta.input_range == "0..255 RGB"
        prov = meta.provenance
        assert prov["epochs"] == 3 and prov["metrics"] == {"auc": 0.5} and len(prov["config_sha256"]) == 64
        assert {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"} <= set(prov["converter"])
        assert prov["conversion"]["parity"]["fp32_vs_keras"]["max_abs"] <= 1e-4


def test_keras_applications_convnext_tiny_converts(tiny_converted):
    model, out, files, imgs, seconds = tiny_converted
    assert sorted(p.name for p in files.paths) == ["hd.fp16.onnx", "hd.onnx"]
    fp32 = onnx.load(str(out / "hd.onnx"))
    assert unsupported_ops(fp32) == []
    assert any(a.name == "group" and a.i > 1 for n in fp32.graph.node if n.op_type == "Conv"
               for a in n.attribute)
    meta = read_meta(fp32)
    assert meta.role == "hd" and set(meta.thresholds.values()) == {0.3}
    want = model(imgs.astype(np.float32), training=False).numpy()
    assert np.abs(run_onnx(fp32, imgs) - want).max() <= 1e-4
    fp16 = run_onnx(onnx.load(str(out / "hd.fp16.onnx")), imgs)
    assert np.isfinite(fp16).all() and np.abs(fp16 - want).max() <= 2e-3
    print(f"ConvNeXt-Tiny@64 conversion: {seconds:.1f} s; {files.report.summary()}")


def test_tampered_weight_fails_and_writes_nothing(tmp_path, monkeypatch):
    model = edge_model()
    real_optimize = api.optimize

    def tampered(proto):
        proto, stats = real_optimize(proto)
        big = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
        arr = onnx.numpy_helper.to_array(big).copy()
        arr.flat[0] += 0.5
        big.CopyFrom(onnx.numpy_helper.from_array(arr, big.name))
        return proto, stats

    monkeypatch.setattr(api, "optimize", tampered)
    (tmp_path / "standard.onnx").write_bytes(b"previous model")
    with pytest.raises(VerificationError) as err:
        convert_model(model, CLASSES, (32, 32), "standard", tmp_path, {}, real_images((32, 32), 8))
    assert "fp32 vs keras: max|d|" in str(err.value) and "FAILED" in str(err.value)
    assert not err.value.report.ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["standard.onnx"]
    assert (tmp_path / "standard.onnx").read_bytes() == b"previous model"


def test_bad_inputs_are_refused(tmp_path):
    model = edge_model()
    with pytest.raises(ValueError, match="real images"):
        convert_model(model, CLASSES, (32, 32), "standard", tmp_path, {}, None)
    with pytest.raises(Exception, match="10 outputs but 2 classes"):
        convert_model(model, ("a", "b"), (32, 32), "standard", tmp_path, {}, real_images((32, 32), 4))
    with pytest.raises(Exception, match="opset 19"):
        export_onnx(model, (32, 32), opset=19)
    assert list(tmp_path.iterdir()) == []


def test_int8_quantises_and_decision_rule(edge_converted):
    _, out, _, imgs = edge_converted
    fp32 = onnx.load(str(out / "standard.onnx"))
    q = quantize_int8(fp32, real_images((32, 32), 32, "voc07_train"))
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
    assert read_meta(q).classes == CLASSES  # metadata carried over
    got, ref = run_onnx(q, imgs), run_onnx(fp32, imgs)
    assert np.isfinite(got).all() and np.abs(got - ref).max() < 0.2
    assert int8_earned(10.0, 8.0, 0.700, 0.695)[0]
    assert not int8_earned(10.0, 9.5, 0.700, 0.700)[0]  # not measurably faster
    assert not int8_earned(10.0, 5.0, 0.700, 0.680)[0]  # 2 points of mAP lost
    ok, why = int8_earned(10.0, 5.0)
    assert ok and "mAP not measured" in why


def _run_folder(path: Path, model: keras.Model) -> Path:
    path.mkdir()
    model.save(path / "best.keras")
    cfg = {"arch": "convnext-edge", "classes": list(CLASSES), "input_size": [32, 32], "epochs": 2,
           "data": "synthetic"}
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "metrics.json").write_text(json.dumps({"val_auc": 0.61}))
    return path


def test_cli_converts_a_run_folder(tmp_path):
    pytest.importorskip("training.fit.run_folder")
    import cv2

    from training.commands.convert import convert

    run = _run_folder(tmp_path / "run", edge_model())
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, im in enumerate(real_images((48, 40), 6)):
        cv2.imwrite(str(imgs / f"{i}.png"), im[:, :, ::-1])
    (tmp_path / "th.json").write_text(json.dumps({"thresholds": {"cat": 0.4, "unknown": 0.9}}))
    res = CliRunner().invoke(convert, [str(run), "--role", "standard", "--out", str(tmp_path / "m"),
                                       "--verify-images", str(imgs), "--thresholds-from",
                                       str(tmp_path / "th.json")])
    assert res.exit_code == 0, res.output
    meta = ModelMeta.from_props(_props(tmp_path / "m" / "standard.onnx"))
    assert meta.thresholds["cat"] == 0.4 and meta.thresholds["dog"] == 0.5
    assert meta.provenance["metrics"] == {"val_auc": 0.61}
    assert meta.provenance["source_checkpoint"]["file"] == "best.keras"
    assert (tmp_path / "m" / "standard.fp16.onnx").exists()

    res = CliRunner().invoke(convert, [str(tmp_path / "nope"), "--role", "hd"])
    assert res.exit_code == 1 and "not a run folder" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_cli_converts_at_another_input_size(tmp_path):
    pytest.importorskip("training.fit.run_folder")
    from training.commands.convert import convert

    run = _run_folder(tmp_path / "run", edge_model())
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"] = {"arch": "convnext-edge", "num_classes": len(CLASSES), "input_size": [32, 32], "width_scale": 0.5,
                    "depths": [1, 1, 2, 1], "head_width": 64}
    (run / "config.json").write_text(json.dumps(cfg))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    import cv2

    for i, im in enumerate(real_images((64, 56), 6)):
        cv2.imwrite(str(imgs / f"{i}.png"), im[:, :, ::-1])
    res = CliRunner().invoke(convert, [str(run), "--role", "hd", "--out", str(tmp_path / "m"),
                                       "--verify-images", str(imgs), "--input-size", "48"])
    assert res.exit_code == 0, res.output
    assert ModelMeta.from_props(_props(tmp_path / "m" / "hd.onnx")).input_size == (48, 48)
    import onnx

    dims = onnx.load(str(tmp_path / "m" / "hd.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][1:3] == [48, 48]
    res = CliRunner().invoke(convert, [str(run), "--role", "hd", "--input-size", "7"])
    assert res.exit_code == 2 and "at least 32" in res.output


_BASE_SCRIPT = """
import json, resource, sys, time
import keras, numpy as np
from convert.api import convert_model
keras.utils.set_random_seed(0)
model = keras.applications.ConvNeXtBase(weights=None, input_shape=(224, 224, 3), classes=10,
                                        classifier_activation="sigmoid")
t0 = time.perf_counter()
files = convert_model(model, [f"c{i}" for i in range(10)], (224, 224), "hd", sys.argv[1], {},
                      np.load(sys.argv[2]))
print(json.dumps({"seconds": time.perf_counter() - t0, "ok": files.report.ok,
                  "summary": files.report.summary(), "graph": files.graph,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


@pytest.mark.slow
def test_convnext_base_224_converts(tmp_path):
    """In a child process (memory returned at the end), with the pure-Python protobuf
    backend that `sixview convert` uses (upb: > 14 GB for this export; python: ~7 GB)."""
    import os
    import subprocess
    import sys

    np.save(tmp_path / "imgs.npy", real_images((224, 224), 6))
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    res = subprocess.run([sys.executable, "-c", _BASE_SCRIPT, str(tmp_path / "out"),
                          str(tmp_path / "imgs.npy")], env=env, capture_output=True, text=True,
                         timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"ConvNeXt-Base@224 conversion: {out['seconds']:.1f} s, peak RSS {out['peak_rss_gb']:.1f} GB; "
          f"{out['summary']}")
    assert out["ok"] and (tmp_path / "out" / "hd.onnx").stat().st_size > 300e6
    assert (tmp_path / "out" / "hd.fp16.onnx").exists()


def test_fp16_gate_allows_rare_outliers_not_systematic_drift():
    from convert.verify import verify

    rng = np.random.default_rng(0)
    ref = rng.uniform(0.0, 0.4, (64, 10)).astype(np.float32)
    outlier = ref.copy()
    outlier[3, 4] += 0.03  # one sharp-sigmoid outlier, as half precision gives EfficientNet-Lite0
    drift = ref + 0.004  # every score a little off: a broken graph
    thresholds = [0.5] * 10
    assert verify(ref, {"fp32": ref, "fp16": outlier}, thresholds).ok
    report = verify(ref, {"fp32": ref, "fp16": drift}, thresholds)
    assert not report.ok and "limit 0.002" in report.summary()
