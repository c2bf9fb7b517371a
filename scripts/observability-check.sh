#!/usr/bin/env bash
# Static checks of the observability files (a few seconds, no server started):
#   1. promtool check config   dashboards/prometheus/prometheus.yml (and its rule files)
#   2. promtool check rules    dashboards/prometheus/rules/*.yml
#   3. promtool test rules     dashboards/prometheus/tests/*.yml (a firing and a
#                              non-firing case per alert; every recording rule)
#   4. every alert rule is named in a unit test and documented in docs/observability.md
#   5. amtool check-config     dashboards/alertmanager/alertmanager.yml, and the routes
#                              security / critical / other alerts take
#   6. dashboards: generated JSON up to date, type check against @grafana/schema (tsc),
#      every panel query parses (promtool check rules on the extracted queries),
#      provisioning files well-formed
# Fails on the first problem. Tools: scripts/observability-deps.sh installs them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
prom=dashboards/prometheus
am=dashboards/alertmanager/alertmanager.yml
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for tool in promtool amtool node python3; do
  command -v "$tool" >/dev/null || { echo "observability-check: $tool not found; run scripts/observability-deps.sh" >&2; exit 2; }
done
[ -x tests/observability/node_modules/.bin/tsc ] || {
  echo "observability-check: tests/observability/node_modules missing; run scripts/observability-deps.sh" >&2; exit 2; }

step() { printf '\n== %s\n' "$*"; }

step "promtool check config $prom/prometheus.yml"
promtool check config "$prom/prometheus.yml"

step "promtool check rules $prom/rules/*.yml"
promtool check rules "$prom"/rules/*.yml

step "promtool test rules $prom/tests/*.yml"
(cd "$prom/tests" && promtool test rules ./*.yml)

step "every alert has a unit test and a section in docs/observability.md"
python3 - "$prom" <<'PY'
import glob, re, sys, yaml
prom = sys.argv[1]
alerts = [r["alert"] for f in sorted(glob.glob(f"{prom}/rules/*.yml"))
          for g in yaml.safe_load(open(f))["groups"] for r in g["rules"] if "alert" in r]
tested = {}
for f in glob.glob(f"{prom}/tests/*.yml"):
    for t in yaml.safe_load(open(f)).get("tests", []):
        for a in t.get("alert_rule_test", []) or []:
            kind = "firing" if a.get("exp_alerts") else "silent"
            tested.setdefault(a["alertname"], set()).add(kind)
doc = open("docs/observability.md").read() if __import__("os").path.exists("docs/observability.md") else ""
bad = []
for a in alerts:
    if tested.get(a, set()) != {"firing", "silent"}:
        bad.append(f"{a}: unit tests cover {sorted(tested.get(a, set())) or 'nothing'}, need firing and silent")
    if f"### {a}" not in doc:
        bad.append(f"{a}: no '### {a}' section in docs/observability.md")
for b in bad:
    print("  " + b, file=sys.stderr)
if bad:
    sys.exit(1)
print(f"  {len(alerts)} alerts, each with a firing and a silent unit test and a doc section")
PY

step "amtool check-config $am"
amtool check-config "$am"
expect_route() {
  local want=$1; shift
  local got
  got=$(amtool config routes test --config.file="$am" "$@" 2>/dev/null)
  if [ "$got" != "$want" ]; then
    echo "  route for $*: got '$got', want '$want'" >&2
    exit 1
  fi
  echo "  $* -> $got"
}
expect_route security-team alertname=PortcullisBruteForceSignIn category=security severity=critical
expect_route security-team alertname=PortcullisDenySpikeForOneSubject category=security severity=warning
expect_route on-call alertname=PortcullisAuditSinkFailing category=audit severity=critical
expect_route operations alertname=PortcullisAuditSinkLagging category=audit severity=warning

step "dashboards: generated files up to date"
python3 dashboards/grafana/generate.py --check && echo "  up to date"

step "dashboards: type check against @grafana/schema"
node tests/observability/typecheck-dashboards.mjs

step "dashboards: every panel query parses (promtool)"
python3 tests/observability/panel_queries.py --as-rules "$tmp/panel-queries.rules.json"
promtool check rules "$tmp/panel-queries.rules.json"

step "grafana provisioning files"
python3 - <<'PY'
import sys, yaml
ds = yaml.safe_load(open("dashboards/grafana/provisioning/datasources/portcullis-prometheus.yml"))
db = yaml.safe_load(open("dashboards/grafana/provisioning/dashboards/portcullis.yml"))
ok = (ds.get("apiVersion") == 1 and ds["datasources"][0]["type"] == "prometheus"
      and db.get("apiVersion") == 1 and db["providers"][0]["type"] == "file"
      and db["providers"][0]["options"]["path"])
if not ok:
    sys.exit("  provisioning files malformed")
print("  data source and dashboard provider well-formed")
PY

printf '\nok: observability checks passed\n'
