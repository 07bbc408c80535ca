#!/usr/bin/env bash
# Build operator/Dockerfile with whatever builds images here: Docker (a daemon that
# answers), Podman, or Buildah (installed from Debian when none is present, on Linux as
# root; `--isolation chroot`, so no daemon and no user namespaces are needed).
#
# Environment:
#   IMAGE      tag to build (default callboard:<chart appVersion>)
#   BASE       base image build argument (default: the Dockerfile's python:3.12-slim)
#   ENGINE     docker | podman | buildah (default: the first that works)
#   CA_BUNDLE  a CA bundle for the build stage's downloads behind a TLS-intercepting proxy,
#              passed as the build secret `ca` (never part of the image). Default: the
#              host's bundle when PIP_CERT or SSL_CERT_FILE name one, else none.
#   CALLBOARD_DEPS  pyproject.toml or uv.lock (see operator/Dockerfile)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="$(sed -n 's/^appVersion: *"\(.*\)"/\1/p' "$REPO/charts/callboard/Chart.yaml")"
IMAGE="${IMAGE:-callboard:$VERSION}"
CA_BUNDLE="${CA_BUNDLE-${PIP_CERT:-${SSL_CERT_FILE:-}}}"

log() { echo "[image] $*" >&2; }

engine() {
  if [[ -n "${ENGINE:-}" ]]; then
    echo "$ENGINE"
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null 2>&1; then
    echo podman
  elif command -v buildah >/dev/null 2>&1; then
    echo buildah
  elif [[ "$(uname -s)" == Linux && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "no Docker daemon, Podman or Buildah: installing buildah from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah >/dev/null
    echo buildah
  else
    log "no image builder: install Docker, Podman or Buildah"
    exit 1
  fi
}

ENG="$(engine)"
args=(-f "$REPO/operator/Dockerfile" -t "$IMAGE")
[[ -n "${BASE:-}" ]] && args+=(--build-arg "BASE=$BASE")
[[ -n "${CALLBOARD_DEPS:-}" ]] && args+=(--build-arg "CALLBOARD_DEPS=$CALLBOARD_DEPS")
if [[ -n "$CA_BUNDLE" ]]; then
  [[ -s "$CA_BUNDLE" ]] || {
    log "CA_BUNDLE=$CA_BUNDLE is not a readable file"
    exit 1
  }
  args+=(--secret "id=ca,src=$CA_BUNDLE")
fi
case "$ENG" in
  docker) cmd=(env DOCKER_BUILDKIT=1 docker build "${args[@]}") ;;
  podman) cmd=(podman build --network host --ignorefile "$REPO/operator/Dockerfile.dockerignore" "${args[@]}") ;;
  buildah)
    cmd=(buildah bud --isolation chroot --network host --layers
      --ignorefile "$REPO/operator/Dockerfile.dockerignore" "${args[@]}")
    ;;
  *)
    log "unknown ENGINE=$ENG (docker, podman or buildah)"
    exit 2
    ;;
esac
log "building $IMAGE with $ENG${BASE:+ on $BASE}${CA_BUNDLE:+ (build-stage CA: $CA_BUNDLE)}"
cd "$REPO"
exec "${cmd[@]}" "$REPO"
