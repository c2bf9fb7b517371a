//! Authentication: a bearer JWT (`Authorization: Bearer …`) or the session
//! cookie, verified by [`JwtVerifier`], with revoked sessions refused. A
//! bearer token that fails is a 401; a cookie that fails (stale after
//! expiry, say) just means anonymous. The caller found becomes
//! `ctx.principal`.

use std::sync::Arc;

use http::HeaderValue;
use portcullis_audit::{AuditEvent, Category, Level, Outcome};
use portcullis_contract::cookies::cookie;
use prometheus::{IntCounterVec, Opts, Registry};

use super::{RequestGuard, Verdict};
use crate::context::{Principal, RequestCtx, RequestFacts, RequestInfo};
use crate::jwt::JwtVerifier;
use crate::problem::{Problem, Refusal};
use crate::revocation::Revocations;

/// Authentication metrics.
#[derive(Clone)]
pub struct AuthnMetrics {
    /// `portcullis_authentication_failures_total{reason}`.
    pub failures: IntCounterVec,
}

impl AuthnMetrics {
    pub fn try_new(registry: &Registry) -> prometheus::Result<Self> {
        let failures = IntCounterVec::new(
            Opts::new(
                "portcullis_authentication_failures_total",
                "Requests refused for their credentials, by reason (bad bearer token, revoked session).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(failures.clone()))?;
        Ok(Self { failures })
    }
}

/// The authentication guard.
pub struct Authenticate {
    pub verifier: JwtVerifier,
    pub revocations: Arc<Revocations>,
    /// The cookie holding a browser's access token.
    pub access_cookie: String,
    pub metrics: AuthnMetrics,
}

/// The same answer whatever was wrong with the token: the reason code goes to the
/// metrics, the log and the `token.reject` audit event, never to the client (it would
/// tell a forger which check to work on next).
fn unauthenticated() -> Refusal {
    Refusal {
        problem: Problem::new(
            401,
            "unauthenticated",
            "Authentication failed",
            "The credentials were not accepted; sign in again",
        ),
        headers: vec![(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        )],
    }
}

/// Credentials refused (`token.reject`, category `auth`).
fn token_event(info: &RequestInfo<'_>, reason: &str, via_cookie: bool) -> AuditEvent {
    info.event(Category::Auth, "token.reject", Outcome::Failure)
        .level(Level::Warning)
        .auth_method(crate::context::credential(via_cookie))
        .detail("reason", reason)
}

impl Authenticate {
    /// The verified caller, `None` for anonymous, or the refusal.
    async fn authenticate(
        &self,
        req: &RequestFacts<'_>,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Principal>, Refusal> {
        let bearer = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .ok_or(())
            });
        let (token, via_cookie) = match bearer {
            Some(Ok(t)) => (t, false),
            Some(Err(())) => {
                self.metrics
                    .failures
                    .with_label_values(&["unsupported_scheme"])
                    .inc();
                let event = token_event(&ctx.info(req.user_agent()), "unsupported_scheme", false);
                ctx.audit.push(event);
                return Err(unauthenticated());
            }
            None => match cookie(req.headers, &self.access_cookie) {
                Some(t) => (t, true),
                None => return Ok(None),
            },
        };
        match self.verifier.verify(token).await {
            // `@` subjects are the proxy's own (`@proxy`); no issuer may mint one.
            Ok(token) if token.sub.starts_with('@') => {
                self.metrics
                    .failures
                    .with_label_values(&["reserved_subject"])
                    .inc();
                let event =
                    token_event(&ctx.info(req.user_agent()), "reserved_subject", via_cookie)
                        .user_id(token.sub.clone());
                ctx.audit.push(event);
                Err(unauthenticated())
            }
            Ok(token) => {
                if token
                    .sid
                    .as_deref()
                    .is_some_and(|sid| self.revocations.is_revoked(sid))
                {
                    self.metrics
                        .failures
                        .with_label_values(&["session_revoked"])
                        .inc();
                    let mut e =
                        token_event(&ctx.info(req.user_agent()), "session_revoked", via_cookie)
                            .user_id(token.sub.clone());
                    if let Some(sid) = &token.sid {
                        e = e.session_id(sid.clone());
                    }
                    ctx.audit.push(e);
                    if via_cookie {
                        return Ok(None);
                    }
                    return Err(unauthenticated());
                }
                Ok(Some(Principal { token, via_cookie }))
            }
            Err(e) if via_cookie => {
                tracing::debug!(
                    reason = e.reason(),
                    "session cookie refused; treating as anonymous"
                );
                Ok(None)
            }
            Err(e) => {
                let event = token_event(&ctx.info(req.user_agent()), e.reason(), false);
                ctx.audit.push(event);
                tracing::debug!(reason = e.reason(), "bearer token refused");
                Err(unauthenticated())
            }
        }
    }
}

impl RequestGuard for Authenticate {
    async fn check(&self, req: &RequestFacts<'_>, ctx: &mut RequestCtx) -> Verdict {
        match self.authenticate(req, ctx).await {
            Ok(principal) => {
                ctx.principal = principal;
                Verdict::Continue
            }
            Err(refusal) => Verdict::Refuse(refusal),
        }
    }
}
