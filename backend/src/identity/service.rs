//! The identity service state every handler shares ([`IdentityService`]): settings,
//! password hashing, the signing keyring, OIDC providers, the revocation announcer,
//! the TOTP sealer, the hashing slots and the sign-in metrics; and the rule that
//! withholds roles needing a second factor.

use std::sync::{Arc, RwLock};

use super::keys::Keyring;
use super::metrics::{SignInMetrics, counter};
use super::password::{PasswordError, Passwords};
use super::{announce, mfa, oidc};
use crate::model::Role;
use crate::settings::IdentitySettings;

/// Identity state shared by handlers.
pub struct IdentityService {
    pub settings: IdentitySettings,
    pub passwords: Passwords,
    pub keyring: RwLock<Keyring>,
    /// OIDC providers, loaded by `crate::open` (empty until then).
    pub oidc: oidc::Providers,
    /// Announces revocations when Redis is configured.
    pub(super) announcer: Option<Arc<announce::Announcer>>,
    /// Seals TOTP secrets at rest.
    pub totp_sealer: mfa::SecretSealer,
    /// Slots for password hashing, one per core (see `AppState::hashing` in `credentials`).
    pub(super) hashing: tokio::sync::Semaphore,
    /// Sign-in password checks, one at a time per client network (`credentials`).
    pub(super) network_turns: super::turns::NetworkTurns,
    pub(super) metrics: SignInMetrics,
}

impl std::fmt::Debug for IdentityService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl IdentityService {
    /// Whether the revocation channel's Redis answers (`None` when none is configured).
    pub async fn revocation_channel_reachable(&self) -> Option<bool> {
        match &self.announcer {
            Some(a) => Some(a.reachable().await),
            None => None,
        }
    }

    /// Narrows an employee's roles to those a session holds: a role listed
    /// in `mfa_required_roles` needs a session that used a second factor.
    /// Returns the roles taken out (none, without allocating, in the usual
    /// case of a second factor or an empty list).
    pub fn withhold_roles(&self, roles: &mut Vec<Role>, mfa: bool) -> Vec<Role> {
        let required = &self.settings.mfa_required_roles;
        if mfa || required.is_empty() {
            return Vec::new();
        }
        let withheld = roles
            .iter()
            .copied()
            .filter(|r| required.contains(r))
            .collect();
        roles.retain(|r| !required.contains(r));
        withheld
    }

    pub fn new(
        settings: IdentitySettings,
        keyring: Keyring,
        totp_sealer: mfa::SecretSealer,
        registry: &prometheus::Registry,
    ) -> Result<Self, StartIdentityError> {
        let announcer = match settings.revocation_pubsub.clone() {
            Some(target) => {
                let errors = counter(
                    registry,
                    "portcullis_revocation_announce_errors_total",
                    "Revocations that could not be announced on Redis (proxies learn of them at their next poll).",
                    &[],
                )?
                .with_label_values(&[] as &[&str]);
                Some(Arc::new(announce::Announcer::new(target, errors)))
            }
            None => None,
        };
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Ok(Self {
            settings,
            totp_sealer,
            hashing: tokio::sync::Semaphore::new(cores),
            network_turns: super::turns::NetworkTurns::default(),
            announcer,
            passwords: Passwords::try_new()?,
            keyring: RwLock::new(keyring),
            oidc: oidc::Providers::default(),
            metrics: SignInMetrics::try_new(registry)?,
        })
    }
}

/// Why the identity service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartIdentityError {
    #[error(transparent)]
    Passwords(#[from] PasswordError),
    #[error("identity metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
