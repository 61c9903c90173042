"""sixview's own package: where the shipped models are.

A wheel carries the shipped models as this package's data (`sixview/models/`, copied from the
checkout's models/ by setup.py); a checkout, editable install included, reads models/ in place.
The code still lives in the top-level packages `edge`, `convert` and `training` (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MODELS_DIR", "PACKAGED_MODELS", "CHECKOUT_MODELS"]

PACKAGED_MODELS = Path(__file__).resolve().parent / "models"  # an installed wheel
CHECKOUT_MODELS = Path(__file__).resolve().parent.parent / "models"  # a checkout: models/ beside edge/
MODELS_DIR = PACKAGED_MODELS if PACKAGED_MODELS.is_dir() else CHECKOUT_MODELS
