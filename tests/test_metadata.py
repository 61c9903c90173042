import json

import onnx
import pytest
from onnx import helper

from convert.toy import colour_model
from edge.metadata import REQUIRED, MetadataError, ModelMeta
from edge.model import ModelError, open_model


def good_props():
    return ModelMeta(classes=("cat", "dog"), role="hd", input_size=(64, 64),
                     thresholds={"cat": 0.3, "dog": 0.4}, precision="fp32").to_props()


def test_round_trip():
    props = good_props()
    assert set(props) == set(REQUIRED)
    meta = ModelMeta.from_props(props)
    assert meta.classes == ("cat", "dog") and meta.input_size == (64, 64)
    assert meta.threshold_vector() == [0.3, 0.4]
    assert meta.view_fraction == 0.6 and meta.fallback_min_score == 0.2
    assert meta.presence_threshold == 0.0  # absent: the default (files written before the key)


def test_presence_threshold_is_optional_and_round_trips(tmp_path):
    meta = ModelMeta(classes=("cat", "dog"), role="hd", input_size=(64, 64),
                     thresholds={"cat": 0.3, "dog": 0.4}, precision="fp32", presence_threshold=0.35)
    props = meta.to_props()
    assert set(props) == set(REQUIRED) | {"presence_threshold"} and json.loads(props["presence_threshold"]) == 0.35
    assert ModelMeta.from_props(props).presence_threshold == 0.35
    props["presence_threshold"] = "1"  # a JSON integer is a number too
    assert ModelMeta.from_props(props).presence_threshold == 1.0
    onnx.save(colour_model(role="hd", input_size=(16, 16), presence_threshold=0.25), tmp_path / "new.onnx")
    onnx.save(colour_model(role="hd", input_size=(16, 16)), tmp_path / "old.onnx")  # no key: as files before it
    assert "presence_threshold" not in {p.key for p in onnx.load(tmp_path / "old.onnx").metadata_props}
    assert open_model(tmp_path / "new.onnx", "cpu").meta.presence_threshold == 0.25
    assert open_model(tmp_path / "old.onnx", "cpu").meta.presence_threshold == 0.0


@pytest.mark.parametrize("value", ["-0.1", "1.5", "true", '"0.3"', "null", "NaN", "[0.3]"])
def test_invalid_presence_threshold_refused(value):
    props = good_props()
    props["presence_threshold"] = value
    with pytest.raises(MetadataError, match="'presence_threshold' must be a number in \\[0, 1\\]"):
        ModelMeta.from_props(props, "m.onnx")


@pytest.mark.parametrize("key", REQUIRED)
def test_missing_key_is_named(key):
    props = good_props()
    del props[key]
    with pytest.raises(MetadataError, match=f"missing: {key}"):
        ModelMeta.from_props(props, "m.onnx")


@pytest.mark.parametrize("key,value,match", [
    ("classes", [], "classes"), ("classes", ["a", "a"], "classes"), ("role", "medium", "role"),
    ("input_size", [64], "input_size"), ("input_layout", "NCHW", "NHWC"),
    ("thresholds", {"cat": 0.3}, "thresholds"), ("thresholds", {"cat": 2, "dog": 0.1}, "thresholds"),
    ("tiling", {"view_fraction": 0}, "tiling"), ("precision", "fp8", "precision"),
    ("sixview.format", 99, "format"),
])
def test_invalid_values_refused(key, value, match):
    props = good_props()
    props[key] = json.dumps(value)
    with pytest.raises(MetadataError, match=match):
        ModelMeta.from_props(props)


def test_not_json_refused():
    props = good_props()
    props["classes"] = "[cat"
    with pytest.raises(MetadataError, match="JSON"):
        ModelMeta.from_props(props)


def test_file_without_metadata_refused(tmp_path):
    m = colour_model()
    del m.metadata_props[:]
    onnx.save(m, tmp_path / "bare.onnx")
    with pytest.raises(MetadataError, match="not a sixview model, metadata missing: sixview.format"):
        open_model(tmp_path / "bare.onnx", "cpu")


def test_output_width_must_match_classes(tmp_path):
    m = colour_model()
    props = {p.key: p.value for p in m.metadata_props}
    props["classes"] = json.dumps(["a", "b"])
    props["thresholds"] = json.dumps({"a": 0.5, "b": 0.5})
    del m.metadata_props[:]
    helper.set_model_props(m, props)
    onnx.save(m, tmp_path / "m.onnx")
    with pytest.raises(MetadataError, match="3 scores for 2 classes"):
        open_model(tmp_path / "m.onnx", "cpu")


def test_not_onnx_and_missing_file(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"definitely not protobuf")
    with pytest.raises(ModelError):
        open_model(tmp_path / "junk.onnx", "cpu")
    with pytest.raises(ModelError, match="not found"):
        open_model(tmp_path / "nope.onnx", "cpu")


def test_attach_replaces_an_earlier_presence_threshold():
    from convert.metadata import attach, read_meta

    m = colour_model(presence_threshold=0.25)
    meta = read_meta(m)
    assert meta.presence_threshold == 0.25
    attach(m, ModelMeta(**{**meta.__dict__, "presence_threshold": 0.0}))
    assert "presence_threshold" not in {p.key for p in m.metadata_props} and read_meta(m).presence_threshold == 0.0


@pytest.mark.parametrize("value,match", [
    ('{"rule": "top1", "min_score": 5}', "'min_score' must be a number in \\[0, 1\\], not 5"),
    ('{"rule": "top1", "min_score": NaN}', "'min_score' must be a number in \\[0, 1\\], not nan"),
    ('{"rule": "top1", "min_score": -0.1}', "'min_score' must be a number in \\[0, 1\\]"),
    ('{"rule": "top1", "min_score": true}', "'min_score' must be a number in \\[0, 1\\]"),
    ('{"rule": "top1", "min_score": "0.2"}', "'min_score' must be a number in \\[0, 1\\]"),
    ('{"rule": "top7", "min_score": 0.2}', "'rule' must be 'top1' \\(the top class\\), not 'top7'"),
    ('{"min_score": 0.2}', "must be an object with 'rule' and 'min_score'"),
    ('{"rule": "top1", "min_score": 0.2, "k": 3}', "must be an object with 'rule' and 'min_score'"),
    ('[0.2]', "must be an object with 'rule' and 'min_score'"),
])
def test_invalid_fallback_is_refused_naming_the_field(value, match):
    """A fallback no runtime follows (a guess that could never appear) is refused like any other field."""
    props = good_props()
    props["fallback"] = value
    with pytest.raises(MetadataError, match=f"m.onnx: metadata 'fallback' {match}"):
        ModelMeta.from_props(props, "m.onnx")


@pytest.mark.parametrize("key,value", [
    ("thresholds", '{"cat": true, "dog": 0.4}'), ("thresholds", '{"cat": NaN, "dog": 0.4}'),
    ("tiling", '{"view_fraction": true}'), ("tiling", '{"view_fraction": NaN}'),
    ("input_size", "[true, 64]"), ("sixview.format", "true"),
])
def test_booleans_and_nan_are_no_numbers(key, value):
    props = good_props()
    props[key] = value
    with pytest.raises(MetadataError, match=f"metadata '{key}'"):
        ModelMeta.from_props(props, "m.onnx")


def test_a_valid_fallback_is_normalised():
    props = good_props()
    props["fallback"] = '{"rule": "top1", "min_score": 1}'
    assert ModelMeta.from_props(props).fallback == {"rule": "top1", "min_score": 1.0}
