//! Administrative commands that work on the backend's data directly:
//! `user create`, `user import`, `keys rotate`, `policy test`, `policy eval`.

use std::path::Path;

use anyhow::{Context, bail};
use portcullis_backend::audit_log::{Category, Outcome, event};
use portcullis_backend::directory::repo;
use portcullis_backend::identity::password::ImportedPassword;
use portcullis_backend::model::{NewEmployee, Role};
use portcullis_backend::{AppState, identity as auth};
use serde::Deserialize;

/// The operating-system account running the command, for the audit details.
#[allow(
    clippy::disallowed_methods,
    reason = "who ran an administrative command, not configuration: the login name the shell sets"
)]
pub fn os_user() -> String {
    std::env::var("USER").unwrap_or_default()
}

/// An event of this command: who ran it (the operating-system account) is in the details.
fn cli_event(category: Category, action: &str) -> portcullis_audit::AuditEvent {
    let os_user = os_user();
    event(category, action, Outcome::Success)
        .auth_method("cli")
        .detail("os_user", os_user)
}

/// Records `e`, turning a refusal into an error of the command.
async fn record(state: &AppState, e: portcullis_audit::AuditEvent) -> anyhow::Result<()> {
    state
        .audit(e)
        .await
        .map_err(|_| anyhow::anyhow!("the audit log cannot record this action (spool full?)"))
}

/// One user of an import file (CSV with this header, or a JSON array).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRow {
    username: String,
    email: String,
    display_name: String,
    #[serde(default)]
    department: Option<String>,
    /// CSV: `;`-separated; JSON: a string or an array.
    #[serde(deserialize_with = "roles_field")]
    roles: Vec<String>,
    /// `plaintext`, `bcrypt` or `sha256` (unsalted hex).
    password_format: String,
    password: String,
}

fn roles_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Roles {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Roles::deserialize(d)? {
        Roles::One(s) => s
            .split(';')
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect(),
        Roles::Many(v) => v,
    })
}

fn read_rows(file: &Path) -> anyhow::Result<Vec<ImportRow>> {
    let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    if file.extension().is_some_and(|e| e == "json") {
        return serde_json::from_slice(&text).context("the JSON file must be an array of users");
    }
    let mut rows = Vec::new();
    for (i, r) in csv::Reader::from_reader(text.as_slice())
        .deserialize::<ImportRow>()
        .enumerate()
    {
        // The error names the line but never echoes the record (it holds a password).
        rows.push(r.map_err(|e| anyhow::anyhow!("line {}: {}", i + 2, e.kind_summary()))?);
    }
    Ok(rows)
}

trait KindSummary {
    fn kind_summary(&self) -> String;
}

impl KindSummary for csv::Error {
    fn kind_summary(&self) -> String {
        match self.kind() {
            csv::ErrorKind::Deserialize { err, .. } => {
                format!("field {}: {}", err.field().map_or(0, |f| f + 1), err.kind())
            }
            csv::ErrorKind::UnequalLengths { .. } => "wrong number of fields".into(),
            _ => "not valid CSV".into(),
        }
    }
}

/// `portcullis user import FILE`: stores Argon2id only (legacy hashes are
/// wrapped, plaintext is hashed in memory); nothing of the passwords is
/// written anywhere else or printed.
pub async fn import_users(state: &AppState, file: &Path) -> anyhow::Result<()> {
    let rows = read_rows(file)?;
    let (mut created, mut skipped) = (0, 0);
    for (i, row) in rows.into_iter().enumerate() {
        let n = i + 1;
        let imported = match row.password_format.as_str() {
            "plaintext" => ImportedPassword::Plaintext(row.password),
            "bcrypt" => ImportedPassword::Bcrypt(row.password),
            "sha256" => ImportedPassword::Sha256Hex(row.password),
            other => bail!(
                "user {n} ({}): unknown password_format `{other}`",
                row.username
            ),
        };
        let roles: Vec<Role> = row
            .roles
            .iter()
            .map(|r| {
                Role::parse(r).ok_or_else(|| {
                    anyhow::anyhow!("user {n} ({}): unknown role `{r}`", row.username)
                })
            })
            .collect::<Result<_, _>>()?;
        let department_id = match row
            .department
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            Some(name) => Some(department_named(state, name).await?),
            None => None,
        };
        let stored = state
            .identity
            .passwords
            .import(&imported)
            .map_err(|e| anyhow::anyhow!("user {n} ({}): {e}", row.username))?;
        let new = NewEmployee {
            username: row.username.trim().to_lowercase(),
            email: row.email,
            display_name: row.display_name,
            department_id,
            roles,
        };
        match repo::create_employee(&state.db, &new, false).await {
            Ok(e) => {
                auth::store::set_credential(&state.db, e.id, &stored, false).await?;
                record(
                    state,
                    cli_event(Category::User, "user.create")
                        .detail("target_user_id", e.id.to_string())
                        .detail("target_username", e.username.clone())
                        .detail(
                            "roles",
                            e.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                        )
                        .detail("source", "import"),
                )
                .await?;
                created += 1;
            }
            Err(repo::RepoError::Conflict(_)) => {
                eprintln!("user {n} ({}): already exists, skipped", new.username);
                skipped += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    record(
        state,
        cli_event(Category::User, "user.import")
            .detail("created", created)
            .detail("skipped", skipped)
            .detail("file", file.display().to_string()),
    )
    .await?;
    println!("imported {created} user(s), skipped {skipped}");
    Ok(())
}

async fn department_named(state: &AppState, name: &str) -> anyhow::Result<i64> {
    if let Some(d) = repo::list_departments(&state.db)
        .await?
        .into_iter()
        .find(|d| d.name == name)
    {
        return Ok(d.id);
    }
    Ok(repo::create_department(&state.db, name).await?.id)
}

/// `portcullis user create`: prints a one-time password once; it must be
/// replaced at first sign-in.
pub async fn create_user(
    state: &AppState,
    username: &str,
    email: &str,
    display_name: &str,
    roles: &[String],
    department: Option<&str>,
) -> anyhow::Result<()> {
    let roles: Vec<Role> = roles
        .iter()
        .map(|r| Role::parse(r).ok_or_else(|| anyhow::anyhow!("unknown role `{r}`")))
        .collect::<Result<_, _>>()?;
    if roles.is_empty() {
        bail!("give at least one --role");
    }
    let department_id = match department {
        Some(d) => Some(department_named(state, d).await?),
        None => None,
    };
    let e = repo::create_employee(
        &state.db,
        &NewEmployee {
            username: username.to_lowercase(),
            email: email.to_owned(),
            display_name: display_name.to_owned(),
            department_id,
            roles,
        },
        false,
    )
    .await?;
    let one_time: String = {
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
        (0..20)
            .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
            .collect()
    };
    let hash = state.identity.passwords.hash(&one_time)?;
    let stored = auth::password::StoredPassword {
        hash,
        legacy_scheme: None,
        legacy_params: None,
    };
    auth::store::set_credential(&state.db, e.id, &stored, true).await?;
    record(
        state,
        cli_event(Category::User, "user.create")
            .detail("target_user_id", e.id.to_string())
            .detail("target_username", e.username.clone())
            .detail(
                "roles",
                e.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            )
            .detail("source", "cli"),
    )
    .await?;
    println!(
        "created user {} (id {}); one-time password: {one_time}",
        e.username, e.id
    );
    Ok(())
}

/// `portcullis keys rotate`.
pub async fn rotate_keys(state: &AppState, dir: &Path, overlap_seconds: i64) -> anyhow::Result<()> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut ring = auth::keys::Keyring::open(dir, now)?;
    let event = ring.rotate(now, overlap_seconds)?;
    drop(ring);
    let os_user = os_user();
    record(
        state,
        auth::keys::rotation_event(&event)
            .auth_method("cli")
            .detail("os_user", os_user),
    )
    .await?;
    if let auth::keys::KeyEvent::Added { kid } = event {
        println!(
            "added signing key {kid}: published now, signs from {overlap_seconds} s on; the old key retires after the longest token lifetime"
        );
    }
    Ok(())
}

/// `portcullis policy test [DIR] [--coverage] [--threshold P]`.
pub fn policy_test(
    dir: &Path,
    coverage: bool,
    threshold: Option<f64>,
    json: bool,
) -> anyhow::Result<bool> {
    let bundle = portcullis_authz::PolicyBundle::load(dir)?;
    let report = bundle.run_tests(coverage || threshold.is_some());
    if json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.render_text());
    }
    let mut ok = report.all_passed();
    if let (Some(min), Some(cov)) = (threshold, report.coverage.as_ref())
        && cov.percent < min
    {
        eprintln!(
            "coverage {:.1}% is below the threshold {min:.1}%",
            cov.percent
        );
        ok = false;
    }
    Ok(ok)
}

/// `portcullis policy eval --input FILE QUERY`.
pub fn policy_eval(dir: &Path, input: Option<&Path>, query: &str) -> anyhow::Result<()> {
    // An operator's query may batch many inputs; the request-path limit
    // (100 ms) does not apply to the tool.
    let bundle = portcullis_authz::PolicyBundle::load(dir)?
        .with_eval_time_limit(std::time::Duration::from_secs(120));
    let input: serde_json::Value = match input {
        Some(f) => serde_json::from_slice(
            &std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?,
        )
        .with_context(|| format!("{} is not JSON", f.display()))?,
        None => serde_json::json!({}),
    };
    let value = bundle.eval_value(query, &input)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}
