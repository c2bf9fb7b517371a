# Tests for http.rego. Run: portcullis policy test policies/ --coverage
package portcullis.http_test

import data.portcullis.http

# ---------------------------------------------------------------- fixtures

anonymous := {"authenticated": false}

user(roles) := {
	"authenticated": true,
	"sub": "42",
	"username": "alice",
	"roles": roles,
	"auth_method": "password",
	"session_id": "3f6c2a",
	"mfa": true,
}

request(method, segments, subject) := {
	"request": {
		"method": method,
		"path": concat("/", array.concat([""], segments)),
		"segments": segments,
		"query": {},
		"headers": {"user-agent": "rego-test"},
	},
	"subject": subject,
	"source": {"ip": "127.0.0.1"},
	"route": "api",
	"time": {"unix_seconds": 1790000000},
}

decide(method, segments, subject) := d if {
	d := http.decision with input as request(method, segments, subject)
}

methods := ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

# "guest" and "" stand for roles the policy does not know.
roles := ["employee", "technician", "department_head", "administrator", "developer", "guest", ""]

ticket_roles := {"employee", "technician", "department_head", "administrator", "developer"}

managers := {"department_head", "administrator"}

admins := {"administrator"}

operators := {"administrator", "developer"}

# Every (method, role) cell of `path` whose decision differs from `expected`
# (method -> set of roles allowed). Denies must say "forbidden".
mismatches(segments, expected) := {[method, role, d] |
	some method in methods
	some role in roles
	d := decide(method, segments, user([role]))
	not cell_ok(d, role in object.get(expected, method, set()))
}

cell_ok(d, true) if {
	d.allow == true
	d.reason == "role_permitted"
}

cell_ok(d, false) if {
	d.allow == false
	d.reason == "forbidden"
}

# The route matrix for `segments` holds for every method and role, and anonymous callers
# get "unauthenticated" for every method.
route_matrix_holds(segments, expected) if {
	count(mismatches(segments, expected)) == 0
	every method in methods {
		decide(method, segments, anonymous).reason == "unauthenticated"
	}
}

# ---------------------------------------------------------------- data.yaml

all_routes := array.concat(data.config.http.public_routes, data.config.http.routes)

test_route_ids_are_unique if {
	ids := [route.id | some route in all_routes]
	count(ids) == count({id | some id in ids})
}

# The route index the loader derives (data.derived.http, README.md "Route index") holds
# every route of data.config.http exactly where this plain-Rego statement of it says: per
# first segment, the patterns of each length, then those ending in "**", in data.yaml order.
test_route_index_is_the_route_lists_regrouped if {
	every list in ["public_routes", "routes"] {
		data.derived.http[list] == reference_index(data.config.http[list])
	}
}

reference_index(routes) := {first: {"by_length": by_length(group), "open": open_patterns(group)} |
	some route in routes
	first := first_of(route.path)
	group := [r | some r in routes; first_of(r.path) == first]
}

by_length(group) := [] if {
	every route in group {
		is_open(route)
	}
} else := [[r | some r in group; not is_open(r); count(r.path) == n] |
	some n in numbers.range(0, max({count(r.path) | some r in group; not is_open(r)}))
]

open_patterns(group) := [r | some r in group; is_open(r)]

is_open(route) if route.path[count(route.path) - 1] == "**"

first_of(path) := path[0]

first_of(path) := "" if count(path) == 0

test_only_the_root_pattern_matches_the_root if {
	decide("GET", [], anonymous).rule == "app_page"
	decide("GET", ["x"], anonymous).reason == "unauthenticated"
	decide("GET", ["assets"], anonymous).rule == "app_assets"
	decide("POST", [], anonymous).reason == "unauthenticated"
	decide("DELETE", [], user(["administrator"])).rule == "method_not_permitted"
}

test_public_routes_are_well_formed if {
	every route in data.config.http.public_routes {
		is_string(route.method)
		is_array(route.path)
	}
}

# ---------------------------------------------------------------- public routes

public_routes := [
	["POST", ["auth", "login"], "auth_login"],
	["POST", ["auth", "refresh"], "auth_refresh"],
	["POST", ["auth", "logout"], "auth_logout"],
	["GET", ["auth", "jwks.json"], "auth_jwks"],
	["GET", ["auth", "oidc", "login"], "oidc_login"],
	["GET", ["auth", "oidc", "callback"], "oidc_callback"],
	["POST", ["auth", "oidc", "backchannel-logout"], "oidc_backchannel_logout"],
	["GET", ["monitoring", "health"], "health"],
	["POST", [".portcullis", "csp-report"], "csp_report"],
	["GET", ["api", "openapi.json"], "openapi"],
	["GET", ["auth", "oidc", "providers"], "oidc_providers"],
	["GET", ["auth", "session"], "auth_session"],
	["GET", [], "app_page"],
	["GET", ["assets", "app-3f2a.js"], "app_assets"],
]

test_public_routes_allow_anonymous if {
	every route in public_routes {
		d := decide(route[0], route[1], anonymous)
		d.allow == true
		d.reason == "public_route"
		d.rule == route[2]
	}
}

test_public_routes_allow_every_authenticated_role if {
	every route in public_routes {
		every role in roles {
			d := decide(route[0], route[1], user([role]))
			d.allow == true
			d.rule == route[2]
		}
	}
}

test_public_routes_other_methods_need_authentication if {
	every route in public_routes {
		every other in [m | some m in methods; m != route[0]] {
			decide(other, route[1], anonymous).reason == "unauthenticated"
		}
	}
}

test_public_route_wrong_method_is_forbidden_when_authenticated if {
	d := decide("GET", ["auth", "login"], user(["employee"]))
	d.allow == false
	d.reason == "forbidden"
	d.rule == "method_not_permitted"
}

test_public_route_obligations if {
	d := decide("POST", ["auth", "login"], anonymous)
	d.obligations == {"headers": {}, "rate_limit_class": "auth"}
	decide("GET", ["monitoring", "health"], anonymous).obligations == {"headers": {}, "rate_limit_class": null}
}

test_public_routes_are_exact if {
	decide("POST", ["auth", "login", "extra"], anonymous).reason == "unauthenticated"
	decide("POST", ["auth"], anonymous).reason == "unauthenticated"
	decide("POST", ["Auth", "login"], anonymous).reason == "unauthenticated"
	decide("GET", ["monitoring", "health", ""], anonymous).reason == "unauthenticated"
}

# ---------------------------------------------------------------- anonymous

test_anonymous_is_unauthenticated_everywhere_else if {
	every segments in [
		["api", "tickets"],
		["api", "tickets", "TCK-2026-000001"],
		["admin", "users"],
		["monitoring", "errors"],
		["auth", "mfa", "totp"],
		["no", "such", "route"],
	] {
		d := decide("GET", segments, anonymous)
		d.allow == false
		d.reason == "unauthenticated"
		d.rule == "authentication_required"
		d.public_reason == true
	}
}

test_missing_subject_is_anonymous if {
	d := http.decision with input as {"request": {"method": "GET", "segments": ["api", "tickets"]}}
	d.reason == "unauthenticated"
}

test_authenticated_must_be_boolean_true if {
	subject := object.union(user(["administrator"]), {"authenticated": "true"})
	decide("GET", ["api", "tickets"], subject).reason == "unauthenticated"
}

test_empty_input_is_denied if {
	d := http.decision with input as {}
	d.allow == false
	d.reason == "unauthenticated"
}

# ---------------------------------------------------------------- route matrix

test_matrix_tickets_collection if {
	route_matrix_holds(["api", "tickets"], {"GET": ticket_roles, "POST": ticket_roles})
}

test_matrix_ticket if {
	route_matrix_holds(["api", "tickets", "TCK-2026-000001"], {"GET": ticket_roles, "PATCH": ticket_roles})
}

test_matrix_ticket_comments if {
	route_matrix_holds(["api", "tickets", "TCK-2026-000001", "comments"], {"GET": ticket_roles, "POST": ticket_roles})
}

test_matrix_ticket_history if {
	route_matrix_holds(["api", "tickets", "TCK-2026-000001", "history"], {"GET": ticket_roles})
}

test_matrix_ticket_attachments if {
	route_matrix_holds(["api", "tickets", "TCK-2026-000001", "attachments"], {"GET": ticket_roles, "POST": ticket_roles})
}

test_matrix_ticket_attachment if {
	route_matrix_holds(
		["api", "tickets", "TCK-2026-000001", "attachments", "0192f0e4-0000-7000-8000-000000000001"],
		{"GET": ticket_roles, "DELETE": ticket_roles},
	)
}

test_matrix_ticket_attachment_versions if {
	route_matrix_holds(
		["api", "tickets", "TCK-2026-000001", "attachments", "0192f0e4-0000-7000-8000-000000000001", "versions"],
		{"POST": ticket_roles},
	)
}

test_matrix_ticket_transitions if {
	route_matrix_holds(["api", "tickets", "TCK-2026-000001", "transitions"], {"POST": ticket_roles})
}

test_matrix_ticket_assignment if {
	route_matrix_holds(["api", "tickets", "TCK-2026-000001", "assignment"], {"POST": managers, "PUT": managers})
}

test_matrix_ticket_approval if {
	route_matrix_holds(["api", "tickets", "TCK-2026-000001", "approval"], {"POST": managers})
}

test_matrix_employees if {
	route_matrix_holds(["api", "employees"], {"GET": managers, "POST": admins})
}

test_matrix_employee if {
	route_matrix_holds(["api", "employees", "17"], {"GET": managers, "PUT": admins, "PATCH": admins, "DELETE": admins})
}

test_matrix_departments if {
	route_matrix_holds(["api", "departments"], {"GET": managers, "POST": admins})
}

test_matrix_department if {
	route_matrix_holds(["api", "departments", "7"], {"GET": managers, "PUT": admins, "PATCH": admins, "DELETE": admins})
}

test_matrix_audit_logs if {
	route_matrix_holds(["admin", "audit", "logs"], {"GET": admins})
	route_matrix_holds(["admin", "audit", "logs", "count"], {"GET": admins})
	route_matrix_holds(["admin", "audit", "logs", "export"], {"GET": admins})
}

admin_all := {"GET": admins, "POST": admins, "PUT": admins, "PATCH": admins, "DELETE": admins}

test_matrix_admin_users if {
	route_matrix_holds(["admin", "users"], admin_all)
	route_matrix_holds(["admin", "users", "42"], admin_all)
	route_matrix_holds(["admin", "users", "42", "roles"], admin_all)
}

test_matrix_admin_sessions if {
	route_matrix_holds(["admin", "sessions"], admin_all)
	route_matrix_holds(["admin", "sessions", "3f6c2a"], admin_all)
}

test_matrix_monitoring if {
	route_matrix_holds(["monitoring", "errors"], {"GET": operators})
	route_matrix_holds(["monitoring", "performance"], {"GET": operators})
	route_matrix_holds(["monitoring", "dashboard"], {"GET": operators})
}

any_role := {role | some role in roles}

test_matrix_password_change_any_authenticated if {
	route_matrix_holds(["auth", "password"], {"POST": any_role})
}

test_password_change_needs_no_role if {
	decide("POST", ["auth", "password"], user([])).allow == true
	decide("POST", ["auth", "mfa", "totp", "enroll"], user([])).allow == true
	decide("GET", ["api", "tickets"], user([])).allow == false
}

test_matrix_own_sessions_any_authenticated if {
	route_matrix_holds(["auth", "sessions"], {"GET": any_role, "DELETE": any_role})
	route_matrix_holds(["auth", "sessions", "5b0e3c9a"], {"GET": any_role, "DELETE": any_role})
}

test_matrix_mfa_any_authenticated if {
	route_matrix_holds(["auth", "mfa"], {"GET": any_role, "POST": any_role, "DELETE": any_role})
	route_matrix_holds(["auth", "mfa", "totp", "verify"], {"GET": any_role, "POST": any_role, "DELETE": any_role})
}

# ---------------------------------------------------------------- specific cells

test_unknown_admin_path_is_forbidden_even_for_administrators if {
	d := decide("GET", ["admin", "config"], user(["administrator"]))
	d.allow == false
	d.rule == "no_matching_route"
	d2 := decide("GET", ["admin", "audit"], user(["administrator"]))
	d2.rule == "no_matching_route"
}

test_unknown_path_is_forbidden if {
	every segments in [["api"], ["api", "tickets", "1", "attachments", "2", "3"], ["api", "tickets", "1", "2", "3", "4"], ["ADMIN", "users"]] {
		d := decide("GET", segments, user(["administrator"]))
		d.allow == false
		d.reason == "forbidden"
		d.rule == "no_matching_route"
	}
}

test_wildcard_does_not_match_empty_segment if {
	decide("GET", ["api", "tickets", ""], user(["employee"])).rule == "no_matching_route"
}

test_deny_rules_name_the_cause if {
	decide("DELETE", ["api", "tickets", "1"], user(["administrator"])).rule == "method_not_permitted"
	decide("GET", ["api", "employees"], user(["employee"])).rule == "role_not_permitted"
	decide("GET", ["nowhere"], user(["employee"])).rule == "no_matching_route"
}

test_allow_names_the_route if {
	decide("POST", ["api", "tickets", "1", "approval"], user(["department_head"])).rule == "ticket_approval"
	decide("GET", ["admin", "audit", "logs", "export"], user(["administrator"])).rule == "admin_audit_logs_export"
}

test_admin_obligations if {
	d := decide("GET", ["admin", "audit", "logs"], user(["administrator"]))
	d.obligations == {"headers": {"cache-control": "no-store"}, "rate_limit_class": "admin"}
}

test_no_roles_or_malformed_roles_are_forbidden if {
	decide("GET", ["api", "tickets"], user([])).reason == "forbidden"
	subject := object.remove(user([]), ["roles"])
	decide("GET", ["api", "tickets"], subject).reason == "forbidden"
	decide("GET", ["api", "tickets"], object.union(user([]), {"roles": "administrator"})).reason == "forbidden"
}

test_any_of_several_roles_grants if {
	decide("GET", ["api", "employees"], user(["guest", "employee", "department_head"])).allow == true
	decide("GET", ["admin", "users"], user(["employee", "developer", "department_head"])).allow == false
}

test_methods_are_case_sensitive if {
	decide("get", ["api", "tickets"], user(["administrator"])).allow == false
}
