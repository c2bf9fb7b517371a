//! SQL of the directory: departments and employees (with their roles).

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

pub use crate::db::RepoError;
use crate::db::{Db, Params, Tx, classify, dynamic_sql, now_text};
use crate::model::{Department, Employee, EmployeePatch, NewEmployee, Role};

const DEPARTMENT_COLUMNS: &str = "department_id, name, created_at, updated_at";

fn department_row(r: &AnyRow) -> Result<Department, sqlx::Error> {
    Ok(Department {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        created_at: r.try_get(2)?,
        updated_at: r.try_get(3)?,
    })
}

/// Creates a department in a transaction of its own (set-up and tests; handlers use
/// [`insert_department`] and commit it with its audit event).
pub async fn create_department(db: &Db, name: &str) -> Result<Department, RepoError> {
    let mut tx = db.begin().await?;
    let d = insert_department(&mut tx, name).await?;
    tx.commit().await?;
    Ok(d)
}

/// Creates a department in `tx` (the caller commits).
pub async fn insert_department(tx: &mut Tx, name: &str) -> Result<Department, RepoError> {
    let now = now_text();
    let row = sqlx::query(dynamic_sql!(
        "insert into departments (name, created_at, updated_at) values ($1, $2, $2) returning {DEPARTMENT_COLUMNS}"
    ))
    .bind(name)
    .bind(&now)
    .fetch_one(&mut **tx)
    .await
    .map_err(|e| classify(e, "a department with this name"))?;
    Ok(department_row(&row)?)
}

pub async fn get_department(db: &Db, id: i64) -> Result<Department, RepoError> {
    let row = sqlx::query(dynamic_sql!(
        "select {DEPARTMENT_COLUMNS} from departments where department_id = $1"
    ))
    .bind(id)
    .fetch_optional(db.pool())
    .await?
    .ok_or(RepoError::NotFound)?;
    Ok(department_row(&row)?)
}

pub async fn list_departments(db: &Db) -> Result<Vec<Department>, RepoError> {
    let rows = sqlx::query(dynamic_sql!(
        "select {DEPARTMENT_COLUMNS} from departments order by department_id"
    ))
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(department_row).collect::<Result<_, _>>()?)
}

/// Renames department `id` in `tx` (the caller commits).
pub async fn rename_department(tx: &mut Tx, id: i64, name: &str) -> Result<Department, RepoError> {
    let row = sqlx::query(dynamic_sql!(
        "update departments set name = $1, updated_at = $2 where department_id = $3 returning {DEPARTMENT_COLUMNS}"
    ))
    .bind(name)
    .bind(now_text())
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(|e| classify(e, "a department with this name"))?
    .ok_or(RepoError::NotFound)?;
    Ok(department_row(&row)?)
}

/// Deletes department `id` in `tx` (the caller commits).
pub async fn delete_department(tx: &mut Tx, id: i64) -> Result<(), RepoError> {
    let done = sqlx::query("delete from departments where department_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(|e| classify(e, "this department"))?;
    if done.rows_affected() == 0 {
        return Err(RepoError::NotFound);
    }
    Ok(())
}

const EMPLOYEE_COLUMNS: &str = "employee_id, username, email, display_name, department_id, status, is_oidc, created_at, updated_at, session_timeout_seconds";

async fn employee_roles(
    conn: impl sqlx::Executor<'_, Database = Any>,
    id: i64,
) -> Result<Vec<Role>, RepoError> {
    let rows = sqlx::query("select role from employee_roles where employee_id = $1 order by role")
        .bind(id)
        .fetch_all(conn)
        .await?;
    let mut roles: Vec<Role> = rows
        .iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .filter_map(|s| Role::parse(&s))
        .collect();
    roles.sort();
    Ok(roles)
}

fn employee_row(r: &AnyRow, roles: Vec<Role>) -> Result<Employee, sqlx::Error> {
    Ok(Employee {
        id: r.try_get(0)?,
        username: r.try_get(1)?,
        email: r.try_get(2)?,
        display_name: r.try_get(3)?,
        department_id: r.try_get(4)?,
        status: r.try_get(5)?,
        is_oidc: r.try_get::<i64, _>(6)? != 0,
        created_at: r.try_get(7)?,
        updated_at: r.try_get(8)?,
        session_timeout_seconds: r.try_get(9)?,
        roles,
    })
}

async fn set_roles(
    tx: &mut Transaction<'_, Any>,
    id: i64,
    roles: &[Role],
) -> Result<(), RepoError> {
    sqlx::query("delete from employee_roles where employee_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    let mut unique = roles.to_vec();
    unique.sort();
    unique.dedup();
    for role in unique {
        sqlx::query("insert into employee_roles (employee_id, role) values ($1, $2)")
            .bind(id)
            .bind(role.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Creates an employee in a transaction of its own (set-up, imports and tests; handlers
/// use [`insert_employee`] and commit it with its audit event).
pub async fn create_employee(
    db: &Db,
    new: &NewEmployee,
    is_oidc: bool,
) -> Result<Employee, RepoError> {
    let mut tx = db.begin().await?;
    let e = insert_employee(&mut tx, new, is_oidc).await?;
    tx.commit().await?;
    Ok(e)
}

/// Creates an employee with their roles in `tx` (the caller commits).
pub async fn insert_employee(
    tx: &mut Tx,
    new: &NewEmployee,
    is_oidc: bool,
) -> Result<Employee, RepoError> {
    let now = now_text();
    let row = sqlx::query(dynamic_sql!(
        "insert into employees (username, email, display_name, department_id, status, is_oidc, created_at, updated_at) \
         values ($1, $2, $3, $4, 'active', $5, $6, $6) returning {EMPLOYEE_COLUMNS}"
    ))
    .bind(&new.username)
    .bind(&new.email)
    .bind(&new.display_name)
    .bind(new.department_id)
    .bind(i64::from(is_oidc))
    .bind(&now)
    .fetch_one(&mut **tx)
    .await
    .map_err(|e| classify(e, "an employee with this username or email"))?;
    let id: i64 = row.try_get(0)?;
    set_roles(tx, id, &new.roles).await?;
    let roles = employee_roles(&mut **tx, id).await?;
    Ok(employee_row(&row, roles)?)
}

pub async fn get_employee(db: &Db, id: i64) -> Result<Employee, RepoError> {
    let row = sqlx::query(dynamic_sql!(
        "select {EMPLOYEE_COLUMNS} from employees where employee_id = $1"
    ))
    .bind(id)
    .fetch_optional(db.pool())
    .await?
    .ok_or(RepoError::NotFound)?;
    let roles = employee_roles(db.pool(), id).await?;
    Ok(employee_row(&row, roles)?)
}

pub async fn list_employees(
    db: &Db,
    department_id: Option<i64>,
) -> Result<Vec<Employee>, RepoError> {
    let mut p = Params::default();
    let filter = match department_id {
        Some(d) => format!("where department_id = {}", p.int(d)),
        None => String::new(),
    };
    let sql = format!("select {EMPLOYEE_COLUMNS} from employees {filter} order by employee_id");
    let rows = p
        .apply(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .fetch_all(db.pool())
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: i64 = r.try_get(0)?;
        out.push(employee_row(r, employee_roles(db.pool(), id).await?)?);
    }
    Ok(out)
}

/// Applies `patch` to employee `id` in `tx` (the caller commits); returns the employee
/// as they will be.
pub async fn update_employee(
    tx: &mut Tx,
    id: i64,
    patch: &EmployeePatch,
) -> Result<Employee, RepoError> {
    let exists = sqlx::query("select 1 from employees where employee_id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    if exists.is_none() {
        return Err(RepoError::NotFound);
    }
    let mut p = Params::default();
    let mut sets = Vec::new();
    if let Some(email) = &patch.email {
        sets.push(format!("email = {}", p.text(email.clone())));
    }
    if let Some(name) = &patch.display_name {
        sets.push(format!("display_name = {}", p.text(name.clone())));
    }
    if let Some(dept) = patch.department_id {
        match dept {
            Some(d) => sets.push(format!("department_id = {}", p.int(d))),
            None => sets.push("department_id = null".to_owned()),
        }
    }
    if let Some(status) = &patch.status {
        sets.push(format!("status = {}", p.text(status.clone())));
    }
    if let Some(timeout) = patch.session_timeout_seconds {
        match timeout {
            Some(t) => sets.push(format!("session_timeout_seconds = {}", p.int(t))),
            None => sets.push("session_timeout_seconds = null".to_owned()),
        }
    }
    sets.push(format!("updated_at = {}", p.text(now_text())));
    let sql = format!(
        "update employees set {} where employee_id = {}",
        sets.join(", "),
        p.int(id)
    );
    p.apply(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .execute(&mut **tx)
        .await
        .map_err(|e| classify(e, "an employee with this email"))?;
    if let Some(roles) = &patch.roles {
        set_roles(tx, id, roles).await?;
    }
    let row = sqlx::query(dynamic_sql!(
        "select {EMPLOYEE_COLUMNS} from employees where employee_id = $1"
    ))
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    let roles = employee_roles(&mut **tx, id).await?;
    Ok(employee_row(&row, roles)?)
}

/// Deletes employee `id` in `tx` (the caller commits).
pub async fn delete_employee(tx: &mut Tx, id: i64) -> Result<(), RepoError> {
    let done = sqlx::query("delete from employees where employee_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(|e| classify(e, "this employee"))?;
    if done.rows_affected() == 0 {
        return Err(RepoError::NotFound);
    }
    Ok(())
}
