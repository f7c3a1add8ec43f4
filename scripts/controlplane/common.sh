# shellcheck shell=bash
# Shared pins and paths for scripts/controlplane/*.sh. Sourced, not executed.
# shellcheck disable=SC2034  # variables are used by the scripts that source this

# kube-apiserver is built from the k8s.io/kubernetes Go module at this tag.
# It must match the `require k8s.io/kubernetes` line in apiserver/go.mod
# (install.sh checks this).
K8S_VERSION=v1.33.13

# Where etcd comes from:
#   go     - (default) built with Go from the go.etcd.io/etcd/server/v3 module
#            at ETCD_GO_VERSION (wrapper module in etcd/): the version kubeadm
#            v1.33.13 deploys and sets as its minimum (3.5.24).
#   debian - the etcd-server Debian package (bookworm: 3.4.23). Works for
#            plain CRUD/list/watch, but is below the supported minimum and
#            lacks RequestWatchProgress, so streaming lists (WatchList,
#            sendInitialEvents) fail and consistent lists bypass the watch
#            cache. See README.md.
WEIR_ETCD=${WEIR_ETCD:-go}
ETCD_GO_VERSION=v3.5.24

CONTROLPLANE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WEIR_CACHE=${WEIR_CACHE:-$HOME/.cache/weir}
WEIR_BIN=$WEIR_CACHE/bin
KUBE_APISERVER_BIN=$WEIR_BIN/kube-apiserver-$K8S_VERSION

case "$WEIR_ETCD" in
  debian) ETCD_BIN=/usr/bin/etcd ;;
  go) ETCD_BIN=$WEIR_BIN/etcd-$ETCD_GO_VERSION ;;
  *) echo "WEIR_ETCD must be 'debian' or 'go', got '$WEIR_ETCD'" >&2; return 1 2>/dev/null || exit 1 ;;
esac

die() {
  echo "controlplane: ERROR: $*" >&2
  exit 1
}
