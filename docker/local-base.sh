#!/usr/bin/env bash
# A Debian bookworm base image made without a registry: debootstrap (minbase) from a Debian mirror,
# imported into podman (or docker). Its apt points at the same mirror; it has no Python (the Dockerfiles
# install Debian's python3 when the base lacks it).
#   docker/local-base.sh [IMAGE] [MIRROR]      (root; debootstrap and podman or docker installed)
#   IMAGE:  default localhost/debian:bookworm-slim
#   MIRROR: default the first Debian mirror in this machine's apt sources, else http://deb.debian.org/debian
set -euo pipefail
IMAGE=${1:-localhost/debian:bookworm-slim}
MIRROR=${2:-}
if [ -z "$MIRROR" ]; then
    MIRROR=$(sed -n 's/^URIs: *\([^ ]*\/debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
fi
if [ -z "$MIRROR" ]; then
    MIRROR=$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\/debian\)\/\{0,1\} .*/\2/p' /etc/apt/sources.list \
        /etc/apt/sources.list.d/*.list 2>/dev/null | head -n 1)
fi
MIRROR=${MIRROR:-http://deb.debian.org/debian}
ENGINE=$(command -v podman || command -v docker || true)
[ -n "$ENGINE" ] || { echo "local-base.sh: neither podman nor docker is installed" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "local-base.sh: debootstrap is not installed" >&2; exit 2; }
ROOTFS=$(mktemp -d "${TMPDIR:-/var/tmp}/sixview-rootfs.XXXXXX")
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 \
    || { tail -n 20 "$ROOTFS.log" >&2; rm -f "$ROOTFS.log"; exit 1; }
rm -f "$ROOTFS.log"
# As Debian's own slim images: no documentation, manuals or locales, now or from later installs.
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
find "$ROOTFS/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/*.log "$ROOTFS"/var/cache/debconf/*-old
find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
tar -C "$ROOTFS" -c . | "$ENGINE" import --change 'CMD ["bash"]' - "$IMAGE" >/dev/null
echo "$IMAGE (debootstrap bookworm from $MIRROR)"
