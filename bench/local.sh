# Sourced by ab.sh and profile-split.sh: a private run directory with the harness's templates
# rendered on ports of their own (weir 18001 and admin 18901, nginx proxy 18005, HTTP/1.1
# backend 18100, h2c backend 18200), weir started with the harness's pinning, and everything
# the script started stopped on exit.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
proxy_cpu=$(($(nproc) - 1))
pids=()

# local_setup TAG: creates $run and renders the configs into it.
local_setup() {
    run=$(mktemp -d "/tmp/weir-$1.XXXXXX")
    trap local_cleanup EXIT
    mkdir -p "$run/ngx-tmp" "$run/m" "$run/htdocs/h2c"
    printf 'hello, bench\n' > "$run/htdocs/h2c/index.html"
    sed -e "s#\$RUN#$run#g; s#\$H1_BACKEND_PORT#18100#g; s#nginx-backend.pid#nb.pid#" \
        "$here/templates/nginx-backend.conf" > "$run/nb.conf"
    sed -e "s#\$RUN#$run#g; s#\$H1_BACKEND_PORT#18100#g; s#\$WORKERS#1#; s#\$PORT#18005#; s#nginx-proxy.pid#np.pid#" \
        "$here/templates/nginx-proxy.conf" > "$run/np.conf"
    sed -e 's/\$H2_BACKEND_PORT/18200/g; s/\$H1_BACKEND_PORT/18100/g; s/\$S1_BACKEND_PORT/18201/g; s/\$S8_BACKEND_PORT/18208/g' \
        "$here/templates/weir/00-base.yaml" > "$run/m/00-base.yaml"
}

local_cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for f in "$run/nb.pid" "$run/np.pid"; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    rm -rf "$run"
}

# start_weir BINARY: weir on the last CPU with one worker, serving $run/m; sets weir_pid once
# /readyz answers.
start_weir() {
    taskset -c "$proxy_cpu" "$1" run --manifests "$run/m" --http-listen 127.0.0.1:18001 \
        --https-listen 127.0.0.1:18441 --admin-listen 127.0.0.1:18901 --log-level warn \
        --workers 1 > "$run/weir.log" 2>&1 &
    weir_pid=$!
    pids+=("$weir_pid")
    for _ in $(seq 100); do
        curl -fs -o /dev/null http://127.0.0.1:18901/readyz && return 0
        sleep 0.05
    done
    echo "weir did not become ready; its log:" >&2
    cat "$run/weir.log" >&2
    return 1
}
