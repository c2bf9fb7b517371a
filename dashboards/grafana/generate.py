#!/usr/bin/env python3
"""Writes the Grafana dashboards of dashboards/grafana/dashboards/ from the panel
lists below, so that every panel has the same structure, data source, ids and grid.

    python3 dashboards/grafana/generate.py          # rewrite the JSON files
    python3 dashboards/grafana/generate.py --check  # fail if a JSON file is stale

The JSON files are what Grafana imports (and what is type-checked against
@grafana/schema and queried on a live Prometheus by tests/observability/); edit this
file, not them. Metric names and labels: docs/observability.md.
"""

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 41  # Grafana 11.3+ / 12 (Grafana migrates older ones on load)
DS = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"

# Directives whose violation counts as high severity (weekly metric 4); the same set
# as dashboards/prometheus/rules/recording.yml.
HIGH_CSP = ("default-src|script-src|script-src-elem|script-src-attr|object-src|base-uri|"
            "form-action|frame-ancestors|require-trusted-types-for|trusted-types")


def target(expr, legend="__auto", ref="A", instant=False):
    t = {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend,
         "editorMode": "code", "range": not instant, "instant": instant}
    return t


def thresholds(steps):
    return {"mode": "absolute",
            "steps": [{"color": c, "value": v} for c, v in steps]}


GREEN = [("green", None)]


def timeseries(title, targets, unit="short", description="", stack=False, steps=None,
               w=12, h=8):
    custom = {
        "drawStyle": "line", "lineInterpolation": "linear", "lineWidth": 1,
        "fillOpacity": 10, "gradientMode": "none", "showPoints": "never",
        "pointSize": 4, "spanNulls": False, "axisPlacement": "auto",
        "axisBorderShow": False, "axisCenteredZero": False, "axisLabel": "",
        "axisColorMode": "text", "barAlignment": 0,
        "scaleDistribution": {"type": "linear"},
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "hideFrom": {"legend": False, "tooltip": False, "viz": False},
        "thresholdsStyle": {"mode": "off" if steps is None else "line"},
    }
    return {
        "type": "timeseries", "title": title, "description": description,
        "datasource": DS, "targets": targets,
        "fieldConfig": {
            "defaults": {"unit": unit, "min": 0, "custom": custom,
                         "color": {"mode": "palette-classic"},
                         "thresholds": thresholds(steps or GREEN)},
            "overrides": [],
        },
        "options": {
            "legend": {"calcs": ["lastNotNull", "max"], "displayMode": "table",
                       "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "_size": (w, h),
    }


def stat(title, targets, unit="short", description="", steps=None, w=6, h=5,
         decimals=None):
    defaults = {"unit": unit, "color": {"mode": "thresholds"},
                "thresholds": thresholds(steps or GREEN),
                "mappings": []}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat", "title": title, "description": description,
        "datasource": DS, "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "colorMode": "background", "graphMode": "area", "justifyMode": "auto",
            "orientation": "auto", "percentChangeColorMode": "standard",
            "showPercentChange": False, "textMode": "value_and_name",
            "wideLayout": True,
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        },
        "_size": (w, h),
    }


def bars(title, targets, unit="short", description="", w=12, h=8):
    return {
        "type": "bargauge", "title": title, "description": description,
        "datasource": DS, "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "min": 0,
                                     "color": {"mode": "palette-classic"},
                                     "thresholds": thresholds(GREEN)},
                        "overrides": []},
        "options": {
            "displayMode": "basic", "orientation": "horizontal",
            "legend": {"calcs": [], "displayMode": "list", "placement": "bottom",
                       "showLegend": False},
            "maxVizHeight": 300, "minVizHeight": 16, "minVizWidth": 8,
            "namePlacement": "auto", "showUnfilled": True, "sizing": "auto",
            "valueMode": "color",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        },
        "_size": (w, h),
    }


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def layout(items):
    """Ids and grid positions: rows take a full line, panels fill lines of 24."""
    panels, x, y, line_h, pid = [], 0, 0, 0, 1
    for item in items:
        if item["type"] == "row":
            if x:
                y, x = y + line_h, 0
            item = dict(item, id=pid, gridPos={"h": 1, "w": 24, "x": 0, "y": y})
            y += 1
            line_h = 0
        else:
            w, h = item.pop("_size")
            if x + w > 24:
                y, x, line_h = y + line_h, 0, 0
            item = dict(item, id=pid, gridPos={"h": h, "w": w, "x": x, "y": y})
            x += w
            line_h = max(line_h, h)
        panels.append(item)
        pid += 1
    return panels


def variables(extra=()):
    ds = {"name": "datasource", "label": "Data source", "type": "datasource",
          "query": "prometheus", "hide": 0, "includeAll": False,
          "multi": False, "options": [], "refresh": 1, "regex": "",
          "skipUrlSync": False}
    return {"list": [ds, *extra]}


def label_variable(name, label, metric):
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": f"label_values({metric}, {name})", "refId": "vars"},
            "current": {"text": "All", "value": "$__all"}, "hide": 0,
            "includeAll": True, "allValue": ".*", "multi": True, "options": [],
            "refresh": 2, "regex": "", "skipUrlSync": False, "sort": 1}


def dashboard(uid, title, description, items, extra_vars=(), tags=()):
    return {
        "uid": uid, "title": title, "description": description,
        "tags": ["portcullis", *tags], "editable": True, "graphTooltip": 1,
        "fiscalYearStartMonth": 0, "liveNow": False, "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION, "version": 1, "timezone": "browser",
        "time": {"from": "now-6h", "to": "now"}, "timepicker": {},
        "weekStart": "",
        "links": [{"title": "Portcullis", "type": "dashboards", "tags": ["portcullis"],
                   "asDropdown": True, "icon": "external link", "includeVars": False,
                   "keepTime": True, "targetBlank": False, "tooltip": "",
                   "url": ""}],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": variables(extra_vars),
        "panels": layout(items),
    }


# --------------------------------------------------------------------------------
R = 'route=~"$route"'

overview = dashboard(
    "portcullis-overview", "Portcullis / Overview",
    "Traffic, errors and latency per route through the proxy; process health.",
    [
        row("Traffic"),
        timeseries("Requests per second by route", [target(
            f'sum by (route) (rate(portcullis_http_requests_total{{{R}}}[{RI}]))',
            "{{route}}")], unit="reqps", stack=True),
        timeseries("Requests per second by status class", [target(
            f'sum by (status_class) (rate(portcullis_http_requests_total{{{R}}}[{RI}]))',
            "{{status_class}}")], unit="reqps", stack=True),
        timeseries("Errors (4xx, 5xx) per route", [target(
            f'sum by (route, status_class) (rate(portcullis_http_requests_total{{{R}, status_class=~"4xx|5xx"}}[{RI}]))',
            "{{route}} {{status_class}}")], unit="reqps",
            description="Refusals (401/403/429) are 4xx; upstream failures and "
                        "overload are 5xx."),
        timeseries("Server error ratio (5xx) per route", [target(
            f'sum by (route) (rate(portcullis_http_requests_total{{{R}, status_class="5xx"}}[{RI}]))'
            f' / sum by (route) (rate(portcullis_http_requests_total{{{R}}}[{RI}]))',
            "{{route}}")], unit="percentunit",
            description="Empty while no route answered 5xx.", steps=[("green", None), ("red", 0.01)]),
        row("Latency"),
        timeseries("Latency p95 per route", [target(
            f'histogram_quantile(0.95, sum by (route, le) (rate(portcullis_http_request_duration_seconds_bucket{{{R}}}[{RI}])))',
            "{{route}}")], unit="s"),
        timeseries("Latency p50 / p99 (all routes)", [
            target(f'histogram_quantile(0.5, sum by (le) (rate(portcullis_http_request_duration_seconds_bucket{{{R}}}[{RI}])))', "p50", "A"),
            target(f'histogram_quantile(0.99, sum by (le) (rate(portcullis_http_request_duration_seconds_bucket{{{R}}}[{RI}])))', "p99", "B"),
        ], unit="s"),
        timeseries("Requests in flight", [target(
            "sum by (instance) (portcullis_http_requests_in_flight)", "{{instance}}")]),
        timeseries("Upstream errors per route", [target(
            f'sum by (route, kind) (rate(portcullis_upstream_errors_total{{{R}}}[{RI}]))',
            "{{route}} {{kind}}")], unit="reqps",
            description="Requests the upstream did not answer (connect, timeout, read, write)."),
        row("Refused before routing"),
        timeseries("Requests refused before routing, by reason", [target(
            f"sum by (reason) (rate(portcullis_http_rejections_total[{RI}]))",
            "{{reason}}")], unit="reqps",
            description="Ambiguous path encodings, oversized or malformed CSP reports, no route."),
        timeseries("Connections refused, by reason", [target(
            f"sum by (reason) (rate(portcullis_connections_refused_total[{RI}]))",
            "{{reason}}")], unit="cps",
            description="Connection limit reached, TLS handshake failed or too slow."),
        row("Processes"),
        stat("Targets up", [target('up{job=~"portcullis-.*"}', "{{job}}", instant=True)],
             steps=[("red", None), ("green", 1)], w=6),
        stat("Uptime", [target('time() - process_start_time_seconds{job=~"portcullis-.*"}',
                               "{{job}}", instant=True)], unit="s", w=6),
        timeseries("CPU", [target(
            f'rate(process_cpu_seconds_total{{job=~"portcullis-.*"}}[{RI}])', "{{job}}")],
            unit="percentunit", w=6),
        timeseries("Resident memory", [target(
            'process_resident_memory_bytes{job=~"portcullis-.*"}', "{{job}}")],
            unit="bytes", w=6),
        timeseries("Open file descriptors (share of the limit)", [target(
            'process_open_fds{job=~"portcullis-.*"} / process_max_fds{job=~"portcullis-.*"}',
            "{{job}}")], unit="percentunit", w=12),
    ],
    extra_vars=[label_variable("route", "Route", "portcullis_http_requests_total")],
    tags=["overview"],
)

security = dashboard(
    "portcullis-security", "Portcullis / Security",
    "Sign-ins, lockouts, refusals by cause, CSP violations, key-set changes, anomalies "
    "and the sprint's weekly security targets.",
    [
        row("Weekly targets"),
        stat("Sign-in p95 (successes), 7 days", [
            target("portcullis:auth_login_duration_seconds:p95_1w", "7 days", "A", True),
            target("portcullis:auth_login_duration_seconds:p95_5m", "now (5 min)", "B", True)],
            unit="s", steps=[("green", None), ("red", 0.3)],
            description="Target < 300 ms. Successful sign-ins only: failures are slowed on purpose."),
        stat("Sign-in failures per success, 7 days", [
            target("portcullis:auth_login_failure_success:ratio_1w", "7 days", "A", True),
            target("portcullis:auth_login_failure_success:ratio_5m", "now (5 min)", "B", True)],
            steps=[("green", None), ("red", 0.25)], decimals=2,
            description="Target < 0.25. Locked-out attempts count as failures."),
        stat("Missing audit events, 7 days", [target(
            "portcullis:audit_events_missing:increase1w", "7 days", instant=True)],
            steps=[("green", None), ("red", 1)], decimals=0,
            description="Target 0: events the spool could not take (the audited action was refused)."),
        stat("High-severity CSP violations (enforced), 7 days", [target(
            "portcullis:csp_violations_high_enforced:increase1w", "7 days", instant=True)],
            steps=[("green", None), ("red", 1)], decimals=0,
            description="Target 0 after enforcement: script, object, base, form-action, "
                        "framing and trusted-types directives of enforced policies."),
        row("Sign-in"),
        timeseries("Sign-ins by result and method", [target(
            f"sum by (result, method) (rate(portcullis_auth_logins_total[{RI}]))",
            "{{result}} {{method}}")], unit="ops"),
        timeseries("Sign-in failures by method and reason", [target(
            f"sum by (method, reason) (rate(portcullis_auth_login_failures_total[{RI}]))",
            "{{method}} {{reason}}")], unit="ops"),
        timeseries("Sign-in failures per success", [target(
            "portcullis:auth_login_failure_success:ratio_5m", "failures / successes")],
            steps=[("green", None), ("red", 0.25)]),
        timeseries("Sign-in latency p95 by method (successes)", [target(
            "portcullis:auth_login_duration_seconds_by_method:p95_5m", "{{method}}")],
            unit="s", steps=[("green", None), ("red", 0.3)]),
        timeseries("Lockouts by key kind", [target(
            f"sum by (kind) (increase(portcullis_auth_lockouts_total[{RI}]))",
            "{{kind}}")], description="account: one user name; ip: one client network."),
        timeseries("Authentication failures by reason", [target(
            f"sum by (reason) (rate(portcullis_authentication_failures_total[{RI}]))",
            "{{reason}}")], unit="reqps",
            description="Unsupported scheme, reserved subject, revoked session."),
        row("Refusals"),
        timeseries("Policy denials by rule", [target(
            f'sum by (rule, mode) (rate(portcullis_policy_decisions_total{{decision="deny"}}[{RI}]))',
            "{{rule}} ({{mode}})")], unit="reqps"),
        timeseries("Most denials of one subject (5 min window)", [target(
            "max(portcullis_policy_denials_top_subject)", "top subject")],
            steps=[("green", None), ("red", 20)],
            description="Alert PortcullisDenySpikeForOneSubject at 20; the subject is in the audit trail."),
        timeseries("Rate-limit refusals by rule", [target(
            f"sum by (rule, mode) (rate(portcullis_ratelimit_rejections_total[{RI}]))",
            "{{rule}} ({{mode}})")], unit="reqps"),
        timeseries("CSRF refusals by reason", [target(
            f"sum by (reason, mode) (rate(portcullis_csrf_rejections_total[{RI}]))",
            "{{reason}} ({{mode}})")], unit="reqps"),
        timeseries("JWT rejections by reason", [target(
            f"sum by (reason) (rate(portcullis_jwt_rejections_total[{RI}]))",
            "{{reason}}")], unit="reqps"),
        row("Browser, keys and anomalies"),
        timeseries("CSP violations by directive", [target(
            f"sum by (directive) (rate(portcullis_csp_violations_total[{RI}]))",
            "{{directive}}")], unit="ops"),
        timeseries("Signing key-set changes by issuer", [
            target(f"sum by (issuer) (increase(portcullis_jwks_changes_total[{RI}]))",
                   "changes {{issuer}}", "A"),
            target("sum by (issuer) (portcullis_jwks_keys)", "keys {{issuer}}", "B")],
            description="A change the rotation schedule does not explain is suspicious."),
        bars("Anomalies flagged by kind (selected range)", [target(
            "sum by (kind) (increase(portcullis_anomalies_total[$__range]))", "{{kind}}",
            instant=True)],
            description="Per-subject deviations found by the backend's anomaly job; the "
                        "anomaly.detected audit events name the subjects."),
        timeseries("Anomalies flagged by kind", [target(
            f"sum by (kind) (increase(portcullis_anomalies_total[{RI}]))", "{{kind}}")]),
    ],
    tags=["security"],
)

policy = dashboard(
    "portcullis-policy", "Portcullis / Policy",
    "Policy decisions, evaluation latency, rule hits and bundle reloads.",
    [
        row("Decisions"),
        timeseries("Decisions by outcome and mode", [target(
            f"sum by (decision, mode) (rate(portcullis_policy_decisions_total[{RI}]))",
            "{{decision}} ({{mode}})")], unit="reqps", stack=True),
        timeseries("Share of requests denied", [target(
            f'sum(rate(portcullis_policy_decisions_total{{decision="deny"}}[{RI}]))'
            f" / sum(rate(portcullis_policy_decisions_total[{RI}]))", "denied")],
            unit="percentunit"),
        timeseries("Evaluation latency", [
            target(f"histogram_quantile(0.5, sum by (le) (rate(portcullis_policy_evaluation_duration_seconds_bucket[{RI}])))", "p50", "A"),
            target(f"histogram_quantile(0.95, sum by (le) (rate(portcullis_policy_evaluation_duration_seconds_bucket[{RI}])))", "p95", "B"),
            target(f"histogram_quantile(0.99, sum by (le) (rate(portcullis_policy_evaluation_duration_seconds_bucket[{RI}])))", "p99", "C"),
        ], unit="s"),
        timeseries("Evaluations per second", [target(
            f"sum(rate(portcullis_policy_evaluation_duration_seconds_count[{RI}]))",
            "evaluations")], unit="ops"),
        row("Rules"),
        bars("Rule hits (selected range)", [target(
            "sort_desc(sum by (rule, decision) (increase(portcullis_policy_decisions_total[$__range])))",
            "{{rule}} ({{decision}})", instant=True)], h=10,
            description="The `rule` field of each decision: the data.yaml route id for "
                        "allows, the deny rule otherwise."),
        timeseries("Rule hits per second", [target(
            f"sum by (rule) (rate(portcullis_policy_decisions_total[{RI}]))", "{{rule}}")],
            unit="reqps", h=10),
        row("Reloads"),
        timeseries("Reloads by kind and result", [target(
            f"sum by (kind, result) (increase(portcullis_reloads_total[{RI}]))",
            "{{kind}} {{result}}")],
            description="A failed policy reload keeps the previous bundle in force."),
        stat("Reloads (selected range)", [target(
            "sum by (kind, result) (increase(portcullis_reloads_total[$__range]))",
            "{{kind}} {{result}}", instant=True)], w=12, h=8, decimals=0),
    ],
    tags=["policy"],
)

audit = dashboard(
    "portcullis-audit", "Portcullis / Audit pipeline",
    "Audit events written, the spool, and delivery to each sink (lag, errors).",
    [
        row("Events"),
        timeseries("Events written by emitter and category", [target(
            f"sum by (emitter, category) (rate(portcullis_audit_events_total[{RI}]))",
            "{{emitter}} {{category}}")], unit="ops", stack=True),
        stat("Missing audit events, 7 days", [target(
            "portcullis:audit_events_missing:increase1w", "7 days", instant=True)],
            steps=[("green", None), ("red", 1)], decimals=0, w=6, h=8),
        timeseries("Events the spool refused", [target(
            f"sum by (emitter, reason) (increase(portcullis_audit_emit_failures_total[{RI}]))",
            "{{emitter}} {{reason}}")], w=6,
            description="Each refused event made the product refuse the audited action."),
        row("Spool"),
        timeseries("Spool size", [target(
            "sum by (emitter) (portcullis_audit_spool_bytes)", "{{emitter}}")],
            unit="bytes", w=8),
        timeseries("Spool fill (share of audit.spool.max_bytes)", [target(
            "max by (emitter) (portcullis_audit_spool_bytes / portcullis_audit_spool_max_bytes)",
            "{{emitter}}")], unit="percentunit", w=8,
            steps=[("green", None), ("orange", 0.5), ("red", 0.8)]),
        timeseries("Events held in the spool", [target(
            "sum by (emitter) (portcullis_audit_spool_events)", "{{emitter}}")], w=8),
        row("Sinks"),
        timeseries("Sink lag (events not yet acknowledged)", [target(
            "max by (emitter, sink) (portcullis_audit_sink_lag_events)",
            "{{emitter}} → {{sink}}")]),
        timeseries("Delivery errors per sink", [target(
            f"sum by (emitter, sink) (rate(portcullis_audit_delivery_errors_total[{RI}]))",
            "{{emitter}} → {{sink}}")], unit="ops"),
    ],
    tags=["audit"],
)

DASHBOARDS = {
    "portcullis-overview.json": overview,
    "portcullis-security.json": security,
    "portcullis-policy.json": policy,
    "portcullis-audit.json": audit,
}


def main():
    check = "--check" in sys.argv[1:]
    OUT.mkdir(exist_ok=True)
    stale = []
    for name, board in DASHBOARDS.items():
        text = json.dumps(board, indent=2, ensure_ascii=False) + "\n"
        path = OUT / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("stale (run python3 dashboards/grafana/generate.py): " + ", ".join(stale),
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
