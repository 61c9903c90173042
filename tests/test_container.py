"""The container images (docker/, compose.yaml) and `make docker` (docker/up.sh).

Unit: the Dockerfiles (Docker's parser): one layout, pinned versions, labelled build stages; compose.yaml, its
memory limit included. Integration: docker/up.sh with a fake podman, podman-compose and daemon-less docker.
System, where podman runs (root; .ci/run installs it): the CPU image from a debootstrap base serves, scans, runs
as 10001, is healthy and within the memory limit under a burst; `make docker` brings compose.yaml up on podman
(the API key reaches it; with none set a photo is classified; /data is writable; healthy). Storage:
$SIXVIEW_PODMAN_DIR (container_fixtures.py).
"""
# ruff: noqa: F811 (the podman fixtures are imported from container_fixtures, then named as arguments)

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import container_helpers as h
import httpx
import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO, grey_with_square
from container_fixtures import API_KEY, base, image, made_docker, made_docker_without_key, podman, server  # noqa: F401 (fixtures)
from serve_helpers import jpeg

from edge.cli import main

DOCKERFILES, DEFAULT_BASE, NO_CA = h.DOCKERFILES, h.DEFAULT_BASE, h.DOCKER / "no-ca-bundle.pem"
CMD = ["sixview", "serve", "--host", "0.0.0.0"]
COMPOSE = yaml.safe_load((REPO / "compose.yaml").read_text())
HEADROOM = 1.5  # compose.yaml's memory limit over the server's peak resident memory in a burst (docs/docker.md)
LABEL = "io.sixview.stage=build"


def test_the_three_dockerfiles_share_one_layout():
    layouts = {name: h.layout(path) for name, path in DOCKERFILES.items()}
    cpu = layouts["cpu"]
    assert cpu["USER"][1] == ("10001:10001",)  # numeric: Kubernetes' runAsNonRoot can check it
    assert cpu["WORKDIR"][1] == ("/data",)
    assert cpu["EXPOSE"][1] == ("8000",)
    assert cpu["CMD"] == ((), tuple(CMD), True)  # exec form
    # the CUDA image has no TensorRT: its server never tries it (--device auto would, first)
    assert layouts["cuda"]["CMD"] == ((), (*CMD, "--device", "cuda"), True)
    flags, test, _ = cpu["HEALTHCHECK"]
    assert test[0] == "CMD" and test[1] == "python" and "urllib.request" in test[3] and "/healthz" in test[3]
    assert {f.split("=")[0] for f in flags} == {"--interval", "--timeout", "--start-period", "--retries"}
    assert cpu["ENV"]["SIXVIEW_MODELS"] == "/opt/sixview/models"
    assert cpu["ENV"]["PATH"].startswith("/opt/sixview/venv/bin:")
    for name, found in layouts.items():
        assert "ENTRYPOINT" not in found, name  # any `sixview ...` command runs as given
        assert "LABEL" not in found, name  # the image is not pruned with the build stages
        for key in ("USER", "WORKDIR", "EXPOSE", "HEALTHCHECK"):
            assert found[key] == cpu[key], (name, key)
        shared = {k: v for k, v in found["ENV"].items() if not k.startswith("NVIDIA_")}
        assert shared == cpu["ENV"], name
        assert found["RUN"][0] == cpu["RUN"][0], name  # the same user, /data and cache folder
        copied = {value[-1]: flags for flags, value in found["COPY"]}
        assert copied["/opt/sixview/models"] == ("--from=models",) and copied["/opt/sixview/venv"] == ("--from=venv",)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_each_dockerfile_builds_on_its_base_and_keeps_the_secret_out(name):
    args, all_stages = h.stages(DOCKERFILES[name])
    assert args["BASE"].startswith(DEFAULT_BASE[name])
    assert all_stages[0][0].value[0] == "${BASE}"  # the base is a build argument (a local one works)
    names = [s[0].value[-1] for s in all_stages[:-1]]
    assert names == ["python", "venv", "wheel", "models"]
    assert all_stages[-1][0].value == ("python",)  # the image holds no build tools or caches
    extras, installs = [], []
    for stage in all_stages:
        for c in stage:
            joined = " ".join(c.value)
            if "requirements.py /src/pyproject.toml" in joined:
                extras += joined.split("requirements.py /src/pyproject.toml")[1].split(">")[0].split()
            if c.cmd.upper() == "RUN" and ("-r /src/requirements.txt" in joined or "pip wheel" in joined):
                # pip reaches the network: the CA bundle comes as a secret (absent: fine), the cache as a mount
                assert "--mount=type=secret,id=cabundle,required=false" in c.flags, (name, joined)
                assert "--mount=type=cache,target=/root/.cache/pip" in c.flags, (name, joined)
                assert 'grep -qs "BEGIN CERTIFICATE" /run/secrets/cabundle' in joined
                installs += re.findall(r"pip install (.*?-r /src/requirements.txt)", joined)
            if c.cmd.upper() == "RUN":
                # a file a release renames or drops never breaks the build
                assert not re.search(r"\brm (?!-[a-z]*f)", joined), (name, joined)
                # apt's downloads do not stay in a layer (a debootstrap base keeps them)
                assert "apt-get install" not in joined or "apt-get clean" in joined, (name, joined)
            if c.cmd.upper() in ("COPY", "ADD"):
                assert not any("secret" in v or "ca-certificates" in v for v in c.value)
    # the runtime only (no TensorFlow: `train`; no test tools: `dev`), at the versions pinned (not on JetPack 6's
    # Python 3.10: most of the pinned versions need 3.11)
    assert extras == {"cpu": ["cpu", "serve"], "cuda": ["gpu", "serve"], "jetson": ["serve"]}[name]
    assert len(installs) == 1 and installs[0].startswith("-c /src/constraints.txt ") == (name != "jetson")
    labels = {s[0].value[-1]: ["=".join(c.value) for c in s if c.cmd.upper() == "LABEL"] for s in all_stages[:-1]}
    assert labels["python"] == [] and labels["venv"] == [LABEL] and labels["models"] == [LABEL]  # pruned by up.sh


def test_constraints_pin_every_runtime_requirement():
    """docker/constraints.txt pins each requirement of the images' extras within pyproject.toml's range."""
    from packaging.utils import canonicalize_name

    constraints = h.load_module(h.DOCKER / "constraints.py")
    pins = h.pinned(h.DOCKER / "constraints.txt")
    for req in constraints.top_level(REPO / "pyproject.toml", constraints.EXTRAS):
        name = canonicalize_name(req.name)
        if name == "onnxruntime-gpu":  # pinned in pyproject.toml itself, at onnxruntime's version
            assert str(req.specifier) == f"=={pins['onnxruntime']}"
            continue
        assert name in pins, f"{req} is not pinned: run .venv/bin/python docker/constraints.py"
        assert req.specifier.contains(pins[name], prereleases=True), (req, pins[name])


def test_compose_file():
    cpu, gpu = COMPOSE["services"]["sixview"], COMPOSE["services"]["sixview-gpu"]
    assert "profiles" not in cpu and gpu["profiles"] == ["gpu"]
    assert cpu["build"]["dockerfile"] == "docker/Dockerfile" and gpu["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    assert cpu["build"]["args"]["BASE"].startswith("${BASE:-python:3.11-slim")
    assert cpu["ports"] == ["${SIXVIEW_PORT:-8000}:8000"]
    for service in (cpu, gpu):
        assert service["restart"] == "unless-stopped" and "/healthz" in " ".join(service["healthcheck"]["test"])
        assert any(v.endswith(":/data") for v in service["volumes"]) and service["build"]["secrets"] == ["cabundle"]
        assert service["environment"]["SIXVIEW_API_KEY"] == "${SIXVIEW_API_KEY:-}"
        assert service["mem_limit"] == "${SIXVIEW_MEMORY:-2g}"  # a limit, which the system test measures against
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    # the default build secret exists and holds no certificate (pip keeps its own bundle)
    assert COMPOSE["secrets"]["cabundle"]["file"] == "${CA_BUNDLE:-./docker/no-ca-bundle.pem}"
    assert NO_CA.is_file() and "BEGIN CERTIFICATE" not in NO_CA.read_text()


def test_the_docs_start_with_make_docker():
    text = (REPO / "docs" / "docker.md").read_text()
    assert text.split("```bash\n", 1)[1].startswith("make docker")  # the first command shown
    assert "nvidia-ctk cdi generate" in text and "CONTAINERS_CONF" in text
    assert "\ndocker:\n\tdocker/up.sh up\n" in (REPO / "Makefile").read_text()


def test_models_folder_from_the_environment(colour_models, tmp_path):
    """The images point every command at their models with SIXVIEW_MODELS; --models still wins."""
    (photo := tmp_path / "red.jpg").write_bytes(jpeg(grey_with_square(640, 480, "top_left", 120, (255, 0, 0))))
    r = CliRunner().invoke(main, ["scan", str(photo)], env={"SIXVIEW_MODELS": str(colour_models)})
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.splitlines()[0])["labels"] == ["red"]
    r = CliRunner().invoke(main, ["scan", str(photo)], env={"SIXVIEW_MODELS": str(tmp_path / "none")})
    assert r.exit_code == 2 and str(tmp_path / "none") in r.output
    r = CliRunner().invoke(main, ["scan", str(photo), "--models", str(colour_models)], env={"SIXVIEW_MODELS": "/no"})
    assert r.exit_code == 0, r.output


@pytest.mark.integration  # bash and the fake engine as subprocesses (about 5 s)
def test_up_refuses_podman_compose_1_0_3_in_one_line(tmp_path):
    r = h.up_sh({**h.fake_engine(tmp_path, "1.0.3"), "SIXVIEW_COMPOSE": str(tmp_path / "bin/podman-compose")})
    assert r.returncode == 1
    (line,) = r.stderr.strip().splitlines()  # before anything is built, one line that says what to do
    assert "1.0.3" in line and "pip install 'podman-compose>=1.6'" in line and "SIXVIEW_COMPOSE=" in line
    assert " build " not in (tmp_path / "log").read_text()


@pytest.mark.integration  # bash and the fake engine as subprocesses
def test_up_on_podman_without_daemon_systemd_or_registry(tmp_path):
    env = h.fake_engine(tmp_path, rlimit=True, health_after=3)
    r = h.up_sh(env)
    try:
        assert r.returncode == 0, r.stderr
        assert "healthy" in r.stdout
        log = (tmp_path / "log").read_text()
        assert "docker info" in log and "podman-compose -p faketest -f compose.yaml build sixview" in log
        # the rlimit refusal: a containers.conf with this host's own limits, used by every later call
        conf = (tmp_path / "state" / "containers.conf").read_text()
        nofile = subprocess.run(["bash", "-c", "ulimit -Hn"], capture_output=True, text=True).stdout.strip()
        assert f'"nofile={nofile}:{nofile}"' in conf and "[containers]" in conf
        nproc = int(re.search(r'"nproc=(\d+):', conf)[1])  # lowered until the fake runc took it
        assert 16384 < nproc <= 32768, conf
        assert f"up -d sixview | SIXVIEW_DATA={tmp_path / 'data'} CONTAINERS_CONF={tmp_path / 'state'}" in log
        assert "BUILDAH_FORMAT=docker" in log  # keeps the HEALTHCHECK
        # ./data created here, then handed to uid 10001 (group: yours) through the engine, no sudo
        assert (tmp_path / "data").is_dir() and f"chown 10001:{os.getgid()} /data && chmod 2775 /data" in log
        assert log.count("healthcheck run fakecid") >= 3  # run by up.sh: no systemd timers
        assert f"image prune --force --filter label={LABEL}" in log
        assert (tmp_path / "state/health-faketest.pid").is_file() == (not Path("/run/systemd/system").is_dir())
    finally:
        down = h.up_sh(env, "down")
    assert down.returncode == 0, down.stderr
    assert not (tmp_path / "state" / "health-faketest.pid").exists()


@pytest.mark.integration  # bash and the fake engine as subprocesses
@pytest.mark.parametrize("engine", ["podman", "docker"])  # docker: a daemon that answers, `docker compose`
def test_up_waits_a_bounded_time_and_shows_the_log(tmp_path, engine):
    env = h.fake_engine(tmp_path, rlimit=False, health_after=-1, docker_daemon=engine == "docker")
    t0 = time.monotonic()
    r = h.up_sh({**env, "SIXVIEW_WAIT": "3"})
    assert r.returncode == 1 and time.monotonic() - t0 < 30 and f"engine {engine}," in r.stderr
    assert "not healthy after 3 s" in r.stderr and "fake server log: the last line" in r.stderr
    log = (tmp_path / "log").read_text()
    assert "CONTAINERS_CONF=/" not in log  # podman ran as it was: nothing written
    assert ("docker compose -p faketest -f compose.yaml up -d sixview" in log) == (engine == "docker")


@pytest.mark.system  # podman: the image built and run
def test_serves_the_api_and_page(server):
    _, url = server
    with httpx.Client(base_url=url, timeout=60) as c:
        models = c.get("/v1/models").json()["models"]
        classes = set(models[0]["classes"])
        name, body = h.photos()[0]
        r = c.post("/v1/classify", files={"image": (name, body, "image/jpeg")})
        assert r.status_code == 200, r.text
        (record,) = r.json()["results"]
        h.check_record(record, classes)
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
def test_peak_memory_under_a_burst_fits_the_compose_limit(podman, server):
    """The server's peak resident memory, 24 requests at once (72 images), with the limit's headroom."""
    name, url = server
    pid = int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout)

    before = h.peak_rss_mb(pid)  # the models loaded, one request served
    t0 = time.monotonic()
    codes = h.post_burst(url)
    assert codes == [200] * 24, codes
    peak = h.peak_rss_mb(pid)
    limit = h.memory_limit() / 2**20
    print(f"\nburst of 24 x 3 images: {time.monotonic() - t0:.0f} s, server peak RSS {before:.0f} MiB before, "
          f"{peak:.0f} MiB after (compose.yaml's limit {limit:.0f} MiB)")
    assert peak * HEADROOM <= limit, (peak, limit)


@pytest.mark.system  # podman: the image built and run
def test_scan_of_a_mounted_folder(podman, image, tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    names = [name for name, body in h.photos() if (data / name).write_bytes(body)]
    # the folder made writable for the container's user (10001) as the docs say: docker/up.sh data
    prepared = h.up_sh({**podman.env, "SIXVIEW_IMAGE": image, "SIXVIEW_STATE_DIR": str(tmp_path)}, "data", str(data))
    assert prepared.returncode == 0, prepared.stderr
    assert data.stat().st_uid == 10001 and data.stat().st_mode & 0o2070 == 0o2070  # group: still yours
    r = podman("run", "--rm", "--volume", f"{data}:/data", image, "sixview", "scan", "/data", "--out",
               "/data/out.jsonl", timeout=300)
    assert "scanned 2 images" in r.stderr, r.stderr
    out = data / "out.jsonl"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(rec["path"] for rec in records) == sorted(f"/data/{n}" for n in names)
    for rec in records:
        h.check_record(rec, set(records[0]["scores"]))
    assert out.stat().st_uid == 10001  # written by the image's user


@pytest.mark.system  # podman: `make docker`
def test_make_docker_serves_the_api_with_the_key_set_through_compose(podman, made_docker):
    url, cid = made_docker["url"], made_docker["cid"]
    assert "healthy" in made_docker["out"].stdout
    assert podman("inspect", "--format", "{{.State.Health.Status}}", cid).stdout.strip() == "healthy"
    with httpx.Client(base_url=url, timeout=60) as c:
        assert c.get("/v1/models").status_code == 401  # the key reached the server: not the text ${...}
        auth = {"Authorization": f"Bearer {API_KEY}"}
        assert c.get("/v1/models", headers=auth).json()["models"]  # 200 with the models
        name, body = h.photos()[0]
        r = c.post("/v1/classify", files={"image": (name, body, "image/jpeg")}, headers=auth)
        assert r.status_code == 200, r.text
        assert c.get("/").status_code == 200
    host = podman("inspect", "--format", "{{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}}", cid).stdout
    assert host.split() == [str(h.memory_limit()), "unless-stopped"]


@pytest.mark.system  # podman: `make docker`, SIXVIEW_API_KEY unset
def test_make_docker_without_a_key_classifies_a_photo(podman, made_docker_without_key):
    made = made_docker_without_key
    assert podman("inspect", "--format", "{{.State.Health.Status}}", made["cid"]).stdout.strip() == "healthy"
    with httpx.Client(base_url=made["url"], timeout=60) as c:
        classes = set(c.get("/v1/models").json()["models"][0]["classes"])  # no key asked for
        name, body = h.photos()[0]
        r = c.post("/v1/classify", files={"image": (name, body, "image/jpeg")})
        assert r.status_code == 200, r.text
        (record,) = r.json()["results"]
        h.check_record(record, classes)
        assert isinstance(record["labels"], list) and record["path"] == name


@pytest.mark.system  # podman: `make docker`
def test_make_docker_data_folder_is_writable_inside(podman, made_docker):
    data, cid = made_docker["data"], made_docker["cid"]
    assert data.is_dir() and data.stat().st_uid == 10001  # created by up.sh, handed to the image's user
    assert data.stat().st_mode & 0o7070 == 0o2070  # and the host user's group may still write there (setgid)
    for name, body in h.photos():
        (data / name).write_bytes(body)
    r = podman("exec", cid, "sixview", "scan", "/data", "--out", "/data/out.jsonl", timeout=300)
    assert "scanned 2 images" in r.stderr, r.stderr
    assert (data / "out.jsonl").stat().st_uid == 10001


@pytest.mark.system  # podman: `make docker`
def test_make_docker_leaves_build_stages_it_can_prune_and_an_image_it_cannot(podman, made_docker):
    assert "default_ulimits" in (made_docker["state"] / "containers.conf").read_text()  # up.sh's, for this host
    stages_left = podman("images", "-a", "-q", "--filter", f"label={LABEL}", "--filter", "dangling=true").stdout.split()
    assert stages_left, "no labelled build stage: `podman image prune --filter label=...` would not find them"
    labels = podman("image", "inspect", "--format", "{{json .Labels}}", "sixview:cpu").stdout
    assert "io.sixview.stage" not in labels
