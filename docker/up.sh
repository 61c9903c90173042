#!/usr/bin/env bash
# `make docker`: sixview serve from compose.yaml on Docker or podman, as written, until its health check passes.
#   docker/up.sh [up]       build and start the CPU service, wait until it is healthy (bounded), print its address
#   docker/up.sh down       stop it (and the health-check loop podman needs on a host without systemd)
#   docker/up.sh data DIR   make DIR (created if missing) writable by the image's user, uid 10001, without sudo
#                           (the image built: after `make docker`, or SIXVIEW_IMAGE=the image's name)
# What it does for podman on a host without a daemon, systemd or registry (Debian 12's podman 4.3):
#   - a base image: $BASE, else localhost/debian:bookworm-slim, else python:3.11-slim-bookworm pulled, else one
#     made by docker/local-base.sh (root, debootstrap);
#   - containers that start: when `podman run` is refused (`error setting rlimit`, crun's `setrlimit`, cgroups),
#     a containers.conf with this host's own limits (and runc) in .cache/sixview-podman/, used through
#     CONTAINERS_CONF (export it yourself for other podman commands: the script prints the line);
#   - the health check: podman runs it from systemd timers only; without systemd this script runs
#     `podman healthcheck run` while it waits, then a loop in the background every 30 s (stopped by `down`);
#   - a compose tool that reads compose.yaml correctly: podman-compose 1.1 or newer (1.0.x, Debian 12's, passes
#     `${SIXVIEW_API_KEY:-}` as text, mangles the health check and ignores profiles: refused).
# Settings (environment): SIXVIEW_ENGINE=docker|podman (default: Docker when its daemon answers, else podman),
#   SIXVIEW_COMPOSE (the compose command), SIXVIEW_WAIT (seconds to wait for healthy, default 300),
#   SIXVIEW_KEEP_BUILD_STAGES=1 (keep the build stages' images, ~600 MB: faster rebuilds), COMPOSE_PROJECT_NAME
#   (default sixview), and compose.yaml's: SIXVIEW_PORT, SIXVIEW_DATA (default ./data), SIXVIEW_API_KEY, BASE,
#   CA_BUNDLE (default: this machine's bundle, when it has one).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SERVICE=sixview
IMAGE=${SIXVIEW_IMAGE:-sixview:cpu}  # compose.yaml's CPU image
APP_UID=10001
LOCAL_BASE=localhost/debian:bookworm-slim
STATE=${SIXVIEW_STATE_DIR:-$ROOT/.cache/sixview-podman}  # containers.conf, the health loop's pid
PROJECT=${COMPOSE_PROJECT_NAME:-sixview}
WAIT=${SIXVIEW_WAIT:-300}
HEALTH_INTERVAL=${SIXVIEW_HEALTH_INTERVAL:-30}
MIN_PODMAN_COMPOSE=1.1

say() { echo "up.sh: $*" >&2; }
die() { say "$*"; exit 1; }

pick_engine() {
    if [ -n "${SIXVIEW_ENGINE:-}" ]; then ENGINE=$SIXVIEW_ENGINE; return; fi
    # a docker command that is podman's shim, or whose daemon does not answer, is not Docker
    if command -v docker >/dev/null && ! docker --version 2>/dev/null | grep -qi podman \
        && timeout 20 docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null; then
        ENGINE=podman
    else
        die "neither a running Docker nor podman found (Debian: apt-get install podman; or start the Docker daemon)"
    fi
}

version_at_least() {  # version_at_least 1.0.3 1.1
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}

pick_compose() {
    if [ "$ENGINE" = docker ]; then
        if [ -n "${SIXVIEW_COMPOSE:-}" ]; then read -ra COMPOSE <<<"$SIXVIEW_COMPOSE"
        elif docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
        elif command -v docker-compose >/dev/null \
            && version_at_least "$(docker-compose version --short 2>/dev/null || echo 0)" 2; then COMPOSE=(docker-compose)
        else die "Docker Compose v2 is not installed (compose.yaml's build secrets need it; Debian:" \
            "apt-get install docker-compose-plugin, from Docker's apt repository)"
        fi
        return
    fi
    local found="" c v candidates=("$(command -v podman-compose || true)" "$ROOT/.venv/bin/podman-compose")
    [ -z "${SIXVIEW_COMPOSE:-}" ] || candidates=("$SIXVIEW_COMPOSE")
    for c in "${candidates[@]}"; do
        [ -n "$c" ] && { [ -x "${c%% *}" ] || command -v "${c%% *}" >/dev/null 2>&1; } || continue
        v=$($c version 2>/dev/null | sed -n 's/.*podman-composer\{0,1\} version:\{0,1\} *\([0-9][0-9.]*\).*/\1/p' | tail -n 1)
        if [ -n "$v" ] && version_at_least "$v" "$MIN_PODMAN_COMPOSE"; then read -ra COMPOSE <<<"$c"; return; fi
        found="${found:+$found, }$c ${v:-(no version)}"
    done
    die "${found:-podman-compose: not installed}: podman-compose $MIN_PODMAN_COMPOSE or newer is needed (1.0.x mishandles" \
        "compose.yaml); install one in a venv: python3 -m venv ~/.local/podman-compose &&" \
        "~/.local/podman-compose/bin/pip install 'podman-compose>=1.6', then" \
        "SIXVIEW_COMPOSE=~/.local/podman-compose/bin/podman-compose make docker"
}

pick_base() {  # podman: a base that is here (no registry needed when there is one)
    if [ -n "${BASE:-}" ]; then return; fi
    if podman image exists "$LOCAL_BASE"; then export BASE=$LOCAL_BASE; return; fi
    if podman image exists python:3.11-slim-bookworm \
        || timeout 60 podman pull -q docker.io/library/python:3.11-slim-bookworm >/dev/null 2>&1; then
        export BASE=docker.io/library/python:3.11-slim-bookworm; return
    fi
    if [ "$(id -u)" = 0 ] && command -v debootstrap >/dev/null; then
        say "no registry answers: making $LOCAL_BASE with docker/local-base.sh (debootstrap, ~30 s)"
        bash docker/local-base.sh "$LOCAL_BASE" >&2
        export BASE=$LOCAL_BASE; return
    fi
    die "no base image: no registry answers; as root, run docker/local-base.sh (apt-get install debootstrap), or set BASE"
}

write_containers_conf() {  # $1 nofile, $2 nproc, $3 runc: yes|no
    mkdir -p "$STATE"
    {
        echo "# Written by docker/up.sh: podman's default limits were refused on this host ($(date -u +%F))."
        echo "[containers]"
        echo "default_ulimits = [\"nofile=$1:$1\", \"nproc=$2:$2\"]"
        if [ "$3" = yes ]; then printf '\n[engine]\nruntime = "runc"\n'; fi
    } >"$STATE/containers.conf"
    export CONTAINERS_CONF="$STATE/containers.conf"
}

check_podman_runs() {  # a refused limit (`rlimit type 7`: open files, 6: processes) is lowered until one starts
    local err nofile nproc runc=no tries=0 ok=no
    if err=$(podman run --rm --network none "$BASE" true 2>&1); then return; fi
    if [ -z "${CONTAINERS_CONF:-}" ] && printf '%s' "$err" | grep -qiE 'rlimit|cgroups'; then
        nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
        [ "$nofile" != unlimited ] || nofile=1048576
        [ "$nproc" != unlimited ] || nproc=4194304
        [ "$nproc" -le "$(cat /proc/sys/kernel/pid_max)" ] || nproc=$(cat /proc/sys/kernel/pid_max)
        if printf '%s' "$err" | grep -qiE 'crun|cgroups.*hybrid' && command -v runc >/dev/null; then runc=yes; fi
        while [ $tries -lt 8 ]; do
            write_containers_conf "$nofile" "$nproc" "$runc"
            if err=$(podman run --rm --network none "$BASE" true 2>&1); then ok=yes; break; fi
            case $err in
                *"rlimit type 7"* | *RLIMIT_NOFILE*) nofile=$((nofile / 2)) ;;
                *"rlimit type 6"* | *RLIMIT_NPROC*) nproc=$((nproc / 2)) ;;
                *) break ;;
            esac
            tries=$((tries + 1))
        done
        if [ $ok = yes ]; then
            say "podman's default limits are refused here: using $CONTAINERS_CONF (nofile $nofile, nproc $nproc;" \
                "for your own podman commands: export CONTAINERS_CONF=$CONTAINERS_CONF)"
            return
        fi
    fi
    die "podman cannot start a container: $(printf '%s' "$err" | tail -n 3)"
}

rootless() {
    if [ "$ENGINE" = podman ]; then [ "$(podman info --format '{{.Host.Security.Rootless}}')" = true ]
    else docker info --format '{{json .SecurityOptions}}' 2>/dev/null | grep -q rootless; fi
}

data_writable() {
    "$ENGINE" run --rm --network none -v "$1:/data" "$IMAGE" sh -c 'touch /data/.sixview-w && rm /data/.sixview-w' \
        >/dev/null 2>&1
}

prepare_data() {  # $1: the folder; owner 10001 in the container, group yours (rootless: root's, which is you), 2775
    local dir=$1 group
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if data_writable "$dir"; then return; fi
    if rootless; then group=0; else group=$(id -g); fi
    "$ENGINE" run --rm --network none --user 0:0 -v "$dir:/data" "$IMAGE" \
        sh -c "chown $APP_UID:$group /data && chmod 2775 /data" >/dev/null \
        || die "cannot hand $dir to uid $APP_UID; run: sudo chown $APP_UID:$(id -g) '$dir' && sudo chmod 2775 '$dir'"
    data_writable "$dir" || die "$dir is still not writable in the container (SELinux? then add :z to the volume)"
    say "$dir: owned by the container's user ($APP_UID), group-writable by you"
}

container_id() {
    "$ENGINE" ps -a -q --filter "label=com.docker.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=$SERVICE" | head -n 1
}

health_status() {  # healthy, or why not; podman without systemd: the check is run here
    if [ "$ENGINE" = podman ] && [ ! -d /run/systemd/system ]; then
        if podman healthcheck run "$1" >/dev/null 2>&1; then echo healthy; else echo starting; fi
    else
        "$ENGINE" inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$1"
    fi
}

fail_with_logs() {
    say "$1; the container's log ends:"
    "$ENGINE" logs --tail 40 "$2" >&2 2>&1 || true
    exit 1
}

wait_healthy() {
    local cid=$1 deadline=$((SECONDS + WAIT)) state status
    while :; do
        state=$("$ENGINE" inspect --format '{{.State.Status}}' "$cid" 2>/dev/null || echo gone)
        case $state in exited | dead | gone) fail_with_logs "the container stopped ($state)" "$cid" ;; esac
        status=$(health_status "$cid")
        case $status in
            healthy) return ;;
            none) fail_with_logs "the image has no health check (podman: build with BUILDAH_FORMAT=docker)" "$cid" ;;
        esac
        [ "$SECONDS" -lt "$deadline" ] || fail_with_logs "not healthy after $WAIT s (status: $status)" "$cid"
        sleep 2
    done
}

health_loop() {  # podman without systemd: the health check every HEALTH_INTERVAL s while the container runs
    local cid=$1
    while [ "$(podman inspect --format '{{.State.Running}}' "$cid" 2>/dev/null)" = true ]; do
        podman healthcheck run "$cid" >/dev/null 2>&1 || true
        sleep "$HEALTH_INTERVAL"
    done
}

start_health_loop() {
    [ "$ENGINE" = podman ] && [ ! -d /run/systemd/system ] || return 0
    stop_health_loop
    mkdir -p "$STATE"
    nohup setsid bash "$0" _health-loop "$1" >/dev/null 2>&1 &
    echo $! >"$STATE/health-$PROJECT.pid"
    say "no systemd: the health check runs every $HEALTH_INTERVAL s from a background loop (pid $!)"
}

stop_health_loop() {
    local pidfile="$STATE/health-$PROJECT.pid"
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
}

setup() {  # $1: full (a base image, containers that start) or light (to stop what runs)
    pick_engine
    [ "$1" = data ] || pick_compose  # first: a compose tool that would fail is refused before anything is built
    if [ "$ENGINE" = podman ]; then
        export BUILDAH_FORMAT=docker  # keeps the image's HEALTHCHECK (the OCI format has no field for it)
        if [ -z "${CONTAINERS_CONF:-}" ] && [ -f "$STATE/containers.conf" ]; then
            export CONTAINERS_CONF="$STATE/containers.conf"  # written by an earlier run
        fi
        if [ "$1" = full ]; then pick_base; check_podman_runs; fi
    fi
    if [ -z "${CA_BUNDLE:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        export CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
    fi
}

up() {
    setup full
    say "engine $ENGINE, compose: ${COMPOSE[*]}${BASE:+, BASE=$BASE}"
    "${COMPOSE[@]}" -p "$PROJECT" -f compose.yaml build "$SERVICE" >&2
    if [ "${SIXVIEW_KEEP_BUILD_STAGES:-0}" != 1 ]; then  # the stages' images, not the build cache of Docker
        "$ENGINE" image prune --force --filter label=io.sixview.stage=build >/dev/null
    fi
    prepare_data "${SIXVIEW_DATA:-./data}"
    "${COMPOSE[@]}" -p "$PROJECT" -f compose.yaml up -d "$SERVICE" >&2
    local cid
    cid=$(container_id)
    [ -n "$cid" ] || die "compose started no container for $SERVICE (project $PROJECT)"
    wait_healthy "$cid"
    start_health_loop "$cid"
    local port=${SIXVIEW_PORT:-8000}
    [[ $port == *:* ]] || port="localhost:$port"
    echo "sixview is up and healthy: http://$port (container $cid; stop: make docker-down)"
}

case ${1:-up} in
    up) up ;;
    down) setup light; stop_health_loop; "${COMPOSE[@]}" -p "$PROJECT" -f compose.yaml down ;;
    data) [ -n "${2:-}" ] || die "usage: docker/up.sh data DIR"; setup data; prepare_data "$2" ;;
    _health-loop) health_loop "$2" ;;
    *) die "usage: docker/up.sh [up|down|data DIR]" ;;
esac
