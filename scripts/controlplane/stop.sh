#!/usr/bin/env bash
# stop.sh DIR [--purge] - stop the control plane started by start.sh DIR.
#
# Sends SIGTERM to kube-apiserver, then etcd (SIGKILL after 10s each), then
# removes the run's state (etcd data, PKI, kubeconfig, env) but keeps the
# logs in DIR for post-mortems; --purge removes DIR entirely. Safe to call
# twice, or on a DIR whose start.sh failed.
set -euo pipefail
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 DIR [--purge]" >&2; exit 2; }
DIR=$1
PURGE=${2:-}
[ -z "$PURGE" ] || [ "$PURGE" = --purge ] || { echo "usage: $0 DIR [--purge]" >&2; exit 2; }
[ -d "$DIR" ] || { echo "stop.sh: $DIR does not exist, nothing to stop"; exit 0; }
DIR=$(cd "$DIR" && pwd)

alive() { # running (not a zombie) and started with DIR in its command line
  local pid=$1
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -F "$DIR/" >/dev/null
}

stop_pid() { # NAME PID
  local name=$1 pid=$2 i
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || { echo "stop.sh: stopped $name (pid $pid)"; return 0; }
    sleep 0.1
  done
  echo "stop.sh: $name (pid $pid) ignored SIGTERM for 10s, sending SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do alive "$pid" || return 0; sleep 0.1; done
  echo "stop.sh: ERROR: $name (pid $pid) still running" >&2
  return 1
}

APISERVER_PID=
ETCD_PID=
if [ -f "$DIR/env" ]; then
  # shellcheck disable=SC1091
  . "$DIR/env"
else
  # start.sh failed before writing env (it kills what it started then), or
  # env was removed: fall back to any process still running on DIR.
  for pid in $(pgrep -f -- "$DIR/" || true); do
    case "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" in
      *kube-apiserver*) APISERVER_PID=$pid ;;
      *etcd*) ETCD_PID=$pid ;;
    esac
  done
fi

rc=0
stop_pid kube-apiserver "$APISERVER_PID" || rc=1
stop_pid etcd "$ETCD_PID" || rc=1
[ $rc -eq 0 ] || exit 1

if [ "$PURGE" = --purge ]; then
  rm -rf "$DIR"
else
  rm -rf "$DIR/etcd-data" "$DIR/pki" "$DIR/env" "$DIR/admin.kubeconfig"
fi
