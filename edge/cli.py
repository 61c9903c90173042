"""The `sixview` command line: one click group, commands loaded on first use.

The runtime commands live in `edge`; training, adaptation and conversion live
in `training` and are imported only when called, so the runtime never imports
TensorFlow and a runtime-only install says what to add instead of crashing.
"""

from __future__ import annotations

import importlib

import click

# name -> ("module:attribute", short help shown by `sixview --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "scan": ("edge.scan.cli:scan", "Classify images in files/folders; write JSONL (and CSV)."),
    "camera": ("edge.camera.cli:camera", "Live loop on a camera, video file or stream."),
    "serve": ("edge.serve.cli:serve", "HTTP API and installable web page (upload, live camera)."),
    "eval": ("training.commands.eval:eval_cmd", "Score ONNX models on a labelled set."),
    "train": ("training.commands.train:train", "Train the Standard model on CIFAR-10."),
    "adapt": ("training.commands.adapt:adapt", "Fine-tune Standard into HD on real photos."),
    "convert": ("training.commands.convert:convert", "Keras run -> verified FP32/FP16 ONNX with metadata."),
    "data": ("training.commands.data:data", "Data set tools (report: class balance, corrupt files, duplicates)."),
    "openworld": ("training.commands.openworld:openworld",
                  "Fit HD's open-world head (\"none of these\" from what its ImageNet backbone knows)."),
}
EXTRA_FOR = {"tensorflow": "train", "keras": "train", "tf2onnx": "train", "onnx": "train",
             "sklearn": "train", "matplotlib": "train", "onnxruntime": "cpu", "cv2": "cpu",
             "fastapi": "serve", "starlette": "serve", "uvicorn": "serve", "python_multipart": "serve",
             "prometheus_client": "serve", "websockets": "serve"}


class LazyGroup(click.Group):
    """A group whose commands are imported only when invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # From the table, so `sixview --help` does not import TensorFlow.
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in COMMANDS.items()])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        target, short = COMMANDS[name]
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as e:
            missing = (e.name or "").split(".")[0]
            if missing not in EXTRA_FOR:
                raise
            return _missing_extra(name, short, missing, EXTRA_FOR[missing])


def _missing_extra(name: str, short: str, module: str, extra: str) -> click.Command:
    @click.command(name, help=short, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def stub(args: tuple[str, ...]) -> None:
        raise click.UsageError(
            f"'sixview {name}' needs the '{extra}' extras ({module} is not installed): "
            f"pip install 'sixview[{extra}]'")

    stub.short_help = short
    return stub


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sixview")
def main() -> None:
    """sixview: multi-label image classification that sees six views of every frame."""
