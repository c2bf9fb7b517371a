#!/usr/bin/env bash
# API fuzzing of the ticket API through the proxy with schemathesis (PyPI).
# Starts `portcullis up` on free loopback ports, signs in an administrator
# through the proxy, and runs schemathesis against /api/openapi.json with the
# bearer token. Fails on any server error or response that violates the
# OpenAPI document.
# Usage: scripts/schemathesis.sh [path/to/portcullis] [max-examples]
set -euo pipefail
bin=$(realpath "${1:-target/debug/portcullis}")
examples=${2:-30}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
command -v schemathesis >/dev/null || python3 -m pip install --quiet schemathesis

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
https=$(free_port); admin=$(free_port); backend=$(free_port)
cat > portcullis.yaml <<YAML
state_dir: var
log: {format: text, level: warn}
proxy:
  listen: {https: "127.0.0.1:$https", http: null, admin: "127.0.0.1:$admin"}
  rate_limits: {rules: [{name: per_ip, key: client_ip, requests_per_period: 10000, burst_requests: 10000}]}
shared:
  policy_dir: "$root/policies"
backend:
  listen: "127.0.0.1:$backend"
  identity: {access_token_ttl_seconds: 3600}
YAML
password="schemathesis-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
printf 'username,email,display_name,department,roles,password_format,password\nfuzzadmin,fuzz@example.org,Fuzz Admin,Facilities,administrator;department_head,plaintext,%s\n' "$password" > users.csv
"$bin" --config portcullis.yaml user import users.csv >/dev/null
rm -f users.csv
"$bin" --config portcullis.yaml up > portcullis.log 2>&1 &
pid=$!
for _ in $(seq 200); do
  curl -sf "http://127.0.0.1:$admin/health/ready" >/dev/null && break
  sleep 0.1
done
ca=var/tls/self-signed.crt
token=$(curl -sf --cacert "$ca" "https://localhost:$https/auth/login" -H 'content-type: application/json' \
  -d "{\"username\":\"fuzzadmin\",\"password\":\"$password\",\"client\":\"api\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

status=0
schemathesis run "https://localhost:$https/api/openapi.json" \
  --url "https://localhost:$https" \
  --tls-verify "$ca" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
  --max-examples "$examples" \
  --phases examples,coverage,fuzzing \
  --no-color || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- portcullis log (tail) ---"; tail -n 40 portcullis.log
fi
exit "$status"
