import onnxruntime as ort
import pytest

from edge.model import open_model
from edge.providers import SHORT, ProviderError, create_session, provider_chain


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
