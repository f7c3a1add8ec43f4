#!/usr/bin/env bash
# selftest.sh - end-to-end check of the test control plane, using only curl.
#
# Starts a control plane in a temp dir (start.sh), then as the admin user:
# creates a Namespace, an IngressClass, a Service and an EndpointSlice whose
# endpoint is in 198.18.0.0/15, lists them back, sees the EndpointSlice ADDED
# event on a watch; gets a ServiceAccount token (token.sh) and checks that it
# is forbidden to list Services until a RoleBinding grants it. Then checks the
# network-namespace helper (netns.sh selftest, root only) and stops
# everything (stop.sh). Needs install.sh to have run. Prints
# "selftest: N passed, M failed" and exits non-zero on any failure.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=$(mktemp -d "${TMPDIR:-/tmp}/weir-controlplane.XXXXXX")
WATCH_PID=
cleanup() {
  [ -n "$WATCH_PID" ] && kill "$WATCH_PID" 2>/dev/null
  "$HERE/stop.sh" "$DIR" --purge >/dev/null 2>&1 || true
}
trap cleanup EXIT

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "  ok   $*"; }
bad() { failed=$((failed + 1)); echo "  FAIL $*"; }
finish() {
  echo "selftest: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}

echo "== start.sh $DIR"
"$HERE/start.sh" "$DIR" || { bad "start.sh"; finish; }
ok "start.sh"
# shellcheck disable=SC1091
. "$DIR/env"

# api [-t TOKEN] METHOD PATH [JSON] -> body in $body, HTTP status in $code
api() {
  local auth=(--cert "$ADMIN_CERT" --key "$ADMIN_KEY")
  if [ "$1" = -t ]; then auth=(-H "Authorization: Bearer $2"); shift 2; fi
  local out
  out=$(curl -sS --max-time 20 --cacert "$CA_FILE" "${auth[@]}" -X "$1" \
    -H 'Content-Type: application/json' ${3:+--data "$3"} -w '\n%{http_code}' "$APISERVER_URL$2")
  code=${out##*$'\n'}
  body=${out%$'\n'*}
  body=${body//\": /\":} # apiserver pretty-prints for curl: compact "key": value
}
expect() { # CODE DESCRIPTION
  if [ "$code" = "$1" ]; then ok "$2 -> $code"; else bad "$2 -> $code (want $1): $(head -c 400 <<<"$body")"; fi
}
has() { # SUBSTRING DESCRIPTION
  if grep -qF -- "$1" <<<"$body"; then ok "$2"; else bad "$2: '$1' not in $(head -c 400 <<<"$body")"; fi
}

NS=weir-e2e
echo "== admin: version and identity"
api GET /version; expect 200 "GET /version"; has "\"gitVersion\":\"$K8S_VERSION\"" "server reports $K8S_VERSION"
api POST /apis/authentication.k8s.io/v1/selfsubjectreviews '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}'
expect 201 "POST selfsubjectreviews (admin)"; has '"system:masters"' "admin is in system:masters"

echo "== admin: create objects"
api POST /api/v1/namespaces "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"$NS\"}}"
expect 201 "create Namespace $NS"
api POST /apis/networking.k8s.io/v1/ingressclasses \
  '{"apiVersion":"networking.k8s.io/v1","kind":"IngressClass","metadata":{"name":"weir"},"spec":{"controller":"weir.dev/ingress-controller"}}'
expect 201 "create IngressClass weir"
api POST "/api/v1/namespaces/$NS/services" \
  '{"apiVersion":"v1","kind":"Service","metadata":{"name":"echo"},"spec":{"ports":[{"name":"http","port":80,"targetPort":8080}],"selector":{"app":"echo"}}}'
expect 201 "create Service $NS/echo"
has '"clusterIP":"10.96.' "Service got a ClusterIP from 10.96.0.0/16"

# Watch before creating the EndpointSlice; the watch runs for at most 15s.
WATCH_OUT=$DIR/watch.json
curl -sS -N --max-time 15 --cacert "$CA_FILE" --cert "$ADMIN_CERT" --key "$ADMIN_KEY" \
  "$APISERVER_URL/apis/discovery.k8s.io/v1/namespaces/$NS/endpointslices?watch=1" >"$WATCH_OUT" 2>&1 &
WATCH_PID=$!
sleep 1

api POST "/apis/discovery.k8s.io/v1/namespaces/$NS/endpointslices" \
  '{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"echo-1","labels":{"kubernetes.io/service-name":"echo","endpointslice.kubernetes.io/managed-by":"weir-tests"}},"addressType":"IPv4","ports":[{"name":"http","port":8080,"protocol":"TCP"}],"endpoints":[{"addresses":["198.18.0.2"],"conditions":{"ready":true}}]}'
expect 201 "create EndpointSlice $NS/echo-1 (198.18.0.2:8080)"

echo "== admin: list back"
api GET /apis/networking.k8s.io/v1/ingressclasses; expect 200 "list IngressClasses"; has '"weir.dev/ingress-controller"' "IngressClass listed"
api GET "/api/v1/namespaces/$NS/services"; expect 200 "list Services"; has '"name":"echo"' "Service listed"
api GET "/apis/discovery.k8s.io/v1/namespaces/$NS/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Decho"
expect 200 "list EndpointSlices by service-name label"; has '"198.18.0.2"' "EndpointSlice listed with 198.18.0.2"

echo "== admin: watch"
for _ in $(seq 50); do grep -q '"ADDED"' "$WATCH_OUT" 2>/dev/null && break; sleep 0.1; done
if grep -q '"type":"ADDED"' "$WATCH_OUT" && grep -q '198.18.0.2' "$WATCH_OUT"; then
  ok "watch saw ADDED EndpointSlice: $(grep -o '"type":"ADDED","object":{"kind":"EndpointSlice"[^}]*"name":"[^"]*"' "$WATCH_OUT" | sed -n 1p)"
else
  bad "watch saw no ADDED event: $(head -c 400 "$WATCH_OUT")"
fi
kill "$WATCH_PID" 2>/dev/null
WATCH_PID=

echo "== ServiceAccount token and RBAC"
TOKEN=$("$HERE/token.sh" "$DIR" default weir-controller)
if [ -n "$TOKEN" ]; then ok "token.sh default weir-controller (${#TOKEN} chars)"; else bad "token.sh"; fi
api -t "$TOKEN" POST /apis/authentication.k8s.io/v1/selfsubjectreviews '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}'
expect 201 "selfsubjectreview with token"; has '"system:serviceaccount:default:weir-controller"' "token is system:serviceaccount:default:weir-controller"
api -t "$TOKEN" GET /api/v1/namespaces/default/services; expect 403 "GET services as SA before RoleBinding"
api -t "bogus-token" GET /api/v1/namespaces/default/services; expect 401 "GET services with a bogus token"
api POST /apis/rbac.authorization.k8s.io/v1/namespaces/default/roles \
  '{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"services-reader"},"rules":[{"apiGroups":[""],"resources":["services"],"verbs":["get","list","watch"]}]}'
expect 201 "create Role default/services-reader"
api POST /apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings \
  '{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"weir-controller-services"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"services-reader"},"subjects":[{"kind":"ServiceAccount","name":"weir-controller","namespace":"default"}]}'
expect 201 "create RoleBinding default/weir-controller-services"
# The RBAC authorizer reads bindings from an informer: allow it a moment.
for _ in $(seq 50); do api -t "$TOKEN" GET /api/v1/namespaces/default/services; [ "$code" = 200 ] && break; sleep 0.1; done
expect 200 "GET services as SA after RoleBinding"
api -t "$TOKEN" GET "/api/v1/namespaces/$NS/services"; expect 403 "GET services in $NS as SA (not bound there)"

if [ "$(id -u)" -eq 0 ]; then
  echo "== netns.sh selftest"
  if "$HERE/netns.sh" selftest; then ok "netns.sh selftest"; else bad "netns.sh selftest"; fi
fi

echo "== stop.sh"
running() { # not kill -0: an exited child stays a zombie until init reaps it
  [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}
if "$HERE/stop.sh" "$DIR" && ! running "$APISERVER_PID" && ! running "$ETCD_PID"; then
  ok "stop.sh stopped kube-apiserver and etcd"
else
  bad "stop.sh"
fi
finish
