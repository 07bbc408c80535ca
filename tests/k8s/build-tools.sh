#!/usr/bin/env bash
# Build the local Kubernetes test tools from the Go module proxy:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (tests/k8s/kubernetes)
#   etcd, etcdctl                                                      (tests/k8s/etcd)
#   kwok (fake kubelet) + its stage files                              (tests/k8s/kwok)
#   helm                                                               (tests/k8s/helm)
#   toxiproxy-server, toxiproxy-cli (fault proxy, chaos tier)          (tests/k8s/toxiproxy)
# and, for the real-node tier (tests/e2e_real), not built by default:
#   kubelet, kube-proxy                               component "node" (tests/k8s/kubernetes)
#   containerd, containerd-shim-runc-v2, ctr                           (tests/k8s/containerd)
#   coredns                                                            (tests/k8s/coredns)
#
# Each component has its own wrapper Go module (go.mod/go.sum committed) so the
# versions are pinned and minimal version selection never mixes their dependencies.
# The versions are read from those go.mod files: bump them there.
#
# Output: $CALLBOARD_K8S_TOOLS_DIR (default <repo>/.cache/k8s-tools/bin), git-ignored.
# Idempotent: a binary that exists and reports the pinned version is not rebuilt.
#
# Usage: tests/k8s/build-tools.sh [--force] [component...]
#        components: kubernetes etcd kwok helm toxiproxy (the default), node containerd coredns,
#        real (= everything the real-node tier needs: all of the above)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
OUT="${CALLBOARD_K8S_TOOLS_DIR:-$REPO/.cache/k8s-tools/bin}"

FORCE=0
COMPONENTS=()
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    kubernetes | etcd | kwok | helm | toxiproxy | node | containerd | coredns) COMPONENTS+=("$arg") ;;
    real) COMPONENTS+=(kubernetes etcd helm node containerd coredns) ;;
    -h | --help)
      sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "[k8s-tools] unknown argument: $arg" >&2
      exit 2
      ;;
  esac
done
[[ ${#COMPONENTS[@]} -gt 0 ]] || COMPONENTS=(kubernetes etcd kwok helm toxiproxy)

log() { echo "[k8s-tools] $*"; }

# --- Go toolchain -----------------------------------------------------------
if [[ -n "${GO:-}" ]]; then
  :
elif [[ -x /usr/local/go/bin/go ]]; then
  GO=/usr/local/go/bin/go
elif command -v go >/dev/null 2>&1; then
  GO="$(command -v go)"
else
  echo "[k8s-tools] no Go toolchain found (need Go >= 1.26; set GO=/path/to/go)" >&2
  exit 1
fi
if ! GOVERSION_FOUND="$("$GO" env GOVERSION 2>/dev/null)"; then
  echo "[k8s-tools] cannot run the Go toolchain at $GO (need Go >= 1.26; set GO=/path/to/go)" >&2
  exit 1
fi
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -mod=readonly"
PARALLEL="${CALLBOARD_K8S_BUILD_PARALLEL:-2}"

mkdir -p "$OUT"
# One build at a time per output folder (two pytest sessions may race here).
exec 9>"$OUT/.build.lock"
if command -v flock >/dev/null 2>&1; then
  if ! flock -n 9; then
    log "another build holds $OUT/.build.lock; waiting ..."
    flock 9
  fi
fi

# Read the pinned version of a module from a wrapper go.mod.
modver() { # <wrapper dir> <module path>
  awk -v m="$2" '($1 == m && $2 ~ /^v/) {print $2; exit} ($1 == "require" && $2 == m) {print $3; exit}' "$HERE/$1/go.mod"
}

# has_version <binary> <expected substring> <args...>: binary exists and its
# version output contains the expected string.
has_version() {
  local bin="$OUT/$1" want="$2"
  shift 2
  [[ -x "$bin" ]] || return 1
  local got
  got="$("$bin" "$@" 2>&1 || true)"
  [[ "$got" == *"$want"* ]]
}

# go_build <wrapper dir> <ldflags> <tags> <package...>: build into a temporary
# folder, then move the binaries into place (never a half-written binary).
go_build() {
  local dir="$1" ldflags="$2" tags="$3"
  shift 3
  local tmp
  tmp="$(mktemp -d "$OUT/.tmp.XXXXXX")"
  local args=(build -p "$PARALLEL" -trimpath -ldflags "$ldflags" -o "$tmp/")
  [[ -n "$tags" ]] && args+=(-tags "$tags")
  if ! (cd "$HERE/$dir" && "$GO" "${args[@]}" "$@"); then
    rm -rf "$tmp"
    return 1
  fi
  # "name=new" pairs in RENAME give a binary another name.
  local f r
  for r in ${RENAME:-}; do
    mv -f "$tmp/${r%%=*}" "$tmp/${r#*=}"
  done
  for f in "$tmp"/*; do mv -f "$f" "$OUT/"; done
  rm -rf "$tmp"
}

elapsed() { echo "$((SECONDS - $1))s"; }

build_kubernetes() {
  local v minor t
  v="$(modver kubernetes k8s.io/kubernetes)"
  minor="$(echo "$v" | cut -d. -f2)"
  local bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  local missing=()
  local b
  for b in "${bins[@]}"; do
    if [[ $FORCE == 0 ]]; then
      if [[ $b == kubectl ]]; then
        has_version kubectl "Client Version: $v" version --client && continue
      else
        has_version "$b" "Kubernetes $v" --version && continue
      fi
    fi
    missing+=("$b")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "kubernetes $v: up to date (${bins[*]})"
    return 0
  fi
  local ldf="-s -w" p pkgs=()
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  log "building ${missing[*]} $v (a cold build takes ~7 min on 2 cores) ..."
  t=$SECONDS
  go_build kubernetes "$ldf" "selinux,notest,grpcnotrace" "${pkgs[@]}"
  log "built ${missing[*]} $v in $(elapsed $t)"
}

build_etcd() {
  local v t
  v="$(modver etcd go.etcd.io/etcd/server/v3)"
  if [[ $FORCE == 0 ]] && has_version etcd "etcd Version: ${v#v}" --version &&
    has_version etcdctl "etcdctl version: ${v#v}" version; then
    log "etcd $v: up to date (etcd etcdctl)"
    return 0
  fi
  log "building etcd etcdctl $v ..."
  t=$SECONDS
  # go names a .../server/v3 binary "server": call it etcd.
  RENAME="server=etcd" go_build etcd "-s -w" "" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/etcdctl/v3
  log "built etcd $v in $(elapsed $t)"
}

build_kwok() {
  local v t dir
  v="$(modver kwok sigs.k8s.io/kwok)"
  if [[ $FORCE == 0 ]] && has_version kwok "$v" --version && [[ -f "$OUT/kwok-stages/.version" ]] &&
    [[ "$(cat "$OUT/kwok-stages/.version")" == "$v" ]]; then
    log "kwok $v: up to date (kwok + stages)"
    return 0
  fi
  log "building kwok $v ..."
  t=$SECONDS
  go_build kwok "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$v" "" sigs.k8s.io/kwok/cmd/kwok
  # kwok has no built-in stages: ship the ones kwokctl uses next to the binary.
  dir="$(cd "$HERE/kwok" && "$GO" mod download -json "sigs.k8s.io/kwok@$v" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  rm -rf "$OUT/kwok-stages"
  mkdir -p "$OUT/kwok-stages"
  cp -r "$dir/kustomize/stage/." "$OUT/kwok-stages/"
  chmod -R u+w "$OUT/kwok-stages"
  find "$OUT/kwok-stages" -type f ! -name '*.yaml' -delete
  echo "$v" >"$OUT/kwok-stages/.version"
  log "built kwok $v in $(elapsed $t)"
}

build_helm() {
  local v t kv kmajor kminor ldf
  v="$(modver helm helm.sh/helm/v3)"
  if [[ $FORCE == 0 ]] && has_version helm "$v" version --template '{{.Version}}'; then
    log "helm $v: up to date"
    return 0
  fi
  # As helm's Makefile: the default Kubernetes version for lint/template comes
  # from the client-go version Helm is built with (v0.X.Y -> 1.X).
  kv="$(modver helm k8s.io/client-go)"
  kmajor=$(($(echo "${kv#v}" | cut -d. -f1) + 1))
  kminor="$(echo "$kv" | cut -d. -f2)"
  ldf="-s -w -X helm.sh/helm/v3/internal/version.version=$v -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  ldf="$ldf -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$kmajor -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kminor"
  ldf="$ldf -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$kmajor -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kminor"
  log "building helm $v ..."
  t=$SECONDS
  go_build helm "$ldf" "" helm.sh/helm/v3/cmd/helm
  log "built helm $v in $(elapsed $t)"
}

build_toxiproxy() {
  local v t
  v="$(modver toxiproxy github.com/Shopify/toxiproxy/v2)"
  if [[ $FORCE == 0 ]] && has_version toxiproxy-server "version $v" -version &&
    has_version toxiproxy-cli "version $v" --version; then
    log "toxiproxy $v: up to date (toxiproxy-server toxiproxy-cli)"
    return 0
  fi
  log "building toxiproxy-server toxiproxy-cli $v ..."
  t=$SECONDS
  # As upstream's .goreleaser.yml; go names the binaries after their folders (server, cli).
  RENAME="server=toxiproxy-server cli=toxiproxy-cli" go_build toxiproxy \
    "-s -w -X github.com/Shopify/toxiproxy/v2.Version=$v" "" \
    github.com/Shopify/toxiproxy/v2/cmd/server github.com/Shopify/toxiproxy/v2/cmd/cli
  log "built toxiproxy $v in $(elapsed $t)"
}

# kubelet and kube-proxy: the real node (tests/support/realnode), from the same wrapper
# module and with the same flags as the control plane's binaries.
build_node() {
  local v minor t
  v="$(modver kubernetes k8s.io/kubernetes)"
  minor="$(echo "$v" | cut -d. -f2)"
  if [[ $FORCE == 0 ]] && has_version kubelet "Kubernetes $v" --version &&
    has_version kube-proxy "Kubernetes $v" --version; then
    log "node $v: up to date (kubelet kube-proxy)"
    return 0
  fi
  local ldf="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  log "building kubelet kube-proxy $v (~25 s after the control plane's build, ~3.5 min alone) ..."
  t=$SECONDS
  go_build kubernetes "$ldf" "selinux,notest,grpcnotrace" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
  log "built kubelet kube-proxy $v in $(elapsed $t)"
}

# containerd 2.x (Kubernetes 1.35 is the last release to support containerd 1.x, so
# Debian's 1.6 is not used), its runc shim and ctr (image import). runc comes from Debian.
build_containerd() {
  local v t pkg=github.com/containerd/containerd/v2
  v="$(modver containerd $pkg)"
  if [[ $FORCE == 0 ]] && has_version containerd "$v" --version &&
    [[ -x "$OUT/containerd-shim-runc-v2" ]] && has_version ctr "$v" --version; then
    log "containerd $v: up to date (containerd containerd-shim-runc-v2 ctr)"
    return 0
  fi
  log "building containerd containerd-shim-runc-v2 ctr $v (~1 min) ..."
  t=$SECONDS
  go_build containerd "-s -w -X $pkg/version.Version=$v -X $pkg/version.Revision=module-proxy" \
    "no_btrfs,no_devmapper,no_zfs" $pkg/cmd/containerd $pkg/cmd/containerd-shim-runc-v2 $pkg/cmd/ctr
  log "built containerd $v in $(elapsed $t)"
}

# CoreDNS: the cluster DNS of the real node (the chart's Service names must resolve).
build_coredns() {
  local v t
  v="$(modver coredns github.com/coredns/coredns)"
  if [[ $FORCE == 0 ]] && has_version coredns "CoreDNS-${v#v}" -version; then
    log "coredns $v: up to date"
    return 0
  fi
  log "building coredns $v (~1.5 min) ..."
  t=$SECONDS
  go_build coredns "-s -w" "" github.com/coredns/coredns
  log "built coredns $v in $(elapsed $t)"
}

log "output: $OUT (go: $GOVERSION_FOUND, -p $PARALLEL)"
START=$SECONDS
for c in "${COMPONENTS[@]}"; do
  "build_$c"
done
log "done in $(elapsed "$START")"
