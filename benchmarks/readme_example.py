"""The README's picture: the shipped models on scikit-image's sample photos, drawn as `sixview scan --annotate` draws.

    python -m benchmarks.readme_example            # -> docs/readme-example.png (needs `make demo`'s environment)

One frame made of four of the samples that scikit-image ships (`skimage.data`: the cat `chelsea`, `coffee`,
`astronaut` and the silhouette `horse`; CC0 or without known copyright, read from the installed package, never
copied into the repository), classified by the shipped models on ONNX Runtime's CPU provider (FP32, so the figure
is the same on any machine), twice: with the six views and with the whole image only (`--no-tiling`). Each half is
drawn by `edge.draw.draw_verdict`, the drawing of `scan --annotate`, the camera window and `--record`.
"""

from __future__ import annotations

from pathlib import Path

import click
import cv2
import numpy as np
from PIL import Image

from edge.draw import PANEL, Style, draw_verdict, put_text
from edge.engine import DEFAULT_MODELS, Engine

TILE = 300  # pixels per quadrant of the composed frame


def _bgr(rgb: np.ndarray) -> np.ndarray:
    """A scikit-image sample (RGB, RGBA, grey or boolean) as 8-bit BGR."""
    a = rgb.astype(np.uint8) * 255 if rgb.dtype == bool else rgb
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    return cv2.cvtColor(np.ascontiguousarray(a[..., :3]), cv2.COLOR_RGB2BGR)


def _square(img: np.ndarray, pad: int = 255) -> np.ndarray:
    """Centre-crop a photo to a square (`pad`: fit the whole image on that grey instead) of TILE pixels."""
    h, w = img.shape[:2]
    if pad < 0:
        s = min(h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        return cv2.resize(img[y0:y0 + s, x0:x0 + s], (TILE, TILE), interpolation=cv2.INTER_AREA)
    k = TILE / max(h, w)
    small = cv2.resize(img, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    out = np.full((TILE, TILE, 3), pad, np.uint8)
    out[:small.shape[0], :small.shape[1]] = small
    return out


def compose() -> np.ndarray:
    """Cat and coffee above, astronaut and horse below: two of the ten classes, in opposite corners."""
    from skimage import data  # the `demo` extra

    photos = [_square(_bgr(f()), pad=-1) for f in (data.chelsea, data.coffee, data.astronaut)]
    horse = _square(_bgr(data.horse()))
    return np.vstack([np.hstack(photos[:2]), np.hstack([photos[2], horse])])


def _panel(engine: Engine, frame: np.ndarray, tiling: bool, title: str) -> tuple[np.ndarray, list[str]]:
    ok, buf = cv2.imencode(".png", frame)
    assert ok
    prepared = engine.load(buf.tobytes(), tiling=tiling, keep_image=True)
    verdict = engine.classify([prepared])[0]
    drawn = draw_verdict(prepared.decoded.bgr.copy(), verdict)
    st = Style.for_frame(*drawn.shape[1::-1])
    head = np.full((st.size("Ag(y)")[1] + 2 * st.margin, drawn.shape[1], 3), PANEL, np.uint8)
    put_text(head, title, st.margin, st.margin, st, bg=None)
    d = verdict.decision
    said = [f"{c} {d.scores[c]:.2f} ({d.views[c]})" for c in d.labels] or ["no label"]
    return np.vstack([head, drawn]), said


@click.command()
@click.option("--models", "models_dir", type=click.Path(path_type=Path), default=DEFAULT_MODELS)
@click.option("--out", type=click.Path(path_type=Path), default=Path("docs/readme-example.png"))
def main(models_dir: Path, out: Path) -> None:
    """Write the README's picture."""
    engine = Engine(models_dir, routing="hd", device="cpu", precision="fp32")
    frame = compose()
    left, on = _panel(engine, frame, True, "six views (sixview scan)")
    right, off = _panel(engine, frame, False, "whole image only (--no-tiling)")
    gap = np.full((left.shape[0], 12, 3), 255, np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture = cv2.cvtColor(np.hstack([left, gap, right]), cv2.COLOR_BGR2RGB)
    # 256 colours: a tenth of the bytes of a full-colour PNG, and the drawing reads the same
    Image.fromarray(picture).quantize(256, method=Image.Quantize.FASTOCTREE).save(out, optimize=True)
    click.echo(f"six views: {', '.join(on)}\nwhole image: {', '.join(off)}\nwrote {out}")


if __name__ == "__main__":
    main()
