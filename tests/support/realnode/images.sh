#!/usr/bin/env bash
# Build the container images of the real-node tier (tests/e2e_real) without Docker, as OCI
# archives the harness imports into containerd:
#
#   base         Debian bookworm minbase with python3 (debootstrap; stands in for python:slim,
#                which cannot be pulled without a registry)
#   pause        the sandbox image: a static build of Kubernetes' own build/pause/linux/pause.c
#   redis        redis-server from Debian on the base (the chart's bundled Redis)
#   callboard    the project's image: operator/Dockerfile on the base (operator/build-image.sh)
#   demo-agent   the demo's simulated agent as a real agent app (tests/e2e_real/apps)
#
# Output: $CALLBOARD_REALNODE_CACHE (default: <tools dir>/../realnode)/images/<name>.tar.
# base, pause and redis are cached (rebuilt with --force); callboard and demo-agent are
# rebuilt when a source file is newer than their archive. Needs root and buildah (installed
# from Debian when absent).
#
# Usage: tests/support/realnode/images.sh [--force] [name...]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
TOOLS="${CALLBOARD_K8S_TOOLS_DIR:-$REPO/.cache/k8s-tools/bin}"
CACHE="${CALLBOARD_REALNODE_CACHE:-$(dirname "$TOOLS")/realnode}"
OUT="$CACHE/images"
SUITE=bookworm
TAG=e2e

#: Image names the harness and the tests use (imagePullPolicy: Never/IfNotPresent).
BASE_REF="localhost/callboard-base:$SUITE"
PAUSE_REF="localhost/pause:3.10"
REDIS_REF="localhost/redis:$TAG"
CALLBOARD_REF="localhost/callboard:$TAG"
DEMO_REF="localhost/callboard-demo-agent:$TAG"

FORCE=0
NAMES=()
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    base | pause | redis | callboard | demo-agent) NAMES+=("$arg") ;;
    -h | --help)
      sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "[images] unknown argument: $arg" >&2
      exit 2
      ;;
  esac
done
[[ ${#NAMES[@]} -gt 0 ]] || NAMES=(base pause redis callboard demo-agent)

log() { echo "[images] $*"; }
elapsed() { echo "$((SECONDS - $1))s"; }

mkdir -p "$OUT"
exec 8>"$OUT/.build.lock"
flock 8

if ! command -v buildah >/dev/null 2>&1; then
  log "installing buildah from Debian ..."
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah >/dev/null
fi
BUILDAH=(buildah --storage-driver overlay)
BUD=("${BUILDAH[@]}" bud --isolation chroot --network host --layers)

# archive <ref> <name> [started]: write the image as an OCI archive, atomically. With
# `started` (a `date +%s` taken before the build read its sources), the archive gets that
# time, so a source edited while the build ran is newer than the archive and rebuilt next time.
archive() {
  rm -f "$OUT/$2.tar.tmp"
  "${BUILDAH[@]}" push -q "$1" "oci-archive:$OUT/$2.tar.tmp:$1" >/dev/null
  [[ -z "${3:-}" ]] || touch -d "@$3" "$OUT/$2.tar.tmp"
  mv -f "$OUT/$2.tar.tmp" "$OUT/$2.tar"
}

# fresh <name> <sources...>: the archive exists and is newer than every source file.
fresh() {
  local tar="$OUT/$1.tar"
  shift
  [[ $FORCE == 0 && -f "$tar" ]] || return 1
  [[ -z "$(find "$@" -newer "$tar" -type f -print -quit 2>/dev/null)" ]]
}

# The Debian mirror apt already uses (debootstrap and the Redis build go there too).
mirror() {
  local m
  m="$(grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
    head -1 | tr -d ' ')"
  echo "${m:-http://deb.debian.org/debian}"
}

have_image() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }

build_base() {
  if [[ $FORCE == 0 ]] && have_image "$BASE_REF"; then
    # buildah's storage outlives a fresh clone's cache folder (CI on a reused machine).
    [[ -f "$OUT/base.tar" ]] || archive "$BASE_REF" base
    log "base $BASE_REF: cached"
    return 0
  fi
  command -v debootstrap >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
  local t=$SECONDS root="$CACHE/rootfs.tmp" ctr
  log "debootstrap $SUITE (python3, python3-venv, ca-certificates) from $(mirror) ..."
  rm -rf "$root"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$root" "$(mirror)" >"$CACHE/debootstrap.log" 2>&1 ||
    {
      tail -20 "$CACHE/debootstrap.log" >&2
      exit 1
    }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  ctr="$("${BUILDAH[@]}" from scratch)"
  "${BUILDAH[@]}" copy -q "$ctr" "$root/" / >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd /bin/bash "$ctr"
  "${BUILDAH[@]}" commit -q --rm "$ctr" "$BASE_REF" >/dev/null
  rm -rf "$root"
  archive "$BASE_REF" base
  log "base $BASE_REF built in $(elapsed $t)"
}

build_pause() {
  if [[ $FORCE == 0 && -f "$OUT/pause.tar" ]]; then
    log "pause $PAUSE_REF: cached"
    return 0
  fi
  local t=$SECONDS dir src ctr
  # pause.c from the Kubernetes module the tools are built from (tests/k8s/kubernetes).
  dir="$(cd "$REPO/tests/k8s/kubernetes" && GOFLAGS=-mod=readonly go mod download -json k8s.io/kubernetes |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  src="$dir/build/pause/linux/pause.c"
  command -v gcc >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc libc6-dev >/dev/null
  mkdir -p "$CACHE/pause"
  gcc -Os -Wall -Werror -static -DVERSION=v3.10-callboard -o "$CACHE/pause/pause" "$src"
  strip "$CACHE/pause/pause"
  ctr="$("${BUILDAH[@]}" from scratch)"
  "${BUILDAH[@]}" copy -q "$ctr" "$CACHE/pause/pause" /pause >/dev/null
  "${BUILDAH[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
  "${BUILDAH[@]}" commit -q --rm "$ctr" "$PAUSE_REF" >/dev/null
  archive "$PAUSE_REF" pause
  log "pause $PAUSE_REF built in $(elapsed $t)"
}

build_redis() {
  if [[ $FORCE == 0 ]] && { [[ -f "$OUT/redis.tar" ]] || have_image "$REDIS_REF"; }; then
    [[ -f "$OUT/redis.tar" ]] || archive "$REDIS_REF" redis
    log "redis $REDIS_REF: cached"
    return 0
  fi
  local t=$SECONDS
  "${BUD[@]}" -q --build-arg "BASE=$BASE_REF" --build-arg "MIRROR=$(mirror)" \
    -f "$REPO/tests/e2e_real/images/redis.Containerfile" -t "$REDIS_REF" "$REPO/tests/e2e_real/images" >/dev/null
  archive "$REDIS_REF" redis
  log "redis $REDIS_REF built in $(elapsed $t)"
}

build_callboard() {
  if fresh callboard "$REPO/operator" "$REPO/pyproject.toml" "$REPO"/uv.lock; then
    log "callboard $CALLBOARD_REF: up to date"
    return 0
  fi
  local t=$SECONDS started
  started="$(date +%s)"
  IMAGE="$CALLBOARD_REF" BASE="$BASE_REF" ENGINE=buildah "$REPO/operator/build-image.sh" >"$CACHE/callboard-build.log" 2>&1 ||
    {
      tail -30 "$CACHE/callboard-build.log" >&2
      exit 1
    }
  archive "$CALLBOARD_REF" callboard "$started"
  log "callboard $CALLBOARD_REF built in $(elapsed $t)"
}

build_demo-agent() {
  if fresh demo-agent "$REPO/tests/e2e_real/apps" "$REPO/tests/e2e_real/images" "$OUT/callboard.tar"; then
    log "demo-agent $DEMO_REF: up to date"
    return 0
  fi
  local t=$SECONDS started
  started="$(date +%s)"
  "${BUD[@]}" -q --build-arg "BASE=$CALLBOARD_REF" -f "$REPO/tests/e2e_real/images/demo-agent.Containerfile" \
    -t "$DEMO_REF" "$REPO/tests/e2e_real" >/dev/null
  archive "$DEMO_REF" demo-agent "$started"
  log "demo-agent $DEMO_REF built in $(elapsed $t)"
}

START=$SECONDS
for n in "${NAMES[@]}"; do
  "build_$n"
done
log "done in $(elapsed $START) ($OUT)"
