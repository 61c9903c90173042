"""Accuracy gates: whether a model file may run at a lower compute precision under `--precision auto`.

A gate is measured offline (`python -m benchmarks.precision_gate`) and written
next to the model, `<model>.gates.json` (`hd.onnx` -> `hd.gates.json`):

    {"bf16": {"passed": true, "map_fp32": 0.8885, "map": 0.8863, "flips": 12, "images": 669,
              "set": "...", "date": "...", "cpu": "...", "sha256": "<model file>", "rule": "..."}}

The runtime only reads it, at start, and never recomputes it. A gate counts
only for the file it was measured on: its `sha256` must match the file's, so a
retrained or recalibrated model does not inherit an old gate. The `int8` gate
(OpenVINO INT8, the file's `<role>.int8-ov.xml/.bin` IR) also records the IR's
`.bin` as `ir_sha256`: a remade IR needs a new gate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .atomic import atomic_write
from .inputs import file_sha256

MAX_MAP_DROP = 0.005  # mAP may fall by at most half a point against FP32 on the same photos


def gate_path(model_path: Path | str) -> Path:
    """`<dir>/<name without .onnx>.gates.json`."""
    p = Path(model_path)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.stem
    return p.with_name(f"{stem}.gates.json")


def read_gates(model_path: Path | str) -> dict[str, Any]:
    """The gates recorded for a model file ({} when there is no readable gate file)."""
    try:
        data = json.loads(gate_path(model_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def gate_status(model_path: Path | str, precision: str) -> tuple[bool, str]:
    """(passed, why) for running `model_path` at `precision` under `--precision auto`: passed only
    when its gate file says so for this very file (same SHA-256)."""
    gate = read_gates(model_path).get(precision)
    if not isinstance(gate, dict):
        return False, f"no {precision} gate in {gate_path(model_path).name}"
    if gate.get("passed") is not True:
        return False, f"the {precision} gate failed ({gate.get('reason', 'see ' + gate_path(model_path).name)})"
    if gate.get("sha256") != file_sha256(model_path):
        return False, f"the {precision} gate was measured on another version of {Path(model_path).name}"
    if precision == "int8":
        from .openvino_backend import ir_path

        bin_path = ir_path(model_path).with_suffix(".bin")
        if not bin_path.is_file() or gate.get("ir_sha256") != file_sha256(bin_path):
            return False, f"the int8 gate was measured on another version of {bin_path.name}"
    return True, f"{precision} gate passed on {gate.get('set')} ({gate.get('date')})"


def passes(map_fp32: float, map_low: float, max_drop: float = MAX_MAP_DROP) -> bool:
    """The gate's rule: mAP at the lower precision at most `max_drop` below FP32's."""
    return map_low >= map_fp32 - max_drop


def write_gate(model_path: Path | str, precision: str, result: dict[str, Any]) -> Path:
    """Record one precision's gate result in the model's gate file (other precisions kept)."""
    gates = read_gates(model_path)
    gates[precision] = result
    path = gate_path(model_path)
    atomic_write(path, json.dumps(gates, indent=2) + "\n")
    return path
