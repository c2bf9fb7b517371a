#!/usr/bin/env python3
"""Differential test of the shipped policy bundle: every decision of the
route (http), object (tickets, attachments) and directory policies over a generated
matrix of inputs is computed by Portcullis (regorus, through
`portcullis policy eval`) and by regopy (rego-cpp, an independent Rego
implementation). Any disagreement fails.

Usage: scripts/regopy-diff.py PORTCULLIS_BINARY [POLICY_DIR]
"""
import itertools
import json
import pathlib
import subprocess
import sys
import tempfile

from regopy import Input, Interpreter

binary = sys.argv[1]
bundle = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else "policies")

ROLES = [[], ["employee"], ["technician"], ["department_head"], ["administrator"], ["developer"],
         ["employee", "technician"], ["auditor"]]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
PATHS = ["/", "/api/tickets", "/api/tickets/TCK-2026-000001", "/api/tickets/TCK-2026-000001/comments",
         "/api/tickets/TCK-2026-000001/transitions", "/api/tickets/TCK-2026-000001/assignment",
         "/api/tickets/TCK-2026-000001/approval", "/api/tickets/TCK-2026-000001/history",
         "/api/tickets/TCK-2026-000001/attachments",
         "/api/tickets/TCK-2026-000001/attachments/0192f0e4-0000-7000-8000-000000000001",
         "/api/tickets/TCK-2026-000001/attachments/0192f0e4-0000-7000-8000-000000000001/versions",
         "/api/employees", "/api/employees/7", "/api/departments", "/api/departments/3",
         "/api/openapi.json", "/admin/audit/logs", "/admin/audit/logs/count", "/admin/sessions",
         "/admin/users/7/sessions", "/monitoring/health", "/monitoring/dashboard", "/auth/login",
         "/auth/refresh", "/auth/logout", "/auth/jwks.json", "/auth/mfa/totp/enroll",
         "/auth/oidc/login", "/auth/oidc/callback", "/.portcullis/csp-report", "/api", "/api/unknown"]


def http_cases():
    for roles, method, path, authenticated in itertools.product(ROLES, METHODS, PATHS, [True, False]):
        if not authenticated and roles:
            continue
        subject = {"authenticated": True, "sub": "7", "roles": roles, "auth_method": "password",
                   "session_id": "s", "mfa": False} if authenticated else {"authenticated": False}
        yield {"request": {"method": method, "path": path,
                           "segments": [s for s in path.split("/") if s], "query": {}, "headers": {}},
               "subject": subject, "source": {"ip": "192.0.2.1"},
               "route": (path.split("/")[1] or "app") if path != "/" else "app",
               "time": {"unix_seconds": 1790000000}}


def attachment_cases():
    owners = [("7", None, "1"), ("8", "7", "1"), ("8", None, "1"), ("8", "9", "2"), ("7", "7", "2")]
    for roles, action, (reporter, assignee, dept), status, uploader in itertools.product(
            ROLES, ["read", "upload", "delete", "rename"], owners, ["open", "closed"], ["7", "8", None]):
        yield {"subject": {"id": "7", "roles": roles, "department_id": "1"}, "action": action,
               "ticket": {"reporter_id": reporter, "assignee_id": assignee, "department_id": dept,
                          "status": status},
               "attachment": {"created_by": uploader}}


def ticket_cases():
    actions = ["read", "update", "comment", "transition", "assign", "approve", "create", "delete"]
    owners = [("7", None, "1"), ("8", "7", "1"), ("8", None, "1"), ("8", "9", "2"), ("7", "7", "2")]
    transitions = [None, {"from": "resolved", "to": "closed"}, {"from": "open", "to": "in_progress"},
                   {"from": "closed", "to": "reopened"}]
    for roles, action, (reporter, assignee, dept), tr in itertools.product(ROLES, actions, owners, transitions):
        if (tr is None) != (action != "transition"):
            continue
        case = {"subject": {"id": "7", "roles": roles, "department_id": "1"}, "action": action,
                "ticket": {"reporter_id": reporter, "assignee_id": assignee, "department_id": dept,
                           "status": "open"}}
        if tr:
            case["transition"] = tr
        yield case


def directory_cases():
    for roles, action, resource in itertools.product(ROLES, ["read", "create", "update", "delete", "purge"],
                                                     ["employee", "department", "ticket"]):
        yield {"subject": {"id": "7", "roles": roles, "department_id": "1"}, "action": action,
               "resource": resource}


def scope_cases():
    for roles in ROLES:
        for dept in ["1", None]:
            yield {"subject": {"id": "7", "roles": roles, "department_id": dept}}


SUITES = [
    ("data.portcullis.http.decision", list(http_cases())),
    ("data.portcullis.tickets.decision", list(ticket_cases())),
    ("data.portcullis.attachments.decision", list(attachment_cases())),
    ("data.portcullis.directory.decision", list(directory_cases())),
    ("data.portcullis.tickets.list_scope", list(scope_cases())),
]


def batch_query(rule):
    return f"[d | some c in input.cases; d := {rule} with input as c]"


def portcullis_eval(rule, cases):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"cases": cases}, f)
    out = subprocess.run([binary, "policy", "eval", "--dir", str(bundle), "--input", f.name, batch_query(rule)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def data_document(key):
    # As Portcullis loads it: `config` is data.yaml's, `derived` the route index the
    # loader builds from it.
    return json.loads(subprocess.run([binary, "policy", "eval", "--dir", str(bundle), f"data.{key}"],
                                     capture_output=True, text=True, check=True).stdout)


def regopy_interpreter():
    rego = Interpreter()
    for path in sorted(bundle.glob("*.rego")):
        if not path.name.endswith("_test.rego"):
            rego.add_module(path.name, path.read_text())
    rego.add_data_json(json.dumps({key: data_document(key) for key in ("config", "derived")}))
    return rego


def regopy_eval(rego, rule, cases):
    # One query per input: rego-cpp is evaluated in-process, and large
    # batched comprehensions are not what it is tuned for.
    results = []
    for case in cases:
        rego.set_input(Input(case))
        out = json.loads(str(rego.query(rule)))
        exprs = out.get("expressions") or [None]
        results.append(exprs[0])
    return results


def comparable(d):
    if isinstance(d, dict) and "allow" in d:
        return {k: d.get(k) for k in ("allow", "reason", "rule")}
    return d


rego = regopy_interpreter()
total = disagreements = 0
for rule, cases in SUITES:
    ours = portcullis_eval(rule, cases)
    theirs = regopy_eval(rego, rule, cases)
    if len(ours) != len(cases) or len(theirs) != len(cases):
        print(f"{rule}: expected {len(cases)} decisions, regorus gave {len(ours)}, regopy {len(theirs)}")
        disagreements += 1
        continue
    allowed = 0
    for case, a, b in zip(cases, ours, theirs):
        total += 1
        allowed += bool(isinstance(a, dict) and a.get("allow"))
        if comparable(a) != comparable(b):
            disagreements += 1
            if disagreements <= 10:
                print(f"DISAGREE {rule}\n  input:   {json.dumps(case)}\n  regorus: {json.dumps(a)}\n  regopy:  {json.dumps(b)}")
    print(f"{rule}: {len(cases)} inputs, {allowed} allowed")
print(f"{total - disagreements} agreed, {disagreements} disagreed")
sys.exit(1 if disagreements else 0)
