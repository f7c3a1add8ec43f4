#!/usr/bin/env bash
# Network namespaces for test backends on non-loopback addresses (needs root).
#
#   netns.sh up NAME INDEX      create netns NAME with a veth pair; INDEX
#                               (0..32767) picks the /30 198.18.(4*INDEX)/30
#                               of 198.18.0.0/15 (RFC 2544 benchmarking range):
#                               host side .1, namespace side .2. INDEX 0 ->
#                               host 198.18.0.1, namespace 198.18.0.2.
#                               Prints sourceable NETNS_HOST_IP=, NETNS_IP=,
#                               NETNS_NAME=, NETNS_HOST_IF=.
#   netns.sh down NAME          kill processes still inside NAME, delete it and
#                               its veth pair. No-op if NAME does not exist.
#   netns.sh exec NAME CMD...   run CMD inside NAME (= ip netns exec NAME CMD).
#   netns.sh ip INDEX           print "HOST_IP NS_IP" for INDEX, no changes.
#   netns.sh selftest [INDEX]   up, python3 http.server inside, curl from the
#                               host, down. Default INDEX 32767.
#
# The namespace has only lo and its veth end (no default route): a backend
# inside can talk to the host side address and nothing else.
set -euo pipefail
STATE=/run/weir-netns

die() { echo "netns.sh: ERROR: $*" >&2; exit 1; }
usage() { sed -n '2,20p' "$0" >&2; exit 2; }

addrs() { # INDEX -> "HOST_IP NS_IP"
  local i=$1 n a b c
  [[ $i =~ ^[0-9]+$ ]] && [ "$i" -le 32767 ] || die "INDEX must be 0..32767, got '$i'"
  n=$((4 * i))
  a=$((18 + n / 65536)) b=$(((n / 256) % 256)) c=$((n % 256))
  echo "198.$a.$b.$((c + 1)) 198.$a.$b.$((c + 2))"
}

check_name() {
  [[ $1 =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || die "bad namespace name '$1'"
}

need_root() {
  [ "$(id -u)" -eq 0 ] || die "needs root (ip netns)"
  command -v ip >/dev/null || die "ip missing: install iproute2 (scripts/controlplane/install.sh)"
}

down() {
  local name=$1 pids host_if i
  check_name "$name"
  need_root
  if ip netns list | awk '{print $1}' | grep -x "$name" >/dev/null; then
    pids=$(ip netns pids "$name" 2>/dev/null || true)
    if [ -n "$pids" ]; then
      # shellcheck disable=SC2086
      kill -TERM $pids 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        pids=$(ip netns pids "$name" 2>/dev/null || true)
        [ -z "$pids" ] && break
        sleep 0.1
      done
      # shellcheck disable=SC2086
      [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    fi
    ip netns del "$name"
  fi
  # Deleting the namespace destroys the veth pair; remove the host end in
  # case it outlived it (e.g. a half-finished `up`).
  if [ -f "$STATE/$name" ]; then
    host_if=$(cat "$STATE/$name")
    ip link del "$host_if" 2>/dev/null || true
    rm -f "$STATE/$name"
  fi
}

up() {
  local name=$1 index=$2 host_ip ns_ip host_if ns_if
  check_name "$name"
  need_root
  addrs "$index" >/dev/null # validates INDEX (dies here, not in a subshell)
  read -r host_ip ns_ip < <(addrs "$index")
  host_if=wv$index ns_if=wv${index}n
  down "$name" # idempotent: recreate from scratch
  ip link del "$host_if" 2>/dev/null || true
  mkdir -p "$STATE"
  echo "$host_if" >"$STATE/$name"
  {
    ip netns add "$name" &&
      ip link add "$host_if" type veth peer name "$ns_if" &&
      ip link set "$ns_if" netns "$name" &&
      ip addr add "$host_ip/30" dev "$host_if" &&
      ip link set "$host_if" up &&
      ip -n "$name" link set lo up &&
      ip -n "$name" addr add "$ns_ip/30" dev "$ns_if" &&
      ip -n "$name" link set "$ns_if" up
  } || { down "$name"; die "creating netns $name (index $index) failed"; }
  # Links come up asynchronously: wait until the veth pair reports up.
  for ((i = 0; i < 50; i++)); do
    [ "$(cat "/sys/class/net/$host_if/operstate" 2>/dev/null)" = up ] && break
    sleep 0.1
  done
  echo "NETNS_NAME=$name"
  echo "NETNS_HOST_IF=$host_if"
  echo "NETNS_HOST_IP=$host_ip"
  echo "NETNS_IP=$ns_ip"
}

selftest() {
  local index=${1:-32767} name=weir-selftest-$$ host_ip ns_ip port=18080 out="" i
  SELFTEST_NS=$name
  trap 'down "$SELFTEST_NS"' EXIT
  up "$name" "$index" >/dev/null
  read -r host_ip ns_ip < <(addrs "$index")
  local dir
  dir=$(mktemp -d)
  echo "hello from $name" >"$dir/index.html"
  ip netns exec "$name" python3 -m http.server "$port" --bind "$ns_ip" --directory "$dir" \
    >"$dir/server.log" 2>&1 &
  for ((i = 0; i < 100; i++)); do
    out=$(curl -sS --max-time 2 "http://$ns_ip:$port/index.html" 2>/dev/null) && break
    sleep 0.1
  done
  # The same server must not be reachable on the host's loopback.
  if curl -sS --max-time 1 "http://127.0.0.1:$port/" >/dev/null 2>&1; then
    echo "netns.sh selftest: note: something answers on 127.0.0.1:$port on the host (not ours)" >&2
  fi
  rm -rf "$dir"
  [ "$out" = "hello from $name" ] || die "selftest: curl http://$ns_ip:$port/ from the host got '$out'"
  echo "netns.sh selftest: ok: host $host_ip -> http://$ns_ip:$port/ inside netns $name answered '$out'"
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
  up) [ $# -eq 2 ] || usage; up "$1" "$2" ;;
  down) [ $# -eq 1 ] || usage; down "$1" ;;
  exec) [ $# -ge 2 ] || usage; check_name "$1"; need_root; n=$1; shift; exec ip netns exec "$n" "$@" ;;
  ip) [ $# -eq 1 ] || usage; addrs "$1" ;;
  selftest) [ $# -le 1 ] || usage; need_root; selftest "$@" ;;
  *) usage ;;
esac
