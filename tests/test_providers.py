import onnxruntime as ort
import pytest

from edge.model import open_model
from edge.providers import ProviderError, create_session, provider_chain


def test_cpu_and_auto_start_here(colour_models):
    for device in ("cpu", "auto"):
        m = open_model(colour_models / "standard.onnx", device)
        assert m.provider in ("cpu", "cuda", "tensorrt")
        assert m.session.get_providers()[0].lower().startswith(m.provider[:3])


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
