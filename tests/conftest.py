"""Shared fixtures (tiny colour-detector models, synthetic images) and the test tiers."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

# -- the tiers (markers in pyproject.toml; `make test-fast`: unit; `make test`: unit, integration, system) ---------
#   unit         in-process and fast: no subprocess, network, server or model training (the tier: < 2 min, 2 cores)
#   integration  a real server, the real models or data, Ray, the CLI in a subprocess
#   system       a browser, a window under Xvfb, podman images, model training, the wheel in a fresh virtualenv
# A test's tier: its own mark (@pytest.mark.system, or a module's pytestmark), else TEST_TIERS, else its module's in
# MODULE_TIERS (a module there is wholly of that tier), else unit; `slow` moves a test left to unit into system.
TIERS = ("unit", "integration", "system")
MODULE_TIERS = {
    "test_adapt": "system",  # adapts tiny Keras models: training
    "test_training_train": "system",  # trains tiny Keras models (MLflow, a MirroredStrategy in a subprocess)
    "test_efficientnet": "system",  # EfficientNet-Lite ported, trained (head), converted; ImageNet check photos
    "test_convert_pipeline": "system",  # whole Keras models converted, ConvNeXt-Base included (minutes)
    "test_web_page": "system",  # Chromium through Playwright
    "test_serve": "integration",  # uvicorn on a port
    "test_serve_cli": "integration",  # `sixview serve` in a subprocess; the load test
    "test_ray_scan": "integration",  # Ray
    "test_bench_scripts": "integration",  # the benchmarks as subprocesses (TensorFlow for the reference path)
    "test_frame_budget": "integration",  # a benchmark as a subprocess, Keras models converted
    "test_convert_fixes": "integration",  # Keras -> tf2onnx -> ONNX Runtime (TensorFlow's import: ~20 s)
    "test_onepass_keras": "integration",  # Keras -> tf2onnx -> the one-pass graph (TensorFlow)
    "test_openworld_tune": "integration",  # the HD head fine-tuned in Keras (TensorFlow)
    "test_distill": "integration",  # a Lite0 exported, read back and distilled for one pass (TensorFlow)
    "test_training_shared": "integration",  # the real data sets
    "test_training_pipeline": "integration",  # tf.data and MixUp in TensorFlow (no training; the import: ~10 s)
}
TEST_TIERS = {  # tests of a unit module that are not unit tests (modules owned elsewhere: kept here, not marked there)
    "test_scan::test_runtime_never_imports_tensorflow": "integration",  # a subprocess
    "test_scan::test_scan_voc07_val": "integration",  # 669 real photos
    "test_eval::test_eval_does_not_import_tensorflow": "integration",
    "test_onepass::test_benchmark_compares_both_graphs_frame_for_frame": "integration",  # a child process
    "test_faults::test_a_second_writer_is_refused_not_interleaved": "integration",
    "test_faults::test_camera_counts_add_up_after_sigterm": "integration",
    "test_atomic::test_a_write_killed_midway_keeps_the_old_file": "integration",
    "test_make_models::test_a_resumed_runs_stage_records_the_runs_own_wall_time": "integration",
}
# Marked in their own files: test_wheel (system), test_container's podman tests and test_camera_view's window
# under Xvfb (system); the rest of those two modules is unit.


def tier_of(item: pytest.Item) -> str:
    marked = {m.name for m in item.iter_markers() if m.name in TIERS}
    if len(marked) > 1:
        raise pytest.UsageError(f"{item.nodeid} is marked {sorted(marked)}: one tier only")
    if marked:
        return marked.pop()
    module = item.path.stem
    tier = TEST_TIERS.get(f"{module}::{getattr(item, 'originalname', item.name)}") or MODULE_TIERS.get(module)
    if tier is None and item.get_closest_marker("slow"):
        return "system"
    return tier or "unit"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With `-m <tier>` alone, a module that MODULE_TIERS puts wholly in another tier is not even imported
    (TensorFlow's import alone would be much of the unit tier's time)."""
    wanted = (config.getoption("markexpr", "") or "").strip()
    tier = MODULE_TIERS.get(collection_path.stem) if collection_path.suffix == ".py" else None
    return True if wanted in TIERS and tier is not None and tier != wanted else None


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(tier_of(item))


def need_shared(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent (../shared/data holds the real data sets)")
    return p


@pytest.fixture(scope="session")
def colour_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models/ folder with colour-detector Standard (32 px) and HD (64 px) models."""
    from convert.toy import save_colour_model

    d = tmp_path_factory.mktemp("models")
    save_colour_model(d / "standard.onnx", role="standard", input_size=(32, 32))
    save_colour_model(d / "hd.onnx", role="hd", input_size=(64, 64))
    return d


def grey_with_square(w: int = 600, h: int = 450, corner: str = "top_left", side: int = 90,
                     colour_rgb: tuple[int, int, int] = (255, 0, 0)) -> np.ndarray:
    """A grey BGR image with one coloured square in a corner (or the centre)."""
    img = np.full((h, w, 3), 128, np.uint8)
    x = {"top_left": 5, "bottom_left": 5, "top_right": w - side - 5, "bottom_right": w - side - 5,
         "centre": (w - side) // 2}[corner]
    y = {"top_left": 5, "top_right": 5, "bottom_left": h - side - 5, "bottom_right": h - side - 5,
         "centre": (h - side) // 2}[corner]
    img[y:y + side, x:x + side] = colour_rgb[::-1]
    return img


@pytest.fixture(scope="session", autouse=True)
def _openvino_cache(tmp_path_factory: pytest.TempPathFactory):
    """OpenVINO's compiled-model cache in a temporary folder, never the user's ~/.cache."""
    import os

    if "SIXVIEW_OV_CACHE" not in os.environ:
        os.environ["SIXVIEW_OV_CACHE"] = str(tmp_path_factory.mktemp("ov-cache"))
    yield


@pytest.fixture
def cpu_class_is(monkeypatch):
    """Run as a CPU of the named class (`$SIXVIEW_CPU_CLASS`; None: unset), its cached answers cleared
    before and after."""
    from edge import openvino_backend as ovb
    from edge.providers import CPU_CLASS_ENV, cpu_class

    def set_class(name: str | None) -> None:
        if name is None:
            monkeypatch.delenv(CPU_CLASS_ENV, raising=False)
        else:
            monkeypatch.setenv(CPU_CLASS_ENV, name)
        cpu_class.cache_clear()
        ovb.native_bf16.cache_clear()

    yield set_class
    monkeypatch.delenv(CPU_CLASS_ENV, raising=False)
    cpu_class.cache_clear()
    ovb.native_bf16.cache_clear()


@pytest.fixture()
def colour_set(tmp_path):
    """Photos with small/large red and blue squares; labels.csv, boxes.csv; 'green' is not labelled."""
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    rows, boxes = [], []
    rng = np.random.default_rng(1)
    for i in range(24):
        img = np.full((300, 400, 3), 128, np.uint8)
        labels = []
        for colour, bgr in (("red", (0, 0, 255)), ("blue", (255, 0, 0))):
            if rng.random() < 0.5:
                side = int(rng.choice([55, 150]))
                x, y = int(rng.choice([3, 400 - side - 3])), int(rng.choice([3, 300 - side - 3]))
                img[y:y + side, x:x + side] = bgr
                labels.append(colour)
                boxes.append([f"images/{i}.png", colour, x, y, x + side, y + side])
        cv2.imwrite(str(root / "images" / f"{i}.png"), img)
        rows.append([f"images/{i}.png", "|".join(labels)])
    (root / "classes.txt").write_text("blue\nred\n")  # alphabetical: not the model's order
    with open(root / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "labels"], *rows])
    with open(root / "boxes.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label", "x0", "y0", "x1", "y1"], *boxes])
    return root
