#!/usr/bin/env bash
# Build the grainproof image on a machine that reaches only package registries (PyPI, deb.debian.org):
# no Docker Hub, so no python:3.11-slim; no download.pytorch.org, so no CPU-only torch wheels.
#
#   sudo docker/build-local.sh            # -> image grainproof:local
#
# What it does, and how it differs from the production build (`docker build -f docker/Dockerfile .`):
#   1. Starts a Docker daemon if none answers (Debian's docker.io; overlay2, no iptables, no bridge:
#      builds and containers use the host's network), and stops it again at the end unless KEEP_DOCKERD=1.
#   2. Makes the base image locally: debootstrap Debian bookworm (minbase + python3 3.11, venv, ca-certificates)
#      and `docker import` it as grainproof-base:bookworm. Same Debian release and Python minor as
#      python:3.11-slim, but Python is Debian's /usr/bin/python3.11 instead of /usr/local. It also trusts the
#      host's extra CAs (/usr/local/share/ca-certificates: a TLS-inspecting egress proxy), so the image built
#      here is for checking the build, not for shipping.
#   3. Builds docker/Dockerfile with BASE_IMAGE=grainproof-base:bookworm and TORCH_INDEX_URL empty, so torch
#      comes from PyPI: the CUDA build, with its nvidia-* wheels, several GB larger than the production image.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG="${TAG:-grainproof:local}"
BASE_TAG="${BASE_TAG:-grainproof-base:bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
WORK="${WORK:-/tmp/grainproof-docker}"

[ "$(id -u)" = 0 ] || { echo "build-local.sh needs root (debootstrap and dockerd)." >&2; exit 1; }
mkdir -p "$WORK"

need() {  # install Debian packages whose commands are missing
    local missing=()
    for pair in "$@"; do command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}"); done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}
need dockerd:docker.io debootstrap:debootstrap

STARTED_DOCKERD=""
stop_dockerd() {
    if [ -n "$STARTED_DOCKERD" ] && [ "${KEEP_DOCKERD:-0}" != 1 ]; then
        kill "$STARTED_DOCKERD" 2>/dev/null || true
        wait "$STARTED_DOCKERD" 2>/dev/null || true
    fi
}
trap stop_dockerd EXIT

if ! docker info >/dev/null 2>&1; then
    # No bridge and no iptables: works in a VM or container without a NAT setup; RUN steps use --network host.
    dockerd --storage-driver=overlay2 --iptables=false --ip6tables=false --bridge=none \
        >"$WORK/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start; see $WORK/dockerd.log" >&2; exit 1; }
fi

if ! docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    rootfs="$WORK/rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates,passwd \
        bookworm "$rootfs" "$MIRROR"
    # This machine's HTTPS goes through a proxy that re-signs certificates: pip in the build must trust the
    # same extra CAs as the host, so the local base (never shipped) carries them.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null
    fi
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' \
        - "$BASE_TAG"
    rm -rf "$rootfs"
fi

# DOCKER_BUILDKIT=0: Debian's docker.io has no buildx plugin; the Dockerfile needs nothing BuildKit-only.
start=$(date +%s)
DOCKER_BUILDKIT=0 docker build --network host \
    --build-arg BASE_IMAGE="$BASE_TAG" --build-arg TORCH_INDEX_URL= \
    -f "$ROOT/docker/Dockerfile" -t "$TAG" "$ROOT"
echo "built $TAG in $(( $(date +%s) - start )) s; $(docker image inspect -f '{{.Size}}' "$TAG") bytes"
