//! The first administrator: created at start when there is none, with a one-time
//! password in a 0600 file.

use super::password;
use super::store;
use crate::AppState;
use crate::audit_log::{Category, EventExt, Level, Outcome, event};
use crate::db::RepoError;
use crate::directory::repo;
use crate::http::ApiError;
use crate::model::{NewEmployee, Role};

/// Creates the first administrator when there is none: user `admin` with a
/// one-time password written to `initial_password_file` (mode 0600), which
/// must be replaced at first sign-in.
pub async fn bootstrap_admin(
    s: &AppState,
    initial_password_file: &std::path::Path,
) -> Result<bool, ApiError> {
    use sqlx::Row;
    let count: i64 =
        sqlx::query("select count(*) from employee_roles where role = 'administrator'")
            .fetch_one(s.db.pool())
            .await
            .map_err(RepoError::from)?
            .try_get(0)
            .map_err(RepoError::from)?;
    if count > 0 {
        return Ok(false);
    }
    let one_time: String = {
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
        let raw: [u8; 24] = rand::random();
        raw.iter()
            .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
            .collect()
    };
    let admin = repo::create_employee(
        &s.db,
        &NewEmployee {
            username: "admin".into(),
            email: "admin@localhost.invalid".into(),
            display_name: "Administrator".into(),
            department_id: None,
            roles: vec![Role::Administrator],
        },
        false,
    )
    .await?;
    let hash = s
        .identity
        .passwords
        .hash(&one_time)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    store::set_credential(
        s.db.pool(),
        admin.id,
        &password::StoredPassword {
            hash,
            legacy_scheme: None,
            legacy_params: None,
        },
        true,
    )
    .await?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = initial_password_file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ApiError::Internal(e.to_string()))?;
        }
        let _ = std::fs::remove_file(initial_password_file);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(initial_password_file)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        writeln!(f, "username: admin\none-time password: {one_time}\n(replace it at first sign-in: POST /auth/login with new_password)")
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    tracing::warn!(file = %initial_password_file.display(), "created the first administrator `admin`; its one-time password is in the file");
    s.audit(
        event(Category::User, "user.create", Outcome::Success)
            .level(Level::Warning)
            .target(admin.id)
            .detail("target_username", "admin")
            .detail("roles", vec!["administrator"])
            .detail("source", "bootstrap"),
    )
    .await?;
    Ok(true)
}
