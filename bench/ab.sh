#!/usr/bin/env bash
# A/B of two weir binaries on scenario b's load (HTTP/1.1 client -> proxy -> HTTP/1.1 backend),
# with nginx as the peer in every round: OLD, NEW, nginx, OLD, NEW, nginx, ...
#
#   bash bench/ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [SECONDS]
#   LATENCY_RATE=33000 bash bench/ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [SECONDS]
#   AB_LOAD=h2 bash bench/ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [SECONDS]
#
# Same pinning as the harness: the proxy on the last CPU, the client and the nginx backend on
# CPU 0. Throughput (default): wrk -c32; prints req/s and the proxy's CPU microseconds per
# request (utime+stime from /proc) per run. With LATENCY_RATE: oha at that fixed rate with 16
# connections and latency correction (scenario e's client, needs bench/run.sh's oha); prints
# p50/p99/p99.9, with the backend measured directly in place of the nginx proxy. With
# AB_LOAD=h2: scenario a's load instead (h2load -t1 -c16 -m10 to an nghttpd h2c backend on
# port 18200), old and new only, req/s and CPU microseconds per request.
# Uses ports 18001 (weir), 18005 (nginx proxy), 18100 (backend), 18901 (weir admin); run it
# when the harness is not running. Needs nginx and wrk (bench/run.sh installs them).
set -euo pipefail

old=${1:?usage: ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [SECONDS]}
new=${2:?usage: ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [SECONDS]}
rounds=${3:-3}
secs=${4:-8}
. "$(dirname "$0")/local.sh"
local_setup ab
taskset -c 0 nginx -c "$run/nb.conf" -p "$run" &
taskset -c "$proxy_cpu" nginx -c "$run/np.conf" -p "$run" &
if [ "${AB_LOAD:-h1}" = h2 ]; then
    taskset -c 0 nghttpd --no-tls -n 1 -d "$run/htdocs" 18200 > /dev/null 2>&1 &
    pids+=("$!")
fi
sleep 1

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# measure LABEL URL PID: one warm-up second, then the measured run.
measure() {
    taskset -c 0 wrk -t1 -c32 -d1s "$2" > /dev/null
    local a b out n rps
    a=$(cpu_ticks "$3")
    out=$(taskset -c 0 wrk -t1 -c32 -d"${secs}s" "$2")
    b=$(cpu_ticks "$3")
    n=$(awk '/requests in/ {print $1}' <<< "$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<< "$out")
    local tick
    tick=$(getconf CLK_TCK)
    echo "$1 rps=$rps cpu_us_per_req=$(python3 -c "print(round(($b - $a) * 1e6 / $tick / $n, 2))")"
}

# measure_h2 LABEL PID: scenario a's load, one warm-up second, then the measured run.
measure_h2() {
    local url=http://127.0.0.1:18001/h2c/index.html a b out n rps tick
    taskset -c 0 h2load -t1 -c16 -m10 -D 1 "$url" > /dev/null
    a=$(cpu_ticks "$2")
    out=$(taskset -c 0 h2load -t1 -c16 -m10 -D "$secs" "$url")
    b=$(cpu_ticks "$2")
    n=$(awk '/^requests:/ {print $8}' <<< "$out")
    rps=$(awk '/^finished in/ {print $4}' <<< "$out")
    tick=$(getconf CLK_TCK)
    echo "$1 rps=$rps cpu_us_per_req=$(python3 -c "print(round(($b - $a) * 1e6 / $tick / $n, 2))")"
}

oha=${OHA:-$HOME/.cache/weir/bench-tools/bin/oha}

# latency LABEL URL: one warm-up second, then oha at LATENCY_RATE.
latency() {
    taskset -c 0 wrk -t1 -c16 -d1s "$2" > /dev/null
    taskset -c 0 "$oha" -z "${secs}s" -q "$LATENCY_RATE" -c 16 --latency-correction --no-tui \
        --output-format json "$2" > "$run/oha.json"
    python3 - "$1" "$run/oha.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[2]))["latencyPercentiles"]
print(sys.argv[1], " ".join(f"{k}={p[k] * 1e3:.3f}ms" for k in ("p50", "p99", "p99.9")))
PY
}

weir_run() {
    start_weir "$2"
    if [ "${AB_LOAD:-h1}" = h2 ]; then
        measure_h2 "$1" "$weir_pid"
    elif [ -n "${LATENCY_RATE:-}" ]; then
        latency "$1" http://127.0.0.1:18001/h1/
    else
        measure "$1" http://127.0.0.1:18001/h1/ "$weir_pid"
    fi
    kill "$weir_pid"
    wait "$weir_pid" 2>/dev/null || true
}

nginx_pid=$(cat "$run/np.pid")
# The worker, not the master, does the work.
nginx_worker=$(pgrep -P "$nginx_pid" | sed -n 1p)
echo "# $(date -u +%FT%TZ) rounds=$rounds seconds=$secs proxy_cpu=$proxy_cpu"
for _ in $(seq "$rounds"); do
    weir_run old "$old"
    weir_run new "$new"
    if [ "${AB_LOAD:-h1}" = h2 ]; then
        :
    elif [ -n "${LATENCY_RATE:-}" ]; then
        latency direct http://127.0.0.1:18100/h1/
    else
        measure nginx http://127.0.0.1:18005/ "$nginx_worker"
    fi
done
