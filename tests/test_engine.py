"""The one per-frame path: Engine.decode/load/prepare/classify and the error policy (toy models, no TF)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import grey_with_square

import edge.engine as engine_module
from convert.toy import save_colour_model
from edge.decode import Decoded
from edge.engine import Engine
from edge.errors import per_image
from edge.metadata import MetadataError
from edge.model import ModelError
from edge.records import FIELDS, record
from edge.tiling import VIEW_NAMES


def jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def test_load_routes_once_decodes_reduced_and_times_each_stage(colour_models, monkeypatch):
    calls = []
    real = engine_module.route
    monkeypatch.setattr(engine_module, "route", lambda *a: calls.append(a) or real(*a))
    engine = Engine(colour_models)
    p = engine.load(jpeg(grey_with_square(1200, 900, "bottom_right", side=180)), timings_ms={"decode": 1.5})
    assert len(calls) == 1 and calls[0][:2] == (1200, 900)
    assert (p.role, p.tiling, p.width, p.height) == ("hd", True, 1200, 900)
    assert p.view_names == VIEW_NAMES and p.pixels.shape == (6, 64, 64, 3) and p.pixels.dtype == np.float32
    assert p.decoded is None and set(p.timings_ms) == {"decode", "preprocess"} and p.timings_ms["decode"] > 1.5
    decoded, role = engine.decode(jpeg(grey_with_square(1200, 900)))
    assert role == "hd" and decoded.bgr.shape[:2] == (113, 150)  # 1/8: the 60% views still cover 64 px
    full, _ = engine.decode(jpeg(grey_with_square(1200, 900)), full=True)
    assert full.bgr.shape[:2] == (900, 1200)


def test_routing_by_context_or_by_call_never_changes_the_engine(colour_models):
    engine = Engine(colour_models)
    thumb = png(np.full((32, 32, 3), (0, 255, 0), np.uint8))
    assert engine.load(thumb).role == "standard"
    photo = png(grey_with_square())
    assert engine.load(photo).role == "hd"
    p = engine.load(photo, routing="standard", tiling=False)
    assert (p.role, p.tiling, p.view_names, p.pixels.shape) == ("standard", False, ("whole",), (1, 32, 32, 3))
    assert (engine.routing, engine.tiling) == ("auto", True)
    assert Engine(colour_models, routing="standard").load(photo).role == "standard"
    with pytest.raises(ValueError, match="routing"):
        Engine(colour_models, routing="big")


def test_classify_mixed_roles_in_order_with_one_call_per_role(colour_models):
    engine = Engine(colour_models)
    calls = []
    for role in ("standard", "hd"):
        model = engine.model(role)
        real = model.session

        class Counting:
            def run(self, out, feeds, _real=real, _role=role):
                calls.append((_role, next(iter(feeds.values())).shape[0]))
                return _real.run(out, feeds)

        model.session = Counting()
    photo = grey_with_square(corner="top_right")
    items = [engine.prepare(Decoded(photo, 600, 450)),
             engine.prepare(Decoded(np.full((32, 32, 3), (0, 255, 0), np.uint8), 32, 32)),
             engine.prepare(Decoded(photo, 600, 450), tiling=False)]
    verdicts = engine.classify(items)
    assert sorted(calls) == [("hd", 7), ("standard", 6)]
    assert [v.role for v in verdicts] == ["hd", "standard", "hd"]
    assert verdicts[0].decision.labels == ["red"] and verdicts[0].decision.views["red"] == "top_right"
    assert verdicts[1].decision.labels == ["green"]
    assert verdicts[2].tiling is False and verdicts[2].decision.labels == []  # the square is too small alone
    v = verdicts[0]
    assert (v.width, v.height, v.precision) == (600, 450, "fp32")
    assert v.provider in ("cpu", "openvino")  # --device auto on a CPU: OpenVINO when installed
    assert v.thresholds == {"red": 0.3, "green": 0.3, "blue": 0.3} and v.decision.guess is None
    rule = engine.rule("hd")
    assert (rule.fallback_min, rule.presence_threshold, rule.guess_in_labels) == (pytest.approx(0.2), 0.0, False)
    assert v.decision.presence == pytest.approx(1 - np.prod([1 - x for x in v.decision.scores.values()]), abs=1e-6)
    assert {"preprocess", "infer", "postprocess"} <= set(v.timings_ms)


def test_hook_changes_the_scores_decided_on(colour_models):
    engine = Engine(colour_models)
    item = engine.prepare(Decoded(grey_with_square(corner="centre"), 600, 450))
    seen = []
    [v] = engine.classify([item], hook=lambda role, s: seen.append(role) or [0.0] * len(s))
    assert seen == ["hd"] and v.decision.labels == [] and set(v.decision.scores.values()) == {0.0}
    assert v.decision.views["red"] == "centre"  # which view won is the merge's, not the hook's


def test_threshold_override_applies_to_every_class(colour_models):
    engine = Engine(colour_models, threshold=0.99)
    [v] = engine.classify([engine.prepare(Decoded(grey_with_square(), 600, 450))])
    assert set(v.thresholds.values()) == {0.99}


@pytest.mark.parametrize("guess_in_labels", [False, True])
def test_guess_kept_apart_unless_guess_in_labels(colour_models, guess_in_labels):
    engine = Engine(colour_models, threshold=0.99, guess_in_labels=guess_in_labels)  # red scores 0.96: a guess
    [v] = engine.classify([engine.prepare(Decoded(grey_with_square(), 600, 450))])
    d = v.decision
    assert d.guess == ("red", d.scores["red"]) and 0.9 < d.scores["red"] < 0.99
    assert d.labels == (["red"] if guess_in_labels else []) and engine.rule("hd").guess_in_labels is guess_in_labels
    rec = record("path", "a.png", v)
    assert rec["guess"] == {"label": "red", "score": d.scores["red"]} and rec["labels"] == d.labels
    assert rec["presence"] == round(d.presence, 6) and rec["presence"] > d.scores["red"]


def test_the_models_presence_threshold_says_none_of_the_classes(tmp_path):
    save_colour_model(tmp_path / "hd.onnx", role="hd", input_size=(64, 64), presence_threshold=0.97)
    engine = Engine(tmp_path, routing="hd", guess_in_labels=True)
    small, large = (engine.prepare(Decoded(grey_with_square(side=s), 600, 450), tiling=False) for s in (90, 300))
    v_small, v_large = engine.classify([small, large])
    assert engine.rule("hd").presence_threshold == 0.97 and v_small.decision.presence < 0.97
    assert v_small.decision.labels == [] and v_small.decision.guess is None
    assert v_large.decision.presence > 0.97 and v_large.decision.labels == ["red"]
    strict = Engine(tmp_path, routing="hd", threshold=0.99)
    [v] = strict.classify([strict.prepare(Decoded(grey_with_square(), 600, 450))])
    assert 0.9 < v.decision.scores["red"] < v.decision.presence < 0.97  # a guess without the presence threshold
    assert v.decision.labels == [] and v.decision.guess is None and record("path", "x", v)["guess"] is None


def test_record_from_a_verdict_and_from_an_error(colour_models):
    engine = Engine(colour_models)
    [v] = engine.classify([engine.load(png(grey_with_square()))])
    rec = record("path", "a.png", v)
    assert tuple(rec) == FIELDS and rec["width"] == 600 and rec["error"] is None
    assert rec["labels"] == ["red"] and rec["guess"] is None and 0.95 < rec["presence"] <= 1.0
    assert rec["timings_ms"]["total"] == pytest.approx(sum(x for k, x in rec["timings_ms"].items() if k != "total"),
                                                       abs=0.01)
    err = record("path", "b.png", error="empty file", width=3, height=2)
    assert tuple(err) == FIELDS and err["labels"] == [] and err["engine"] is None and err["width"] == 3
    assert err["guess"] is None and err["presence"] is None


def test_error_policy_per_image_vs_setup(colour_models, tmp_path):
    engine = Engine(colour_models)
    assert per_image(engine.load, b"") == (None, "empty file")
    result, error = per_image(engine.load, b"not an image at all")
    assert result is None and error.startswith("not an image")
    result, error = per_image(open, str(tmp_path / "missing.jpg"), "rb")
    assert result is None and error.startswith("cannot read:")
    no_models = Engine(tmp_path / "nothing")
    with pytest.raises(ModelError, match="no hd model"):
        per_image(no_models.load, png(grey_with_square()))


def test_a_request_threshold_is_a_rule_not_an_engine(colour_models):
    engine = Engine(colour_models)
    item = engine.prepare(Decoded(grey_with_square(), 600, 450))
    [v] = engine.classify([item], rules={"hd": engine.rule("hd", 0.99)})
    [own] = Engine(colour_models, threshold=0.99).classify([item])
    assert v.decision == own.decision and v.thresholds == own.thresholds == {"red": 0.99, "green": 0.99, "blue": 0.99}
    assert engine.rule("hd").named_thresholds == {"red": 0.3, "green": 0.3, "blue": 0.3}  # the engine's own: unchanged


def test_renderer_needs_only_metadata(colour_models):
    from edge.engine import Renderer

    engine = Engine(colour_models)
    metas = {role: engine.model(role).meta for role in ("standard", "hd")}
    p = Renderer(metas).load(png(grey_with_square()))
    q = engine.load(png(grey_with_square()))
    assert p.role == q.role == "hd" and np.array_equal(p.pixels, q.pixels)
    with pytest.raises(MetadataError, match="no hd model"):
        Renderer({"standard": metas["standard"]}).load(png(grey_with_square()))


def test_record_adds_the_timings_it_is_given(colour_models):
    engine = Engine(colour_models)
    [v] = engine.classify([engine.load(png(grey_with_square()))])
    rec = record("path", "a.png", v, timings_ms={"decode": 5.0, "queue": 2.0})
    assert rec["timings_ms"]["decode"] == 5.0 and rec["timings_ms"]["queue"] == 2.0
    assert rec["timings_ms"]["infer"] == round(v.timings_ms["infer"], 3)
    assert rec["timings_ms"]["total"] == pytest.approx(sum(x for k, x in rec["timings_ms"].items() if k != "total"),
                                                       abs=0.01)
