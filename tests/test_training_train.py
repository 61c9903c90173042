"""Models, training runs, run folder, MLflow, resume, mixed precision, mirrored."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from training.commands.train import train as train_cmd  # noqa: E402
from training.data.synthetic import write_image_folder  # noqa: E402
from training.errors import WeightsError  # noqa: E402
from training.fit.run_folder import BestCheckpoint, RunState, load_run, sample_images, save_model  # noqa: E402
from training.fit.train import TrainConfig, compile_model, run_training  # noqa: E402
from training.models.factory import build_model, copy_backbone  # noqa: E402
from training.models.layers import StochasticDepth  # noqa: E402

pytestmark = pytest.mark.train
REPO = Path(__file__).resolve().parents[1]
TINY = ["--width-scale", "0.25", "--depths", "1,1,1,1", "--head-width", "32", "--input-size", "32",
        "--batch-size", "16"]
TINY_KW = {"width_scale": 0.25, "depths": [1, 1, 1, 1], "head_width": 32}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "colours"
    return write_image_folder(root, classes=("cat", "dog", "ship"),
                              n_per_class={"train": 24, "test": 8})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir: Path) -> tuple[Path, str]:
    base = tmp_path_factory.mktemp("runs")
    uri = (base / "mlruns").as_uri()
    out = base / "r1"
    res = CliRunner().invoke(train_cmd, [
        "--data", str(data_dir), "--out", str(out), "--epochs", "1", "--lr", "3e-3",
        "--mlflow-uri", uri, "--cache-dir", str(base / "cache"), *TINY])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "top-1" in res.output
    return out, uri


def test_run_folder_contract(tiny_run) -> None:
    out, _ = tiny_run
    for name in ("config.json", "best.keras", "last.keras", "state.json", "history.csv",
                 "curves.png", "data_report.md", "data_report.png", "metrics.json"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    for key in ("arch", "classes", "input_size", "weights", "epochs", "batch_size", "lr",
                "precision", "data", "negatives", "seed"):
        assert key in cfg, key
    assert cfg["classes"] == ["cat", "dog", "ship"] and cfg["input_size"] == [32, 32]
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["test"]) >= {"top1", "auc", "loss", "binary_accuracy"}
    assert m["epochs_run"] == 1 and m["wall_time_s"] > 0 and m["images_per_s"] > 0


def test_one_epoch_lowers_the_loss(tiny_run, data_dir: Path) -> None:
    out, _ = tiny_run
    run = load_run(out)
    keras.utils.set_random_seed(0)
    untrained = build_model("convnext-edge", 3, 32, **TINY_KW)
    imgs, labels = [], []
    for k, c in enumerate(run.classes):
        for f in sorted((data_dir / "test" / c).iterdir()):
            import cv2

            imgs.append(cv2.imread(str(f))[:, :, ::-1])
            labels.append(np.eye(3)[k])
    x, y = np.stack(imgs).astype(np.float32), np.stack(labels)
    bce = keras.losses.BinaryCrossentropy()
    before = float(bce(y, untrained.predict(x, verbose=0)))
    after = float(bce(y, run.model.predict(x, verbose=0)))
    assert after < 0.8 * before, (before, after)
    assert run.metrics["test"]["loss"] == pytest.approx(after, rel=1e-3, abs=1e-4)


def test_load_run_round_trip_and_samples(tiny_run) -> None:
    out, _ = tiny_run
    run = load_run(out)
    assert run.checkpoint == out / "best.keras" and run.input_size == (32, 32)
    ref = keras.models.load_model(out / "best.keras", compile=False)
    x = sample_images(run.config, 5, seed=0)
    assert x.shape == (5, 32, 32, 3) and x.dtype == np.uint8
    np.testing.assert_allclose(run.model.predict(x.astype(np.float32), verbose=0),
                               ref.predict(x.astype(np.float32), verbose=0), atol=1e-6)
    np.testing.assert_array_equal(sample_images(run.config, 5, seed=0), x)


def test_mlflow_run_recorded(tiny_run) -> None:
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    out, uri = tiny_run
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("sixview")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    r = runs[0]
    assert r.info.status == "FINISHED" and r.data.params["arch"] == "convnext-edge"
    assert "test_top1" in r.data.metrics and "val_loss" in r.data.metrics
    assert len(client.get_metric_history(r.info.run_id, "loss")) == 1
    names = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"config.json", "metrics.json", "best.keras", "curves.png"} <= names


def test_resume_without_mlflow(tmp_path: Path, data_dir: Path) -> None:
    cfg = TrainConfig(data=str(data_dir), out=str(tmp_path / "r"), epochs=1, batch_size=16,
                      input_size=[32, 32], lr=3e-3, mlflow_uri="off", cache_dir=str(tmp_path / "c"),
                      classes=["ship", "cat"], negatives=False, verbose=0, **TINY_KW)
    m1 = run_training(cfg)
    assert m1["n_train"] + m1["n_val"] == 48 and m1["n_test"] == 16
    assert not (tmp_path / "mlruns").exists()
    cfg2 = TrainConfig(data="", out=str(tmp_path / "r"), epochs=2)
    m2 = run_training(cfg2, resume=True, epochs_given=True)
    assert m2["epochs_run"] == 2
    hist = (tmp_path / "r" / "history.csv").read_text().strip().splitlines()
    assert len(hist) == 3  # header + 2 epochs
    assert json.loads((tmp_path / "r" / "config.json").read_text())["classes"] == ["ship", "cat"]
    res = CliRunner().invoke(train_cmd, ["--out", str(tmp_path / "r"), "--resume"])
    assert res.exit_code == 1 and "already ran 2 of" in res.output


def _tiny_model() -> keras.Model:
    return build_model("convnext-edge", 3, 32, **TINY_KW)


def test_a_save_killed_midway_keeps_the_checkpoint_it_had(tmp_path: Path, monkeypatch) -> None:
    model, path = _tiny_model(), tmp_path / "last.keras"
    save_model(model, path)
    before = path.read_bytes()

    def killed(self, filepath, *a, **k):
        Path(filepath).write_bytes(b"half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save_model(model, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    keras.models.load_model(path, compile=False)  # still a whole model


@pytest.mark.parametrize(("mode", "state", "values", "saved_at"),
                         [("min", {}, [0.5, 0.6, 0.4, float("nan")], [0, 2]),
                          ("min", {"best": 0.45, "best_epoch": 3}, [0.5, 0.6, 0.4], [2]),  # a resumed run's best
                          ("max", {}, [0.5, 0.6, 0.4], [0, 1]),
                          # a best of another value (an older state.json's val_loss) does not count for val_map
                          ("max", {"best": 0.9, "best_epoch": 1}, [0.5, 0.6, 0.4], [0, 1])])
def test_best_checkpoint_saves_only_improvements(tmp_path: Path, monkeypatch, mode, state, values,
                                                 saved_at) -> None:
    saves: list[Path] = []
    monkeypatch.setattr("training.fit.run_folder.save_model", lambda model, path: saves.append(path))
    monitor = "val_loss" if mode == "min" else "val_map"
    cb = BestCheckpoint(tmp_path / "best.keras", monitor, mode, state)
    saved = []
    for epoch, v in enumerate(values):
        n = len(saves)
        cb.on_epoch_end(epoch, {monitor: v})
        saved += [epoch] * (len(saves) - n)
    assert saved == saved_at and set(saves) <= {tmp_path / "best.keras"}
    # state.json names the epoch best.keras holds (1-based) and the value it was chosen by
    assert state["best_epoch"] == saved_at[-1] + 1 and state["best"] == values[saved_at[-1]]
    assert state["monitor"] == monitor
    with pytest.raises(ValueError, match="min or max"):
        BestCheckpoint(tmp_path / "best.keras", "val_loss", "auto", {})


def test_run_state_keeps_the_time_of_epochs_before_an_interruption(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("training.fit.run_folder.save_model", lambda model, path: None)

    def epochs(state: dict, first: int, n: int) -> RunState:
        rs = RunState(tmp_path, state, 100, time.perf_counter())
        for epoch in range(first, first + n):
            rs.on_epoch_begin(epoch)
            time.sleep(0.01)
            rs.on_epoch_end(epoch)
        return rs

    epochs({}, 0, 2)  # then the process is killed: only state.json remains
    part = json.loads((tmp_path / "state.json").read_text())
    assert part["epoch"] == 2 and part["images"] == 200 and part["wall_s"] >= part["train_s"] >= 0.02
    state = dict(part)  # --resume reads it back
    epochs(state, 2, 1).add_wall()
    assert state["epoch"] == 3 and state["images"] == 300
    assert state["train_s"] >= part["train_s"] + 0.01 and state["wall_s"] >= part["wall_s"] + 0.01


def test_mixed_precision_with_drop_path_trains_one_step() -> None:
    old = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("convnext-edge", 3, 32, drop_path=0.3, **TINY_KW)
        assert any(isinstance(la, StochasticDepth) for la in model.layers)
        assert model.output.dtype == "float32"
        compile_model(model, 1e-3, 3)
        x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
        y = np.eye(3, dtype=np.float32)[np.arange(8) % 3]
        logs = model.train_on_batch(x, y, return_dict=True)
        assert np.isfinite(logs["loss"])
    finally:
        keras.mixed_precision.set_global_policy(old)


def test_load_run_rebuilds_mixed_precision_in_float32(tmp_path: Path) -> None:
    kwargs = {"arch": "convnext-edge", "num_classes": 3, "input_size": [32, 32], **TINY_KW}
    old = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = build_model(drop_path=0.1, **kwargs)
    finally:
        keras.mixed_precision.set_global_policy(old)
    mixed.save(tmp_path / "best.keras")
    (tmp_path / "config.json").write_text(json.dumps(
        {"precision": "mixed_bfloat16", "classes": ["a", "b", "c"], "input_size": [32, 32],
         "model": {**kwargs, "drop_path": 0.1}}))
    run = load_run(tmp_path)
    assert all(la.compute_dtype == "float32" for la in run.model.layers)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(run.model.predict(x, verbose=0), mixed.predict(x, verbose=0),
                               atol=0.05)


def test_stochastic_depth_drops_whole_samples() -> None:
    layer = StochasticDepth(0.5, seed=1)
    x = np.ones((64, 2, 2, 3), np.float32)
    y = np.asarray(layer(x, training=True))
    per_sample = y.reshape(64, -1)
    assert set(np.unique(per_sample).tolist()) <= {0.0, 2.0}
    assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1))
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)


def test_imagenet_port_matches_keras_applications() -> None:
    ref = keras.applications.ConvNeXtTiny(include_top=False, weights=None, input_shape=(32, 32, 3))
    rng = np.random.default_rng(0)
    for layer in ref.layers:  # make every block matter, so a bad kernel reshape shows
        if "layer_scale" in layer.name or "depthwise" in layer.name:
            layer.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in layer.weights])
    mine = build_model("convnext-tiny", 3, 32, head_width=16)
    assert copy_backbone(ref, mine, final_norm_to="head_layernorm") == 99
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    feats = keras.Model(mine.input, mine.get_layer("convnext_tiny_stage_3_block_2_add").output)(x)
    np.testing.assert_allclose(mine.get_layer("head_layernorm")(feats), ref(x), atol=1e-4)


def test_imagenet_unavailable_is_one_clear_line(monkeypatch, data_dir: Path, tmp_path: Path) -> None:
    import keras.src.applications.convnext as kc

    def offline(fname, origin, **kw):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(kc.file_utils, "get_file", offline)
    with pytest.raises(WeightsError) as e:
        build_model("convnext-tiny", 3, 32, weights="imagenet")
    msg = str(e.value)
    assert "\n" not in msg and "convnext_tiny_notop.h5" in msg and ".keras/models" in msg
    res = CliRunner().invoke(train_cmd, [
        "--data", str(data_dir), "--arch", "convnext-tiny", "--weights", "imagenet",
        "--input-size", "32", "--out", str(tmp_path / "r"), "--mlflow-uri", "off",
        "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 1
    last = res.output.strip().splitlines()[-1]  # earlier lines: progress bars on stderr
    assert last.startswith("Error: ImageNet weights for convnext-tiny are not available")
    assert "Traceback" not in res.output
    with pytest.raises(WeightsError, match="not convnext-edge"):
        build_model("convnext-edge", 3, 32, weights="imagenet")


def test_weights_from_a_run_checkpoint(tiny_run) -> None:
    out, _ = tiny_run
    model = build_model("convnext-edge", 3, 32, weights=str(out / "best.keras"), **TINY_KW)
    ref = keras.models.load_model(out / "best.keras", compile=False)
    for a, b in zip(model.get_weights(), ref.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(WeightsError, match="not found"):
        build_model("convnext-edge", 3, 32, weights="/nonexistent/w.weights.h5", **TINY_KW)


def test_user_errors_are_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(train_cmd, ["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                                       "--mlflow-uri", "off"])
    assert r.exit_code == 1 and r.output == f"Error: data not found: {tmp_path / 'nope'}\n"
    r = CliRunner().invoke(train_cmd, ["--out", str(tmp_path / "o"), "--resume"])
    assert r.exit_code == 1 and "no config.json/last.keras" in r.output
    r = CliRunner().invoke(train_cmd, [])
    assert r.exit_code == 2 and "--data is required" in r.output


def test_model_shapes() -> None:
    m = build_model("convnext-edge", 10, (48, 64), head_width=64)
    assert m.input_shape == (None, 48, 64, 3) and m.output_shape == (None, 10)
    x = np.full((1, 48, 64, 3), 128, np.float32)
    y = m.predict(x, verbose=0)
    assert y.dtype == np.float32 and np.all((y > 0) & (y < 1))
    assert not any(isinstance(la, keras.layers.Conv2D) and la.groups > 1 for la in m.layers)


MIRRORED = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from training.fit.train import TrainConfig, run_training
    data, out = sys.argv[1], sys.argv[2]
    m = run_training(TrainConfig(data=data, out=out, epochs=1, batch_size=16, input_size=[32, 32],
                                 distribute="mirrored", mlflow_uri="off", verbose=0,
                                 cache_dir=out + "-cache", width_scale=0.25,
                                 depths=[1, 1, 1, 1], head_width=32))
    print("RESULT", json.dumps(m))
""")


def test_mirrored_strategy_on_two_logical_cpus(tmp_path: Path, data_dir: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(data_dir), str(tmp_path / "m")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    m = json.loads(lines[0][len("RESULT "):])
    assert m["replicas"] == 2 and m["distribute"] == "mirrored" and np.isfinite(m["test"]["loss"])


def test_cosine_schedule_warms_up_then_decays_to_zero(tmp_path: Path, data_dir: Path) -> None:
    from training.fit.train import learning_rate

    cfg = TrainConfig(data=str(data_dir), out=str(tmp_path / "r"), epochs=4, lr=1e-3, schedule="cosine",
                      warmup_epochs=1)
    lr = learning_rate(cfg, steps_per_epoch=10)
    at = [float(lr(step)) for step in (0, 5, 10, 25, 40)]
    assert at[0] == 0.0 and at[1] == pytest.approx(5e-4) and at[2] == pytest.approx(1e-3)
    assert at[2] > at[3] > at[4] and at[4] == pytest.approx(0.0, abs=1e-9)
    assert learning_rate(TrainConfig(data="", out="", lr=1e-3), 10) == 1e-3  # plateau: a plain rate
    m = run_training(TrainConfig(data=str(data_dir), out=str(tmp_path / "c"), epochs=2, batch_size=16,
                                 input_size=[32, 32], lr=3e-3, schedule="cosine", warmup_epochs=0.5,
                                 mlflow_uri="off", cache_dir=str(tmp_path / "cache"), verbose=0, **TINY_KW))
    assert m["epochs_run"] == 2  # no plateau callback fights the schedule
