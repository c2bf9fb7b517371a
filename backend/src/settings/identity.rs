//! The `backend.identity` section: its file structs ([`IdentityConfig`],
//! [`LockoutConfig`]) and the validated [`IdentitySettings`] the identity module runs on.

use std::path::Path;

use portcullis_contract::problems::Problems;
use portcullis_contract::revocation::RevocationChannel;
use schemars::JsonSchema;
use serde::Deserialize;

use super::oidc::{self, OidcProviderConfig, ProviderSettings};
use crate::model::{self, Role};

/// The `backend.identity:` section.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// `iss` of issued access tokens. Default `portcullis`.
    pub issuer: String,
    /// `aud` of issued access tokens. Default `portcullis`.
    pub audience: String,
    /// Access token lifetime. Default 300.
    pub access_token_ttl_seconds: i64,
    /// Idle timeout of a session, unless set per user. Default 1800.
    pub session_timeout_seconds: i64,
    /// Longest life of a session. Default 43200.
    pub session_absolute_seconds: i64,
    /// Concurrent sessions per user; the oldest ends first. Default 5.
    pub max_sessions_per_user: usize,
    /// How long a new signing key is published before it signs. Default 600.
    pub key_overlap_seconds: i64,
    /// Roles that must use a second factor. Default none.
    pub mfa_required_roles: Vec<String>,
    /// Failed sign-in throttling.
    pub lockout: LockoutConfig,
    /// OIDC single sign-on providers (`/auth/oidc/login?provider=NAME`). Default none.
    pub oidc: Vec<OidcProviderConfig>,
}

/// Failed sign-in throttling (per account and per client address).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    /// Default 900.
    pub window_seconds: i64,
    /// Failures before each further attempt is slowed. Default 3.
    pub delay_after_failures: i64,
    /// Default 10.
    pub account_failures: i64,
    /// Default 50.
    pub ip_failures: i64,
    /// Default 900.
    pub lockout_seconds: i64,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        let d = IdentitySettings::default();
        Self {
            issuer: d.issuer,
            audience: d.audience,
            access_token_ttl_seconds: d.access_ttl_seconds,
            session_timeout_seconds: d.session_timeout_seconds,
            session_absolute_seconds: d.session_absolute_seconds,
            max_sessions_per_user: d.max_sessions_per_user,
            key_overlap_seconds: d.key_overlap_seconds,
            mfa_required_roles: Vec::new(),
            lockout: LockoutConfig::default(),
            oidc: Vec::new(),
        }
    }
}

impl Default for LockoutConfig {
    fn default() -> Self {
        let d = ThrottleSettings::default();
        Self {
            window_seconds: d.window_seconds,
            delay_after_failures: d.delay_after,
            account_failures: d.account_lockout_failures,
            ip_failures: d.ip_lockout_failures,
            lockout_seconds: d.lockout_seconds,
        }
    }
}

impl IdentityConfig {
    pub(super) fn validate(
        &self,
        prefix: &str,
        base: &Path,
        revocation_pubsub: Option<RevocationChannel>,
        problems: &mut Problems,
    ) -> IdentitySettings {
        let mut positive = |name: &str, v: i64| {
            if v <= 0 {
                problems.push(format!("{prefix}.{name}"), "must be positive");
            }
        };
        positive("access_token_ttl_seconds", self.access_token_ttl_seconds);
        positive("session_timeout_seconds", self.session_timeout_seconds);
        positive("session_absolute_seconds", self.session_absolute_seconds);
        positive("key_overlap_seconds", self.key_overlap_seconds);
        positive("lockout.window_seconds", self.lockout.window_seconds);
        positive("lockout.account_failures", self.lockout.account_failures);
        positive("lockout.ip_failures", self.lockout.ip_failures);
        positive("lockout.lockout_seconds", self.lockout.lockout_seconds);
        if self.access_token_ttl_seconds > 3600 {
            problems.push(
                format!("{prefix}.access_token_ttl_seconds"),
                "keep access tokens short-lived (at most 3600)",
            );
        }
        if self.max_sessions_per_user == 0 {
            problems.push(
                format!("{prefix}.max_sessions_per_user"),
                "must be at least 1",
            );
        }
        let mut roles = Vec::new();
        for (i, r) in self.mfa_required_roles.iter().enumerate() {
            match model::Role::parse(r) {
                Some(role) => roles.push(role),
                None => problems.push(
                    format!("{prefix}.mfa_required_roles[{i}]"),
                    format!("unknown role `{r}`"),
                ),
            }
        }
        let oidc = oidc::validate_providers(&self.oidc, &format!("{prefix}.oidc"), base, problems);
        IdentitySettings {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            access_ttl_seconds: self.access_token_ttl_seconds,
            session_timeout_seconds: self.session_timeout_seconds,
            session_absolute_seconds: self.session_absolute_seconds,
            max_sessions_per_user: self.max_sessions_per_user,
            key_overlap_seconds: self.key_overlap_seconds,
            mfa_required_roles: roles,
            throttle: ThrottleSettings {
                window_seconds: self.lockout.window_seconds,
                delay_after: self.lockout.delay_after_failures,
                account_lockout_failures: self.lockout.account_failures,
                ip_lockout_failures: self.lockout.ip_failures,
                lockout_seconds: self.lockout.lockout_seconds,
            },
            oidc,
            revocation_pubsub,
        }
    }
}

/// Identity settings (validated; defaults in [`IdentitySettings::default`]).
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// `iss` of issued tokens.
    pub issuer: String,
    /// `aud` of issued tokens.
    pub audience: String,
    pub access_ttl_seconds: i64,
    /// Default idle timeout of a session (per user overridable).
    pub session_timeout_seconds: i64,
    /// A session never outlives this, refreshes or not.
    pub session_absolute_seconds: i64,
    pub max_sessions_per_user: usize,
    /// How long a new signing key is published before it signs.
    pub key_overlap_seconds: i64,
    /// Roles that must use a second factor.
    pub mfa_required_roles: Vec<Role>,
    pub throttle: ThrottleSettings,
    /// OIDC single sign-on providers (none by default).
    pub oidc: Vec<ProviderSettings>,
    /// Redis channel on which revocations are announced to the proxies.
    pub revocation_pubsub: Option<RevocationChannel>,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            issuer: "portcullis".into(),
            audience: "portcullis".into(),
            access_ttl_seconds: 300,
            session_timeout_seconds: 1800,
            session_absolute_seconds: 12 * 3600,
            max_sessions_per_user: 5,
            key_overlap_seconds: 600,
            mfa_required_roles: Vec::new(),
            throttle: ThrottleSettings::default(),
            oidc: Vec::new(),
            revocation_pubsub: None,
        }
    }
}

/// Failed sign-in throttling, per account and per client address.
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    pub window_seconds: i64,
    /// Failures after which every further attempt is slowed down.
    pub delay_after: i64,
    pub account_lockout_failures: i64,
    pub ip_lockout_failures: i64,
    pub lockout_seconds: i64,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            window_seconds: 900,
            delay_after: 3,
            account_lockout_failures: 10,
            ip_lockout_failures: 50,
            lockout_seconds: 900,
        }
    }
}
