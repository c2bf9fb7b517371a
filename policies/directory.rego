# Object-level authorisation for the employee and department directory, evaluated by the
# backend. Query: data.portcullis.directory.decision (documented in README.md).
package portcullis.directory

resources := {"employee", "department"}

actions := {"read", "create", "update", "delete"}

# The subject's roles as a set; empty unless `roles` is an array.
subject_roles := {role | some role in input.subject.roles} if {
	is_array(input.subject.roles)
} else := set()

default decision := {
	"allow": false,
	"reason": "forbidden",
	"rule": "default_deny",
	"public_reason": true,
}

decision := {
	"allow": true,
	"reason": "permitted",
	"rule": min(grants), # min, not sort()[0]: rego-cpp (regopy) mis-indexes sort results
	"public_reason": true,
} if {
	count(grants) > 0
}

grants contains "administrator" if {
	"administrator" in subject_roles
	input.action in actions
	input.resource in resources
}

grants contains "department_head_read" if {
	"department_head" in subject_roles
	input.action == "read"
	input.resource in resources
}
