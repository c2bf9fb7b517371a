# Object-level attachment authorisation, evaluated by the backend for one attachment (or
# a new one) of a ticket the subject may read (tickets.rego decides that first).
#
# Query (input and output documented in README.md):
#   data.portcullis.attachments.decision  may this subject do `action` to this attachment?
package portcullis.attachments

subject := input.subject

ticket := input.ticket

action := input.action

actions := {"read", "upload", "delete"}

# Roles that report tickets and act on the tickets they reported.
reporter_roles := {"employee", "developer", "technician", "department_head"}

# The subject's roles as a set; empty unless `roles` is an array.
subject_roles := {role | some role in subject.roles} if {
	is_array(subject.roles)
} else := set()

has_role(role) if role in subject_roles

is_reporter if {
	some role in subject_roles
	role in reporter_roles
	subject.id != null
	ticket.reporter_id == subject.id
}

is_assignee if {
	has_role("technician")
	subject.id != null
	ticket.assignee_id == subject.id
}

is_department_head if {
	has_role("department_head")
	subject.department_id != null
	ticket.department_id == subject.department_id
}

# Someone the ticket concerns: its reporter, its technician, its department's head.
ticket_party if is_reporter

ticket_party if is_assignee

ticket_party if is_department_head

is_uploader if {
	subject.id != null
	input.attachment.created_by == subject.id
}

# A closed ticket's attachments are kept as they are (administrators excepted).
ticket_open if ticket.status != "closed"

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
	has_role("administrator")
	action in actions
}

grants contains "ticket_party" if {
	action == "read"
	ticket_party
}

grants contains "ticket_party_upload" if {
	action == "upload"
	ticket_party
	ticket_open
}

grants contains "department_head" if {
	action == "delete"
	is_department_head
	ticket_open
}

grants contains "uploader" if {
	action == "delete"
	is_uploader
	ticket_party
	ticket_open
}
