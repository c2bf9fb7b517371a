# Tests for tickets.rego. Run: portcullis policy test policies/ --coverage
package portcullis.tickets_test

import data.portcullis.tickets

# ---------------------------------------------------------------- fixtures

# The subject is "42" in department "7".
subject(roles) := {"id": "42", "roles": roles, "department_id": "7"}

# Tickets by the subject's relation to them; "other" people are "9" and "13",
# the other department is "8".
ticket_for := {
	"reported": {"reporter_id": "42", "assignee_id": "9", "department_id": "8", "status": "open"},
	"assigned": {"reporter_id": "13", "assignee_id": "42", "department_id": "8", "status": "open"},
	"department": {"reporter_id": "13", "assignee_id": "9", "department_id": "7", "status": "open"},
	"unassigned_department": {"reporter_id": "13", "assignee_id": null, "department_id": "7", "status": "open"},
	"unrelated": {"reporter_id": "13", "assignee_id": "9", "department_id": "8", "status": "open"},
	"unrelated_unassigned": {"reporter_id": "13", "assignee_id": null, "department_id": "8", "status": "open"},
}

# Test actions: transitions are split by target state.
action_for := {
	"read": {"action": "read"},
	"update": {"action": "update"},
	"comment": {"action": "comment"},
	"start": {"action": "transition", "transition": {"from": "open", "to": "in_progress"}},
	"resolve": {"action": "transition", "transition": {"from": "in_progress", "to": "resolved"}},
	"close": {"action": "transition", "transition": {"from": "resolved", "to": "closed"}},
	"reopen": {"action": "transition", "transition": {"from": "closed", "to": "reopened"}},
	"assign": {"action": "assign"},
	"approve": {"action": "approve"},
	"create": {"action": "create"},
}

decide(roles, relation, action) := d if {
	d := tickets.decision with input as object.union(
		{"subject": subject(roles), "ticket": ticket_for[relation]},
		action_for[action],
	)
}

roles := ["employee", "technician", "department_head", "administrator", "developer", "guest"]

# Expected grants: role -> set of "action/relation"; "create" is allowed for every relation.
reporter_grants := {
	"read/reported", "update/reported", "comment/reported",
	"close/reported", "reopen/reported",
}

all_relations_create := {sprintf("create/%s", [r]) | some r, _ in ticket_for}

expected := {
	"employee": reporter_grants | all_relations_create,
	"developer": reporter_grants | all_relations_create,
	"technician": (reporter_grants | all_relations_create) | {
		"read/assigned", "update/assigned", "comment/assigned",
		"start/assigned", "resolve/assigned", "close/assigned", "reopen/assigned",
	},
	"department_head": (reporter_grants | all_relations_create) | {sprintf("%s/%s", [a, r]) |
		some a in ["read", "update", "comment", "start", "resolve", "close", "reopen", "assign", "approve"]
		some r in ["department", "unassigned_department"]
	},
	"administrator": {sprintf("%s/%s", [a, r]) | some a, _ in action_for; some r, _ in ticket_for},
	"guest": set(),
}

# Every (action, relation) cell for `role` whose decision differs from `expected`.
mismatches(role) := {[action, relation, d] |
	some action, _ in action_for
	some relation, _ in ticket_for
	d := decide([role], relation, action)
	not cell_ok(d, sprintf("%s/%s", [action, relation]) in expected[role])
}

cell_ok(d, true) if {
	d.allow == true
	d.reason == "permitted"
}

cell_ok(d, false) if {
	d.allow == false
	d.reason == "forbidden"
	d.rule == "default_deny"
}

# ---------------------------------------------------------------- full matrix per role

test_matrix_employee if count(mismatches("employee")) == 0

test_matrix_developer if count(mismatches("developer")) == 0

test_matrix_technician if count(mismatches("technician")) == 0

test_matrix_department_head if count(mismatches("department_head")) == 0

test_matrix_administrator if count(mismatches("administrator")) == 0

test_matrix_unknown_role if count(mismatches("guest")) == 0

# ---------------------------------------------------------------- specific cells

test_technician_cannot_read_ticket_assigned_to_someone_else if {
	not decide(["technician"], "unrelated", "read").allow
}

test_technician_can_transition_assigned_ticket if {
	d := decide(["technician"], "assigned", "start")
	d.allow
	d.rule == "assignee"
}

test_department_head_approves_own_department_ticket if {
	d := decide(["department_head"], "department", "approve")
	d.allow
	d.rule == "department_head"
}

test_department_head_cannot_approve_other_department_ticket if {
	not decide(["department_head"], "unrelated", "approve").allow
}

test_employee_cannot_start_own_ticket if {
	not decide(["employee"], "reported", "start").allow
}

test_employee_closes_own_ticket if {
	decide(["employee"], "reported", "close").rule == "reporter_transition"
}

test_combined_roles_union_their_grants if {
	decide(["employee", "technician"], "assigned", "update").allow
	decide(["developer", "department_head"], "department", "assign").allow
	not decide(["employee", "developer"], "department", "read").allow
}

test_administrator_rule_is_named if {
	decide(["administrator"], "unrelated", "approve").rule == "administrator"
}

test_unknown_action_is_denied if {
	d := tickets.decision with input as {"subject": subject(["administrator"]), "action": "delete", "ticket": ticket_for.reported}
	not d.allow
}

test_transition_without_target_is_denied_for_reporter if {
	d := tickets.decision with input as {"subject": subject(["employee"]), "action": "transition", "ticket": ticket_for.reported}
	not d.allow
}

test_null_ids_never_match if {
	nobody := {"id": null, "roles": ["technician", "department_head"], "department_id": null}
	orphan := {"reporter_id": null, "assignee_id": null, "department_id": null, "status": "open"}
	every action in ["read", "update", "comment"] {
		d := tickets.decision with input as {"subject": nobody, "action": action, "ticket": orphan}
		not d.allow
	}
}

test_missing_subject_is_denied if {
	d := tickets.decision with input as {"action": "read", "ticket": ticket_for.reported}
	not d.allow
	d.reason == "forbidden"
}

test_roles_not_a_list_grants_nothing if {
	d := tickets.decision with input as {"subject": {"id": "42", "roles": "administrator"}, "action": "read", "ticket": ticket_for.reported}
	not d.allow
}

# ---------------------------------------------------------------- list_scope

scope(s) := scope if {
	scope := tickets.list_scope with input as {"subject": s}
}

test_list_scope_administrator_sees_all if {
	scope(subject(["administrator"])) == {"all": true}
	scope(subject(["employee", "administrator"])) == {"all": true}
}

test_list_scope_employee_and_developer_see_reported if {
	every role in ["employee", "developer"] {
		scope(subject([role])) == {"all": false, "reporter_id": "42", "assignee_id": null, "department_id": null}
	}
}

test_list_scope_technician_adds_assigned if {
	scope(subject(["technician"])) == {"all": false, "reporter_id": "42", "assignee_id": "42", "department_id": null}
}

test_list_scope_department_head_adds_department if {
	scope(subject(["department_head"])) == {"all": false, "reporter_id": "42", "assignee_id": null, "department_id": "7"}
}

test_list_scope_combined_roles if {
	scope(subject(["technician", "department_head"])) == {"all": false, "reporter_id": "42", "assignee_id": "42", "department_id": "7"}
}

test_list_scope_unknown_role_sees_nothing if {
	scope(subject(["guest"])) == {"all": false, "reporter_id": null, "assignee_id": null, "department_id": null}
	scope(subject([])) == {"all": false, "reporter_id": null, "assignee_id": null, "department_id": null}
}

test_create_needs_no_ticket if {
	d := tickets.decision with input as {"subject": subject(["employee"]), "action": "create"}
	d.allow
	d.rule == "create"
}

test_list_scope_without_ids_sees_nothing_through_them if {
	scope({"roles": ["technician", "department_head"]}) == {"all": false, "reporter_id": null, "assignee_id": null, "department_id": null}
	scope({"roles": ["department_head"], "department_id": "7"}) == {"all": false, "reporter_id": null, "assignee_id": null, "department_id": "7"}
}
