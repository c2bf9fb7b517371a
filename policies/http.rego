# Route-level decision of the proxy: may this request reach the backend at all?
#
# Query: data.portcullis.http.decision (input and output documented in README.md).
# Object-level checks (whose ticket) are made by the backend with tickets.rego.
#
# Written for regorus' speed profile: referring to another rule (or calling a function)
# inside a loop is what costs, so loops work on local variables only, routes are
# pre-filtered on their first segment (patterns must start with a literal, which
# http_test.rego checks) and each request computes the matching routes once.
package portcullis.http

# Path segments as an array; undefined (so nothing matches) when malformed.
segments := input.request.segments if is_array(input.request.segments)

authenticated if input.subject.authenticated == true

# The subject's roles as a set; empty unless `roles` is an array.
subject_roles := {role | some role in input.subject.roles} if {
	is_array(input.subject.roles)
} else := set()

# Anything not decided below is a deny.
default decision := {
	"allow": false,
	"reason": "forbidden",
	"rule": "default_deny",
	"public_reason": true,
}

# The first matching branch decides: public routes, then the authentication requirement,
# then the role matrix, then the most specific deny.
decision := allow("public_route", public_grants[0]) if {
	count(public_grants) > 0
} else := {
	"allow": false,
	"reason": "unauthenticated",
	"rule": "authentication_required",
	"public_reason": true,
} if {
	not authenticated
} else := allow("role_permitted", role_grants[0]) if {
	count(role_grants) > 0
} else := {
	"allow": false,
	"reason": "forbidden",
	"rule": deny_rule,
	"public_reason": true,
}

# Routes whose path matches the request: patterns without "**" first, then those with it,
# each in data.yaml order.
public_hits := matching(data.config.http.public_routes, segments)

role_hits := matching(data.config.http.routes, segments)

# Public routes matching the method too; the first one decides.
public_grants := [route |
	method := input.request.method
	hits := public_hits
	some route in hits
	route.method == method
]

# Role routes listing the method with one of the subject's roles ("*": any authenticated
# subject); the first one decides.
role_grants := [route |
	authenticated
	method := input.request.method
	roles := subject_roles
	hits := role_hits
	some route in hits
	allowed := route.methods[method]
	role_allowed(allowed, roles)
]

deny_rule := "role_not_permitted" if {
	count(method_hits) > 0
} else := "method_not_permitted" if {
	count(public_hits) + count(role_hits) > 0
} else := "no_matching_route"

# Role routes that list the request's method, whichever roles they name.
method_hits := [route |
	method := input.request.method
	hits := role_hits
	some route in hits
	route.methods[method]
]

role_allowed(allowed, _) if "*" in allowed

role_allowed(allowed, roles) if {
	some role in roles
	role in allowed
}

# The routes whose path pattern matches the request's segments. Patterns: "*" matches
# exactly one non-empty segment; "**" as the last element matches any remaining segments
# (none included); anything else matches itself; the empty pattern matches only the root.
# Written without helper functions (see the note at the top); the first element is
# compared first as a cheap pre-filter.
matching(routes, segs) := array.concat(root_matches(routes, segs), array.concat(
	[route |
		some route in routes
		route.path[0] == segs[0]
		count(route.path) == count(segs)
		every i, p in route.path {
			segs[i] != ""
			p in {segs[i], "*"}
		}
	],
	[route |
		some route in routes
		route.path[0] == segs[0]
		n := count(route.path)
		route.path[n - 1] == "**"
		count(segs) >= n - 1
		every i, p in array.slice(route.path, 0, n - 1) {
			segs[i] != ""
			p in {segs[i], "*"}
		}
	],
))

root_matches(routes, segs) := [route |
	count(segs) == 0
	some route in routes
	count(route.path) == 0
]

# An allow naming the route, with its optional obligations.
allow(reason, route) := {
	"allow": true,
	"reason": reason,
	"rule": route.id,
	"public_reason": true,
	"obligations": {
		"headers": object.get(route, "headers", {}),
		"rate_limit_class": object.get(route, "rate_limit_class", null),
	},
}
