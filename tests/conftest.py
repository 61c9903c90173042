"""Shared fixtures: tiny colour-detector models and synthetic images."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


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
