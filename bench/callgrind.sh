#!/usr/bin/env bash
# Instructions per proxied request, by where the code comes from, under valgrind's callgrind.
# Instruction counts do not depend on what else the machine is doing, so two builds can be
# compared on a busy machine.
#
#   bash bench/callgrind.sh [h2|h1] [REQUESTS]      (default: h2 20000)
#
# Starts its own backends (nghttpd for h2c, nginx for HTTP/1.1) and weir (`--workers 1`) on
# ports 7101-7103 / 9301-9302, warms up with 2000 requests uninstrumented, then counts
# REQUESTS requests sent by h2load (16 connections; 10 streams each for h2) and prints
# user-space instructions per request grouped by crate. Needs valgrind, nghttp2, nginx and a
# release build (`cargo build --release --bin weir`, or WEIR=path/to/weir).
set -euo pipefail
MODE=${1:-h2}
N=${2:-20000}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WEIR=${WEIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release/weir}
RUN=$(mktemp -d /tmp/weir-callgrind.XXXXXX)
for tool in valgrind callgrind_annotate h2load nghttpd nginx; do
  command -v "$tool" >/dev/null || { echo "callgrind.sh: $tool is missing (apt-get install valgrind nghttp2 nginx-light)" >&2; exit 1; }
done
[ -x "$WEIR" ] || { echo "callgrind.sh: no weir binary at $WEIR (cargo build --release --bin weir, or set WEIR)" >&2; exit 1; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

mkdir -p "$RUN/htdocs/h2c" "$RUN/man" "$RUN/tmp"
echo "hello, bench" >"$RUN/htdocs/h2c/index.html"
sed -e "s#\$RUN#$RUN#g" -e 's/\$H1_BACKEND_PORT/9301/g' -e "s#nginx-backend.pid#cg-nginx.pid#" \
  -e "s#ngx-tmp#tmp#g" "$ROOT/bench/templates/nginx-backend.conf" >"$RUN/nginx.conf"
sed -e 's/\$H2_BACKEND_PORT/9302/g' -e 's/\$H1_BACKEND_PORT/9301/g' \
  -e "s/\$S1_BACKEND_PORT/9303/g" -e "s/\$S8_BACKEND_PORT/9304/g" \
  "$ROOT/bench/templates/weir/00-base.yaml" >"$RUN/man/00-base.yaml"
nghttpd --no-tls -n 1 -d "$RUN/htdocs" 9302 >"$RUN/nghttpd.log" 2>&1 & pids+=($!)
nginx -c "$RUN/nginx.conf" -p "$RUN" >"$RUN/nginx.log" 2>&1 & pids+=($!)
valgrind --tool=callgrind --callgrind-out-file="$RUN/cg.out" --instr-atstart=no \
  "$WEIR" run --workers 1 --manifests "$RUN/man" --http-listen 127.0.0.1:7101 \
  --https-listen 127.0.0.1:7102 --admin-listen 127.0.0.1:7103 --log-level warn --drain-timeout 1s \
  >"$RUN/weir.log" 2>&1 & VG=$!
pids+=($VG)
for _ in $(seq 600); do curl -sf http://127.0.0.1:7103/readyz >/dev/null && break; sleep 0.1; done
curl -sf http://127.0.0.1:7103/readyz >/dev/null || { echo "callgrind.sh: weir did not become ready; see $RUN/weir.log" >&2; exit 1; }

load() {
  if [ "$MODE" = h2 ]; then h2load -t1 -c16 -m10 -n "$1" http://127.0.0.1:7101/h2c/index.html
  else h2load --h1 -t1 -c16 -n "$1" http://127.0.0.1:7101/h1/; fi
}
load 2000 >/dev/null
callgrind_control -i on "$VG" >/dev/null
load "$N" | grep -E "^requests:"
callgrind_control -i off "$VG" >/dev/null
callgrind_control -d "$VG" >/dev/null
kill "$VG"; wait "$VG" 2>/dev/null || true
OUT=$(ls -S "$RUN"/cg.out* | sed -n 1p)
callgrind_annotate --inclusive=no --threshold=100 "$OUT" >"$RUN/self.txt" 2>/dev/null
python3 - "$RUN/self.txt" "$N" "$MODE" <<'EOF'
import re, sys
path, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
groups, total = {}, 0
for line in open(path):
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S+):", line)
    if not m or "PROGRAM" in line:
        continue
    ir, src = int(m.group(1).replace(",", "")), m.group(2)
    crate = re.search(r"index\.crates\.io-[0-9a-f]+/([a-z0-9_-]+?)-\d", src)
    own = any(d in "/" + src for d in ("/dataplane/src/", "/controller/src/", "/src/main.rs"))
    key = ("weir" if own and "index.crates.io" not in src else
           crate.group(1) if crate else "std/core (inlined)" if "/rustc/" in src else
           "libc (memcpy, ...)" if "libc" in src or "sysdeps" in src or src.startswith("./") else "other")
    groups[key] = groups.get(key, 0) + ir
    total += ir
print(f"{mode}: {total / n:,.0f} user-space instructions per request ({n} requests)")
for k, v in sorted(groups.items(), key=lambda kv: -kv[1])[:12]:
    print(f"  {k:22s} {v / n:9,.0f}  {100 * v / total:5.1f}%")
EOF
echo "callgrind output: $OUT"
