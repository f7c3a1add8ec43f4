#!/usr/bin/env bash
# Where weir's CPU goes under scenario a's or b's load, by component (weir's request path,
# hyper's servers, the h2 crate, hpack, tokio, the allocator, the kernel).
#
#   bash bench/profile-split.sh WEIR_BINARY h1|h2 [SECONDS]
#
# Starts the backend (nginx for h1, nghttpd for h2) on CPU 0 and weir on the last CPU, puts
# the load on (wrk -t1 -c32, or h2load -t1 -c16 -m10, on CPU 0), records `perf record -e
# cpu-clock --call-graph dwarf` of weir for SECONDS (default 4), and prints the split
# (bench/profile_split.py). Needs perf (linux-perf), nginx, wrk, nghttp2. Uses ports 18001,
# 18100, 18200 and 18901; run it when the harness is not running.
set -euo pipefail

weir=${1:?usage: profile-split.sh WEIR_BINARY h1|h2 [SECONDS]}
load=${2:?usage: profile-split.sh WEIR_BINARY h1|h2 [SECONDS]}
secs=${3:-4}
here=$(cd "$(dirname "$0")" && pwd)
run=$(mktemp -d /tmp/weir-split.XXXXXX)
proxy_cpu=$(($(nproc) - 1))
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$run/nb.pid" ] && kill "$(cat "$run/nb.pid")" 2>/dev/null || true
    rm -rf "$run"
}
trap cleanup EXIT

mkdir -p "$run/ngx-tmp" "$run/m" "$run/htdocs/h2c"
printf 'hello, bench\n' > "$run/htdocs/h2c/index.html"
sed -e "s#\$RUN#$run#g; s#\$H1_BACKEND_PORT#18100#g; s#nginx-backend.pid#nb.pid#" \
    "$here/templates/nginx-backend.conf" > "$run/nb.conf"
sed -e 's/\$H2_BACKEND_PORT/18200/g; s/\$H1_BACKEND_PORT/18100/g; s/\$S1_BACKEND_PORT/18201/g; s/\$S8_BACKEND_PORT/18208/g' \
    "$here/templates/weir/00-base.yaml" > "$run/m/00-base.yaml"
case "$load" in
    h1)
        taskset -c 0 nginx -c "$run/nb.conf" -p "$run" &
        client=(wrk -t1 -c32 -d"$((secs + 3))s" http://127.0.0.1:18001/h1/)
        ;;
    h2)
        taskset -c 0 nghttpd --no-tls -n 1 -d "$run/htdocs" 18200 > /dev/null 2>&1 &
        pids+=("$!")
        client=(h2load -t1 -c16 -m10 -D "$((secs + 3))" http://127.0.0.1:18001/h2c/index.html)
        ;;
    *) echo "load must be h1 or h2" >&2; exit 2 ;;
esac
taskset -c "$proxy_cpu" "$weir" run --manifests "$run/m" --http-listen 127.0.0.1:18001 \
    --https-listen 127.0.0.1:18441 --admin-listen 127.0.0.1:18901 --log-level warn \
    --workers 1 > "$run/weir.log" 2>&1 &
wpid=$!
pids+=("$wpid")
for _ in $(seq 100); do
    curl -fs -o /dev/null http://127.0.0.1:18901/readyz && break
    sleep 0.05
done
taskset -c 0 "${client[@]}" > "$run/client.out" 2>&1 &
pids+=("$!")
sleep 1.5
perf record -q -o "$run/perf.data" -e cpu-clock -F 1999 --call-graph dwarf,16384 \
    -p "$wpid" -- sleep "$secs" > /dev/null 2>&1
wait "${pids[-1]}" || true
echo "# $(date -u +%FT%TZ) weir=$weir load=$load seconds=$secs"
echo "# client: ${client[*]}"
grep -E 'Requests/sec|finished in' "$run/client.out" || true
echo
perf script -i "$run/perf.data" -F ip,sym,dso 2> /dev/null | python3 "$here/profile_split.py"
