//! The directory: employees and departments — their endpoints ([`router`]),
//! their object-level authorization (`data.portcullis.directory.*`) and their SQL
//! ([`repo`]). Ending sessions on a role change is asked of the session owner
//! through [`EndSessions`].

pub(crate) mod departments;
pub(crate) mod employees;
mod policy;
pub mod repo;
mod sessions;

use axum::Router;
use axum::routing::get;

pub use self::sessions::EndSessions;
use crate::AppState;

/// Routes of the directory API.
pub fn router() -> Router<AppState> {
    use self::departments::{
        create_department, delete_department, get_department, list_departments, rename_department,
    };
    use self::employees::{
        create_employee, delete_employee, get_employee, list_employees, update_employee,
    };
    Router::new()
        .route("/api/employees", get(list_employees).post(create_employee))
        .route(
            "/api/employees/{id}",
            get(get_employee)
                .patch(update_employee)
                .delete(delete_employee),
        )
        .route(
            "/api/departments",
            get(list_departments).post(create_department),
        )
        .route(
            "/api/departments/{id}",
            get(get_department)
                .patch(rename_department)
                .delete(delete_department),
        )
}
