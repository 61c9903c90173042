"""The podman fixtures of tests/test_container.py: the tests' own storage, the base, the image, a server, and
compose.yaml brought up by `make docker` (docker/up.sh)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from container_helpers import (
    CONTAINERS_CONF,
    DOCKER,
    STORAGE_CONF,
    Podman,
    free_port,
    up_sh,
    wait_ready_or_logs,
    why_podman_cannot_run,
)

STATE = Path(os.environ.get("SIXVIEW_PODMAN_DIR", "/var/tmp/sixview-podman"))
BASE = "localhost/debian:bookworm-slim"
BASE_MAX_AGE_S = 7 * 86400
IMAGE = "localhost/sixview:test"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
NO_CA = DOCKER / "no-ca-bundle.pem"
API_KEY = "container-test-key"


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


@contextlib.contextmanager
def compose_up(podman: Podman, base: str, tmp: Path, api_key: str | None) -> Iterator[dict]:
    """`make docker` as a user runs it: docker/up.sh finds podman (no daemon, systemd or registry), writes its
    containers.conf itself (CONTAINERS_CONF unset), builds compose.yaml's image, creates ./data and waits for
    the health check; `api_key` None: SIXVIEW_API_KEY unset. The tests' storage and build cache are shared
    (the image fixture built the layers); each call is its own compose project on its own port."""
    env = {k: v for k, v in podman.env.items() if k not in ("CONTAINERS_CONF", "BUILDAH_FORMAT", "SIXVIEW_API_KEY")}
    port = free_port()
    env.update({"BASE": base, "SIXVIEW_PORT": f"127.0.0.1:{port}", "SIXVIEW_DATA": str(tmp / "data"),
                "COMPOSE_PROJECT_NAME": f"sixviewtest{os.getpid()}{'k' if api_key else 'n'}",
                "SIXVIEW_STATE_DIR": str(tmp / "state"), "SIXVIEW_KEEP_BUILD_STAGES": "1",
                "SIXVIEW_HEALTH_INTERVAL": "5", "SIXVIEW_WAIT": "240", "CA_BUNDLE": str(ca_secret())})
    if api_key:
        env["SIXVIEW_API_KEY"] = api_key
    t0 = time.monotonic()
    up = up_sh(env, "up", timeout=1500)
    took = time.monotonic() - t0
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-5000:]
        print(f"\nmake docker (docker/up.sh) on podman: healthy {took:.0f} s after the start")
        cid = podman("ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={env['COMPOSE_PROJECT_NAME']}",
                     "--filter", "label=com.docker.compose.service=sixview").stdout.split()[0]
        yield {"env": env, "url": f"http://127.0.0.1:{port}", "cid": cid, "data": tmp / "data", "out": up,
               "state": tmp / "state"}
    finally:
        down = up_sh(env, "down", timeout=300)
        assert down.returncode == 0, down.stderr[-3000:]
        assert not (tmp / "state" / f"health-{env['COMPOSE_PROJECT_NAME']}.pid").exists()


@pytest.fixture(scope="module")
def made_docker(podman: Podman, base: str, image: str, tmp_path_factory) -> Iterator[dict]:
    """compose.yaml brought up by `make docker` with SIXVIEW_API_KEY set."""
    with compose_up(podman, base, tmp_path_factory.mktemp("make-docker"), API_KEY) as made:
        yield made


@pytest.fixture(scope="module")
def made_docker_without_key(podman: Podman, base: str, image: str, tmp_path_factory) -> Iterator[dict]:
    """compose.yaml brought up by `make docker` with SIXVIEW_API_KEY unset (the default)."""
    with compose_up(podman, base, tmp_path_factory.mktemp("make-docker-no-key"), None) as made:
        yield made
