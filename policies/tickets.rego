# Object-level ticket authorisation, evaluated by the backend for one ticket and action.
#
# Queries (inputs and outputs documented in README.md):
#   data.portcullis.tickets.decision    may this subject do `action` on this ticket?
#   data.portcullis.tickets.list_scope  which tickets may this subject list?
package portcullis.tickets

subject := input.subject

ticket := input.ticket

action := input.action

actions := {"read", "update", "comment", "transition", "assign", "approve", "create"}

# Transitions the reporter of a ticket may make on it (unless another grant allows more).
reporter_transitions := {"closed", "reopened"}

# Roles that may report tickets and act on the tickets they reported.
reporter_roles := {"employee", "developer", "technician", "department_head"}

# The subject's roles as a set; empty unless `roles` is an array.
subject_roles := {role | some role in subject.roles} if {
	is_array(subject.roles)
} else := set()

has_role(role) if role in subject_roles

is_admin if has_role("administrator")

is_reporter_role if {
	some role in subject_roles
	role in reporter_roles
}

# A subject without an id matches no ticket; ids are compared as given (strings).
is_reporter if {
	subject.id != null
	ticket.reporter_id == subject.id
}

is_assignee if {
	subject.id != null
	ticket.assignee_id == subject.id
}

in_department if {
	subject.department_id != null
	ticket.department_id == subject.department_id
}

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

# Names of the rules that allow the request; any one is enough.
grants contains "administrator" if {
	is_admin
	action in actions
}

grants contains "create" if {
	action == "create"
	is_reporter_role
}

grants contains "reporter" if {
	action in {"read", "update", "comment"}
	is_reporter_role
	is_reporter
}

grants contains "reporter_transition" if {
	action == "transition"
	is_reporter_role
	is_reporter
	input.transition.to in reporter_transitions
}

grants contains "assignee" if {
	action in {"read", "update", "comment", "transition"}
	has_role("technician")
	is_assignee
}

grants contains "department_head" if {
	action in {"read", "update", "comment", "transition", "assign", "approve"}
	has_role("department_head")
	in_department
}

# Row filter for listing: rows matching ANY non-null field are visible. A field whose
# value is missing from the input is null (matches nothing).
list_scope := {"all": true} if {
	is_admin
} else := {
	"all": false,
	"reporter_id": scope_reporter,
	"assignee_id": scope_assignee,
	"department_id": scope_department,
}

scope_reporter := subject.id if {
	is_reporter_role
	subject.id != null
} else := null

scope_assignee := subject.id if {
	has_role("technician")
	subject.id != null
} else := null

scope_department := subject.department_id if {
	has_role("department_head")
	subject.department_id != null
} else := null
