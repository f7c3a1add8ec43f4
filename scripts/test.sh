#!/usr/bin/env bash
# Installs what weir's tests need and runs all of them: format, lint, unit and end-to-end tests.
# Idempotent: safe to run again; build outputs are cached in $HOME/.cache/weir/target.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[test.sh] $*"; }

# --- Rust toolchain (the machine provides rustup; components are added if missing) ---
command -v cargo >/dev/null || { echo "test.sh: cargo is missing: install Rust with rustup" >&2; exit 1; }
if command -v rustup >/dev/null; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep "^$c" >/dev/null || rustup component add "$c"
  done
fi

# --- Debian packages the tests use ---
need_pkgs=()
command -v curl >/dev/null || need_pkgs+=(curl)
command -v cc >/dev/null || need_pkgs+=(gcc libc6-dev)
command -v kill >/dev/null || need_pkgs+=(procps)
command -v python3 >/dev/null || need_pkgs+=(python3)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v nghttpd >/dev/null || need_pkgs+=(nghttp2-server)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# --- The test control plane: kube-apiserver and etcd built with Go (cached after the first run) ---
command -v go >/dev/null || { echo "test.sh: go is missing: the controller tests build kube-apiserver with it" >&2; exit 1; }
log "control plane (scripts/controlplane/install.sh)"
bash scripts/controlplane/install.sh
log "helm and prometheus (scripts/install-tools.sh)"
bash scripts/install-tools.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
export CARGO_TERM_COLOR=never
log "target dir: $CARGO_TARGET_DIR"

# Under `set -o pipefail` a reader that exits early (head, grep -q/-m) kills the writer with
# SIGPIPE and fails the pipeline: that failed CI once (exit 141). Read the whole input instead.
log "shell pipelines"
if grep -rnE '(^|[^|])[|][[:space:]]*(head([[:space:]]|$)|grep[[:space:]]+-[a-zA-Z]*[qm])' \
  scripts bench .ci --include='*.sh' --include=run; then
  echo "test.sh: the lines above pipe into a reader that may exit early; use sed -n 1p or grep >/dev/null" >&2
  exit 1
fi

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo test"
cargo test --workspace --locked
