#!/usr/bin/env bash
# Web scanner: wapiti (PyPI wapiti3) against the running system on loopback, signed in.
# Starts `portcullis up`, signs an administrator in through the proxy (API client) and
# lets wapiti crawl https://localhost:PORT/ (the web application) and every operation of
# /api/openapi.json (--swagger), with the access token on every request, scoped to that
# origin, with the test CA verified. Modules: injection (sql, exec, file, crlf, xss and
# stored xss), open redirect, access-control bypass by method (htaccess), backup files,
# HTTP methods, and the header/cookie/CSP checks. Bounded: --max-scan-time and
# --max-attack-time per module; the proxy's per-address rate limit is raised so wapiti
# sees answers, not 429s.
# Fails on any vulnerability or anomaly wapiti rates HIGH or CRITICAL (printed with its
# request), and when the system stops answering during the scan.
# Usage: scripts/scan-wapiti.sh [path/to/portcullis] [max-scan-seconds]   (about 1-2 min)
set -euo pipefail
# shellcheck source=scan-lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/scan-lib.sh"
scan_init "${1:-}"
max_scan=${2:-240}
"$SCAN_ROOT/scripts/install-scan-tools.sh" wapiti >/dev/null
scan_up --open-rate-limits --user scanadmin 'administrator;department_head'
base="https://localhost:$SCAN_HTTPS"

# Left out: ssl (sslyze and testssl do it), ssrf/xxe/log4shell/nikto (need wapiti's
# servers on the internet), timesql (slow by design), brute_login_form/buster (guessing).
modules=http_headers,cookieflags,csp,methods,htaccess,redirect,crlf,exec,file,sql,xss,permanentxss,backup
status=0
SSL_CERT_FILE="$SCAN_CA" timeout $((max_scan + 120)) "$SCAN_TOOLS/bin/wapiti" \
  -u "$base/" --swagger "$base/api/openapi.json" --scope folder -m "$modules" \
  -H "Authorization: Bearer $SCAN_TOKEN" --verify-ssl 1 \
  --max-scan-time "$max_scan" --max-attack-time 60 -d 3 --tasks 4 -t 10 \
  --no-bugreport --store-session session --store-config config \
  -f json -o report.json -v 1 > wapiti.log 2>&1 || status=$?
if [ "$status" -ne 0 ] || [ ! -s report.json ]; then
  echo "wapiti failed (exit $status):"; tail -n 40 wapiti.log; exit 1
fi
grep '^\[\*\] Launching module' wapiti.log | sed 's/^\[\*\] Launching module /  ran: /' | paste -sd' ' -

alive=1
curl -sf "http://127.0.0.1:$SCAN_ADMIN/health/ready" >/dev/null || alive=
token_status=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$SCAN_CA" "$base/api/tickets" \
  -H "Authorization: Bearer $SCAN_TOKEN" || true)
# What the proxy answered, by status class (its own Prometheus counters).
curl -s "http://127.0.0.1:$SCAN_ADMIN/metrics" > metrics.txt || true

python3 - report.json "$alive" "$token_status" metrics.txt <<'PY'
import json, re, sys
doc = json.load(open(sys.argv[1]))
alive, token_status = sys.argv[2] == "1", sys.argv[3]
classes = {}
for m in re.finditer(r'^portcullis_http_request_duration_seconds_count\{.*status_class="(\w+)".*\} (\d+)',
                     open(sys.argv[4]).read(), re.M):
    classes[m[1]] = classes.get(m[1], 0) + int(m[2])
print("the proxy answered:", dict(sorted(classes.items())) or "(no metrics)")
names = {0: "INFO", 1: "LOW", 2: "MEDIUM", 3: "HIGH", 4: "CRITICAL"}
info = doc["infos"]
print(f"wapiti {info['version']}: {info['crawled_pages_nbr']} URLs and forms, scope {info['scope']}")
bad, counts = [], {}
for category in ("vulnerabilities", "anomalies", "additionals"):
    for kind, items in sorted(doc.get(category, {}).items()):
        for f in items:
            sev = names.get(f.get("level", 0), str(f.get("level")))
            counts[(category, sev)] = counts.get((category, sev), 0) + 1
            if category == "additionals" and sev == "INFO":
                continue  # e.g. "Possible interesting methods": listed in the report only
            line = f"  {sev} {category[:-1]} {kind}: {f.get('method')} {f.get('path')} {f.get('parameter') or ''} - {f.get('info')}"
            print(line)
            if f.get("level", 0) >= 3:
                bad.append(line + "\n" + (f.get("http_request") or "").strip())
print("findings by category and severity:", {f"{c}/{s}": n for (c, s), n in sorted(counts.items())} or "none")
if token_status != "200":
    print(f"note: the scan's access token answers {token_status} after the scan: "
          "part of the scan may have run signed out (a scanned operation ended the session)")
if not alive:
    bad.append("the proxy's /health/ready no longer answers after the scan")
if bad:
    print("\n".join(bad))
    sys.exit(1)
PY
echo "wapiti: no HIGH or CRITICAL finding"
