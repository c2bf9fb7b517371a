//! `POST /auth/login`: password sign-in with a TOTP or backup code as second
//! factor, one-time passwords, hash upgrades, and the audit events and counters of
//! each outcome (failures throttled, answers indistinguishable).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use portcullis_contract::amr::{self, used_second_factor};
use serde::Deserialize;
use serde_json::json;

use super::cookies::client_ip;
use super::credentials::{
    check_new_password, invalid_credentials, new_credential, verify_password,
};
use super::password::{self, Verified};
use super::tokens::{now_unix, token_response};
use super::{mfa, store};
use crate::AppState;
use crate::audit_log::{Category, Level, Outcome, event};
use crate::http::{ApiError, ApiJson};

impl AppState {
    /// Counts a failed sign-in for the account and the address, records it
    /// (`login`, failure, with `reason`), slows the answer down and returns
    /// the generic error (or the 503 problem when it cannot be recorded).
    async fn login_failed(
        &self,
        account_key: &str,
        ip_key: &str,
        username: &str,
        now: i64,
        method: &str,
        reason: &str,
    ) -> ApiError {
        let t = self.identity.settings.throttle.clone();
        if let Err(e) = self.audit(login_failure(username, method, reason)).await {
            return e;
        }
        let counted = async {
            let n = self
                .record_failure(
                    account_key,
                    "account",
                    username,
                    t.account_lockout_failures,
                    now,
                )
                .await?;
            let m = self
                .record_failure(ip_key, "ip", username, t.ip_lockout_failures, now)
                .await?;
            Ok::<i64, ApiError>(n.max(m))
        };
        let failures = match counted.await {
            Ok(n) => n,
            Err(e) => return e,
        };
        self.identity.metrics.failed(method, reason);
        self.penalty(failures).await;
        invalid_credentials()
    }
}

/// A failed sign-in: `user.id` is the user name tried.
fn login_failure(username: &str, method: &str, reason: &str) -> portcullis_audit::AuditEvent {
    event(Category::Auth, "login", Outcome::Failure)
        .level(Level::Warning)
        .user_id(username)
        .auth_method(method)
        .detail("reason", reason)
}

/// A second factor checked at sign-in (`mfa.verify`).
fn mfa_event(
    employee_id: i64,
    username: &str,
    factor: &str,
    ok: bool,
) -> portcullis_audit::AuditEvent {
    let (outcome, level) = if ok {
        (Outcome::Success, Level::Info)
    } else {
        (Outcome::Failure, Level::Warning)
    };
    event(Category::Auth, "mfa.verify", outcome)
        .level(level)
        .user_id(employee_id.to_string())
        .detail("username", username)
        .detail("factor", factor)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    /// The 6-digit code of an enrolled authenticator.
    pub totp_code: Option<String>,
    /// One of the backup codes instead of a TOTP code.
    pub backup_code: Option<String>,
    /// Required when the password is a one-time password.
    pub new_password: Option<String>,
    /// `browser` (default): tokens in `__Host-` cookies only. `api`: tokens in the body.
    pub client: Option<String>,
}

pub(super) async fn login(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let req = login_request(body)?;
    let started = std::time::Instant::now();
    let method = if req.backup_code.is_some() {
        "backup_code"
    } else {
        "password"
    };
    let answer = sign_in(&s, &headers, req).await;
    let result = match &answer {
        Ok(_) => "success",
        Err(e) => match e.parts() {
            (_, "invalid-credentials", _) => "failure",
            (_, "mfa-required" | "password-change-required", _) => "challenge",
            _ => "error",
        },
    };
    s.identity
        .metrics
        .answered(method, result, started.elapsed());
    answer
}

async fn sign_in(
    s: &AppState,
    headers: &HeaderMap,
    req: LoginRequest,
) -> Result<Response, ApiError> {
    let now = now_unix();
    let username = req.username.trim().to_lowercase();
    if username.is_empty() || username.len() > 64 || req.password.len() > 1024 {
        return Err(invalid_credentials());
    }
    let account_key = format!("account:{username}");
    // The same network key as the proxy's rate limits: an IPv6 client counts by its /64.
    let network = client_ip(headers)
        .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
        .map(portcullis_contract::headers::client_network)
        .unwrap_or_default();
    let ip_key = format!("ip:{network}");
    // Held until the answer: the network's next sign-in waits for this one, penalty
    // delay included, so one address cannot keep more than one check in flight.
    let _turn = s.identity.network_turns.take(&network).await?;
    if s.locked(&account_key, now).await? || s.locked(&ip_key, now).await? {
        // Same work and the same answer as a wrong password: no enumeration.
        // The outcome does not matter, only the work (a busy answer is fine too).
        let _ = verify_password(s, &req.password, None).await;
        s.identity.metrics.failed("password", "locked");
        s.audit(login_failure(&username, "password", "locked"))
            .await?;
        return Err(invalid_credentials());
    }
    let found = store::employee_by_username(&s.db, &username).await?;
    let credential = match &found {
        Some((id, status)) if status == "active" => store::credential(&s.db, *id).await?,
        _ => None,
    };
    let stored = match (&found, &credential) {
        (Some(_), Some(c)) => Some(c.password.clone()),
        _ => None,
    };
    let verified = verify_password(s, &req.password, stored).await?;
    let (Some((employee_id, _)), Some(credential), Some(verified)) = (found, credential, verified)
    else {
        return Err(s
            .login_failed(
                &account_key,
                &ip_key,
                &username,
                now,
                "password",
                "invalid_credentials",
            )
            .await);
    };

    // Second factor.
    let mut method = "password";
    let mut amr = vec![amr::PASSWORD.to_owned()];
    if let Some((sealed, true)) = store::totp(&s.db, employee_id).await? {
        let secret = s.open_totp_secret(employee_id, &sealed)?;
        if let Some(code) = &req.totp_code {
            let ok = match mfa::totp(&secret, "Portcullis", &username) {
                Some(t) => match mfa::matching_step(&t, code.trim(), now as u64) {
                    Some(step) => store::claim_totp_step(&s.db, employee_id, step).await?,
                    None => false,
                },
                None => false,
            };
            s.audit(mfa_event(employee_id, &username, "totp", ok))
                .await?;
            if !ok {
                return Err(s
                    .login_failed(
                        &account_key,
                        &ip_key,
                        &username,
                        now,
                        "password",
                        "mfa_failed",
                    )
                    .await);
            }
            amr.push(amr::ONE_TIME_PASSWORD.into());
        } else if let Some(code) = &req.backup_code {
            let wanted = mfa::normalise_backup_code(code);
            let unused = store::unused_backup_codes(&s.db, employee_id).await?;
            let matching = s
                .hashing(move |identity| {
                    unused.into_iter().find_map(|(id, hash)| {
                        let stored = password::StoredPassword {
                            hash,
                            legacy_scheme: None,
                            legacy_params: None,
                        };
                        identity.passwords.verify(&wanted, &stored).map(|_| id)
                    })
                })
                .await?;
            let used = match matching {
                Some(id) => store::use_backup_code(&s.db, id).await?,
                None => false,
            };
            s.audit(mfa_event(employee_id, &username, "backup_code", used))
                .await?;
            if !used {
                return Err(s
                    .login_failed(
                        &account_key,
                        &ip_key,
                        &username,
                        now,
                        "backup_code",
                        "mfa_failed",
                    )
                    .await);
            }
            method = "backup_code";
            amr.push(amr::ONE_TIME_PASSWORD.into());
        } else {
            return Err(ApiError::Custom {
                status: StatusCode::UNAUTHORIZED,
                kind: "mfa-required",
                detail: "Enter the code from your authenticator app (totp_code) or a backup code"
                    .into(),
            });
        }
    }

    if credential.must_change {
        let Some(new_password) = &req.new_password else {
            return Err(ApiError::Custom {
                status: StatusCode::FORBIDDEN,
                kind: "password-change-required",
                detail: "This is a one-time password: sign in again with new_password set".into(),
            });
        };
        check_new_password(&username, new_password)?;
        let stored = new_credential(s, new_password).await?;
        store::set_credential(s.db.pool(), employee_id, &stored, false).await?;
        s.audit(
            event(Category::Auth, "password.change", Outcome::Success)
                .user_id(employee_id.to_string())
                .detail("username", username.clone())
                .detail("reason", "one_time_password"),
        )
        .await?;
    } else if verified == Verified::Upgrade {
        let stored = new_credential(s, &req.password).await?;
        store::set_credential(s.db.pool(), employee_id, &stored, false).await?;
        s.audit(
            event(Category::Auth, "password.upgrade", Outcome::Success)
                .user_id(employee_id.to_string())
                .detail("username", username.clone()),
        )
        .await?;
    }
    store::clear_failures(&s.db, &account_key).await?;
    let mfa = used_second_factor(&amr);
    let (sid, issued) = s
        .start_session(employee_id, method, amr, headers, None)
        .await?;
    s.signed_in(&sid, employee_id, &username, method, mfa, None)
        .await?;
    s.identity.metrics.succeeded(method);
    // Roles that need a second factor are withheld from this session: the
    // account has none enrolled yet (with one, the code was required above).
    let extra = if issued.withheld_roles.is_empty() {
        json!({})
    } else {
        json!({
            "mfa_enrollment_required": true,
            "withheld_roles": issued.withheld_roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        })
    };
    Ok(token_response(
        &issued,
        req.client.as_deref() == Some("api"),
        extra,
    ))
}

impl AppState {
    /// Records a sign-in (`login`, success). Fail closed: when the event cannot be
    /// recorded the new session is ended again and the sign-in refused (503).
    pub(crate) async fn signed_in(
        &self,
        session_id: &str,
        employee_id: i64,
        username: &str,
        method: &str,
        mfa: bool,
        provider: Option<&str>,
    ) -> Result<(), ApiError> {
        let mut e = event(Category::Auth, "login", Outcome::Success)
            .user_id(employee_id.to_string())
            .session_id(session_id)
            .auth_method(method)
            .detail("username", username)
            .detail("mfa", mfa);
        if let Some(p) = provider {
            e = e.detail("provider", p);
        }
        if let Err(refused) = self.audit(e).await {
            if let Err(e) = self.revoke_session(session_id, "audit_unavailable").await {
                tracing::error!(error = %e, "could not end the session whose sign-in was not recorded");
            }
            return Err(refused);
        }
        Ok(())
    }
}

/// The sign-in request in `body`, which must be a JSON object: serde's derive would
/// also read the struct from an array in field order (`["alice","guess"]`), a spelling
/// in which the proxy's per-account limit finds no `username` to count.
fn login_request(body: serde_json::Value) -> Result<LoginRequest, ApiError> {
    if !body.is_object() {
        return Err(ApiError::Validation(
            "A sign-in is a JSON object (see /api/openapi.json)".to_owned(),
        ));
    }
    // The parser's message can quote a field's value (a password of the wrong type):
    // neither the client nor the log gets it.
    serde_json::from_value(body).map_err(|_| {
        ApiError::Validation(
            "The body does not match the schema (see /api/openapi.json)".to_owned(),
        )
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::login_request;

    /// Found by `fuzz/fuzz_targets/login_account.rs`: an array in field order was a
    /// sign-in for its first element, uncounted by the proxy's per-account limit.
    #[test]
    fn a_sign_in_body_is_an_object() {
        assert!(login_request(json!(["alice", "guess"])).is_err());
        assert!(login_request(json!("alice")).is_err());
        assert!(
            login_request(json!({"username": "alice", "password": "guess", "extra": 1})).is_err()
        );
        let ok = login_request(json!({"username": "alice", "password": "guess"})).unwrap();
        assert_eq!(ok.username, "alice");
    }
}
