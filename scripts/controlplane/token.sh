#!/usr/bin/env bash
# token.sh DIR NAMESPACE SERVICEACCOUNT [EXPIRATION_SECONDS]
#
# Prints (stdout, no newline added beyond one) a bearer token for the
# ServiceAccount, creating the ServiceAccount if it does not exist. Uses the
# TokenRequest API with the admin client cert of the control plane started by
# start.sh DIR; only curl is needed. The token authenticates as
# system:serviceaccount:NAMESPACE:SERVICEACCOUNT, which has no permissions
# until a (Cluster)RoleBinding grants some. Default lifetime 3600s.
set -euo pipefail
[ $# -ge 3 ] && [ $# -le 4 ] || { echo "usage: $0 DIR NAMESPACE SERVICEACCOUNT [EXPIRATION_SECONDS]" >&2; exit 2; }
DIR=$1 NS=$2 SA=$3 EXP=${4:-3600}
[ -f "$DIR/env" ] || { echo "token.sh: $DIR/env missing: run start.sh $DIR first" >&2; exit 1; }
# shellcheck disable=SC1091
. "$DIR/env"

api() { # METHOD PATH [BODY] -> prints body, returns 0 on 2xx; HTTP code in $code
  local out
  out=$(curl -sS --max-time 20 --cacert "$CA_FILE" --cert "$ADMIN_CERT" --key "$ADMIN_KEY" \
    -X "$1" -H 'Content-Type: application/json' -H 'Accept: application/json' \
    ${3:+--data "$3"} -w '\n%{http_code}' "$APISERVER_URL$2")
  code=${out##*$'\n'}
  body=${out%$'\n'*}
  [[ $code == 2* ]]
}

if ! api GET "/api/v1/namespaces/$NS/serviceaccounts/$SA"; then
  [ "$code" = 404 ] || { echo "token.sh: GET serviceaccount $NS/$SA: HTTP $code: $body" >&2; exit 1; }
  api POST "/api/v1/namespaces/$NS/serviceaccounts" \
    "{\"apiVersion\":\"v1\",\"kind\":\"ServiceAccount\",\"metadata\":{\"name\":\"$SA\"}}" ||
    [ "$code" = 409 ] || { echo "token.sh: creating serviceaccount $NS/$SA: HTTP $code: $body" >&2; exit 1; }
fi
api POST "/api/v1/namespaces/$NS/serviceaccounts/$SA/token" \
  "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenRequest\",\"spec\":{\"expirationSeconds\":$EXP}}" ||
  { echo "token.sh: TokenRequest for $NS/$SA: HTTP $code: $body" >&2; exit 1; }
token=$(tr -d '\n' <<<"$body" | grep -o '"token": *"[^"]*"' | sed -n 1p | sed 's/.*"\([^"]*\)"$/\1/')
[ -n "$token" ] || { echo "token.sh: no token in TokenRequest response: $body" >&2; exit 1; }
echo "$token"
