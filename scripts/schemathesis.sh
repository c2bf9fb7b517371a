#!/usr/bin/env bash
# API fuzzing of the ticket API through the proxy with schemathesis (PyPI), once per role.
# Starts `portcullis up` on free loopback ports, creates one user per role, signs each in
# through the proxy and runs schemathesis against /api/openapi.json with that user's
# bearer token: examples, coverage and fuzzing per operation, then the stateful phase,
# which follows the OpenAPI links (create a ticket, then read, patch, move through the
# workflow, assign, approve and comment on it; create an employee or a department, then
# read, patch and delete it). Fails on any server error, any response that violates the
# OpenAPI document, any schema-invalid request that is accepted, and on every
# schemathesis warning (an operation that only ever got 404, or whose generated data was
# mostly rejected). See docs/security-testing.md.
# Usage: scripts/schemathesis.sh [path/to/portcullis] [max-examples]
set -euo pipefail
bin=$(realpath "${1:-target/debug/portcullis}")
examples=${2:-30}
# Stateful sequences per role at most (schemathesis may end the phase earlier: when a
# replayed sequence meets different server state, Hypothesis stops it as flaky).
sequences=$((examples * 2))
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
# 4.32 or later: fuzz dictionaries, `warnings.fail-on`, per-check expected statuses.
python3 -c 'import sys
from importlib.metadata import version
v = tuple(int(p) for p in version("schemathesis").split(".")[:2])
sys.exit(0 if (4, 32) <= v < (5, 0) else 1)' 2>/dev/null ||
  python3 -m pip install --quiet 'schemathesis>=4.32,<5'
started=$(date +%s)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
https=$(free_port); admin=$(free_port); backend=$(free_port)
cat > portcullis.yaml <<YAML
state_dir: var
log: {format: text, level: warn}
proxy:
  listen: {https: "127.0.0.1:$https", http: null, admin: "127.0.0.1:$admin"}
  rate_limits: {rules: [{name: per_ip, key: client_ip, requests_per_period: 10000, burst_requests: 10000}]}
shared:
  policy_dir: "$root/policies"
backend:
  listen: "127.0.0.1:$backend"
  admin_listen: null
  identity: {access_token_ttl_seconds: 3600}
  # Any bytes are an accepted attachment here, so generated uploads succeed and the
  # stateful phase reaches download, versions and delete (type sniffing has its own tests).
  attachments:
    allowed_types: [application/octet-stream, text/plain, application/pdf, image/png, image/jpeg, image/gif, image/webp]
YAML

# One user per role, all in one department. The administrator is also a technician: it
# cannot change its own roles or delete itself, so its run always has a technician to
# assign tickets to, whatever it does to the other accounts (the role adds nothing an
# administrator may not already do).
roles=(employee developer technician department_head administrator)
password="schemathesis-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
{
  echo 'username,email,display_name,department,roles,password_format,password'
  for role in "${roles[@]}"; do
    extra=; [ "$role" = administrator ] && extra=';technician'
    echo "fuzz-${role//_/-},fuzz-${role//_/-}@example.org,Fuzz ${role//_/ },Facilities,$role$extra,plaintext,$password"
  done
} > users.csv
"$bin" --config portcullis.yaml user import users.csv >/dev/null
rm -f users.csv
"$bin" --config portcullis.yaml up > portcullis.log 2>&1 &
pid=$!
for _ in $(seq 200); do
  curl -sf "http://127.0.0.1:$admin/health/ready" >/dev/null && break
  sleep 0.1
done
ca=var/tls/self-signed.crt
base="https://localhost:$https"
api() { curl -sf --cacert "$ca" -H "authorization: Bearer $1" "$base$2"; }
declare -A token
for role in "${roles[@]}"; do
  token[$role]=$(curl -sf --cacert "$ca" "$base/auth/login" -H 'content-type: application/json' \
    -d "{\"username\":\"fuzz-${role//_/-}\",\"password\":\"$password\",\"client\":\"api\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
done

# The document as the server serves it; without links the stateful phase has nothing to follow.
curl -sf --cacert "$ca" "$base/api/openapi.json" > openapi.json
links=$(python3 -c '
import json, sys
doc = json.load(open("openapi.json"))
print(sum(len(r.get("links", {})) for item in doc["paths"].values() for op in item.values()
          if isinstance(op, dict) for r in op.get("responses", {}).values()))')
if [ "$links" -eq 0 ]; then
  echo "schemathesis: /api/openapi.json declares no links; the stateful phase would test nothing" >&2
  exit 1
fi

# Identifiers that exist, for fields the schema cannot enumerate: the department (it keeps
# its tickets and employees, so it cannot be deleted) and the technicians.
admin_token=${token[administrator]}
department=$(api "$admin_token" /api/departments |
  python3 -c 'import json,sys; print(next(d["id"] for d in json.load(sys.stdin) if d["name"] == "Facilities"))')
technicians=$(api "$admin_token" /api/employees |
  python3 -c 'import json,sys; print(", ".join(str(e["id"]) for e in json.load(sys.stdin) if "technician" in e["roles"]))')

# The changes that must name the ticket's current version (If-Match).
VERSIONED=("PATCH /api/tickets/{id}" "POST /api/tickets/{id}/transitions" "PUT /api/tickets/{id}/assignment" "POST /api/tickets/{id}/approval")
strict_warnings='"missing_auth", "missing_test_data", "base_url_mismatch", "missing_deserializer", "unused_openapi_auth", "unsupported_regex", "method_not_allowed", "unmatched_filter", "unresolvable_reference", "rate_limited", "dictionary_mismatch"'
cat > schemathesis.toml <<TOML
# Every warning fails the run (an operation that only ever got 404, one that only ever
# got 401/403, ...), but "mostly rejected generated data" is judged by this script: it
# may name only the changes that must carry the ticket's current version in If-Match
# (see VERSIONED below); for any other operation it fails the run too.
[warnings]
fail-on = [$strict_warnings]

[auth.openapi.bearer]
bearer = "\${PORTCULLIS_FUZZ_TOKEN}"

[phases.stateful.generation]
max-examples = $sequences

# 428 Precondition Required is the answer to a change without If-Match.
[checks.missing_required_header]
expected-statuses = [400, 401, 403, 406, 415, 422, 428]
# A malformed If-Match names no version: the condition is false (412).
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 412, 415, 422, 428, 429]

# Values that name something that exists, used for most generated cases (the rest stay random).
[dictionaries.departments]
values = [$department]
[dictionaries.technicians]
values = [$technicians]
# Every ticket starts at version 1 and open.
[dictionaries.versions]
values = ['"1"']
[dictionaries.first_step]
values = ["in_progress"]

[parameters]
"body.department_id" = { dictionary = "departments", probability = 0.9 }
"body.assignee_id" = { dictionary = "technicians", probability = 0.9 }
"header.If-Match" = { dictionary = "versions", probability = 0.9 }
"body.to" = { dictionary = "first_step", probability = 0.5 }
TOML

# The administrator's run also reaches the operations on one attachment (download, new
# version, delete): the stateful phase gets there only through a chain of links that a
# short phase may not finish. So one ticket with many attachments exists before the run,
# and most generated cases of those operations name that ticket and one of them (deletes
# use up some; the rest keep the others reachable). Only the administrator's run gets
# these values: for the other roles that ticket is someone else's.
# A new open ticket, titled $1, of the user whose token is $2 (the administrator's when
# not given); prints its id.
new_ticket() {
  curl -sf --cacert "$ca" -H "authorization: Bearer ${2:-$admin_token}" "$base/api/tickets" \
    -H 'content-type: application/json' \
    -d "{\"title\":\"schemathesis $1\",\"description\":\"seeded\",\"priority\":\"low\",\"department_id\":$department}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
seed_ticket=$(new_ticket attachments)
seed_aids=()
for n in $(seq 40); do
  seed_aids+=("$(curl -sf --cacert "$ca" -H "authorization: Bearer $admin_token" \
    -H 'content-type: application/octet-stream' --data-binary "seeded attachment $n" \
    "$base/api/tickets/$seed_ticket/attachments?filename=seed-$n.txt" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')")
done
aid_values=$(printf '"%s", ' "${seed_aids[@]}")
# A dictionary $1 of the values $2 (TOML), used for the path id of the operations $3...
# in nine generated cases of ten.
path_ids() {
  local name=$1 values=$2 op
  shift 2
  printf '[dictionaries.%s]\nvalues = [%s]\n\n' "$name" "$values"
  for op in "$@"; do
    printf '[[operations]]\ninclude-operation-id = "%s"\nparameters = { "path.id" = { dictionary = "%s", probability = 0.9 } }\n\n' \
      "$op" "$name"
  done
}
# And tickets of its own for each change that must name the ticket's current version
# in If-Match (update, transition, assignment, approval): every generated case sends
# "1", so only a ticket's first change can pass. Without these the run's short stateful
# phase sometimes left such an operation with random ids only (404) or an already
# changed ticket (412), and failed on the "repeatedly returned 404" warning.
# $2: whose tickets they are (the administrator's when not given).
fresh_tickets() {
  local ids=() n
  for n in $(seq 40); do
    ids+=("$(new_ticket "$1 $n" "${2:-}")")
  done
  local values
  values=$(printf '"%s", ' "${ids[@]}")
  path_ids "$1_tickets" "${values%, }" "$1_ticket"
}
# Employees and departments of its own to read, change and delete. Without them the
# path ids were the fuzz users (few, one of them itself, which it may not delete: 409)
# and random numbers, and a run could leave "delete employee" with nothing but 404 and
# 409, the "repeatedly returned 404" warning.
new_id() {
  curl -sf --cacert "$ca" -H "authorization: Bearer $admin_token" "$base$1" \
    -H 'content-type: application/json' -d "$2" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
seed_employees=() seed_departments=()
for n in $(seq 20); do
  seed_employees+=("$(new_id /api/employees \
    "{\"username\":\"seeded-$n\",\"email\":\"seeded-$n@example.org\",\"display_name\":\"Seeded $n\",\"department_id\":$department,\"roles\":[\"employee\"]}")")
  seed_departments+=("$(new_id /api/departments "{\"name\":\"Seeded department $n\"}")")
done
{
  cat schemathesis.toml
  cat <<TOML
[dictionaries.seed_attachments]
values = [${aid_values%, }]

TOML
  # Every operation on attachments names the seeded ticket (and, through path.aid, one
  # of its attachments) in most generated cases; the other ticket operations in one of
  # five (the [parameters] entry added below).
  path_ids seed_ticket "\"$seed_ticket\"" upload list_attachments download upload_version delete_attachment
  path_ids seed_employees "$(IFS=,; echo "${seed_employees[*]}")" get_employee update_employee delete_employee
  path_ids seed_departments "$(IFS=,; echo "${seed_departments[*]}")" get_department rename_department delete_department
  for change in update transition assign approve; do fresh_tickets "$change"; done
} > schemathesis.administrator.toml
# The department head may make the same four changes to any ticket of its department, and
# its run had the same failure: a short stateful phase left "assign ticket" with random ids
# only, and the run failed on the "repeatedly returned 404" warning. Tickets of its
# department for each change, separate from the administrator's (whose run comes later and
# would otherwise meet them already changed: 412). The reporting roles may update only the
# tickets they reported, so theirs are their own.
{
  cat schemathesis.toml
  for change in update transition assign approve; do fresh_tickets "$change"; done
} > schemathesis.department_head.toml
for role in employee developer technician; do
  {
    cat schemathesis.toml
    fresh_tickets update "${token[$role]}"
  } > "schemathesis.$role.toml"
done
python3 - <<'PY'
text = open("schemathesis.administrator.toml").read()
text = text.replace('[parameters]\n', '[parameters]\n"path.id" = { dictionary = "seed_ticket", probability = 0.2 }\n"path.aid" = { dictionary = "seed_attachments", probability = 0.9 }\n', 1)
open("schemathesis.administrator.toml", "w").write(text)
PY

# The operations each role can complete on the data it creates itself. The proxy's route
# policy (policies/data.yaml) refuses the directory to all but department heads (read) and
# administrators, and assignment and approval to all but them; tickets.rego lets
# employees, developers and technicians move only their own tickets, and only to closed or
# reopened, which needs someone else to resolve them first: a run as one of these roles
# cannot reach a successful transition, so it leaves that operation out. Developers also
# read the monitoring endpoints (/monitoring/errors, /monitoring/performance).
reporter_ops="create_ticket list_tickets get_ticket update_ticket add_comment list_comments ticket_history health"
declare -A ops=(
  [employee]=$reporter_ops
  [developer]="$reporter_ops errors performance"
  [technician]=$reporter_ops
  [department_head]="$reporter_ops transition_ticket assign_ticket approve_ticket
    list_employees get_employee list_departments get_department"
  [administrator]=all
)
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,missing_required_header,ignored_auth,use_after_free,ensure_resource_availability

run_role() {
  local role=$1 filter=() rc=0
  if [ "${ops[$role]}" != all ]; then
    for op in ${ops[$role]}; do filter+=(--include-operation-id "$op"); done
  fi
  local config=schemathesis.toml
  [ -f "schemathesis.$role.toml" ] && config=schemathesis.$role.toml
  PORTCULLIS_FUZZ_TOKEN=${token[$role]} schemathesis --config-file "$config" run openapi.json \
    --url "$base" \
    --tls-verify "$ca" \
    --checks "$checks" \
    --max-examples "$examples" \
    --phases examples,coverage,fuzzing,stateful \
    --no-color "${filter[@]}" > "run.$role.log" 2>&1 || rc=$?
  echo "$rc" > "run.$role.rc"
}

# The other roles side by side, then the administrator alone: it may change or delete
# their accounts.
runs=()
for role in "${roles[@]}"; do
  [ "$role" = administrator ] && continue
  run_role "$role" &
  runs+=($!)
done
wait "${runs[@]}"
run_role administrator

status=0
summary=()
for role in "${roles[@]}"; do
  echo "=== schemathesis as $role ==="
  cat "run.$role.log"
  rc=$(cat "run.$role.rc")
  tested=$(sed -n 's/^ *Tested: *\([0-9]*\).*/\1/p' "run.$role.log" | head -n1)
  scenarios=$(sed -n 's/^ *Scenarios: *\([0-9]*\).*/\1/p' "run.$role.log" | head -n1)
  links_covered=$(sed -n 's/^ *API Links: *\([0-9]*\) covered.*/\1/p' "run.$role.log" | head -n1)
  warnings=$(grep -c '^  ⚠️' "run.$role.log" || true)
  # Operations named under "mostly rejected generated data" (or a low valid rate): only
  # the version-checked changes may be there. Every generated case sends If-Match "1",
  # so after a ticket's first change the rest are 412, which schemathesis counts as
  # rejected data; any other operation there is a schema that does not match the server.
  unexpected=$(awk '/^(Schema validation mismatch|Low valid rate)/{on=1; next} on && /^[[:space:]]*$/{next} on && /^  - /{print; next} {on=0}' "run.$role.log" |
    sed 's/^  - //' | grep -vxF -e "${VERSIONED[0]}" -e "${VERSIONED[1]}" -e "${VERSIONED[2]}" -e "${VERSIONED[3]}" | sort -u || true)
  if [ -n "$unexpected" ]; then
    echo "schemathesis as $role: generated data mostly rejected by: $unexpected" >&2
    status=1
  fi
  if [ "$rc" -ne 0 ]; then status=1; fi
  if [ -z "$scenarios" ] || [ "$scenarios" -eq 0 ]; then
    echo "schemathesis as $role: no stateful sequence ran" >&2
    status=1
  fi
  summary+=("$(printf '%-16s rc=%d  operations=%-3s stateful sequences=%-4s links covered=%-3s warnings=%s' \
    "$role" "$rc" "${tested:-?}" "${scenarios:-0}" "${links_covered:-0}" "$warnings")")
done

echo "=== schemathesis summary ($(( $(date +%s) - started )) s) ==="
printf '%s\n' "${summary[@]}"
if [ "$status" -ne 0 ]; then
  # Each failed role's summary again, so the end of a CI log names the operations and
  # warnings (the full logs are above).
  for role in "${roles[@]}"; do
    [ "$(cat "run.$role.rc")" -ne 0 ] || continue
    echo "--- schemathesis as $role: summary ---"
    sed -n '/^=* SUMMARY =*$/,$p' "run.$role.log"
  done
  echo "--- portcullis log (tail) ---"; tail -n 40 portcullis.log
fi
exit "$status"
