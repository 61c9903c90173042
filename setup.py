"""Everything is in pyproject.toml except one build step: the wheel carries the shipped models.

build_py copies models/'s runtime files (the ONNX models, OpenVINO's INT8 IRs, the accuracy gates; not
models/eval/ or the model card) into the wheel as `sixview/models/`, where `sixview.MODELS_DIR` finds them,
so `pip install sixview-*.whl[cpu]` scans with no checkout. An editable install reads models/ in place.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MODELS = Path(__file__).resolve().parent / "models"
MODEL_FILES = ("*.onnx", "*.int8-ov.xml", "*.int8-ov.bin", "*.gates.json")  # MANIFEST.in puts these in the sdist


class BuildPyWithModels(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        files = sorted({f for pattern in MODEL_FILES for f in MODELS.glob(pattern) if f.is_file()})
        if not files:  # e.g. a build context without models/ (the images bring their own: SIXVIEW_MODELS)
            self.warn(f"no models in {MODELS}: the wheel has no shipped models")
            return
        out = Path(self.build_lib, "sixview", "models")
        self.mkpath(str(out))
        for f in files:
            self.copy_file(str(f), str(out / f.name))


setup(cmdclass={"build_py": BuildPyWithModels})
