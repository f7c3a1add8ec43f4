#!/usr/bin/env bash
# Installs the tools the chart, metrics and HTTP/2 conformance tests use, pinned: Helm built
# from its Go module, Prometheus (server and promtool) from Debian, and httpwg (an HTTP/2
# conformance suite) from the Rust package registry. Idempotent; Helm and httpwg are cached.
set -euo pipefail
HELM_VERSION=v3.22.0
HTTPWG_VERSION=0.2.5
CACHE="${WEIR_CACHE:-$HOME/.cache/weir}"
mkdir -p "$CACHE/bin"
log() { echo "install-tools.sh: $*"; }

helm_bin="$CACHE/bin/helm-$HELM_VERSION"
if [ ! -x "$helm_bin" ]; then
  command -v go >/dev/null || { echo "install-tools.sh: go is missing (Helm is built from its Go module)" >&2; exit 1; }
  log "building helm $HELM_VERSION with Go"
  start=$(date +%s)
  GOTOOLCHAIN=local GOBIN="$CACHE/bin/helm-build" \
    GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" \
    go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$CACHE/bin/helm-build/helm" "$helm_bin"
  log "helm built in $(( $(date +%s) - start ))s"
fi
ln -sf "$helm_bin" "$CACHE/bin/helm"

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  log "installing prometheus from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package starts a system service; the tests start their own server.
  systemctl stop prometheus 2>/dev/null || service prometheus stop 2>/dev/null || pkill -x prometheus || true
fi
httpwg_root="$CACHE/httpwg-$HTTPWG_VERSION"
if [ ! -x "$httpwg_root/bin/httpwg" ]; then
  log "building httpwg-cli $HTTPWG_VERSION with cargo"
  start=$(date +%s)
  CARGO_TARGET_DIR="$CACHE/httpwg-build" cargo install httpwg-cli --version "$HTTPWG_VERSION" \
    --locked --root "$httpwg_root"
  rm -rf "$CACHE/httpwg-build"
  log "httpwg built in $(( $(date +%s) - start ))s"
fi
ln -sf "$httpwg_root/bin/httpwg" "$CACHE/bin/httpwg"

log "helm: $("$CACHE/bin/helm" version --short); prometheus: $(prometheus --version 2>&1 | sed -n 1p)"
