"""The architectures sixview trains, by name, and their per-architecture defaults.

No TensorFlow here: the command line offers these names and defaults before
anything is built.
"""

from __future__ import annotations

# ConvNeXt variants: blocks per stage and stage widths (training.models.convnext)
CONVNEXTS: dict[str, dict[str, tuple[int, ...]]] = {
    "convnext-edge": {"depths": (2, 2, 6, 2), "widths": (32, 64, 128, 256)},
    "convnext-tiny": {"depths": (3, 3, 9, 3), "widths": (96, 192, 384, 768)},
    "convnext-small": {"depths": (3, 3, 27, 3), "widths": (96, 192, 384, 768)},
    "convnext-base": {"depths": (3, 3, 27, 3), "widths": (128, 256, 512, 1024)},
}
# ImageNet-pretrained edge backbones ported from PyTorch weights (training.models.efficientnet_lite),
# with the resolution each was trained at on ImageNet
EFFICIENTNETS: dict[str, int] = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}
ALL_ARCHS = (*CONVNEXTS, *EFFICIENTNETS)
# Keras dtype policies a model trains in
TRAIN_PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def default_input_size(arch: str) -> int:
    """Input side when none is given: 64 for convnext-edge, an EfficientNet-Lite's native
    resolution (lite0 224, lite1 240, lite2 260), 224 for the other ConvNeXts."""
    if arch in EFFICIENTNETS:
        return EFFICIENTNETS[arch]
    return 64 if arch == "convnext-edge" else 224


def default_lr(arch: str, weights: str = "none") -> float:
    """Learning rate per architecture: 5e-5 for pretrained Base (the reference), else by size."""
    pretrained = weights not in ("none", "", None)
    if pretrained:
        return 5e-5 if arch == "convnext-base" else 1e-4
    return 2e-3 if arch == "convnext-edge" else 1e-3
