#!/usr/bin/env bash
# TLS configuration against Mozilla's "intermediate" profile with sslyze (PyPI):
# `sslyze --mozilla_config=intermediate` (protocols, cipher suites, curves, certificate
# type and lifespan, trust) plus the vulnerability checks it does not queue on its own
# (Heartbleed, OpenSSL CCS injection, ROBOT, insecure renegotiation, compression,
# fallback SCSV, TLS 1.3 early data). The test CA is passed as --certinfo_ca_file, so
# the chain is judged against the CA that issued it and only real findings remain.
# Fails when the server is not compliant with the intermediate profile, or on any
# vulnerability those checks find (all rated high here), printing each.
# Usage: scripts/scan-sslyze.sh [path/to/portcullis]   (about 20 s)
set -euo pipefail
# shellcheck source=scan-lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/scan-lib.sh"
scan_init "${1:-}"
"$SCAN_ROOT/scripts/install-scan-tools.sh" sslyze >/dev/null
# shellcheck disable=SC2119  # no option: HTTPS listener only, default limits
scan_up

status=0
timeout 300 "$SCAN_TOOLS/bin/sslyze" --mozilla_config=intermediate --certinfo_ca_file "$SCAN_CA" \
  --heartbleed --openssl_ccs --robot --reneg --compression --fallback --early_data --ems \
  --json_out result.json "localhost:$SCAN_HTTPS" > sslyze.txt 2>&1 || status=$?
# The text report, from the scan commands on (the banner and target lines are noise).
sed -n '/SCAN RESULTS FOR/,$p' sslyze.txt | grep -v '^ *$' | sed 's/^/  /'

python3 - result.json "$status" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
status = int(sys.argv[2])
bad, notes = [], []
for server in doc["server_scan_results"]:
    if server["scan_status"] != "COMPLETED":
        sys.exit(f"sslyze could not scan: {server.get('connectivity_error_trace')}")
    r = server["scan_result"]
    def result(cmd):
        attempt = r.get(cmd) or {}
        if attempt.get("status") != "COMPLETED":
            bad.append(f"HIGH {cmd}: not completed ({attempt.get('error_reason')}: {attempt.get('error_trace')})")
            return None
        return attempt["result"]
    for cmd, key, label in (
        ("heartbleed", "is_vulnerable_to_heartbleed", "Heartbleed"),
        ("openssl_ccs_injection", "is_vulnerable_to_ccs_injection", "OpenSSL CCS injection"),
    ):
        res = result(cmd)
        if res and res[key]:
            bad.append(f"HIGH {cmd}: vulnerable to {label}")
    res = result("robot")
    if res and res["robot_result"] not in ("NOT_VULNERABLE_NO_ORACLE", "NOT_VULNERABLE_RSA_NOT_SUPPORTED"):
        bad.append(f"HIGH robot: {res['robot_result']}")
    res = result("session_renegotiation")
    if res and (res["is_vulnerable_to_client_renegotiation_dos"] or not res["supports_secure_renegotiation"]):
        # rustls refuses renegotiation altogether: "no secure renegotiation" is then
        # reported too, which is not a weakness (nothing can be renegotiated).
        if res["is_vulnerable_to_client_renegotiation_dos"]:
            bad.append("HIGH session_renegotiation: client-initiated renegotiation accepted")
        else:
            notes.append("LOW session_renegotiation: no RFC 5746 secure renegotiation "
                         "(rustls does not renegotiate at all)")
    res = result("tls_compression")
    if res and res["supports_compression"]:
        bad.append("HIGH tls_compression: TLS compression (CRIME)")
    res = result("tls_fallback_scsv")
    if res and not res["supports_fallback_scsv"]:
        notes.append("LOW tls_fallback_scsv: no downgrade protection by TLS_FALLBACK_SCSV")
    res = result("tls_1_3_early_data")
    if res and res["supports_early_data"]:
        notes.append("MEDIUM tls_1_3_early_data: 0-RTT data accepted (replayable)")
    res = result("tls_extended_master_secret")
    if res and not res["supports_ems_extension"]:
        notes.append("LOW tls_extended_master_secret: no Extended Master Secret")
for n in notes:
    print(n)
if bad:
    print("\n".join(bad))
# sslyze exits non-zero when the server is not compliant with the Mozilla profile and
# has printed each problem above ("COMPLIANCE AGAINST MOZILLA TLS CONFIGURATION").
if status != 0:
    print(f"HIGH mozilla_config: not compliant with Mozilla's intermediate configuration (sslyze exit {status})")
sys.exit(1 if bad or status != 0 else 0)
PY
echo "sslyze: compliant with Mozilla's intermediate configuration, no vulnerability found"
