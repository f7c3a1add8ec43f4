#!/usr/bin/env bash
# start.sh DIR - start etcd + kube-apiserver for one test run, all state in DIR.
#
# Generates a fresh PKI (openssl), picks free loopback ports, starts both
# processes in the background (logs: DIR/etcd.log, DIR/kube-apiserver.log),
# waits for /readyz, then exits 0 leaving them running. Writes:
#   DIR/admin.kubeconfig   cluster-admin (client cert, group system:masters)
#   DIR/env                shell-sourceable: APISERVER_URL, APISERVER_PORT,
#                          ETCD_URL, ETCD_PID, APISERVER_PID, CA_FILE,
#                          ADMIN_CERT, ADMIN_KEY, KUBECONFIG, CONTROLPLANE_DIR
# On failure: prints the reason and the tail of the logs, stops whatever it
# started and exits non-zero. Stop with stop.sh DIR.
#
# Environment:
#   WEIR_ETCD                 debian (default) | go   (see common.sh)
#   WEIR_APISERVER_ARGS       extra kube-apiserver flags (word-split)
#   WEIR_START_TIMEOUT        seconds to wait for readiness (default 90)
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ $# -eq 1 ] || die "usage: $0 DIR"
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
# env and admin.kubeconfig hold paths unquoted (easy to parse from tests).
[[ $DIR =~ ^[A-Za-z0-9_./+-]+$ ]] || die "DIR path must not contain spaces or shell metacharacters: '$DIR'"
TIMEOUT=${WEIR_START_TIMEOUT:-90}
PKI=$DIR/pki
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1 # first IP of SERVICE_CIDR: the `kubernetes` Service

[ -x "$KUBE_APISERVER_BIN" ] || die "$KUBE_APISERVER_BIN missing: run scripts/controlplane/install.sh"
[ -x "$ETCD_BIN" ] || die "$ETCD_BIN missing: run scripts/controlplane/install.sh (WEIR_ETCD=$WEIR_ETCD)"
for c in openssl curl ss; do command -v $c >/dev/null || die "$c missing: run scripts/controlplane/install.sh"; done
if [ -f "$DIR/env" ]; then
  # shellcheck disable=SC1091
  (. "$DIR/env" && kill -0 "$APISERVER_PID" 2>/dev/null) && die "$DIR already has a running control plane (stop.sh $DIR first)"
fi

ETCD_PID=
APISERVER_PID=
fail() {
  echo "controlplane: ERROR: $*" >&2
  for f in "$DIR/etcd.log" "$DIR/kube-apiserver.log"; do
    [ -s "$f" ] || continue
    echo "----- last 40 lines of $f -----" >&2
    tail -n 40 "$f" >&2
  done
  # Leave nothing behind: stop what this run started and wait for it.
  local pid i
  for pid in $APISERVER_PID $ETCD_PID; do
    kill "$pid" 2>/dev/null || continue
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  exit 1
}

# --------------------------------------------------------------- ports ----
# A random port in 20000-32767 (below Linux's ephemeral range, so outgoing
# connections do not take it) that nothing listens on. Racy by nature: the
# starts below retry with new ports if a bind fails.
free_port() {
  local used p
  used=$(ss -Htan | awk '{n=split($4,a,":"); print a[n]}' | sort -u)
  while :; do
    p=$((20000 + RANDOM % 12768))
    grep -qx "$p" <<<"$used" || { echo "$p"; return; }
  done
}

# ----------------------------------------------------------------- PKI ----
# ECDSA P-256 keys in PKCS#8 PEM ("BEGIN PRIVATE KEY"): fast to generate and
# read by openssl, Go, rustls/rustls-pemfile and curl alike.
gen_pki() {
  rm -rf "$PKI"
  mkdir -p "$PKI"
  (
    cd "$PKI"
    umask 077
    key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
    key ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 7 -subj "/CN=weir-test-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -addext "subjectKeyIdentifier=hash" -out ca.crt
    # leaf NAME SUBJECT EXTENSIONS
    leaf() {
      key "$1.key"
      openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
      printf '%s\n' "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "authorityKeyIdentifier=keyid" "subjectKeyIdentifier=hash" "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
        -days 7 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    leaf apiserver "/CN=kube-apiserver" \
      "$(printf '%s\n' "extendedKeyUsage=serverAuth" \
        "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:$SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local")"
    leaf admin "/O=system:masters/CN=weir-admin" "extendedKeyUsage=clientAuth"
    # ServiceAccount token signing keypair (ES256).
    key sa.key
    openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 644 ca.crt apiserver.crt admin.crt sa.pub
  ) || fail "generating certificates with openssl failed"
}

# ---------------------------------------------------------------- etcd ----
start_etcd() {
  local etcd_extra=()
  # Test data is throwaway: skip fsync where supported (etcd >= 3.5), which
  # makes writes much faster on slow disks.
  "$ETCD_BIN" --help 2>&1 | grep -- --unsafe-no-fsync >/dev/null && etcd_extra+=(--unsafe-no-fsync)
  for _ in 1 2 3; do
    ETCD_PORT=$(free_port)
    ETCD_PEER_PORT=$(free_port)
    [ "$ETCD_PORT" != "$ETCD_PEER_PORT" ] || continue
    ETCD_URL=http://127.0.0.1:$ETCD_PORT
    rm -rf "$DIR/etcd-data"
    "$ETCD_BIN" \
      --name weir-test \
      --data-dir "$DIR/etcd-data" \
      --listen-client-urls "$ETCD_URL" \
      --advertise-client-urls "$ETCD_URL" \
      --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-cluster "weir-test=http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-cluster-state new \
      --logger zap \
      --log-outputs stderr \
      --log-level warn \
      "${etcd_extra[@]}" \
      >"$DIR/etcd.log" 2>&1 </dev/null &
    ETCD_PID=$!
    local deadline=$((SECONDS + 30))
    while [ $SECONDS -lt $deadline ]; do
      if ! kill -0 "$ETCD_PID" 2>/dev/null; then
        if grep -q 'address already in use' "$DIR/etcd.log"; then
          echo "start.sh: etcd port taken, retrying with new ports" >&2
          ETCD_PID=
          continue 2
        fi
        wait "$ETCD_PID" 2>/dev/null && rc=0 || rc=$?
        ETCD_PID=
        fail "etcd ($ETCD_BIN) exited with status $rc during startup"
      fi
      if curl -fsS --max-time 2 "$ETCD_URL/health" 2>/dev/null | grep '"health":"true"' >/dev/null; then
        return 0
      fi
      sleep 0.2
    done
    fail "etcd did not become healthy at $ETCD_URL/health within 30s"
  done
  fail "could not find free ports for etcd after 3 attempts"
}

# ------------------------------------------------------ kube-apiserver ----
start_apiserver() {
  local extra=()
  # shellcheck disable=SC2206
  [ -n "${WEIR_APISERVER_ARGS:-}" ] && extra=(${WEIR_APISERVER_ARGS})
  for _ in 1 2 3; do
    APISERVER_PORT=$(free_port)
    [ "$APISERVER_PORT" != "$ETCD_PORT" ] && [ "$APISERVER_PORT" != "$ETCD_PEER_PORT" ] || continue
    APISERVER_URL=https://127.0.0.1:$APISERVER_PORT
    # No controller-manager runs, so admission plugins that expect its
    # controllers are disabled: ServiceAccount (would reject Pods whose
    # ServiceAccount the SA controller never created). NamespaceLifecycle
    # stays on (objects need an existing namespace); note that deleting a
    # namespace never completes without the namespace controller.
    # --endpoint-reconciler-type none: the reconciler would publish the
    # advertise address 127.0.0.1 in default/kubernetes Endpoints, which
    # validation rejects (loopback), logging an error every 10s.
    "$KUBE_APISERVER_BIN" \
      --etcd-servers "$ETCD_URL" \
      --bind-address 127.0.0.1 \
      --advertise-address 127.0.0.1 \
      --secure-port "$APISERVER_PORT" \
      --cert-dir "$PKI" \
      --tls-cert-file "$PKI/apiserver.crt" \
      --tls-private-key-file "$PKI/apiserver.key" \
      --client-ca-file "$PKI/ca.crt" \
      --authorization-mode RBAC \
      --service-account-issuer https://kubernetes.default.svc.cluster.local \
      --service-account-key-file "$PKI/sa.pub" \
      --service-account-signing-key-file "$PKI/sa.key" \
      --service-cluster-ip-range "$SERVICE_CIDR" \
      --disable-admission-plugins ServiceAccount \
      --endpoint-reconciler-type none \
      --profiling=false \
      "${extra[@]}" \
      >"$DIR/kube-apiserver.log" 2>&1 </dev/null &
    APISERVER_PID=$!
    local deadline=$((SECONDS + TIMEOUT)) out=
    while [ $SECONDS -lt $deadline ]; do
      if ! kill -0 "$APISERVER_PID" 2>/dev/null; then
        if grep -q 'address already in use' "$DIR/kube-apiserver.log"; then
          echo "start.sh: apiserver port taken, retrying with a new port" >&2
          APISERVER_PID=
          continue 2
        fi
        wait "$APISERVER_PID" 2>/dev/null && rc=0 || rc=$?
        APISERVER_PID=
        fail "kube-apiserver exited with status $rc during startup"
      fi
      out=$(curl -sS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
        "$APISERVER_URL/readyz" 2>&1) && [ "$out" = ok ] && return 0
      sleep 0.5
    done
    echo "last /readyz answer: $out" >&2
    out=$(curl -sS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
      "$APISERVER_URL/readyz?verbose" 2>&1 | grep -v '^\[+\]' || true)
    echo "$out" >&2
    fail "kube-apiserver not ready at $APISERVER_URL/readyz within ${TIMEOUT}s"
  done
  fail "could not find a free port for kube-apiserver after 3 attempts"
}

t0=$EPOCHREALTIME
gen_pki
start_etcd
start_apiserver

cat >"$DIR/admin.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: weir-test
  cluster:
    server: $APISERVER_URL
    certificate-authority: $PKI/ca.crt
users:
- name: weir-admin
  user:
    client-certificate: $PKI/admin.crt
    client-key: $PKI/admin.key
contexts:
- name: weir-test
  context:
    cluster: weir-test
    user: weir-admin
    namespace: default
current-context: weir-test
EOF

cat >"$DIR/env" <<EOF
# Written by scripts/controlplane/start.sh; source it.
CONTROLPLANE_STATE_DIR=$DIR
APISERVER_URL=$APISERVER_URL
APISERVER_PORT=$APISERVER_PORT
APISERVER_PID=$APISERVER_PID
ETCD_URL=$ETCD_URL
ETCD_PID=$ETCD_PID
CA_FILE=$PKI/ca.crt
ADMIN_CERT=$PKI/admin.crt
ADMIN_KEY=$PKI/admin.key
KUBECONFIG=$DIR/admin.kubeconfig
SERVICE_CIDR=$SERVICE_CIDR
K8S_VERSION=$K8S_VERSION
ETCD_VERSION=$("$ETCD_BIN" --version | awk '/etcd Version/{print $3}')
EOF

printf 'start.sh: control plane ready at %s in %.1fs (etcd %s pid %s, kube-apiserver %s pid %s); state in %s\n' \
  "$APISERVER_URL" "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}')" "$ETCD_URL" "$ETCD_PID" \
  "$K8S_VERSION" "$APISERVER_PID" "$DIR"
