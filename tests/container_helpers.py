"""Helpers of tests/test_container.py: the Dockerfiles read, podman on the tests' own storage, a fake engine."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from conftest import REPO, SHARED_DATA, grey_with_square
from serve_helpers import jpeg, wait_ready

DOCKER = REPO / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile", "cuda": DOCKER / "Dockerfile.cuda", "jetson": DOCKER / "Dockerfile.jetson"}
DEFAULT_BASE = {"cpu": "python:3.11-slim", "cuda": "nvidia/cuda:", "jetson": "nvcr.io/nvidia/l4t-jetpack:r36"}
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


def size_bytes(text: str) -> int:
    """'2g', '1536m', '512M' -> bytes (compose's memory sizes)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("b")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def memory_limit() -> int:
    """compose.yaml's default memory limit of the CPU service, in bytes."""
    limit = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["sixview"]["mem_limit"]
    return size_bytes(limit.split(":-")[1].rstrip("}"))


def pinned(path: Path) -> dict[str, str]:
    """{canonical name: version} of a constraints file's `name==version` lines."""
    from packaging.utils import canonicalize_name

    lines = [line.partition("==") for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return {canonicalize_name(name): version for name, _, version in lines}


def post_burst(url: str) -> list[int]:
    """The burst's requests all at once; their status codes."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    def post(files: list[tuple[str, bytes]]) -> int:
        body = [("image", (n, b, "image/jpeg")) for n, b in files]
        return httpx.post(url + "/v1/classify", files=body, timeout=300).status_code

    bodies = burst_bodies()
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


def load_module(path: Path):
    """A module from a file outside the packages (docker/constraints.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def burst_bodies() -> list[list[tuple[str, bytes]]]:
    """24 requests of 3 images: two photos and a 6 MP one (a 4.6 MB JPEG of noise: the costliest to decode)."""
    big = jpeg(np.random.default_rng(1).integers(0, 255, (2000, 3000, 3), np.uint8), quality=85)
    return [[*photos(), (f"big{i}.jpg", big)] for i in range(24)]


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
# runtime does not support cgroups in hybrid mode. (docker/up.sh writes the same when podman needs it.)
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready_or_logs(podman: Podman, url: str, container: str, timeout: float = 120) -> float:
    """Seconds until /readyz answers 200; on a timeout, the container's log in the failure."""
    import time

    t0 = time.monotonic()
    try:
        wait_ready(url, timeout=timeout)
    except TimeoutError as e:
        logs = podman("logs", container, check=False)
        raise AssertionError(f"{e}\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}") from None
    return time.monotonic() - t0


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


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory (VmHWM) of a process and its children, in MiB (root: any container's process)."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
        children = Path(f"/proc/{p}/task/{p}/children")
        if children.is_file():
            pids += [int(c) for c in children.read_text().split()]
    return total / 1024


# -- a fake engine for docker/up.sh: podman, podman-compose and a docker whose daemon is down ----------
FAKE_PODMAN = r"""#!/usr/bin/env bash
# podman, as docker/up.sh sees it on a Debian 12 host without daemon or systemd (settings: FAKE_*)
echo "podman $* | CONTAINERS_CONF=${CONTAINERS_CONF:-} BUILDAH_FORMAT=${BUILDAH_FORMAT:-}" >>"$FAKE_DIR/log"
case "$1 $2" in
  "--version "*|"version "*) echo "podman version 4.3.1" ;;
  "image exists") [ "$3" = localhost/debian:bookworm-slim ] ;;
  "image prune") ;;
  "info --format") echo false ;;
  "ps -a") echo fakecid ;;
  "logs --tail") echo "fake server log: the last line" ;;
  "healthcheck run")
    n=$(( $(cat "$FAKE_DIR/health" 2>/dev/null || echo 0) + 1 )); echo $n >"$FAKE_DIR/health"
    [ "$FAKE_HEALTH_AFTER" -ge 0 ] && [ $n -ge "$FAKE_HEALTH_AFTER" ] ;;
  "inspect --format")
    if [ -e "$FAKE_DIR/down" ]; then echo false; exit 0; fi
    case "$3" in *Running*) echo true ;; *) echo running ;; esac ;;
  "run --rm")
    if [ "$FAKE_RLIMIT" = 1 ] && [ -z "${CONTAINERS_CONF:-}" ]; then
      echo 'Error: runc: runc create failed: unable to start container process: error during container init:' \
        'error setting rlimit type 7: operation not permitted: OCI runtime permission denied error' >&2; exit 126
    fi
    nproc=$(sed -n 's/.*"nproc=\([0-9]*\):.*/\1/p' "${CONTAINERS_CONF:-/dev/null}")  # this sandbox: <= 32768
    if [ -n "$nproc" ] && [ "$nproc" -gt 32768 ]; then
      echo 'Error: runc: runc create failed: error setting rlimits for ready process: error setting rlimit type 6:' \
        'operation not permitted: OCI permission denied' >&2; exit 126
    fi
    case "$*" in *chown*) touch "$FAKE_DIR/chowned" ;; *touch*) [ -e "$FAKE_DIR/chowned" ] ;; esac ;;
esac
"""
FAKE_COMPOSE = r"""#!/usr/bin/env bash
echo "podman-compose $* | SIXVIEW_DATA=${SIXVIEW_DATA:-} CONTAINERS_CONF=${CONTAINERS_CONF:-}" >>"$FAKE_DIR/log"
case "$1 $FAKE_COMPOSE_VERSION" in  # as each prints it (Debian 12's 1.0.3: "podman-composer version  1.0.3")
  "version 1.0."*) printf 'using podman version: 4.3.1\npodman-composer version  %s\n' "$FAKE_COMPOSE_VERSION" ;;
  "version "*) echo "podman-compose version $FAKE_COMPOSE_VERSION"; echo "podman version 4.3.1" ;;
esac
case " $* " in *" down "*) touch "$FAKE_DIR/down" ;; esac
"""
FAKE_DOCKER = r"""#!/usr/bin/env bash
echo "docker $*" >>"$FAKE_DIR/log"
case "$1" in --version) echo "Docker version 28.2.2, build e6534b4" ;;
  *) echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2; exit 1 ;; esac
"""


# Docker whose daemon answers: the fake podman's answers, `docker compose` v2 inside
FAKE_DOCKER_UP = FAKE_PODMAN.replace('echo "podman $*', 'echo "docker $*').replace(
    'echo "podman version 4.3.1"', 'echo "Docker version 28.2.2"').replace('case "$1 $2" in', """case "$1 $2" in
  "compose version") echo "Docker Compose version v2.29.7" ;;
  "compose "*) ;;""")


def fake_engine(tmp: Path, compose_version: str = "1.6.0", rlimit: bool = True, health_after: int = 3,
                docker_daemon: bool = False) -> dict:
    """A PATH with the fake podman, podman-compose and docker first; the environment docker/up.sh runs with."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    docker = FAKE_DOCKER_UP if docker_daemon else FAKE_DOCKER
    for name, text in (("podman", FAKE_PODMAN), ("podman-compose", FAKE_COMPOSE), ("docker", docker)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR")}
    return {**keep, "PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_DIR": str(tmp), "FAKE_COMPOSE_VERSION": compose_version,
            "FAKE_RLIMIT": "1" if rlimit else "0", "FAKE_HEALTH_AFTER": str(health_after),
            "SIXVIEW_STATE_DIR": str(tmp / "state"), "SIXVIEW_DATA": str(tmp / "data"),
            "COMPOSE_PROJECT_NAME": "faketest", "SIXVIEW_HEALTH_INTERVAL": "1"}


def up_sh(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(DOCKER / "up.sh"), *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
