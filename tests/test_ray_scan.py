"""`sixview scan --ray` on a local Ray (2 CPUs): the same records as the local scan, a killed actor,
an interrupted run resumed, a model that fails on the workers; the output folder and URI listing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import need_shared

pytest.importorskip("ray.data", reason="Ray is not installed (pip install 'sixview[ray]')")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own, on its settings

from edge.cli import main  # noqa: E402
from edge.ray import scan as ray_scan  # noqa: E402
from edge.ray.blocks import RunFolder  # noqa: E402
from edge.sinks import OutputError  # noqa: E402
from edge.uris import collect_any, read_uri  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module: 2 CPUs, its files and auth token out of the user's home."""
    import ray

    temp = tempfile.mkdtemp(prefix="sxray")  # short: Ray's socket paths must stay under 107 bytes
    saved = {k: os.environ.get(k) for k in ("HOME", "RAY_AUTH_TOKEN")}
    os.environ["HOME"] = temp
    os.environ["RAY_AUTH_TOKEN"] = "sixview-test-" + os.urandom(8).hex()
    ray.init(address="local", num_cpus=2, _temp_dir=os.path.join(temp, "r"), include_dashboard=False,
             object_store_memory=300 * 2**20, logging_level="ERROR", log_to_driver=False)  # as the CLI
    try:
        yield
    finally:
        ray.shutdown()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Real photos (copied into tmp, 4 folders of 4), a thumbnail and bad files."""
    voc = need_shared("voc07_val", "images")
    src = sorted(voc.glob("*.jpg"))[:4]
    d = tmp_path_factory.mktemp("photos")
    for k in range(4):
        (d / f"set{k}").mkdir()
        for p in src:
            shutil.copy(p, d / f"set{k}" / p.name)
    cv2.imwrite(str(d / "thumb.png"), np.full((32, 32, 3), (0, 0, 255), np.uint8))
    (d / "empty.jpg").write_bytes(b"")
    data = src[0].read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (d / "text.png").write_text("not an image\n")
    return d


def cli(*args) -> object:
    return CliRunner().invoke(main, ["scan", *map(str, args)])


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def comparable(recs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("timings_ms", "provider")} for r in recs]


@pytest.fixture(scope="module")
def expected(photos, colour_models, tmp_path_factory) -> list[dict]:
    """The local scan's records."""
    out = tmp_path_factory.mktemp("local") / "local.jsonl"
    r = cli(photos, "--models", colour_models, "--device", "cpu", "--out", out)
    assert r.exit_code == 1, r.output  # the bad files
    return records(out)


def ray_run(photos, models, out, **kw):
    opts = {"models_dir": models, "engine": "auto", "device": "cpu", "precision": "auto", "threads": 0,
            "tiling": True, "threshold": None, "max_pixels": 100_000_000, "guess_in_labels": False}
    args = {"out": out, "csv_path": None, "resume": False, "overwrite": False, "shard": None, "batch_images": 4,
            "address": "local", "actors": 2, "ray_dir": None, "block_size": 4, "engine_opts": opts} | kw
    return ray_scan.run((str(photos),), **args)


def test_same_records_as_the_local_scan(local_ray, photos, colour_models, expected, tmp_path):
    out, table = tmp_path / "ray.jsonl", tmp_path / "ray.csv"
    r = cli(photos, "--ray", "--models", colour_models, "--device", "cpu", "--out", out, "--csv", table,
            "--block-size", 5, "--actors", 2)
    assert r.exit_code == 1, r.output  # the bad files, as locally
    got = records(out)
    assert comparable(got) == comparable(expected)
    assert {rec["engine"] for rec in got} == {"hd", "standard", None}
    errors = {Path(rec["path"]).name: rec["error"] for rec in got if rec["error"]}
    assert set(errors) == {"empty.jpg", "truncated.jpg", "text.png"}
    lines = (tmp_path / "ray.jsonl.blocks" / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 4 and sum(json.loads(x)["errors"] for x in lines[1:]) == 3  # 19 images in 4 blocks
    assert len(table.read_text().splitlines()) == 1 + len(expected)


def test_a_killed_actor_is_restarted_and_every_record_comes_once(local_ray, photos, colour_models, expected,
                                                                 tmp_path):
    from ray._private import state

    killed = []

    def kill_the_actors(received, folder):
        if killed:
            return
        for actor in state.actors().values():
            if "Classifier" in actor["ActorClassName"] and actor["State"] == "ALIVE" and actor.get("Pid"):
                os.kill(actor["Pid"], signal.SIGKILL)  # a Ray worker this test's scan started
                killed.append(received)  # records the driver had when the actors died

    out = tmp_path / "ray.jsonl"
    assert ray_run(photos, colour_models, out, batch_images=2, block_size=3, on_records=kill_the_actors) == 1
    assert killed and killed[0] < len(expected)  # killed with work left
    got = records(out)
    assert len({rec["path"] for rec in got}) == len(got) == len(expected)
    assert comparable(got) == comparable(expected)


def test_resume_does_only_the_missing_blocks(local_ray, photos, colour_models, expected, tmp_path):
    def interrupt(received, folder):
        if folder.done:
            raise KeyboardInterrupt

    out = tmp_path / "ray.jsonl"
    assert ray_run(photos, colour_models, out, on_records=interrupt) == 130
    blocks = tmp_path / "ray.jsonl.blocks"
    first = {p.name: p.stat().st_mtime_ns for p in blocks.glob("block-*.jsonl")}
    assert 1 <= len(first) < 5 and not out.read_text()
    received = []
    assert ray_run(photos, colour_models, out, resume=True, on_records=lambda n, f: received.append(n)) == 1
    assert received[-1] == len(expected) - sum(len(records(blocks / name)) for name in first)
    assert {p.name: p.stat().st_mtime_ns for p in blocks.glob("block-*.jsonl") if p.name in first} == first
    assert comparable(records(out)) == comparable(expected)
    r = cli(photos, "--ray", "--models", colour_models, "--out", out, "--block-size", 4)  # neither flag
    assert r.exit_code == 2 and "--resume" in r.output


def test_a_model_that_fails_on_the_workers_is_one_line_exit_2(local_ray, photos, colour_models, tmp_path):
    m = onnx.load(colour_models / "hd.onnx")  # valid metadata (the driver's check passes), wrong graph size
    props = {p.key: p.value for p in m.metadata_props} | {"input_size": "[96, 96]"}
    onnx.helper.set_model_props(m, props)
    (tmp_path / "m").mkdir()
    onnx.save(m, tmp_path / "m" / "hd.onnx")
    r = cli(photos / "set0", "--ray", "--models", tmp_path / "m", "--engine", "hd", "--device", "cpu",
            "--out", tmp_path / "r.jsonl")
    assert r.exit_code == 2, r.output
    # one line of ours (Ray itself may report its retries of the dead actor's calls around it)
    ours = [x for x in r.output.splitlines() if x.startswith("Error: ")]
    assert len(ours) == 1 and ours[0].endswith("metadata says input_size [96, 96], the graph takes [64, 64]")


def test_usage_errors_before_ray_starts(photos, colour_models, tmp_path, monkeypatch):
    r = cli(photos, "--ray", "--annotate", tmp_path / "a", "--models", colour_models)
    assert r.exit_code == 2 and "--annotate" in r.output
    r = cli(photos, "--actors", 2, "--models", colour_models)
    assert r.exit_code == 2 and "--ray" in r.output
    r = cli(photos, "--ray", "--actors", 1000, "--models", colour_models, "--out", tmp_path / "r.jsonl")
    assert r.exit_code == 2 and "would hang" in r.output  # actors holding every CPU: refused, not started
    assert not (tmp_path / "r.jsonl.blocks" / "manifest.jsonl").exists()  # nothing left to --resume
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "ray", None)  # a runtime-only install
        r = cli(photos, "--ray", "--models", colour_models)
        assert r.exit_code == 2 and "pip install 'sixview[ray]'" in r.output
    assert ray_scan.is_address("auto") and ray_scan.is_address("ray://head:10001")
    assert ray_scan.is_address("10.0.0.1:6379") and not ray_scan.is_address(str(photos))


def test_the_folder_refuses_another_scan_on_resume(tmp_path):
    with RunFolder(tmp_path / "d", {"images": 3, "block_size": 2}) as f:
        f.write_block(0, [b'{"path": "a"}\n', b'{"path": "b"}\n'], 0)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["block-000000.jsonl", "manifest.jsonl"]
    (tmp_path / "d" / ".block-000001.jsonl.k1ll3d.tmp").write_bytes(b'{"path": "c"}\n')  # a killed run's
    with RunFolder(tmp_path / "d", {"images": 3, "block_size": 2}, resume=True) as f:
        assert set(f.done) == {0} and list(f.lines(1)) == [b'{"path": "a"}\n', b'{"path": "b"}\n']
        assert not list((tmp_path / "d").glob(".*.tmp"))
    with pytest.raises(OutputError, match="block_size differ"), \
            RunFolder(tmp_path / "d", {"images": 3, "block_size": 3}, resume=True):
        pass
    with RunFolder(tmp_path / "d", {"images": 3, "block_size": 3}, overwrite=True) as f:
        assert not f.done and not list((tmp_path / "d").glob("block-*"))


def test_the_workers_get_the_files_the_runtime_opens(tmp_path, colour_models):
    """The shipped files are `edge.model.role_files`: the file `open_role` opens on each backend it
    may try (a worker may have a GPU), and for OpenVINO that file's gates and INT8 IR."""
    from edge.model import open_role, role_files
    from edge.ray.work import ModelFiles

    for name in ("hd.onnx", "hd.fp16.onnx", "hd.int8-ov.xml", "hd.int8-ov.bin", "hd.gates.json", "hd.onnx.bak",
                 "standard.onnx", "standard.int8.onnx", "standard.fp16.onnx"):
        (tmp_path / name).write_bytes(name.encode())

    def shipped(roles: tuple[str, ...], device: str, precision: str = "auto") -> list[str]:
        return sorted(ModelFiles.read(tmp_path, roles, device, precision).files)

    openvino = ["hd.gates.json", "hd.int8-ov.bin", "hd.int8-ov.xml", "hd.onnx"]
    assert shipped(("hd",), "cpu") == ["hd.onnx"]
    assert shipped(("hd",), "openvino") == shipped(("hd",), "openvino", "int8") == openvino
    assert shipped(("hd",), "cuda") == shipped(("hd",), "auto", "fp16") == ["hd.fp16.onnx"]
    assert shipped(("hd",), "auto") == sorted(["hd.fp16.onnx", *openvino])  # a GPU, else OpenVINO, else the CPU
    assert shipped(("hd", "standard"), "cpu") == ["hd.onnx", "standard.int8.onnx"]
    assert shipped(("standard",), "cpu", "fp32") == ["standard.onnx"]
    assert ModelFiles.read(tmp_path, ("hd",), "cpu", "auto").digest != ModelFiles.read(
        tmp_path, ("hd",), "openvino", "auto").digest
    for device in ("cpu", "auto"):  # what the runtime opens here is among the files it lists
        assert open_role(colour_models, "hd", device).path in role_files(colour_models, "hd", device)


def test_uri_folders_are_listed_and_read_through_pyarrow(photos):
    uri = (photos / "set1").as_uri()
    found = collect_any([uri, str(photos / "set0")])
    assert sorted(k for p, k in found.items() if p.startswith("file://")) == sorted(
        p.name for p in (photos / "set1").iterdir())
    first = next(p for p in found if p.startswith("file://"))
    assert read_uri(first) == Path(first[len("file://"):]).read_bytes()
    with pytest.raises(FileNotFoundError):
        read_uri(uri + "/missing.jpg")
