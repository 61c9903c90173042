import dataclasses

import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from convert.toy import save_colour_model
from edge.metadata import ModelMeta
from edge.model import open_model
from edge.providers import (
    SHORT,
    TRT_MAX_IMAGES_ENV,
    ProviderError,
    create_session,
    provider_chain,
    trt_profile_shapes,
)
from edge.scan.cli import scan
from edge.serve.cli import serve
from edge.serve.runtime import ServeSettings

TRT = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_cpu_runs_on_the_cpu_provider_alone(colour_models):
    m = open_model(colour_models / "standard.onnx", "cpu")
    assert m.provider == "cpu" and m.session.get_providers() == ["CPUExecutionProvider"]


def test_auto_names_the_provider_that_really_runs(colour_models):
    m = open_model(colour_models / "standard.onnx", "auto")
    active = m.session.get_providers()[0]
    assert m.provider == SHORT[active]
    if not {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers()):
        assert m.provider == "cpu"


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(),
                    reason="this onnxruntime has CUDA: the refusal path is tested on CPU-only installs")
@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_gpu_request_refused_clearly(colour_models, device):
    with pytest.raises(ProviderError, match="not in this onnxruntime build.*sixview\\[gpu\\]"):
        create_session(colour_models / "standard.onnx", device)


def test_unknown_device():
    with pytest.raises(ProviderError, match="unknown device"):
        provider_chain("tpu")


def test_trt_chain_enables_fp16_and_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    chain = provider_chain("tensorrt", tmp_path / "trt")
    name, opts = chain[0]
    assert name == "TensorrtExecutionProvider"
    assert opts["trt_fp16_enable"] and opts["trt_engine_cache_enable"]
    assert opts["trt_engine_cache_path"] == str(tmp_path / "trt") and (tmp_path / "trt").is_dir()
    assert chain[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_silent_fallback_is_an_error(monkeypatch, colour_models):
    """onnxruntime-gpu on a machine without a GPU lists CUDA, then falls back to CPU."""
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    real = ort.InferenceSession

    def fake_session(model, sess_options=None, providers=None):
        return real(model, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", fake_session)
    with pytest.raises(ProviderError, match="did not start"):
        create_session(colour_models / "standard.onnx", "cuda")
    _, used = create_session(colour_models / "standard.onnx", "auto")
    assert used == "cpu"


def test_trt_profile_is_the_models_own_input_from_one_view_to_the_largest_batch(monkeypatch, tmp_path, colour_models):
    """Min one row, opt one image's six views, max the runtime's default batch (8 images) of six views each."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: TRT)
    monkeypatch.delenv(TRT_MAX_IMAGES_ENV, raising=False)
    model = colour_models / "standard.onnx"
    name = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    _, opts = provider_chain("tensorrt", tmp_path / "trt", model)[0]
    assert opts["trt_profile_min_shapes"] == f"{name}:1x32x32x3"
    assert opts["trt_profile_opt_shapes"] == f"{name}:6x32x32x3"
    assert opts["trt_profile_max_shapes"] == f"{name}:48x32x32x3"
    _, opts = create_chain_of(monkeypatch, tmp_path, model)  # what create_session hands ONNX Runtime
    assert opts["trt_profile_max_shapes"] == f"{name}:48x32x32x3"
    assert "trt_profile_min_shapes" not in provider_chain("tensorrt", tmp_path / "trt")[0][1]  # no model: none


def create_chain_of(monkeypatch, tmp_path, model):
    """What `create_session` passes to ONNX Runtime for `model`: the TensorRT entry of its chain."""
    seen = {}

    def fake_session(model, sess_options=None, providers=None):
        seen["chain"] = providers
        raise RuntimeError("stop")

    monkeypatch.setattr(ort, "InferenceSession", fake_session)
    with pytest.raises(RuntimeError, match="stop"):
        create_session(model, "tensorrt", trt_cache=tmp_path / "trt")
    return seen["chain"][0]


def test_trt_profile_max_covers_the_runtime_batch_defaults(monkeypatch, colour_models):
    monkeypatch.delenv(TRT_MAX_IMAGES_ENV, raising=False)
    defaults = {ServeSettings().max_batch, *(p.default for c in (serve, scan) for p in c.params
                                             if p.name in ("max_batch", "batch_images"))}
    assert defaults == {8}  # serve --max-batch, scan --batch: change TRT_MAX_IMAGES with them
    shapes = trt_profile_shapes(colour_models / "standard.onnx")["trt_profile_max_shapes"]
    rows = int(shapes.split(":")[1].split("x")[0])
    assert rows == max(defaults) * 6


def test_trt_profile_follows_the_models_metadata(monkeypatch, tmp_path):
    """A larger input (a future model's) and a one-pass graph (one input per frame); no profile where the
    file says nothing (bytes, no metadata) and ONNX Runtime keeps its own shapes."""
    monkeypatch.delenv(TRT_MAX_IMAGES_ENV, raising=False)
    big = save_colour_model(tmp_path / "big.onnx", role="hd", input_size=(384, 320))
    assert trt_profile_shapes(big)["trt_profile_max_shapes"] == "images:48x384x320x3"
    props = {p.key: p.value for p in onnx.load(str(big)).metadata_props}
    one = onnx.load(str(big))
    meta = ModelMeta.from_props(props)
    del one.metadata_props[:]
    helper.set_model_props(one, dataclasses.replace(meta, input_size=(320, 320),
                                                    tiling={"view_fraction": 0.6, "in_graph": True}).to_props())
    onnx.save(one, str(tmp_path / "one.onnx"))
    assert trt_profile_shapes(tmp_path / "one.onnx") == {"trt_profile_min_shapes": "images:1x320x320x3",
                                                         "trt_profile_opt_shapes": "images:1x320x320x3",
                                                         "trt_profile_max_shapes": "images:8x320x320x3"}
    del one.metadata_props[:]
    onnx.save(one, str(tmp_path / "bare.onnx"))
    assert trt_profile_shapes(tmp_path / "bare.onnx") == {} and trt_profile_shapes(big.read_bytes()) == {}
    assert trt_profile_shapes(tmp_path / "missing.onnx") == {}
    monkeypatch.setenv(TRT_MAX_IMAGES_ENV, "16")  # `serve --max-batch 16`: the profile follows
    assert trt_profile_shapes(big)["trt_profile_max_shapes"] == "images:96x384x320x3"
    monkeypatch.setenv(TRT_MAX_IMAGES_ENV, "0")
    with pytest.raises(ProviderError, match=TRT_MAX_IMAGES_ENV):
        trt_profile_shapes(big)
