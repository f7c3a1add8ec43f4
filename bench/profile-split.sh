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
. "$(dirname "$0")/local.sh"
local_setup split
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
start_weir "$weir"
taskset -c 0 "${client[@]}" > "$run/client.out" 2>&1 &
pids+=("$!")
sleep 1.5
perf record -q -o "$run/perf.data" -e cpu-clock -F 1999 --call-graph dwarf,16384 \
    -p "$weir_pid" -- sleep "$secs" > /dev/null 2>&1
wait "${pids[-1]}" || true
echo "# $(date -u +%FT%TZ) weir=$weir load=$load seconds=$secs"
echo "# client: ${client[*]}"
grep -E 'Requests/sec|finished in' "$run/client.out" || true
echo
perf script -i "$run/perf.data" -F ip,sym,dso 2> /dev/null | python3 "$here/profile_split.py"
