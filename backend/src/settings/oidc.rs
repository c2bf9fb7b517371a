//! The `backend.identity.oidc` configuration: file structs and validation (the
//! validated [`ProviderSettings`] are what the identity module loads).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openidconnect::url::{Host, Url};
use portcullis_contract::problems::Problems;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::model::Role;

/// One entry of `backend.identity.oidc`: an OpenID provider to sign in with
/// (Azure AD / Entra ID, Okta, Keycloak or any OpenID Connect provider).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// Short name, `a-z 0-9 _ -`, unique: `/auth/oidc/login?provider=NAME`.
    pub name: String,
    /// What the sign-in page's button says ("Sign in with …"), at most 64
    /// printable characters. Default: `name`.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Issuer URL; its discovery document is
    /// `ISSUER/.well-known/openid-configuration`. https (http only on a
    /// loopback address).
    pub issuer: String,
    /// The client id registered at the provider.
    pub client_id: String,
    /// File holding the client secret (`client_secret_basic`), read at start,
    /// never logged.
    pub client_secret_file: PathBuf,
    /// This service's callback as registered at the provider; its path ends in
    /// `/auth/oidc/callback`.
    pub redirect_uri: String,
    /// Scopes requested besides `openid email profile`. Default `[groups]`
    /// (Azure AD has no such scope: set `[]` and emit groups in the token).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Claim holding the user's groups (ID token, else userinfo). Default `groups`.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Claim giving the username (lower-cased). Default `preferred_username`.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// Provider group → role. Default `MAINT-EMPLOYEE: employee`,
    /// `MAINT-TECHNICIAN: technician`, `MAINT-HOD: department_head`,
    /// `MAINT-ADMIN: administrator`, `MAINT-DEVELOPER: developer`.
    #[serde(default = "default_role_mapping")]
    pub role_mapping: BTreeMap<String, String>,
    /// Where the provider sends the browser after `/auth/oidc/logout`
    /// (`post_logout_redirect_uri`, registered at the provider). Optional.
    #[serde(default)]
    pub end_session_redirect: Option<String>,
}

fn default_scopes() -> Vec<String> {
    vec!["groups".to_owned()]
}

fn default_groups_claim() -> String {
    "groups".to_owned()
}

fn default_username_claim() -> String {
    "preferred_username".to_owned()
}

/// The default group → role mapping.
pub fn default_role_mapping() -> BTreeMap<String, String> {
    [
        ("MAINT-EMPLOYEE", Role::Employee),
        ("MAINT-TECHNICIAN", Role::Technician),
        ("MAINT-HOD", Role::DepartmentHead),
        ("MAINT-ADMIN", Role::Administrator),
        ("MAINT-DEVELOPER", Role::Developer),
    ]
    .into_iter()
    .map(|(g, r)| (g.to_owned(), r.as_str().to_owned()))
    .collect()
}

/// A validated provider entry.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub name: String,
    pub display_name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret_file: PathBuf,
    pub redirect_uri: String,
    /// Extra scopes (besides `openid email profile`).
    pub scopes: Vec<String>,
    pub groups_claim: String,
    pub username_claim: String,
    pub role_mapping: BTreeMap<String, Role>,
    pub end_session_redirect: Option<String>,
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d == "localhost",
        Some(Host::Ipv4(a)) => a.is_loopback(),
        Some(Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// An absolute https URL (http only on loopback) without fragment.
fn check_url(path: &str, value: &str, problems: &mut Problems) -> Option<Url> {
    match Url::parse(value) {
        Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback(&u)) => {
            if u.fragment().is_some() {
                problems.push(path, "must not have a #fragment");
                None
            } else {
                Some(u)
            }
        }
        Ok(_) => {
            problems.push(path, "use an https URL (http only on a loopback address)");
            None
        }
        Err(e) => {
            problems.push(path, format!("`{value}` is not a URL ({e})"));
            None
        }
    }
}

impl OidcProviderConfig {
    /// Validates one entry; every problem is pushed as `path: message`.
    /// Relative paths are resolved against `base`.
    pub fn validate(
        &self,
        prefix: &str,
        base: &Path,
        problems: &mut Problems,
    ) -> Option<ProviderSettings> {
        let Self {
            name,
            display_name,
            issuer,
            client_id,
            client_secret_file,
            redirect_uri,
            scopes,
            groups_claim,
            username_claim,
            role_mapping,
            end_session_redirect,
        } = self;
        let before = problems.len();
        if name.is_empty()
            || name.len() > 32
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))
        {
            problems.push(
                format!("{prefix}.name"),
                "use 1 to 32 of a-z, 0-9, `_`, `-`",
            );
        }
        if let Some(d) = display_name
            && (d.trim().is_empty() || d.chars().count() > 64 || d.chars().any(char::is_control))
        {
            problems.push(
                format!("{prefix}.display_name"),
                "use 1 to 64 printable characters",
            );
        }
        if let Some(u) = check_url(&format!("{prefix}.issuer"), issuer, problems)
            && u.query().is_some()
        {
            problems.push(format!("{prefix}.issuer"), "must not have a query");
        }
        if client_id.trim().is_empty() {
            problems.push(format!("{prefix}.client_id"), "must not be empty");
        }
        if client_secret_file.as_os_str().is_empty() {
            problems.push(
                format!("{prefix}.client_secret_file"),
                "name the file holding the client secret",
            );
        }
        if let Some(u) = check_url(&format!("{prefix}.redirect_uri"), redirect_uri, problems)
            && !u.path().ends_with("/auth/oidc/callback")
        {
            problems.push(
                format!("{prefix}.redirect_uri"),
                "its path must end in /auth/oidc/callback",
            );
        }
        for (i, s) in scopes.iter().enumerate() {
            // RFC 6749 scope-token: %x21 / %x23-5B / %x5D-7E
            let token = !s.is_empty()
                && s.bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
            if !token {
                problems.push(
                    format!("{prefix}.scopes[{i}]"),
                    format!("`{s}` is not a scope token"),
                );
            }
        }
        if groups_claim.is_empty() {
            problems.push(format!("{prefix}.groups_claim"), "must not be empty");
        }
        if username_claim.is_empty() {
            problems.push(format!("{prefix}.username_claim"), "must not be empty");
        }
        let mut mapping = BTreeMap::new();
        for (group, role) in role_mapping {
            match Role::parse(role) {
                Some(r) if !group.is_empty() => {
                    mapping.insert(group.clone(), r);
                }
                Some(_) => problems.push(
                    format!("{prefix}.role_mapping"),
                    "a group name must not be empty",
                ),
                None => problems.push(
                    format!("{prefix}.role_mapping.{group}"),
                    format!("unknown role `{role}`"),
                ),
            }
        }
        if role_mapping.is_empty() {
            problems.push(
                format!("{prefix}.role_mapping"),
                "maps no group to a role, so nobody could sign in",
            );
        }
        if let Some(r) = end_session_redirect {
            check_url(&format!("{prefix}.end_session_redirect"), r, problems);
        }
        (problems.len() == before).then(|| ProviderSettings {
            name: name.clone(),
            display_name: display_name.clone().unwrap_or_else(|| name.clone()),
            issuer: issuer.clone(),
            client_id: client_id.clone(),
            client_secret_file: if client_secret_file.is_absolute() {
                client_secret_file.clone()
            } else {
                base.join(client_secret_file)
            },
            redirect_uri: redirect_uri.clone(),
            scopes: scopes.clone(),
            groups_claim: groups_claim.clone(),
            username_claim: username_claim.clone(),
            role_mapping: mapping,
            end_session_redirect: end_session_redirect.clone(),
        })
    }
}

/// Validates the `oidc` list (`prefix` is its path, e.g.
/// `backend.identity.oidc`): each entry, and that names are unique.
pub fn validate_providers(
    list: &[OidcProviderConfig],
    prefix: &str,
    base: &Path,
    problems: &mut Problems,
) -> Vec<ProviderSettings> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        if !seen.insert(p.name.as_str()) {
            problems.push(
                format!("{prefix}[{i}].name"),
                format!("`{}` is used by another provider", p.name),
            );
        }
        if let Some(s) = p.validate(&format!("{prefix}[{i}]"), base, problems) {
            out.push(s);
        }
    }
    out
}
