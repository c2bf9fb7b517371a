#!/usr/bin/env bash
# Request smuggling (desync) leads: smugglex (crates.io) against the running system on
# loopback. Every check it has — CL.TE, TE.CL, TE.TE (obfuscations), H2C upgrade, H2,
# CL edge cases, and the opt-in CL.0, 0.CL, parser-discrepancy and h2-downgrade (real
# HTTP/2 H2.CL/H2.TE) — with mutation fuzzing, on five paths: the web application, a
# public backend answer, the ticket API (with an administrator's access token, so the
# attack requests reach the backend), the sign-in (its body is read by the proxy and
# forwarded) and the CSP report collector (answered by the proxy itself).
# smugglex rates each finding by confidence (low, medium, high). A desync is critical
# when real, so a finding of medium or high confidence fails the target; low-confidence
# findings are printed as leads (docs/security-testing.md says which are explained).
# Usage: scripts/scan-smugglex.sh [path/to/portcullis]   (about 1 min; the first run
# builds smugglex: a few minutes)
set -euo pipefail
# shellcheck source=scan-lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/scan-lib.sh"
scan_init "${1:-}"
"$SCAN_ROOT/scripts/install-scan-tools.sh" smugglex >/dev/null
scan_up --open-rate-limits --user scanadmin 'administrator;department_head'
base="https://localhost:$SCAN_HTTPS"

status=0
timeout 600 "$SCAN_TOOLS/bin/smugglex" --cacert "$SCAN_CA" --no-color --json -t 5 \
  --fingerprint --fuzz --export-payloads payloads \
  -c cl-te,te-cl,te-te,h2c,h2,cl-edge,cl-0,0-cl,parser-discrepancy,h2-downgrade \
  -H "Authorization: Bearer $SCAN_TOKEN" \
  "$base/" "$base/monitoring/health" "$base/api/tickets" "$base/auth/login" "$base/.portcullis/csp-report" \
  > report.json 2> smugglex.log || status=$?
# smugglex: 0 nothing found, 1 something found, 2 usage error.
if [ "$status" -gt 1 ] || [ ! -s report.json ]; then
  echo "smugglex failed (exit $status):"; tail -n 40 smugglex.log; exit 1
fi
alive=1
curl -sf "http://127.0.0.1:$SCAN_ADMIN/health/ready" >/dev/null || alive=

python3 - report.json "$alive" "$SCAN_TOKEN" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
alive, token = sys.argv[2] == "1", sys.argv[3]
bad, leads = [], []
print(f"smugglex {doc.get('smugglex_version')}: {doc['summary']}")
for r in doc["results"]:
    path = r["target"].split("/", 3)[-1]
    if r.get("error"):
        bad.append(f"/{path}: smugglex could not scan: {r['error']}")
        continue
    failed = [c for c in r["checks"] if c["normal_status"] == "CHECK_FAILED"]
    for c in failed:
        bad.append(f"/{path}: {c['check_type']} did not run: {c.get('diagnostics')}")
    found = [c for c in r["checks"] if c["vulnerable"]]
    print(f"  /{path}: {len(r['checks'])} checks, {len(found)} reported"
          + "".join(f"; {c['check_type']} ({c.get('confidence')} confidence)" for c in found))
    for c in found:
        conf = c.get("confidence") or "unknown"
        line = (f"{conf.upper()} {c['check_type']} on /{path}: baseline {c['normal_status']!r} in "
                f"{c['normal_duration_ms']} ms, attack {c.get('attack_status')!r} in "
                f"{c.get('attack_duration_ms')} ms, signals {c.get('detection_signals')}")
        payload = (c.get("payload") or "").replace(token, "<token>")
        (leads if conf == "low" else bad).append(line + "\n    " + payload.strip().replace("\r\n", "\n    "))
for lead in leads:
    print("  lead (low confidence): " + lead)
if not alive:
    bad.append("the proxy's /health/ready no longer answers after the scan")
if bad:
    print("\n".join(bad))
    sys.exit(1)
PY
echo "smugglex: no desync finding of medium or high confidence"
