# Route-level decision of the proxy: may this request reach the backend at all?
#
# Query: data.portcullis.http.decision (input and output documented in README.md).
# Object-level checks (whose ticket) are made by the backend with tickets.rego.
#
# Routes are looked up in the route index the loader derives from data.yaml
# (data.derived.http, README.md "Route index"): only the patterns that could match the
# request's first segment and length are compared.
package portcullis.http

import data.derived.http as route_index

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
public_hits := matching("public_routes")

role_hits := matching("routes")

# Public routes matching the method too; the first one decides.
public_grants := [route |
	some route in public_hits
	route.method == input.request.method
]

# Role routes listing the method with one of the subject's roles ("*": any authenticated
# subject); the first one decides.
role_grants := [route |
	authenticated
	some route in role_hits
	role_allowed(route.methods[input.request.method])
]

deny_rule := "role_not_permitted" if {
	count(method_hits) > 0
} else := "method_not_permitted" if {
	count(public_hits) + count(role_hits) > 0
} else := "no_matching_route"

# Role routes that list the request's method, whichever roles they name.
method_hits := [route |
	some route in role_hits
	route.methods[input.request.method]
]

role_allowed(allowed) if "*" in allowed

role_allowed(allowed) if {
	some role in subject_roles
	role in allowed
}

# The routes of config.http[list] whose path pattern matches the request's segments.
# Patterns: "*" matches exactly one non-empty segment; "**" as the last element matches
# any remaining segments (none included); anything else matches itself; the empty pattern
# matches only the root.
matching(list) := array.concat(
	[route |
		some route in route_index[list][first_segment].by_length[count(segments)]
		every i, pattern in route.path {
			segments[i] != ""
			pattern in {segments[i], "*"}
		}
	],
	[route |
		some route in route_index[list][first_segment].open
		prefix := array.slice(route.path, 0, count(route.path) - 1)
		count(segments) >= count(prefix)
		every i, pattern in prefix {
			segments[i] != ""
			pattern in {segments[i], "*"}
		}
	],
)

# The key of the request's routes in the index: its first segment, "" for the root.
first_segment := segments[0] if count(segments) > 0 else := ""

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
