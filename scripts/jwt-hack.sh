#!/usr/bin/env bash
# Every attack token that jwt-hack (crates.io) derives from a valid access
# token — alg confusion, `none` variants, kid injection and traversal, jku/x5u,
# embedded jwk, x5c, crit/b64, empty and psychic signatures — must be refused
# by the proxy with 401. The valid token itself must pass (control).
# Usage: scripts/jwt-hack.sh [path/to/portcullis]
set -euo pipefail
bin=$(realpath "${1:-target/debug/portcullis}")
root=$(cd "$(dirname "$0")/.." && pwd)
command -v jwt-hack >/dev/null || cargo install --locked --quiet jwt-hack
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
https=$(free_port); admin=$(free_port); backend=$(free_port)
cat > portcullis.yaml <<YAML
state_dir: var
log: {format: text, level: warn}
proxy:
  listen: {https: "127.0.0.1:$https", http: null, admin: "127.0.0.1:$admin"}
  rate_limits: {rules: [{name: per_ip, key: client_ip, requests_per_period: 100000, burst_requests: 100000}]}
shared:
  policy_dir: "$root/policies"
backend:
  listen: "127.0.0.1:$backend"
  admin_listen: null
YAML
password="jwt-hack-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
printf 'username,email,display_name,department,roles,password_format,password\nvictim,victim@example.org,Victim,Facilities,employee,plaintext,%s\n' "$password" > users.csv
"$bin" --config portcullis.yaml user import users.csv >/dev/null
"$bin" --config portcullis.yaml up > portcullis.log 2>&1 &
pid=$!
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$admin/health/ready" >/dev/null && break; sleep 0.1; done
ca=var/tls/self-signed.crt
token=$(curl -sf --cacert "$ca" "https://localhost:$https/auth/login" -H 'content-type: application/json' \
  -d "{\"username\":\"victim\",\"password\":\"$password\",\"client\":\"api\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
jwt-hack payload "$token" --json --jwk-trust localhost --jwk-attack evil.example --target all 2>/dev/null > payloads.json
python3 - "$ca" "$https" "$token" <<'PY'
import json, ssl, sys, urllib.request, urllib.error
ca, port, good = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
def status(token):
    req = urllib.request.Request(f"https://localhost:{port}/api/tickets", headers={"Authorization": f"Bearer {token}"})
    try:
        return urllib.request.urlopen(req, context=ctx, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
payloads = [p for p in json.load(open("payloads.json"))["payloads"] if isinstance(p, str)]
assert status(good) == 200, "the valid token must pass"
bad = [(p, s) for p in payloads if (s := status(p)) != 401]
print(f"jwt-hack: {len(payloads)} attack tokens, {len(payloads) - len(bad)} refused with 401")
for p, s in bad[:10]:
    print(f"  NOT REFUSED ({s}): {p[:120]}")
sys.exit(1 if bad or not payloads else 0)
PY
curl -s "http://127.0.0.1:$admin/metrics" | grep '^portcullis_jwt_rejections_total' || true
