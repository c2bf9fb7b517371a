# Tests for attachments.rego. Run: portcullis policy test policies/ --coverage
package portcullis.attachments_test

import data.portcullis.attachments

# The subject is "42" in department "7"; other people are "9" and "13", the other
# department "8".
subject(roles) := {"id": "42", "roles": roles, "department_id": "7"}

ticket_for := {
	"reported": {"reporter_id": "42", "assignee_id": "9", "department_id": "8", "status": "open"},
	"assigned": {"reporter_id": "13", "assignee_id": "42", "department_id": "8", "status": "open"},
	"department": {"reporter_id": "13", "assignee_id": "9", "department_id": "7", "status": "open"},
	"unrelated": {"reporter_id": "13", "assignee_id": "9", "department_id": "8", "status": "open"},
	"reported_closed": {"reporter_id": "42", "assignee_id": "9", "department_id": "8", "status": "closed"},
	"department_closed": {"reporter_id": "13", "assignee_id": "9", "department_id": "7", "status": "closed"},
}

# Who uploaded the attachment: the subject, or someone else.
uploader_for := {"own": "42", "other": "13"}

decide(roles, relation, uploader, action) := d if {
	d := attachments.decision with input as {
		"subject": subject(roles),
		"action": action,
		"ticket": ticket_for[relation],
		"attachment": {"created_by": uploader_for[uploader]},
	}
}

roles := ["employee", "technician", "department_head", "administrator", "developer", "guest"]

# "action/relation/uploader" cells allowed per role.
cells(actions, relations, uploaders) := {sprintf("%s/%s/%s", [a, r, u]) |
	some a in actions
	some r in relations
	some u in uploaders
}

reporter_cells := cells(["read"], ["reported", "reported_closed"], ["own", "other"]) | cells(["upload"], ["reported"], ["own", "other"]) | cells(["delete"], ["reported"], ["own"])

expected := {
	"employee": reporter_cells,
	"developer": reporter_cells,
	"technician": reporter_cells | cells(["read", "upload"], ["assigned"], ["own", "other"]) | cells(["delete"], ["assigned"], ["own"]),
	"department_head": reporter_cells | cells(["read"], ["department", "department_closed"], ["own", "other"]) | cells(["upload", "delete"], ["department"], ["own", "other"]),
	"administrator": cells(["read", "upload", "delete"], {r | some r, _ in ticket_for}, ["own", "other"]),
	"guest": set(),
}

mismatches(role) := {[action, relation, uploader, d] |
	some action in ["read", "upload", "delete"]
	some relation, _ in ticket_for
	some uploader, _ in uploader_for
	d := decide([role], relation, uploader, action)
	not cell_ok(d, sprintf("%s/%s/%s", [action, relation, uploader]) in expected[role])
}

cell_ok(d, true) if {
	d.allow == true
	d.reason == "permitted"
}

cell_ok(d, false) if {
	d.allow == false
	d.rule == "default_deny"
}

test_matrix_employee if count(mismatches("employee")) == 0

test_matrix_developer if count(mismatches("developer")) == 0

test_matrix_technician if count(mismatches("technician")) == 0

test_matrix_department_head if count(mismatches("department_head")) == 0

test_matrix_administrator if count(mismatches("administrator")) == 0

test_matrix_unknown_role if count(mismatches("guest")) == 0

test_uploader_rule_names_itself if {
	d := decide(["employee"], "reported", "own", "delete")
	d.rule == "uploader"
}

test_department_head_deletes_others_uploads if {
	d := decide(["department_head"], "department", "other", "delete")
	d.allow
	d.rule == "department_head"
}

test_unknown_action_denied if {
	not decide(["administrator"], "reported", "own", "rename").allow
}

test_roles_not_an_array_grant_nothing if {
	d := attachments.decision with input as {
		"subject": {"id": "42", "roles": "administrator", "department_id": "7"},
		"action": "read",
		"ticket": ticket_for.reported,
		"attachment": {"created_by": "42"},
	}
	not d.allow
}

test_subject_without_id_is_nobody if {
	d := attachments.decision with input as {
		"subject": {"id": null, "roles": ["employee"], "department_id": null},
		"action": "read",
		"ticket": {"reporter_id": null, "assignee_id": null, "department_id": "8", "status": "open"},
		"attachment": {"created_by": null},
	}
	not d.allow
}
