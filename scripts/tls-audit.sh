#!/usr/bin/env bash
# TLS audit of the HTTPS listener with testssl.sh (Debian package `testssl.sh`).
# Starts `portcullis up` on free loopback ports with a throw-away CA and leaf
# (openssl), runs testssl, and fails when any finding is rated HIGH or
# CRITICAL, when SSLv2/SSLv3/TLS 1.0/TLS 1.1 is offered, or when a cipher
# without forward secrecy is offered.
# Usage: scripts/tls-audit.sh [path/to/portcullis]   (about a minute)
set -euo pipefail
bin=${1:-target/debug/portcullis}
bin=$(realpath "$bin")
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
https=$(free_port); admin=$(free_port); backend=$(free_port)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -days 400 -subj "/CN=Portcullis TLS audit CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
  -subj "/CN=localhost" 2>/dev/null
cat > ext.cnf <<EXT
subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth
keyUsage=digitalSignature
crlDistributionPoints=URI:http://localhost/audit-ca.crl
EXT
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
  -days 200 -extfile ext.cnf 2>/dev/null

cat > portcullis.yaml <<YAML
state_dir: var
log: {format: text, level: warn}
proxy:
  listen: {https: "127.0.0.1:$https", http: null, admin: "127.0.0.1:$admin"}
  tls: {certificate_file: server.pem, private_key_file: server.key}
shared: {policy_dir: "$root/policies"}
backend: {listen: "127.0.0.1:$backend", admin_listen: null}
YAML
"$bin" --config portcullis.yaml up > portcullis.log 2>&1 &
pid=$!
ready=
for _ in $(seq 300); do
  if curl -sf "http://127.0.0.1:$admin/health/ready" >/dev/null; then ready=1; break; fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "portcullis did not become ready:"; cat portcullis.log; exit 1
fi

testssl --quiet --color 0 --warnings batch --add-ca ca.pem --jsonfile-pretty result.json \
  "https://localhost:$https/monitoring/health" > testssl.txt 2>&1 || true

python3 - result.json <<'PY'
import json, sys
scan = json.load(open(sys.argv[1]))["scanResult"][0]
findings = [f for v in scan.values() if isinstance(v, list) for f in v if isinstance(f, dict) and "id" in f]
if not findings:
    sys.exit("testssl produced no findings: did the scan run?")
by_id = {f["id"]: f for f in findings}
bad = [f"{f['severity']} {f['id']}: {f['finding']}" for f in findings if f.get("severity") in ("HIGH", "CRITICAL")]
for proto in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
    if "not offered" not in by_id.get(proto, {}).get("finding", ""):
        bad.append(f"{proto} offered or not tested: {by_id.get(proto)}")
for proto in ("TLS1_2", "TLS1_3"):
    if not by_id.get(proto, {}).get("finding", "").startswith("offered"):
        bad.append(f"{proto} not offered: {by_id.get(proto)}")
fs = by_id.get("PFS") or by_id.get("FS") or {}  # testssl 3.0 says PFS, 3.2 FS
if fs.get("severity") != "OK":
    bad.append(f"forward secrecy: {fs}")
for f in findings:
    if f["id"].startswith("cipher-") or f["id"].startswith("cipher_x"):
        if "ECDH" not in f["finding"] and "TLS_" not in f["finding"]:
            bad.append(f"cipher without ephemeral key exchange: {f['finding']}")
for f in findings:
    if f.get("severity") in ("MEDIUM", "LOW", "WARN"):
        print(f"  {f['severity']} {f['id']}: {f['finding']}")
counts = {}
for f in findings:
    counts[f.get("severity")] = counts.get(f.get("severity"), 0) + 1
print("testssl findings by severity:", dict(sorted(counts.items())))
if bad:
    print("\n".join(bad))
    sys.exit(1)
print("TLS audit passed: TLS 1.2/1.3 only, forward secrecy only, no HIGH or CRITICAL finding")
PY
