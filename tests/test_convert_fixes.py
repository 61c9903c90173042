"""The Keras-3 conversion fixes are still needed, still work, and stay inside their block.

When a future Keras/tf2onnx makes a fix unnecessary, `test_fixes_still_needed`
fails and says which fix to delete from convert/keras3_fixes.py.
"""

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
ort = pytest.importorskip("onnxruntime")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from keras.src.backend.tensorflow import nn as keras_tf_nn  # noqa: E402
from keras.src.backend.tensorflow import numpy as keras_tf_np  # noqa: E402

from convert import keras3_fixes as fixes  # noqa: E402
from convert.export import unsupported_ops  # noqa: E402


@pytest.fixture(scope="module")
def grouped_gelu_model():
    """The two troublesome pieces of keras.applications ConvNeXt: Conv2D(groups=C) and exact GELU."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = keras.layers.Conv2D(8, 7, padding="same", groups=8, name="grouped")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    x = keras.layers.Dense(16)(x)
    x = keras.layers.Activation("gelu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, activation="sigmoid")(x)
    return keras.Model(inp, out)


def _convert(model):
    spec = (tf.TensorSpec((None, 16, 16, 3), tf.float32, name="images"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    return proto


def test_fixes_still_needed(grouped_gelu_model):
    ops = {n.op_type for n in _convert(grouped_gelu_model).graph.node}
    assert "StatefulPartitionedCall" in ops, (
        "Keras/tf2onnx now convert Conv2D(groups=C) without XLA: delete fix 1 "
        "(_plain_grouped_conv) from convert/keras3_fixes.py")
    assert "Erfc" in ops, ("exact GELU no longer lowers to an unhandled Erfc: delete fix 2 "
                           "(_erfc_handler) from convert/keras3_fixes.py")
    assert not fixes.erfc_handled_natively(), "tf2onnx handles Erfc now: delete fix 2"


def test_fixes_make_a_runnable_graph_with_parity(grouped_gelu_model):
    with fixes.keras3_fixes():
        proto = _convert(grouped_gelu_model)
    assert unsupported_ops(proto) == []
    groups = [a.i for n in proto.graph.node if n.op_type == "Conv" for a in n.attribute
              if a.name == "group"]
    assert 8 in groups  # the grouped conv became a plain ONNX Conv(group=8)
    assert not any(n.op_type in ("Reshape", "ReduceProd") for n in proto.graph.node
                   if "Tensordot" in n.name), "Dense on NHWC traced as tensordot again (fix 3)"
    x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    want = grouped_gelu_model(x, training=False).numpy()
    assert np.abs(got - want).max() <= 1e-5


def test_fixes_are_undone_after_the_block():
    conv, matmul = keras_tf_nn.conv, keras_tf_np.matmul
    with fixes.keras3_fixes():
        assert keras_tf_nn.conv is not conv and keras_tf_np.matmul is not matmul
        assert fixes.tf_op.get_opsets()[""][fixes._ERFC_OPSET]["Erfc"][0] is fixes._erfc_handler
    assert keras_tf_nn.conv is conv and keras_tf_np.matmul is matmul
    assert "Erfc" not in fixes.tf_op.get_opsets()[""][fixes._ERFC_OPSET]
