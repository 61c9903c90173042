"""The container images (docker/, compose.yaml).

Always (unit tier): the three Dockerfiles, read by Docker's own parser, share one layout (user, paths,
health check, command), and compose.yaml has what it promises. Where podman runs (system tier; root, podman
and debootstrap installed; .ci/run installs them): the CPU image is built from a Debian base made here by
debootstrap (no registry), then it serves the API and page, scans a mounted folder, runs as a user other than
root, passes its health check, and `podman-compose up` of compose.yaml serves the page.

podman keeps its images and build cache in $SIXVIEW_PODMAN_DIR (default /var/tmp/sixview-podman), so a
second run reuses the base (remade after a week) and the build's layers.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO, SHARED_DATA, grey_with_square
from serve_helpers import jpeg, wait_ready

from edge.cli import main

DOCKER = REPO / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile", "cuda": DOCKER / "Dockerfile.cuda", "jetson": DOCKER / "Dockerfile.jetson"}
DEFAULT_BASE = {"cpu": "python:3.11-slim", "cuda": "nvidia/cuda:", "jetson": "nvcr.io/nvidia/l4t-jetpack:r36"}
STATE = Path(os.environ.get("SIXVIEW_PODMAN_DIR", "/var/tmp/sixview-podman"))
BASE = "localhost/debian:bookworm-slim"
BASE_MAX_AGE_S = 7 * 86400
IMAGE = "localhost/sixview:test"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
NO_CA = DOCKER / "no-ca-bundle.pem"
CMD = ["sixview", "serve", "--host", "0.0.0.0"]
RECORD_KEYS = {"path", "width", "height", "engine", "provider", "precision", "tiling", "labels", "guess", "presence",
               "scores", "views", "thresholds", "timings_ms", "error"}


# -- the files, read ---------------------------------------------------------------------------------
def stages(path: Path) -> tuple[dict[str, str], list[list]]:
    """The global ARG defaults and the stages (each a list of instructions, FROM first), by Docker's parser."""
    import dockerfile

    args: dict[str, str] = {}
    out: list[list] = []
    for c in dockerfile.parse_file(str(path)):
        if c.cmd.upper() == "FROM":
            out.append([c])
        elif out:
            out[-1].append(c)
        elif c.cmd.upper() == "ARG":
            name, _, default = c.value[0].partition("=")
            args[name] = default
    return args, out


def layout(path: Path) -> dict:
    """What the image a Dockerfile makes looks like from outside: its last stage's settings."""
    _, all_stages = stages(path)
    final = all_stages[-1]
    found: dict = {"ENV": {}, "COPY": [], "RUN": []}
    for c in final[1:]:
        cmd = c.cmd.upper()
        if cmd == "ENV":
            found["ENV"].update(zip(c.value[::2], c.value[1::2], strict=True))
        elif cmd in ("COPY", "RUN"):
            found[cmd].append((c.flags, c.value))
        else:
            found[cmd] = (c.flags, c.value, c.json)
    return found


def test_the_three_dockerfiles_share_one_layout():
    layouts = {name: layout(path) for name, path in DOCKERFILES.items()}
    cpu = layouts["cpu"]
    assert cpu["USER"][1] == ("10001:10001",)  # numeric: Kubernetes' runAsNonRoot can check it
    assert cpu["WORKDIR"][1] == ("/data",)
    assert cpu["EXPOSE"][1] == ("8000",)
    assert cpu["CMD"] == ((), tuple(CMD), True)  # exec form
    flags, test, _ = cpu["HEALTHCHECK"]
    assert test[0] == "CMD" and test[1] == "python" and "urllib.request" in test[3] and "/healthz" in test[3]
    assert {f.split("=")[0] for f in flags} == {"--interval", "--timeout", "--start-period", "--retries"}
    assert cpu["ENV"]["SIXVIEW_MODELS"] == "/opt/sixview/models"
    assert cpu["ENV"]["PATH"].startswith("/opt/sixview/venv/bin:")
    for name, found in layouts.items():
        assert "ENTRYPOINT" not in found, name  # any `sixview ...` command runs as given
        for key in ("USER", "WORKDIR", "EXPOSE", "CMD", "HEALTHCHECK"):
            assert found[key] == cpu[key], (name, key)
        shared = {k: v for k, v in found["ENV"].items() if not k.startswith("NVIDIA_")}
        assert shared == cpu["ENV"], name
        assert found["RUN"][0] == cpu["RUN"][0], name  # the same user, /data and cache folder
        copied = {value[-1]: flags for flags, value in found["COPY"]}
        assert copied["/opt/sixview/models"] == ("--from=models",) and copied["/opt/sixview/venv"] == ("--from=venv",)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_each_dockerfile_builds_on_its_base_and_keeps_the_secret_out(name):
    args, all_stages = stages(DOCKERFILES[name])
    assert args["BASE"].startswith(DEFAULT_BASE[name])
    assert all_stages[0][0].value[0] == "${BASE}"  # the base is a build argument (a local one works)
    names = [s[0].value[-1] for s in all_stages[:-1]]
    assert names == ["python", "venv", "wheel", "models"]
    assert all_stages[-1][0].value == ("python",)  # the image holds no build tools or caches
    extras = []
    for stage in all_stages:
        for c in stage:
            joined = " ".join(c.value)
            if "requirements.py /src/pyproject.toml" in joined:
                extras += joined.split("requirements.py /src/pyproject.toml")[1].split(">")[0].split()
            if c.cmd.upper() == "RUN" and ("pip install -r" in joined or "pip wheel" in joined):
                # pip reaches the network: the CA bundle comes as a secret (absent: fine), the cache as a mount
                assert "--mount=type=secret,id=cabundle,required=false" in c.flags, (name, joined)
                assert "--mount=type=cache,target=/root/.cache/pip" in c.flags, (name, joined)
                assert 'grep -qs "BEGIN CERTIFICATE" /run/secrets/cabundle' in joined
            if c.cmd.upper() in ("COPY", "ADD"):
                assert not any("secret" in v or "ca-certificates" in v for v in c.value)
    # the runtime only: no TensorFlow (`train`), no test tools (`dev`)
    assert extras == {"cpu": ["cpu", "serve"], "cuda": ["gpu", "serve"], "jetson": ["serve"]}[name]


def test_compose_file():
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    cpu, gpu = compose["services"]["sixview"], compose["services"]["sixview-gpu"]
    assert "profiles" not in cpu and gpu["profiles"] == ["gpu"]
    assert cpu["build"]["dockerfile"] == "docker/Dockerfile" and gpu["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    assert cpu["build"]["args"]["BASE"].startswith("${BASE:-python:3.11-slim")
    assert cpu["ports"] == ["${SIXVIEW_PORT:-8000}:8000"]
    for service in (cpu, gpu):
        assert service["restart"] == "unless-stopped"
        assert "/healthz" in " ".join(service["healthcheck"]["test"])
        assert any(v.endswith(":/data") for v in service["volumes"])
        assert service["build"]["secrets"] == ["cabundle"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    # the default build secret exists and holds no certificate (pip keeps its own bundle)
    assert compose["secrets"]["cabundle"]["file"] == "${CA_BUNDLE:-./docker/no-ca-bundle.pem}"
    assert NO_CA.is_file() and "BEGIN CERTIFICATE" not in NO_CA.read_text()


def test_models_folder_from_the_environment(colour_models, tmp_path):
    """The images point every command at their models with SIXVIEW_MODELS; --models still wins."""
    photo = tmp_path / "red.jpg"
    photo.write_bytes(jpeg(grey_with_square(640, 480, "top_left", 120, (255, 0, 0))))
    r = CliRunner().invoke(main, ["scan", str(photo)], env={"SIXVIEW_MODELS": str(colour_models)})
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.splitlines()[0])["labels"] == ["red"]
    r = CliRunner().invoke(main, ["scan", str(photo)], env={"SIXVIEW_MODELS": str(tmp_path / "none")})
    assert r.exit_code == 2 and str(tmp_path / "none") in r.output
    r = CliRunner().invoke(main, ["scan", str(photo), "--models", str(colour_models)],
                           env={"SIXVIEW_MODELS": str(tmp_path / "none")})
    assert r.exit_code == 0, r.output


# -- podman ------------------------------------------------------------------------------------------
class Podman:
    """`podman` on the test's own storage and settings."""

    def __init__(self, env: dict[str, str]):
        self.env = env

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        try:
            r = subprocess.run(["podman", *args], env=self.env, cwd=REPO, capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"podman {' '.join(args)}: no answer in {timeout} s") from e
        if check and r.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: exit {r.returncode}\n{r.stderr[-4000:]}")
        return r


STORAGE_CONF = """[storage]
driver = "overlay"
runroot = "{state}/run"
graphroot = "{state}/storage"
"""
# Without these two, containers fail in a sandbox like CI's: crun's setrlimit is refused, and the default
# runtime does not support cgroups in hybrid mode.
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
"""


def why_podman_cannot_run() -> str | None:
    if sys.platform != "linux":
        return "the container tests need Linux"
    if os.geteuid() != 0:
        return "the container tests need root (debootstrap and rootful podman)"
    for tool in ("podman", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (.ci/run installs podman, buildah, debootstrap and runc)"
    return None


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    reason = why_podman_cannot_run()
    if reason:
        pytest.skip(reason)
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / "storage.conf").write_text(STORAGE_CONF.format(state=STATE))
    (STATE / "containers.conf").write_text(CONTAINERS_CONF)
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(STATE / "storage.conf"),
           "CONTAINERS_CONF": str(STATE / "containers.conf"), "BUILDAH_FORMAT": "docker"}
    pm = Podman(env)
    info = pm("info", check=False, timeout=60)
    if info.returncode != 0:
        pytest.skip(f"podman cannot run here: {(info.stderr.strip().splitlines() or ['?'])[-1]}")
    with open(STATE / "lock", "w") as lock:  # one test run at a time on this storage
        deadline = time.monotonic() + 1200
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{STATE} stayed locked by another test run for 20 minutes")
                time.sleep(2)
        pm("image", "prune", "--force", "--filter", "until=72h", check=False)  # old build stages: bounded disk
        yield pm


@pytest.fixture(scope="module")
def base(podman: Podman) -> str:
    """A Debian bookworm image made by debootstrap (docker/local-base.sh), remade when a week old."""
    r = podman("image", "inspect", "--format", "{{.Created.Unix}}", BASE, check=False)
    if r.returncode != 0 or time.time() - int(r.stdout.strip()) > BASE_MAX_AGE_S:
        t0 = time.monotonic()
        made = subprocess.run(["bash", str(DOCKER / "local-base.sh"), BASE], env=podman.env, capture_output=True,
                              text=True, timeout=900)
        assert made.returncode == 0, made.stderr[-3000:]
        print(f"\nbase image {BASE}: made in {time.monotonic() - t0:.0f} s")
    return BASE


def ca_secret() -> Path:
    return CA_BUNDLE if CA_BUNDLE.is_file() else NO_CA


@pytest.fixture(scope="module")
def image(podman: Podman, base: str) -> str:
    t0 = time.monotonic()
    podman("build", "--format", "docker", "--secret", f"id=cabundle,src={ca_secret()}", "--build-arg",
           f"BASE={base}", "-f", "docker/Dockerfile", "-t", IMAGE, ".", timeout=1500)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    print(f"\nCPU image: built in {time.monotonic() - t0:.0f} s, {size / 1e6:.0f} MB")
    return IMAGE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready_or_logs(podman: Podman, url: str, container: str, timeout: float = 120) -> float:
    """Seconds until /readyz answers 200; on a timeout, the container's log in the failure."""
    t0 = time.monotonic()
    try:
        wait_ready(url, timeout=timeout)
    except TimeoutError as e:
        logs = podman("logs", container, check=False)
        raise AssertionError(f"{e}\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}") from None
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def server(podman: Podman, image: str) -> Iterator[tuple[str, str]]:
    """The image's default command (`sixview serve`), on a free loopback port."""
    name, port = f"sixview-test-{os.getpid()}", free_port()
    podman("rm", "--force", name, check=False)
    t0 = time.monotonic()
    try:
        podman("run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:8000", image)
        url = f"http://127.0.0.1:{port}"
        wait_ready_or_logs(podman, url, name)
        print(f"\nsixview serve in the container: ready {time.monotonic() - t0:.1f} s after `podman run`")
        yield name, url
    finally:
        podman("rm", "--force", name, check=False, timeout=60)


def photos() -> list[tuple[str, bytes]]:
    """Two JPEGs: real photos from ../shared/data when there, else made here."""
    real = SHARED_DATA / "voc07_val" / "images"
    if real.is_dir():
        found = sorted(real.glob("*.jpg"))[:2]
        if len(found) == 2:
            return [(p.name, p.read_bytes()) for p in found]
    rng = np.random.default_rng(0)
    made = [grey_with_square(640, 480, "centre", 200, (200, 40, 40)), rng.integers(0, 255, (360, 480, 3), np.uint8)]
    return [(f"made{i}.jpg", jpeg(img)) for i, img in enumerate(made)]


def check_record(record: dict, classes: set[str]) -> None:
    assert RECORD_KEYS <= set(record), RECORD_KEYS - set(record)
    assert record["error"] is None, record["error"]
    assert set(record["scores"]) == classes and set(record["labels"]) <= classes
    assert all(0 <= s <= 1 for s in record["scores"].values())
    assert record["provider"] in ("openvino", "cpu") and record["engine"] in ("standard", "hd")


@pytest.mark.system  # podman: the image built and run
def test_serves_the_api_and_page(server):
    _, url = server
    with httpx.Client(base_url=url, timeout=60) as c:
        models = c.get("/v1/models").json()["models"]
        classes = set(models[0]["classes"])
        name, body = photos()[0]
        r = c.post("/v1/classify", files={"image": (name, body, "image/jpeg")})
        assert r.status_code == 200, r.text
        (record,) = r.json()["results"]
        check_record(record, classes)
        assert record["path"] == name
        page = c.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "<html" in page.text


@pytest.mark.system  # podman: the image built and run
def test_runs_as_a_user_other_than_root_and_passes_its_health_check(podman, server):
    name, _ = server
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    # the code and models are not the user's to change
    assert podman("exec", name, "touch", "/opt/sixview/models/x", check=False).returncode != 0
    assert podman("healthcheck", "run", name, timeout=60, check=False).returncode == 0
    test = podman("inspect", "--format", "{{json .Config.Healthcheck.Test}}", name).stdout
    assert "/healthz" in test


@pytest.mark.system  # podman: the image built and run
def test_scan_of_a_mounted_folder(podman, image, tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    names = []
    for name, body in photos():
        (data / name).write_bytes(body)
        names.append(name)
    data.chmod(0o777)  # a folder the container's user (10001) may write to
    r = podman("run", "--rm", "--volume", f"{data}:/data", image, "sixview", "scan", "/data", "--out",
               "/data/out.jsonl", timeout=300)
    assert "scanned 2 images" in r.stderr, r.stderr
    out = data / "out.jsonl"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(rec["path"] for rec in records) == sorted(f"/data/{n}" for n in names)
    for rec in records:
        check_record(rec, set(records[0]["scores"]))
    assert out.stat().st_uid == 10001  # written by the image's user


@pytest.mark.system  # podman: the image built and run
def test_compose_up_serves_the_page(podman, image, base, tmp_path):
    compose = shutil.which("podman-compose") or str(Path(sys.executable).parent / "podman-compose")
    if not Path(compose).is_file():
        pytest.skip("podman-compose is not installed (pip install podman-compose: the dev extra)")
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    env = {**podman.env, "BASE": base, "SIXVIEW_PORT": f"127.0.0.1:{port}", "SIXVIEW_DATA": str(data),
           "CA_BUNDLE": str(ca_secret())}
    project = f"sixviewtest{os.getpid()}"
    cmd = [compose, "--project-name", project, "--file", str(REPO / "compose.yaml")]

    def run(*args: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run([*cmd, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)

    try:
        up = run("up", "--detach", "--build", timeout=900)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        container = f"{project}_sixview_1"
        url = f"http://127.0.0.1:{port}"
        wait_ready_or_logs(podman, url, container)
        page = httpx.get(url + "/", timeout=30)
        assert page.status_code == 200 and "<html" in page.text
        policy = podman("inspect", "--format", "{{.HostConfig.RestartPolicy.Name}}", container).stdout.strip()
        assert policy == "unless-stopped"
    finally:
        run("down", "--volumes", "--timeout", "5", timeout=120)
