"""Shared fixtures: tiny colour-detector models and synthetic images."""

from __future__ import annotations

from pathlib import Path

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
