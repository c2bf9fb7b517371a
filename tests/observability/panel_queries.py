#!/usr/bin/env python3
"""Extracts every panel's PromQL query from the Grafana dashboards.

    python3 tests/observability/panel_queries.py              # table: dashboard, panel, ref, query
    python3 tests/observability/panel_queries.py --json       # the same as JSON
    python3 tests/observability/panel_queries.py --substitute # Grafana variables replaced (below)
    python3 tests/observability/panel_queries.py --as-rules FILE
        # writes a Prometheus rule file with one recording rule per query, so that
        # `promtool check rules FILE` parses every query offline

Grafana's variables are replaced by what a live Prometheus needs to run the query
on its own: $__rate_interval and $__interval by a short window, $__range by the
span of the live test, and the dashboards' multi-value label variables by `.*`.
Dashboards: dashboards/grafana/dashboards/*.json (or the paths given).
"""

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / "dashboards" / "grafana" / "dashboards"

# What each Grafana variable stands for when the query runs outside Grafana.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$route": ".*",
}


def substitute(expr, values=SUBSTITUTIONS):
    # Longest names first: $__rate_interval before $__range, etc.
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(name, values[name])
        expr = expr.replace("${" + name[1:] + "}", values[name])
    left = re.findall(r"\$\{?\w+", expr)
    if left:
        raise ValueError(f"unknown Grafana variable(s) {left} in: {expr}")
    return expr


def panels(board):
    for p in board.get("panels", []):
        yield p
        # Collapsed rows keep their panels inside.
        yield from p.get("panels", []) or []


def queries(paths, subst=False, values=SUBSTITUTIONS):
    """Yields dicts: dashboard (uid), file, panel id, title, type, refId, expr."""
    for path in paths:
        board = json.loads(Path(path).read_text())
        for p in panels(board):
            if p.get("type") == "row":
                continue
            for t in p.get("targets", []):
                expr = t.get("expr", "")
                yield {
                    "dashboard": board.get("uid"),
                    "file": Path(path).name,
                    "panel_id": p.get("id"),
                    "title": p.get("title"),
                    "panel_type": p.get("type"),
                    "refId": t.get("refId"),
                    "instant": bool(t.get("instant")),
                    "expr": substitute(expr, values) if subst else expr,
                }


def dashboard_files(args_paths):
    if args_paths:
        return [Path(p) for p in args_paths]
    return sorted(DEFAULT_DIR.glob("*.json"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", help="dashboard JSON files")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--substitute", action="store_true")
    ap.add_argument("--as-rules", metavar="FILE")
    args = ap.parse_args()
    files = dashboard_files(args.paths)
    if not files:
        sys.exit("panel_queries: no dashboards found")
    qs = list(queries(files, subst=args.substitute or bool(args.as_rules)))
    if args.as_rules:
        rules = []
        for q in qs:
            name = re.sub(r"[^a-zA-Z0-9_]", "_",
                          f"dashboard_{q['dashboard']}_panel_{q['panel_id']}_{q['refId']}")
            rules.append({"record": name, "expr": q["expr"]})
        doc = {"groups": [{"name": "dashboard-panel-queries", "rules": rules}]}
        # JSON is YAML: promtool reads it as a rule file.
        Path(args.as_rules).write_text(json.dumps(doc, indent=1))
        print(f"{len(rules)} panel queries written to {args.as_rules}")
    elif args.json:
        print(json.dumps(qs, indent=2))
    else:
        for q in qs:
            print(f"{q['dashboard']}\t{q['panel_id']}\t{q['title']}\t{q['refId']}\t{q['expr']}")


if __name__ == "__main__":
    main()
