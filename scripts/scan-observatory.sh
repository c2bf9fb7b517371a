#!/usr/bin/env bash
# Security headers: the MDN HTTP Observatory (npm @mdn/mdn-http-observatory, its scanner
# run locally) against the running system on loopback, HTTPS and the plain-HTTP
# redirect listener, with the test CA trusted (NODE_EXTRA_CA_CERTS), on three pages:
# the web application (`/`), an API answer the policy denies (`/api/tickets` without a
# token: 401) and a public backend answer (`/monitoring/health`).
# Fails on any test that costs 20 points or more (rated high here: e.g. no CSP, CSP with
# 'unsafe-inline', no HSTS, no redirect to HTTPS, insecure cookies, CORS open to any
# origin), on a grade below A, and when the certificate was not verified.
# Usage: scripts/scan-observatory.sh [path/to/portcullis]   (about 15 s)
set -euo pipefail
# shellcheck source=scan-lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/scan-lib.sh"
scan_init "${1:-}"
"$SCAN_ROOT/scripts/install-scan-tools.sh" observatory >/dev/null
pkg="$SCAN_TOOLS/observatory/node_modules/@mdn/mdn-http-observatory"
scan_up --http

status=0
for page in / /api/tickets /monitoring/health; do
  out="observatory$(echo "$page" | tr / _).json"
  NODE_EXTRA_CA_CERTS="$SCAN_CA" timeout 120 node "$SCAN_ROOT/scripts/scan-observatory.mjs" \
    "$pkg" localhost "$SCAN_HTTPS" "$SCAN_HTTP" "$page" > "$out" || true
  python3 - "$out" "$page" <<'PY' || status=1
import json, sys
out, page = sys.argv[1], sys.argv[2]
try:
    doc = json.load(open(out))
except ValueError:
    sys.exit(f"{page}: the observatory printed no result:\n" + open(out).read()[-2000:])
if "error" in doc:
    sys.exit(f"{page}: the observatory could not scan: {doc['error']}")
scan = doc["scan"]
def severity(t):
    m = t.get("scoreModifier", 0)
    if t.get("pass"):
        return "OK"
    return "HIGH" if m <= -20 else "MEDIUM" if m <= -10 else "LOW"
print(f"{page}: grade {scan['grade']} ({scan['score']}), HTTP {scan['statusCode']}, "
      f"{scan['testsPassed']}/{scan['testsQuantity']} tests passed, certificate verified: {scan['verified']}")
bad = []
for name, t in sorted(doc["tests"].items()):
    sev = severity(t)
    print(f"  {sev:6} {name}: {t['result']} ({t.get('scoreModifier', 0):+d})")
    if sev == "HIGH":
        bad.append(f"{page}: HIGH {name}: {t['result']} ({t.get('scoreModifier', 0):+d})")
if not scan["verified"]:
    bad.append(f"{page}: the certificate was not verified against the test CA")
if scan["score"] < 90:
    bad.append(f"{page}: grade {scan['grade']} ({scan['score']}) is below A")
if bad:
    print("\n".join(bad))
    sys.exit(1)
PY
done
if [ "$status" -ne 0 ]; then
  echo "--- portcullis log (tail) ---"; tail -n 20 portcullis.log
  exit 1
fi
echo "observatory: passed (no HIGH finding, grade A or better on every page)"
