#!/usr/bin/env bash
# Installs everything the test control plane needs. Idempotent; a second run
# with a warm cache does no network access and no build.
#
#   - Debian packages: etcd-server (unless WEIR_ETCD=go), openssl, iproute2,
#     curl. `apt-get update` runs only if something is missing.
#   - kube-apiserver $K8S_VERSION, built with Go from the wrapper module in
#     apiserver/ into $WEIR_CACHE/bin/kube-apiserver-$K8S_VERSION (skipped
#     when that file exists).
#   - with WEIR_ETCD=go: etcd $ETCD_GO_VERSION, built from the wrapper module
#     in etcd/ into $WEIR_CACHE/bin/etcd-$ETCD_GO_VERSION.
#
# Environment: WEIR_CACHE (default ~/.cache/weir), WEIR_ETCD (debian|go).
# Go caches live under $WEIR_CACHE/go/{mod,build}.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

t_start=$(date +%s)
log() { echo "install.sh: $*"; }
elapsed() { echo "$(($(date +%s) - $1))s"; }

# ---------------------------------------------------------------- Debian ---
pkgs=(openssl iproute2 curl ca-certificates)
[ "$WEIR_ETCD" = debian ] && pkgs+=(etcd-server)
missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'install ok installed' >/dev/null; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  t=$(date +%s)
  log "installing Debian packages: ${missing[*]}"
  SUDO=
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  log "Debian packages installed in $(elapsed "$t")"
else
  log "Debian packages present: ${pkgs[*]}"
fi
if [ "$WEIR_ETCD" = debian ]; then
  [ -x "$ETCD_BIN" ] || die "etcd-server installed but $ETCD_BIN missing"
  log "etcd: $("$ETCD_BIN" --version | sed -n 1p) (Debian $(dpkg-query -W -f='${Version}' etcd-server))"
fi

# -------------------------------------------------------------- Go builds ---
export GOMODCACHE=$WEIR_CACHE/go/mod
export GOCACHE=$WEIR_CACHE/go/build
export GOTOOLCHAIN=local      # never download a toolchain
export GOFLAGS=-mod=readonly  # go.mod/go.sum are checked in and complete
export CGO_ENABLED=0          # upstream builds kube-apiserver static, too

need_go() {
  command -v go >/dev/null || die "go not found on PATH (need Go >= 1.24)"
  local v
  v=$(go env GOVERSION)
  case "$v" in
    go1.2[4-9]*|go1.[3-9][0-9]*|go[2-9]*) ;;
    *) die "Go $v is too old: k8s.io/kubernetes $K8S_VERSION needs Go >= 1.24" ;;
  esac
}

# go_build NAME MODULE_DIR OUTPUT LDFLAGS
go_build() {
  local name=$1 dir=$2 out=$3 ldflags=$4 t
  need_go
  mkdir -p "$(dirname "$out")" "$GOMODCACHE" "$GOCACHE"
  t=$(date +%s)
  log "building $name with $(go env GOVERSION) (first build downloads modules and takes several minutes on 2 cores)"
  local tmp="$out.tmp.$$"
  (cd "$dir" && go mod download && go build -trimpath -ldflags "$ldflags" -o "$tmp" .) \
    || { rm -f "$tmp"; die "building $name failed"; }
  mv -f "$tmp" "$out"   # atomic: a half-built binary never has the final name
  log "built $out in $(elapsed "$t") ($(du -h "$out" | cut -f1))"
}

# kube-apiserver
grep -q "^require k8s.io/kubernetes $K8S_VERSION\$" "$CONTROLPLANE_DIR/apiserver/go.mod" \
  || grep -qE "^\s+k8s.io/kubernetes $K8S_VERSION\$" "$CONTROLPLANE_DIR/apiserver/go.mod" \
  || die "apiserver/go.mod does not require k8s.io/kubernetes $K8S_VERSION (common.sh pin)"
if [ -x "$KUBE_APISERVER_BIN" ]; then
  log "kube-apiserver cached: $KUBE_APISERVER_BIN"
else
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  go_build "kube-apiserver $K8S_VERSION" "$CONTROLPLANE_DIR/apiserver" "$KUBE_APISERVER_BIN" "$ld"
fi
"$KUBE_APISERVER_BIN" --version

# etcd from Go (opt-in)
if [ "$WEIR_ETCD" = go ]; then
  grep -qE "go.etcd.io/etcd/server/v3 $ETCD_GO_VERSION\$" "$CONTROLPLANE_DIR/etcd/go.mod" \
    || die "etcd/go.mod does not require go.etcd.io/etcd/server/v3 $ETCD_GO_VERSION (common.sh pin)"
  if [ -x "$ETCD_BIN" ]; then
    log "etcd cached: $ETCD_BIN"
  else
    go_build "etcd $ETCD_GO_VERSION" "$CONTROLPLANE_DIR/etcd" "$ETCD_BIN" "-s -w"
  fi
  "$ETCD_BIN" --version | sed -n 1p
fi

log "done in $(elapsed "$t_start")"
