//! From a verified sign-in to an employee: the profile (ID token, completed from
//! userinfo), and provisioning — created at first sign-in, linked, or re-synchronised
//! (roles, email, name) at every sign-in.

use axum::http::StatusCode;
use serde_json::Value;

use super::provider::{Claims, OidcError, Provider, string_list};
use super::store;
use crate::AppState;
use crate::audit_log::{Category, Level, Outcome, event};
use crate::db::{RepoError, now_text};
use crate::directory::repo;
use crate::http::ApiError;
use crate::identity::store as identity_store;
use crate::model::{EmployeePatch, NewEmployee, Role};
use crate::settings::oidc::ProviderSettings;

/// Who the provider says signed in.
#[derive(Debug, Clone)]
pub(super) struct Profile {
    pub(super) subject: String,
    pub(super) sid: Option<String>,
    pub(super) username: String,
    pub(super) email: Option<String>,
    pub(super) display_name: Option<String>,
    pub(super) groups: Vec<String>,
}

/// Reads the profile from the ID token, completed from userinfo when a
/// configured claim is missing there.
pub(super) async fn profile(
    provider: &Provider,
    mut claims: Claims,
    access_token: &str,
) -> Result<Profile, ApiError> {
    let settings = &provider.settings;
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| OidcError::InvalidIdToken("no sub".into()))?;
    let wanted = [
        settings.username_claim.as_str(),
        settings.groups_claim.as_str(),
        "email",
        "name",
    ];
    if wanted.iter().any(|c| !claims.contains_key(*c))
        && let Some(info) = provider.userinfo(access_token, &subject).await?
    {
        for (k, v) in info {
            claims.entry(k).or_insert(v);
        }
    }
    let text = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let username = text(&settings.username_claim)
        .map(|u| u.to_lowercase())
        .filter(|u| {
            (3..=64).contains(&u.len())
                && u.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-@".contains(&b)
                })
        })
        .ok_or_else(|| ApiError::Custom {
            status: StatusCode::FORBIDDEN,
            kind: "oidc-invalid-username",
            detail: format!(
                "The identity provider gave no usable `{}` (3 to 64 of a-z, 0-9, `.`, `_`, `-`, `@`)",
                settings.username_claim
            ),
        })?;
    let email = text("email").filter(|e| {
        e.len() <= 254
            && !e.contains(char::is_whitespace)
            && e.split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
    });
    let display_name = text("name").map(|n| n.chars().take(100).collect());
    Ok(Profile {
        subject,
        sid: text("sid"),
        username,
        email,
        display_name,
        groups: string_list(claims.get(&settings.groups_claim)),
    })
}

fn no_role() -> ApiError {
    ApiError::Custom {
        status: StatusCode::FORBIDDEN,
        kind: "oidc-no-role",
        detail: "Your account at the identity provider is in no group that grants access here; ask an administrator".into(),
    }
}

fn account_conflict() -> ApiError {
    ApiError::Custom {
        status: StatusCode::CONFLICT,
        kind: "oidc-account-conflict",
        detail: "A different account already uses this username or email; ask an administrator to link or rename it".into(),
    }
}

/// The employee of a provider account: created at first sign-in, linked to
/// a pre-provisioned OIDC account of the same username, and otherwise
/// re-synchronised (roles, email, name). Groups that map to no role refuse
/// the sign-in; a linked employee then loses every role and session.
pub(super) async fn provision(
    s: &AppState,
    settings: &ProviderSettings,
    profile: &Profile,
    roles: &[Role],
) -> Result<i64, ApiError> {
    let now = now_text();
    let provider = settings.name.as_str();
    let linked = store::linked_employee(&s.db, provider, &profile.subject).await?;
    let employee = match linked {
        Some(id) => repo::get_employee(&s.db, id).await?,
        None => match identity_store::employee_by_username(&s.db, &profile.username).await? {
            Some((id, _)) => {
                // Only an OIDC account nobody signed in to yet (e.g. imported)
                // may be claimed; never a password account.
                let e = repo::get_employee(&s.db, id).await?;
                if !e.is_oidc || store::has_link(&s.db, id).await? {
                    return Err(account_conflict());
                }
                if roles.is_empty() {
                    return Err(no_role());
                }
                store::link(&s.db, provider, &profile.subject, id, &now).await?;
                e
            }
            None => {
                if roles.is_empty() {
                    return Err(no_role());
                }
                let new = NewEmployee {
                    username: profile.username.clone(),
                    email: profile.email.clone().unwrap_or_else(|| {
                        if profile.username.contains('@') {
                            profile.username.clone()
                        } else {
                            format!("{}@{provider}.oidc.invalid", profile.username)
                        }
                    }),
                    display_name: profile
                        .display_name
                        .clone()
                        .unwrap_or_else(|| profile.username.clone()),
                    department_id: None,
                    roles: roles.to_vec(),
                };
                let mut tx = s.db.begin().await?;
                let e = repo::insert_employee(&mut tx, &new, true)
                    .await
                    .map_err(|e| match e {
                        RepoError::Conflict(_) => account_conflict(),
                        other => other.into(),
                    })?;
                let roles: Vec<&str> = e.roles.iter().map(|r| r.as_str()).collect();
                s.commit_audited(
                    tx,
                    [event(Category::User, "user.provision", Outcome::Success)
                        .user_id(e.id.to_string())
                        .auth_method("oidc")
                        .detail("username", e.username.clone())
                        .detail("provider", provider)
                        .detail("roles", roles)],
                )
                .await?;
                store::link(&s.db, provider, &profile.subject, e.id, &now).await?;
                return Ok(e.id);
            }
        },
    };
    if employee.status != "active" {
        return Err(ApiError::Custom {
            status: StatusCode::FORBIDDEN,
            kind: "account-disabled",
            detail: "This account is disabled; ask an administrator".into(),
        });
    }
    let mut patch = EmployeePatch::default();
    let roles_changed = employee.roles.as_slice() != roles;
    if roles_changed {
        patch.roles = Some(roles.to_vec());
    }
    if let Some(email) = profile.email.as_ref().filter(|e| **e != employee.email) {
        patch.email = Some(email.clone());
    }
    if let Some(name) = profile
        .display_name
        .as_ref()
        .filter(|n| **n != employee.display_name)
    {
        patch.display_name = Some(name.clone());
    }
    if patch.roles.is_some() || patch.email.is_some() || patch.display_name.is_some() {
        let mut tx = s.db.begin().await?;
        repo::update_employee(&mut tx, employee.id, &patch)
            .await
            .map_err(|e| match e {
                RepoError::Conflict(_) => account_conflict(),
                other => other.into(),
            })?;
        // A new e-mail or display name from the provider is not an event; new roles are.
        let sync = roles_changed.then(|| {
            let added: Vec<&str> = roles
                .iter()
                .filter(|r| !employee.roles.contains(r))
                .map(|r| r.as_str())
                .collect();
            let removed: Vec<&str> = employee
                .roles
                .iter()
                .filter(|r| !roles.contains(r))
                .map(|r| r.as_str())
                .collect();
            event(Category::User, "user.roles_sync", Outcome::Success)
                .level(Level::Warning)
                .user_id(employee.id.to_string())
                .auth_method("oidc")
                .detail("username", employee.username.clone())
                .detail("provider", provider)
                .detail("added", added)
                .detail("removed", removed)
        });
        s.commit_audited(tx, sync).await?;
    }
    if roles_changed {
        // As with an administrator's change: sessions holding the old roles end.
        for sid in s.revoke_all(employee.id, "role_change").await? {
            s.session_revoked(&sid, "role_change", None).await?;
        }
    }
    store::touch_link(&s.db, provider, &profile.subject, &now).await?;
    if roles.is_empty() {
        return Err(no_role());
    }
    Ok(employee.id)
}
