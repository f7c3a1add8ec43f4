#!/usr/bin/env bash
# Runs weir's main job on a fresh machine: builds weir and a small echo backend, serves the
# example manifests in examples/manifests, and shows proxied requests over HTTP/1.1 and HTTP/2.
# weir keeps running afterwards (Ctrl-C stops everything); DEMO_ONCE=1 stops after the requests.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "demo: cargo is missing: install Rust (https://rustup.rs)" >&2; exit 1; }
if ! command -v curl >/dev/null; then
  apt-get update -qq && apt-get install -y -qq curl >/dev/null
fi

cargo build --release --quiet -p weir -p weir-testkit --bins
bin=target/release
[ -n "${CARGO_TARGET_DIR:-}" ] && bin="$CARGO_TARGET_DIR/release"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$bin/weir-echo" 127.0.0.1:9090 & pids+=($!)
"$bin/weir" run --manifests examples/manifests \
  --http-listen 127.0.0.1:8080 --https-listen 127.0.0.1:8443 --admin-listen 127.0.0.1:9901 & pids+=($!)

for _ in $(seq 100); do
  curl -sf -o /dev/null http://127.0.0.1:9901/readyz && break
  sleep 0.1
done
curl -sf -o /dev/null http://127.0.0.1:9901/readyz || { echo "demo: weir did not become ready" >&2; exit 1; }

show() { echo; echo "\$ $*"; "$@"; echo; }
echo "== HTTP/1.1 client -> weir -> HTTP/1.1 backend (Service echo)"
show curl -s -i -H 'Host: demo.localhost' http://127.0.0.1:8080/hello
echo "== HTTP/2 client (prior knowledge) -> weir -> HTTP/2 backend (Service echo-h2c, appProtocol kubernetes.io/h2c)"
show curl -s -i --http2-prior-knowledge -H 'Host: demo.localhost' http://127.0.0.1:8080/h2/hello
echo "== A host no Ingress names"
show curl -s -i -H 'Host: nothing.localhost' http://127.0.0.1:8080/
echo "== The route table weir is serving: http://127.0.0.1:9901/debug/routes ; metrics: http://127.0.0.1:9901/metrics"

if [ "${DEMO_ONCE:-0}" = 1 ]; then exit 0; fi
echo "weir is running on 127.0.0.1:8080. Edit examples/manifests/*.yaml and the change applies in place."
echo "Ctrl-C stops it."
wait
