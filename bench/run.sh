#!/usr/bin/env bash
# weir benchmark harness: one command.
#   bash bench/run.sh           full run (< 20 min on 2 cores)
#   bash bench/run.sh --quick   smoke run (< 3 min once tools are installed and built)
# Extra arguments go to bench/harness.py (e.g. --only abc, --reconfigs 200).
set -euo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
CACHE="${WEIR_BENCH_CACHE:-$HOME/.cache/weir}"
OHA_VERSION=1.16.0

need_apt=()
command -v haproxy >/dev/null || need_apt+=(haproxy)
command -v h2load >/dev/null && command -v nghttpd >/dev/null && command -v nghttpx >/dev/null || need_apt+=(nghttp2)
command -v nginx >/dev/null || need_apt+=(nginx-light)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v gnuplot >/dev/null || need_apt+=(gnuplot-nox)
command -v taskset >/dev/null || need_apt+=(util-linux)
if ((${#need_apt[@]})); then
  echo "== installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
# The Debian nginx package may start a system nginx on :80; the bench uses its own ports only.

OHA="$CACHE/bench-tools/bin/oha"
if ! [ -x "$OHA" ] || ! "$OHA" --version 2>/dev/null | grep "$OHA_VERSION" >/dev/null; then
  echo "== cargo install oha $OHA_VERSION"
  CARGO_TARGET_DIR="$CACHE/bench-target" cargo install oha --locked --version "$OHA_VERSION" \
    --root "$CACHE/bench-tools"
fi

echo "== test control plane for scenario g (scripts/controlplane/install.sh; cached after the first build)"
bash "$ROOT/scripts/controlplane/install.sh"

echo "== building weir (release)"
(cd "$ROOT" && CARGO_TARGET_DIR="$CACHE/bench-weir" cargo build --release --bin weir)
WEIR="$CACHE/bench-weir/release/weir"

exec python3 "$BENCH/harness.py" --weir "$WEIR" --oha "$OHA" --run-dir "$CACHE/bench-run" "$@"
