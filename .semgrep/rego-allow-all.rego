# Test cases for rego-allow-all.yaml (`semgrep --test .semgrep`).
package portcullis.http

# ok: portcullis.rego.default-allow
default decision := {
	"allow": false,
	"reason": "forbidden",
}

# ruleid: portcullis.rego.default-allow
default allow := true

# ruleid: portcullis.rego.default-allow
default decision := {"allow": true, "reason": "open", "rule": "default_allow"}

# ruleid: portcullis.rego.unconditional-allow
allow := true

# ruleid: portcullis.rego.unconditional-allow
allow if true

# ruleid: portcullis.rego.unconditional-allow
allow if {
	true
}

# ruleid: portcullis.rego.unconditional-allow
decision := {"allow": true, "reason": "debug", "rule": "allow_all", "public_reason": true}

# ruleid: portcullis.rego.unconditional-allow
decision := {
	"allow": true,
	"reason": "debug",
}

# ruleid: portcullis.rego.unconditional-allow
decision := allow("debug", {"id": "x"})

# ok: portcullis.rego.unconditional-allow
decision := allow("public_route", public_grants[0]) if {
	count(public_grants) > 0
} else := {
	"allow": false,
	"reason": "unauthenticated",
} if {
	not authenticated
# ruleid: portcullis.rego.unconditional-allow
} else := allow("role_permitted", role_grants[0])

# ok: portcullis.rego.unconditional-allow
decision := {
	"allow": true,
	"reason": "permitted",
	"rule": min(grants),
} if {
	count(grants) > 0
}

# ruleid: portcullis.rego.unconditional-allow
grants contains "everyone"

# ok: portcullis.rego.unconditional-allow
grants contains "administrator" if {
	is_admin
	action in actions
}

# ok: portcullis.rego.unconditional-allow
allow(reason, route) := {
	"allow": true,
	"reason": reason,
	"rule": route.id,
}

# ok: portcullis.rego.unconditional-allow
allow if {
	input.subject.authenticated == true
}
