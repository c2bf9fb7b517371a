//! The department endpoints (`/api/departments/...`): list, create, read, rename,
//! delete.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::repo;
use crate::AppState;
use crate::audit_log::{Category, EventExt, Level, Outcome, event};
use crate::http::validate::{check_text, not_found, parse_id};
use crate::http::{ApiError, ApiJson, Caller};
use crate::model::{Department, NewDepartment};

#[utoipa::path(get, path = "/api/departments", tag = "directory",
    responses((status = 200, description = "Departments", body = Vec<Department>)))]
pub(crate) async fn list_departments(
    State(s): State<AppState>,
    c: Caller,
) -> Result<Json<Vec<Department>>, ApiError> {
    s.directory_allowed(&c, "read", "department")?;
    Ok(Json(repo::list_departments(&s.db).await?))
}

#[utoipa::path(post, path = "/api/departments", tag = "directory", request_body = NewDepartment,
    responses((status = 201, description = "Created", body = Department)))]
pub(crate) async fn create_department(
    State(s): State<AppState>,
    c: Caller,
    ApiJson(n): ApiJson<NewDepartment>,
) -> Result<(StatusCode, Json<Department>), ApiError> {
    s.directory_change_allowed(&c, "create", "department", "department.create")
        .await?;
    check_text("name", &n.name, 1, 100, false)?;
    let mut tx = s.db.begin().await?;
    let d = repo::insert_department(&mut tx, n.name.trim()).await?;
    s.commit_audited(
        tx,
        [event(Category::User, "department.create", Outcome::Success)
            .by(&c)
            .detail("department_id", d.id)
            .detail("name", d.name.clone())],
    )
    .await?;
    Ok((StatusCode::CREATED, Json(d)))
}

#[utoipa::path(get, path = "/api/departments/{id}", tag = "directory", params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "The department", body = Department)))]
pub(crate) async fn get_department(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Department>, ApiError> {
    s.directory_allowed(&c, "read", "department")?;
    let id = parse_id(&id, "department")?;
    Ok(Json(
        repo::get_department(&s.db, id)
            .await
            .map_err(not_found("department"))?,
    ))
}

#[utoipa::path(patch, path = "/api/departments/{id}", tag = "directory", params(("id" = i64, Path, minimum = 1)), request_body = NewDepartment,
    responses((status = 200, description = "Renamed", body = Department)))]
pub(crate) async fn rename_department(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    ApiJson(n): ApiJson<NewDepartment>,
) -> Result<Json<Department>, ApiError> {
    s.directory_change_allowed(&c, "update", "department", "department.rename")
        .await?;
    let id = parse_id(&id, "department")?;
    check_text("name", &n.name, 1, 100, false)?;
    let mut tx = s.db.begin().await?;
    let d = repo::rename_department(&mut tx, id, n.name.trim())
        .await
        .map_err(not_found("department"))?;
    s.commit_audited(
        tx,
        [event(Category::User, "department.rename", Outcome::Success)
            .by(&c)
            .detail("department_id", d.id)
            .detail("name", d.name.clone())],
    )
    .await?;
    Ok(Json(d))
}

#[utoipa::path(delete, path = "/api/departments/{id}", tag = "directory", params(("id" = i64, Path, minimum = 1)),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn delete_department(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.directory_change_allowed(&c, "delete", "department", "department.delete")
        .await?;
    let id = parse_id(&id, "department")?;
    let mut tx = s.db.begin().await?;
    repo::delete_department(&mut tx, id)
        .await
        .map_err(not_found("department"))?;
    s.commit_audited(
        tx,
        [event(Category::User, "department.delete", Outcome::Success)
            .level(Level::Warning)
            .by(&c)
            .detail("department_id", id)],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
