# Tests for directory.rego. Run: portcullis policy test policies/ --coverage
package portcullis.directory_test

import data.portcullis.directory

decide(roles, action, resource) := d if {
	d := directory.decision with input as {
		"subject": {"id": "42", "roles": roles, "department_id": "7"},
		"action": action,
		"resource": resource,
	}
}

roles := ["employee", "technician", "department_head", "administrator", "developer", "guest"]

actions := ["read", "create", "update", "delete", "export"]

resources := ["employee", "department", "ticket"]

# role -> set of "action/resource" allowed.
expected := {
	"administrator": {sprintf("%s/%s", [a, r]) |
		some a in ["read", "create", "update", "delete"]
		some r in ["employee", "department"]
	},
	"department_head": {"read/employee", "read/department"},
}

mismatches := {[role, action, resource, d] |
	some role in roles
	some action in actions
	some resource in resources
	d := decide([role], action, resource)
	not cell_ok(d, sprintf("%s/%s", [action, resource]) in object.get(expected, role, set()))
}

cell_ok(d, true) if {
	d.allow == true
	d.reason == "permitted"
}

cell_ok(d, false) if {
	d.allow == false
	d.reason == "forbidden"
}

test_full_matrix if count(mismatches) == 0

test_department_head_reads_employees if {
	d := decide(["department_head"], "read", "employee")
	d.allow
	d.rule == "department_head_read"
}

test_department_head_cannot_update_departments if {
	not decide(["department_head"], "update", "department").allow
}

test_administrator_deletes_departments if {
	decide(["administrator"], "delete", "department").rule == "administrator"
}

test_employee_cannot_read_directory if {
	not decide(["employee"], "read", "employee").allow
}

test_missing_subject_is_denied if {
	d := directory.decision with input as {"action": "read", "resource": "employee"}
	not d.allow
}

test_roles_not_a_list_grants_nothing if {
	d := directory.decision with input as {"subject": {"roles": "administrator"}, "action": "read", "resource": "employee"}
	not d.allow
}
