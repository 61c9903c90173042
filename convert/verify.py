"""Parity of converted graphs before anything is written.

On a verification batch of real images: FP32 ONNX vs Keras max |delta| <= 1e-4,
FP16 vs FP32 ONNX max |delta| <= 5e-2 and mean |delta| <= 2e-3, all outputs finite
and in [0, 1], and no label flips at
the model's thresholds. A flip between two scores that both lie within the
tolerance of the threshold is reported but tolerated (noise of that size cannot be
ruled out at any tolerance); any other flip means |delta| exceeds the tolerance and
fails. INT8 is reported, not gated here: it is judged by mAP (`int8.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from edge.errors import FatalError

# FP16 (max): convnext-edge deviates by ~6e-4; the trained EfficientNet-Lite0 Standard by up to 2.7e-2 on
# a few of 64 photos (mean 2.5e-4): half-precision rounding in every Conv and in the head, amplified where
# the sigmoid is steep (all Convs in float32: 8e-3; head in float32 too: ~0). The mean gate is what catches
# a broken half-precision graph (overflow, NaN, a lost normalisation): that is off on every image.
TOLERANCE = {"fp32": 1e-4, "fp16": 5e-2}
MEAN_TOLERANCE = {"fp16": 2e-3}
REFERENCE = {"fp32": "keras", "fp16": "fp32", "int8": "fp32"}


@dataclass
class Parity:
    """One comparison: candidate vs reference scores."""

    candidate: str
    reference: str
    max_abs: float
    mean_abs: float
    flips: int  # (image, class) pairs whose decision differs
    hard_flips: int  # flips not explained by scores within `tolerance` of the threshold
    tolerance: float | None  # None: reported only
    finite: bool = True
    mean_tolerance: float | None = None


    @property
    def ok(self) -> bool:
        """Within tolerance, finite, no hard flips (only finiteness when reported only)."""
        if self.tolerance is None:
            return self.finite
        mean_ok = self.mean_tolerance is None or self.mean_abs <= self.mean_tolerance
        return self.finite and self.max_abs <= self.tolerance and mean_ok and self.hard_flips == 0

    def line(self) -> str:
        """One human-readable line with the figures."""
        tol = f" (limit {self.tolerance:g})" if self.tolerance is not None else " (reported only)"
        mtol = f" (limit {self.mean_tolerance:g})" if self.mean_tolerance is not None else ""
        state = (" ok" if self.ok else " FAILED") if self.tolerance is not None or not self.ok else ""
        nonfinite = "" if self.finite else ", NON-FINITE outputs"
        return (f"{self.candidate} vs {self.reference}: max|d| {self.max_abs:.3g}{tol}, "
                f"mean|d| {self.mean_abs:.3g}{mtol}, label flips {self.flips} "
                f"({self.hard_flips} beyond tolerance){nonfinite}{state}")


@dataclass
class ParityReport:
    """All comparisons of one conversion."""

    images: int
    results: list[Parity] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every gated comparison passed."""
        return all(r.ok for r in self.results)

    def summary(self) -> str:
        """Multi-line summary with the figures."""
        return "\n".join([f"parity on {self.images} verification images:",
                          *("  " + r.line() for r in self.results)])

    def to_dict(self) -> dict:
        """Figures for provenance metadata."""
        return {"images": self.images, **{
            f"{r.candidate}_vs_{r.reference}": {"max_abs": float(f"{r.max_abs:.3g}"),
                                                "flips": r.flips, "limit": r.tolerance}
            for r in self.results}}


class VerificationError(FatalError, RuntimeError):
    """A converted graph disagrees with its reference; carries the report."""

    code = "verification_failed"
    http_status = 500

    def __init__(self, report: ParityReport) -> None:
        super().__init__("conversion failed verification, nothing written\n" + report.summary())
        self.report = report


def run_onnx(model: onnx.ModelProto, images: np.ndarray, threads: int = 2,
             batch: int = 32) -> np.ndarray:
    """Scores of `model` for NHWC 0..255 `images` on the ORT CPU provider."""
    from convert.timing import session

    s = session(model, threads)
    name = s.get_inputs()[0].name
    x = np.asarray(images, np.float32)
    return np.concatenate([s.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def keras_scores(model, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Scores of a Keras model (inference mode) for NHWC 0..255 `images`."""
    x = np.asarray(images, np.float32)
    return np.concatenate([np.asarray(model(x[i:i + batch], training=False), np.float32)
                           for i in range(0, len(x), batch)])


def compare(candidate: str, cand: np.ndarray, reference: str, ref: np.ndarray,
            thresholds: Sequence[float], tolerance: float | None,
            mean_tolerance: float | None = None) -> Parity:
    """Compare two score arrays (images x classes) at per-class `thresholds`."""
    t = np.asarray(thresholds, np.float64)[None, :]
    cand64, ref64 = np.asarray(cand, np.float64), np.asarray(ref, np.float64)
    finite = bool(np.isfinite(cand64).all() and (cand64 >= 0).all() and (cand64 <= 1).all())
    d = np.abs(np.nan_to_num(cand64, nan=np.inf) - ref64)
    flip = (cand64 >= t) != (ref64 >= t)
    band = tolerance if tolerance is not None else 0.0
    borderline = (np.abs(cand64 - t) <= band) & (np.abs(ref64 - t) <= band)
    return Parity(candidate, reference, float(d.max()), float(d.mean()), int(flip.sum()),
                  int((flip & ~borderline).sum()), tolerance, finite, mean_tolerance)


def verify(reference: np.ndarray, outputs: Mapping[str, np.ndarray], thresholds: Sequence[float],
           tolerances: Mapping[str, float] | None = None) -> ParityReport:
    """Check FP32 against the Keras `reference` and the others against FP32 (see module doc).

    `outputs` maps precision ("fp32", "fp16", "int8") to scores; returns the report
    (check `.ok`, or use `require`)."""
    tol = {**TOLERANCE, **(tolerances or {})}
    ref = {"keras": np.asarray(reference, np.float32), **outputs}
    if reference.ndim != 2 or reference.shape[1] != len(thresholds):
        raise ValueError(f"reference scores {reference.shape} do not match {len(thresholds)} classes")
    report = ParityReport(images=len(reference))
    for name, scores in outputs.items():
        against = REFERENCE.get(name, "fp32")
        if against not in ref:
            against = "keras"
        report.results.append(compare(name, scores, against, ref[against], thresholds, tol.get(name),
                                      MEAN_TOLERANCE.get(name)))
    return report


def require(report: ParityReport) -> ParityReport:
    """Raise VerificationError unless the report passed."""
    if not report.ok:
        raise VerificationError(report)
    return report


def images_from_dir(folder: str | Path, input_size: Sequence[int], limit: int = 64) -> np.ndarray:
    """Up to `limit` images found under `folder` (sorted, evenly spread), as uint8 RGB
    (n, H, W, 3) resized like the runtime's whole-image view. Undecodable files are skipped."""
    import cv2

    from edge.decode import DecodeError, decode
    from edge.inputs import collect

    paths = collect([str(folder)])
    if not paths:
        raise FileNotFoundError(f"{folder}: no images found")
    if len(paths) > limit:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
    h, w = (int(v) for v in input_size)
    out = []
    for p in paths:
        try:
            bgr = decode(Path(p).read_bytes()).bgr
        except (DecodeError, OSError):
            continue
        shrink = bgr.shape[0] >= h and bgr.shape[1] >= w
        img = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        out.append(img[:, :, ::-1])
    if not out:
        raise FileNotFoundError(f"{folder}: none of the {len(paths)} images could be decoded")
    return np.stack(out)
