//! The employee endpoints (`/api/employees/...`): list, create, read, update (a
//! change of roles or status ends the employee's sessions), delete.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use super::repo;
use super::sessions::EndSessions as _;
use crate::AppState;
use crate::audit_log::{Category, EventExt, Level, Outcome, event};
use crate::http::validate::{check_text, not_found, parse_id};
use crate::http::{ApiError, ApiJson, ApiQuery, Caller};
use crate::model::{Employee, EmployeePatch, NewEmployee, Role};

fn check_username(u: &str) -> Result<(), ApiError> {
    let ok = (3..=64).contains(&u.len())
        && u.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    ok.then_some(()).ok_or_else(|| {
        ApiError::Validation("username must be 3 to 64 of a-z, 0-9, `.`, `_`, `-`".into())
    })
}

fn check_email(e: &str) -> Result<(), ApiError> {
    check_text("email", e, 3, 254, false)?;
    let ok = e
        .split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e.contains(char::is_whitespace);
    ok.then_some(())
        .ok_or_else(|| ApiError::Validation("email is not an address".into()))
}

fn check_roles(roles: &[Role]) -> Result<(), ApiError> {
    if roles.is_empty() {
        return Err(ApiError::Validation(
            "an employee needs at least one role".into(),
        ));
    }
    Ok(())
}

/// Query of `GET /api/employees`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EmployeeQuery {
    department_id: Option<i64>,
}

#[utoipa::path(get, path = "/api/employees", tag = "directory", params(EmployeeQuery),
    responses((status = 200, description = "Employees", body = Vec<Employee>)))]
pub(crate) async fn list_employees(
    State(s): State<AppState>,
    c: Caller,
    ApiQuery(q): ApiQuery<EmployeeQuery>,
) -> Result<Json<Vec<Employee>>, ApiError> {
    s.directory_allowed(&c, "read", "employee")?;
    Ok(Json(repo::list_employees(&s.db, q.department_id).await?))
}

#[utoipa::path(post, path = "/api/employees", tag = "directory", request_body = NewEmployee,
    responses((status = 201, description = "Created", body = Employee)))]
pub(crate) async fn create_employee(
    State(s): State<AppState>,
    c: Caller,
    ApiJson(n): ApiJson<NewEmployee>,
) -> Result<(StatusCode, Json<Employee>), ApiError> {
    s.directory_change_allowed(&c, "create", "employee", "user.create")
        .await?;
    check_username(&n.username)?;
    check_email(&n.email)?;
    check_text("display_name", &n.display_name, 1, 100, false)?;
    check_roles(&n.roles)?;
    if let Some(d) = n.department_id {
        repo::get_department(&s.db, d)
            .await
            .map_err(|_| ApiError::Validation(format!("department {d} does not exist")))?;
    }
    let mut tx = s.db.begin().await?;
    let e = repo::insert_employee(&mut tx, &n, false).await?;
    s.commit_audited(
        tx,
        [event(Category::User, "user.create", Outcome::Success)
            .by(&c)
            .target(e.id)
            .detail("target_username", e.username.clone())
            .detail(
                "roles",
                e.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            )
            .detail("source", "api")],
    )
    .await?;
    Ok((StatusCode::CREATED, Json(e)))
}

#[utoipa::path(get, path = "/api/employees/{id}", tag = "directory", params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "The employee", body = Employee)))]
pub(crate) async fn get_employee(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Employee>, ApiError> {
    s.directory_allowed(&c, "read", "employee")?;
    let id = parse_id(&id, "employee")?;
    Ok(Json(
        repo::get_employee(&s.db, id)
            .await
            .map_err(not_found("employee"))?,
    ))
}

#[utoipa::path(patch, path = "/api/employees/{id}", tag = "directory", params(("id" = i64, Path, minimum = 1)), request_body = EmployeePatch,
    responses((status = 200, description = "Updated", body = Employee)))]
pub(crate) async fn update_employee(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    ApiJson(p): ApiJson<EmployeePatch>,
) -> Result<Json<Employee>, ApiError> {
    s.directory_change_allowed(&c, "update", "employee", "user.update")
        .await?;
    let id = parse_id(&id, "employee")?;
    // An administrator cannot lock themselves out by accident.
    if id == c.employee.id && (p.roles.is_some() || p.status.is_some()) {
        return Err(ApiError::Conflict(
            "you cannot change your own roles or status; ask another administrator".into(),
        ));
    }
    if let Some(e) = &p.email {
        check_email(e)?;
    }
    if let Some(d) = &p.display_name {
        check_text("display_name", d, 1, 100, false)?;
    }
    if let Some(r) = &p.roles {
        check_roles(r)?;
    }
    if let Some(st) = &p.status
        && st != "active"
        && st != "disabled"
    {
        return Err(ApiError::Validation(
            "status must be active or disabled".into(),
        ));
    }
    if let Some(Some(t)) = p.session_timeout_seconds
        && !(300..=43_200).contains(&t)
    {
        return Err(ApiError::Validation(
            "session_timeout_seconds must be 300 to 43200, or null for the default".into(),
        ));
    }
    if let Some(Some(d)) = p.department_id {
        repo::get_department(&s.db, d)
            .await
            .map_err(|_| ApiError::Validation(format!("department {d} does not exist")))?;
    }
    let before = repo::get_employee(&s.db, id)
        .await
        .map_err(not_found("employee"))?;
    let mut tx = s.db.begin().await?;
    let after = repo::update_employee(&mut tx, id, &p)
        .await
        .map_err(not_found("employee"))?;
    let roles = |e: &Employee| e.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>();
    let fields: Vec<&str> = [
        ("email", before.email != after.email),
        ("display_name", before.display_name != after.display_name),
        ("department_id", before.department_id != after.department_id),
        ("roles", before.roles != after.roles),
        ("status", before.status != after.status),
        (
            "session_timeout_seconds",
            before.session_timeout_seconds != after.session_timeout_seconds,
        ),
    ]
    .into_iter()
    .filter_map(|(f, changed)| changed.then_some(f))
    .collect();
    let update = event(Category::User, "user.update", Outcome::Success)
        .by(&c)
        .target(id)
        .detail("fields", fields);
    // A role change or a disabled account ends every session at once.
    let ends_sessions = before.roles != after.roles || after.status != "active";
    let roles_change = ends_sessions.then(|| {
        event(Category::User, "user.roles_change", Outcome::Success)
            .level(Level::Warning)
            .by(&c)
            .target(id)
            .detail("roles_before", roles(&before))
            .detail("roles_after", roles(&after))
            .detail("status_before", before.status.clone())
            .detail("status_after", after.status.clone())
    });
    s.commit_audited(tx, std::iter::once(update).chain(roles_change))
        .await?;
    if ends_sessions {
        s.end_sessions(id, "role_change", &c).await?;
    }
    Ok(Json(after))
}

#[utoipa::path(delete, path = "/api/employees/{id}", tag = "directory", params(("id" = i64, Path, minimum = 1)),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn delete_employee(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.directory_change_allowed(&c, "delete", "employee", "user.delete")
        .await?;
    let id = parse_id(&id, "employee")?;
    if id == c.employee.id {
        return Err(ApiError::Conflict(
            "you cannot delete your own account".into(),
        ));
    }
    let mut tx = s.db.begin().await?;
    repo::delete_employee(&mut tx, id)
        .await
        .map_err(not_found("employee"))?;
    s.commit_audited(
        tx,
        [event(Category::User, "user.delete", Outcome::Success)
            .level(Level::Warning)
            .by(&c)
            .target(id)],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
