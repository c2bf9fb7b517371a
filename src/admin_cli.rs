//! Administrative commands that work on the backend's data directly:
//! `user create`, `user import`, `keys rotate`, `policy test`, `policy eval`.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use portcullis_backend::audit_log::{Category, Outcome, event};
use portcullis_backend::directory::repo;
use portcullis_backend::identity::password::ImportedPassword;
use portcullis_backend::model::{NewEmployee, Role};
use portcullis_backend::{AppState, identity as auth};
use serde::Deserialize;

use crate::progress::Bar;

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

/// A row of an import file, checked.
struct ImportPlan {
    imported: ImportedPassword,
    new: NewEmployee,
    department: Option<String>,
}

/// Checks every row before anything is stored: a bad row anywhere stops the import with
/// nothing changed, named by its position (never by its password).
fn plan_import(rows: Vec<ImportRow>) -> anyhow::Result<Vec<ImportPlan>> {
    let mut seen = std::collections::HashSet::new();
    let mut plans = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let n = i + 1;
        let username = row.username.trim().to_lowercase();
        if username.is_empty() {
            bail!("user {n}: the username is empty");
        }
        if !seen.insert(username.clone()) {
            bail!("user {n} ({username}): listed twice in the file");
        }
        let imported = match row.password_format.as_str() {
            "plaintext" => ImportedPassword::Plaintext(row.password),
            "bcrypt" => ImportedPassword::Bcrypt(row.password),
            "sha256" => ImportedPassword::Sha256Hex(row.password),
            other => bail!("user {n} ({username}): unknown password_format `{other}`"),
        };
        let roles: Vec<Role> = row
            .roles
            .iter()
            .map(|r| {
                Role::parse(r)
                    .ok_or_else(|| anyhow::anyhow!("user {n} ({username}): unknown role `{r}`"))
            })
            .collect::<Result<_, _>>()?;
        plans.push(ImportPlan {
            imported,
            new: NewEmployee {
                username,
                email: row.email,
                display_name: row.display_name,
                department_id: None,
                roles,
            },
            department: row
                .department
                .map(|d| d.trim().to_owned())
                .filter(|d| !d.is_empty()),
        });
    }
    Ok(plans)
}

/// What `user import` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct ImportReport {
    pub total: u64,
    pub created: u64,
    pub skipped: u64,
    pub interrupted: bool,
}

/// `portcullis user import FILE [--json]`: stores Argon2id only (legacy hashes are
/// wrapped, plaintext is hashed in memory); nothing of the passwords is written anywhere
/// else or printed. Every row is checked first; then each user is stored with its
/// credential and its `user.create` event in one transaction, so Ctrl-C between users
/// leaves whole users only, and a second run skips those that exist and imports the rest.
pub async fn import_users(
    state: &AppState,
    file: &Path,
    json: bool,
    stop: &AtomicBool,
) -> anyhow::Result<ImportReport> {
    let plans = plan_import(read_rows(file)?)?;
    let mut report = ImportReport {
        total: plans.len() as u64,
        ..ImportReport::default()
    };
    let bar = Bar::new("import", json);
    bar.set_length(report.total);
    let result = import_each(state, plans, stop, &bar, &mut report).await;
    bar.finish();
    // The summary is recorded however the run ended.
    record(
        state,
        cli_event(Category::User, "user.import")
            .detail("created", report.created)
            .detail("skipped", report.skipped)
            .detail("total", report.total)
            .detail("interrupted", report.interrupted)
            .detail("file", file.display().to_string()),
    )
    .await?;
    result?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "imported {} user(s), skipped {} (already there){}",
            report.created,
            report.skipped,
            if report.interrupted {
                format!(
                    "; interrupted with {} left: run it again to import them",
                    report.total - report.created - report.skipped
                )
            } else {
                String::new()
            }
        );
    }
    Ok(report)
}

async fn import_each(
    state: &AppState,
    plans: Vec<ImportPlan>,
    stop: &AtomicBool,
    bar: &Bar,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    for (i, mut plan) in plans.into_iter().enumerate() {
        if crate::progress::interrupted(stop) {
            report.interrupted = true;
            break;
        }
        let n = i + 1;
        let username = plan.new.username.clone();
        if let Some(name) = &plan.department {
            plan.new.department_id = Some(department_named(state, name).await?);
        }
        let stored = state
            .identity
            .passwords
            .import(&plan.imported)
            .map_err(|e| anyhow::anyhow!("user {n} ({username}): {e}"))?;
        let mut tx = state.db.begin().await?;
        match repo::insert_employee(&mut tx, &plan.new, false).await {
            Ok(e) => {
                auth::store::set_credential(&mut *tx, e.id, &stored, false).await?;
                let created = cli_event(Category::User, "user.create")
                    .detail("target_user_id", e.id.to_string())
                    .detail("target_username", e.username.clone())
                    .detail(
                        "roles",
                        e.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                    )
                    .detail("source", "import");
                state
                    .commit_audited(tx, [created])
                    .await
                    .map_err(|e| anyhow::anyhow!("user {n} ({username}) not stored: {e}"))?;
                report.created += 1;
            }
            Err(repo::RepoError::Conflict(_)) => {
                tx.rollback().await?;
                if !bar.is_visible() {
                    eprintln!("user {n} ({username}): already exists, skipped");
                }
                report.skipped += 1;
            }
            Err(e) => return Err(e.into()),
        }
        bar.inc(1, &username);
    }
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
    auth::store::set_credential(state.db.pool(), e.id, &stored, true).await?;
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
pub async fn rotate_keys(
    state: &AppState,
    dir: &Path,
    overlap_seconds: i64,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut ring = auth::keys::Keyring::open(dir, now)?;
    let keys: Vec<serde_json::Value> = ring
        .records()
        .iter()
        .map(|r| {
            serde_json::json!({"kid": r.kid, "state": r.state, "transition_at": r.transition_at})
        })
        .collect();
    let pending = ring
        .records()
        .iter()
        .find(|r| r.state == auth::keys::KeyState::Next)
        .map(|r| r.kid.clone());
    if dry_run {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "kind": "jwt", "dry_run": true, "keys": keys,
                    "would_add": pending.is_none(), "pending": pending,
                    "signs_from": now + overlap_seconds,
                })
            );
        } else {
            for k in &keys {
                println!("key {} {}", k["kid"], k["state"]);
            }
            match &pending {
                Some(kid) => println!(
                    "dry run: nothing to do, key {kid} is already waiting to sign (refused)"
                ),
                None => println!(
                    "dry run: a new signing key would be added to {} (published now, signing {overlap_seconds} s later)",
                    dir.display()
                ),
            }
        }
        return Ok(());
    }
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
        if json {
            println!(
                "{}",
                serde_json::json!({"kind": "jwt", "dry_run": false, "added": kid, "signs_from": now + overlap_seconds})
            );
        } else {
            println!(
                "added signing key {kid}: published now, signs from {overlap_seconds} s on; the old key retires after the longest token lifetime"
            );
        }
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
