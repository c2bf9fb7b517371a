//! The configured providers at run time: discovery and JWKS (cached), the
//! authorization URL, the code exchange, ID token, userinfo and logout token
//! checks, and the end-session URL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, JsonWebKey, JsonWebKeyUse as _,
    LogoutRequest, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, RequestTokenError, Scope,
    TokenResponse,
};
use serde_json::{Map, Value};

use crate::http::ApiError;
use crate::identity::tokens::token_hash;

use crate::settings::oidc::ProviderSettings;

/// The event a back-channel logout token must carry.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// Scopes always requested; `scopes` of a provider come on top.
const BASE_SCOPES: [&str; 2] = ["email", "profile"];
/// Only asymmetric signatures: a token signed with the client secret would be
/// forgeable by anyone who holds that secret.
const SIGNING_ALGS: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];
const METADATA_TTL: Duration = Duration::from_secs(600);
const METADATA_MIN_REFRESH: Duration = Duration::from_secs(30);
/// A stale metadata copy still serves while the provider is unreachable.
const METADATA_STALE_LIMIT: Duration = Duration::from_secs(24 * 3600);
pub(super) const CLOCK_SKEW_SECONDS: i64 = 60;
/// Oldest accepted logout token (by `iat`).
const LOGOUT_TOKEN_MAX_AGE_SECONDS: i64 = 300;
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------- errors

/// Why an OIDC step failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("oidc provider `{provider}`: client secret file {path}: {reason}")]
    SecretFile {
        provider: String,
        path: String,
        reason: String,
    },
    #[error("oidc: cannot build the HTTP client: {0}")]
    HttpClient(String),
    #[error("unknown oidc provider `{0}`")]
    UnknownProvider(String),
    #[error("oidc provider `{provider}` is unavailable: {reason}")]
    Unavailable { provider: String, reason: String },
    #[error("the provider refused the authorization code: {0}")]
    CodeRejected(String),
    #[error("invalid ID token: {0}")]
    InvalidIdToken(String),
    #[error("invalid userinfo response: {0}")]
    InvalidUserinfo(String),
    #[error("invalid logout token: {0}")]
    InvalidLogoutToken(String),
}

impl From<OidcError> for ApiError {
    fn from(e: OidcError) -> Self {
        let custom = |status, kind, detail: &str| ApiError::Custom {
            status,
            kind,
            detail: detail.to_owned(),
        };
        match &e {
            OidcError::SecretFile { .. } | OidcError::HttpClient(_) => {
                ApiError::Internal(e.to_string())
            }
            OidcError::UnknownProvider(_) => custom(
                StatusCode::BAD_REQUEST,
                "oidc-unknown-provider",
                "No identity provider of that name is configured",
            ),
            OidcError::Unavailable { .. } | OidcError::InvalidUserinfo(_) => {
                tracing::warn!(error = %e, "oidc provider failed");
                custom(
                    StatusCode::BAD_GATEWAY,
                    "oidc-provider-unavailable",
                    "The identity provider could not be used; try again later",
                )
            }
            OidcError::CodeRejected(_) => {
                tracing::warn!(error = %e, "oidc code exchange refused");
                custom(
                    StatusCode::UNAUTHORIZED,
                    "oidc-code-rejected",
                    "The identity provider did not accept this sign-in; start again",
                )
            }
            OidcError::InvalidIdToken(_) => {
                tracing::warn!(error = %e, "oidc ID token refused");
                custom(
                    StatusCode::UNAUTHORIZED,
                    "oidc-invalid-id-token",
                    "The identity provider's answer could not be verified; start again",
                )
            }
            OidcError::InvalidLogoutToken(reason) => ApiError::Custom {
                status: StatusCode::BAD_REQUEST,
                kind: "oidc-invalid-logout-token",
                detail: format!("The logout token is not valid: {reason}"),
            },
        }
    }
}

// ------------------------------------------------------------- providers

type Metadata = ProviderMetadataWithLogout;
type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// One configured provider with its secret and cached metadata.
pub(super) struct Provider {
    pub(super) settings: ProviderSettings,
    secret: ClientSecret,
    http: reqwest::Client,
    cache: tokio::sync::Mutex<Option<(Instant, Arc<Metadata>)>>,
}

/// The configured providers (empty when SSO is off).
#[derive(Default)]
pub struct Providers {
    list: Vec<Provider>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.list.iter().map(|p| &p.settings.name))
            .finish()
    }
}

/// What a verified ID token says.
pub type Claims = Map<String, Value>;

/// The verified content of a back-channel logout token.
#[derive(Debug, Clone)]
pub struct LogoutClaims {
    /// The configured provider it came from.
    pub provider: String,
    pub sid: Option<String>,
    pub sub: Option<String>,
    pub jti: String,
    /// Until when its `jti` must be remembered (unix seconds).
    pub keep_until: i64,
}

impl Providers {
    /// Reads each provider's client secret and builds the HTTP client.
    pub fn load(settings: &[ProviderSettings]) -> Result<Self, OidcError> {
        if settings.is_empty() {
            return Ok(Self::default());
        }
        let http = reqwest::Client::builder()
            // Never follow redirects: a redirect could lead a token request anywhere (SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(HTTP_TIMEOUT)
            .user_agent("portcullis-backend")
            .build()
            .map_err(|e| OidcError::HttpClient(e.to_string()))?;
        let mut list = Vec::with_capacity(settings.len());
        for s in settings {
            let secret_error = |reason: String| OidcError::SecretFile {
                provider: s.name.clone(),
                path: s.client_secret_file.display().to_string(),
                reason,
            };
            let raw = std::fs::read_to_string(&s.client_secret_file)
                .map_err(|e| secret_error(e.to_string()))?;
            let secret = raw.trim_end_matches(['\r', '\n']);
            if secret.is_empty() {
                return Err(secret_error("is empty".into()));
            }
            list.push(Provider {
                settings: s.clone(),
                secret: ClientSecret::new(secret.to_owned()),
                http: http.clone(),
                cache: tokio::sync::Mutex::new(None),
            });
        }
        Ok(Self { list })
    }

    /// Each provider's name and display name, in configuration order.
    pub fn names(&self) -> impl Iterator<Item = (&str, &str)> {
        self.list
            .iter()
            .map(|p| (p.settings.name.as_str(), p.settings.display_name.as_str()))
    }

    /// Whether any provider is configured.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(super) fn get(&self, name: &str) -> Option<&Provider> {
        self.list.iter().find(|p| p.settings.name == name)
    }

    /// The named provider, or the only one when no name is given.
    pub(super) fn select(&self, name: Option<&str>) -> Result<&Provider, ApiError> {
        if self.list.is_empty() {
            return Err(ApiError::Custom {
                status: StatusCode::NOT_FOUND,
                kind: "oidc-not-configured",
                detail: "Single sign-on is not configured".into(),
            });
        }
        match (name, self.list.as_slice()) {
            (Some(n), _) => self
                .get(n)
                .ok_or_else(|| OidcError::UnknownProvider(n.to_owned()).into()),
            (None, [only]) => Ok(only),
            (None, _) => Err(ApiError::Custom {
                status: StatusCode::BAD_REQUEST,
                kind: "oidc-unknown-provider",
                detail: "Several identity providers are configured: name one with ?provider="
                    .into(),
            }),
        }
    }

    /// Verifies an ID token issued by `provider` for this client: signature
    /// (provider JWKS, asymmetric algorithms only), `iss`, `aud`, `exp`, and
    /// `nonce` equal to the given one. Returns its claims.
    pub async fn verify_id_token(
        &self,
        provider: &str,
        id_token: &str,
        nonce: &str,
    ) -> Result<Claims, OidcError> {
        let p = self
            .get(provider)
            .ok_or_else(|| OidcError::UnknownProvider(provider.to_owned()))?;
        let token: CoreIdToken = id_token
            .parse()
            .map_err(|e: serde_json::Error| OidcError::InvalidIdToken(e.to_string()))?;
        p.verify_id_token(&token, &token_hash(nonce)).await
    }

    /// Verifies a back-channel logout token (OIDC Back-Channel Logout 1.0,
    /// section 2.6): signature with the issuer's keys, `iss`, `aud` (a
    /// configured client of that issuer), `iat`, `exp` if present, `jti`,
    /// the back-channel logout event, `sid` and/or `sub`, and no `nonce`.
    /// The `jti` is not recorded here.
    pub async fn verify_logout_token(
        &self,
        token: &str,
        now: i64,
    ) -> Result<LogoutClaims, OidcError> {
        let bad = |m: &str| OidcError::InvalidLogoutToken(m.to_owned());
        let parts: Vec<&str> = token.split('.').collect();
        let [header_b64, payload_b64, signature_b64] = parts.as_slice() else {
            return Err(bad("not a signed JWT"));
        };
        let header = decode_json(header_b64).ok_or_else(|| bad("unreadable header"))?;
        let payload = decode_json(payload_b64).ok_or_else(|| bad("unreadable claims"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| bad("unreadable signature"))?;
        let alg: CoreJwsSigningAlgorithm = header
            .get("alg")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| bad("unknown alg"))?;
        if !SIGNING_ALGS.contains(&alg) {
            return Err(bad("alg not allowed"));
        }
        if header.contains_key("crit") {
            return Err(bad("critical header parameters are not supported"));
        }
        if let Some(typ) = header.get("typ") {
            let typ = typ.as_str().unwrap_or_default().to_ascii_lowercase();
            if !["logout+jwt", "application/logout+jwt", "jwt"].contains(&typ.as_str()) {
                return Err(bad("unexpected typ"));
            }
        }
        let kid = header.get("kid").and_then(Value::as_str);
        let iss = payload
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no iss"))?;
        let audiences = string_list(payload.get("aud"));
        let p = self
            .list
            .iter()
            .filter(|p| p.settings.issuer == iss)
            .find(|p| audiences.contains(&p.settings.client_id))
            .ok_or_else(|| bad("issued by an unknown provider or for another audience"))?;
        let signing_input = format!("{header_b64}.{payload_b64}");
        let mut metadata = p.metadata(false).await?;
        let mut verified = verify_jws(&metadata, kid, &alg, &signing_input, &signature);
        if verified == Jws::NoKey {
            metadata = p.metadata(true).await?;
            verified = verify_jws(&metadata, kid, &alg, &signing_input, &signature);
        }
        if verified != Jws::Valid {
            return Err(bad("signature"));
        }
        if metadata.issuer().as_str() != iss {
            return Err(bad("iss"));
        }
        let iat = payload
            .get("iat")
            .and_then(Value::as_i64)
            .ok_or_else(|| bad("no iat"))?;
        if iat > now + CLOCK_SKEW_SECONDS || iat < now - LOGOUT_TOKEN_MAX_AGE_SECONDS {
            return Err(bad("iat out of range"));
        }
        let exp = payload.get("exp").and_then(Value::as_i64);
        if exp.is_some_and(|exp| exp + CLOCK_SKEW_SECONDS < now) {
            return Err(bad("expired"));
        }
        let jti = payload
            .get("jti")
            .and_then(Value::as_str)
            .filter(|j| !j.is_empty() && j.len() <= 512)
            .ok_or_else(|| bad("no jti"))?;
        let event_ok = payload
            .get("events")
            .and_then(Value::as_object)
            .and_then(|e| e.get(BACKCHANNEL_LOGOUT_EVENT))
            .is_some_and(Value::is_object);
        if !event_ok {
            return Err(bad("no back-channel logout event"));
        }
        if payload.contains_key("nonce") {
            return Err(bad("a logout token must not carry a nonce"));
        }
        let text = |k: &str| {
            payload
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let (sid, sub) = (text("sid"), text("sub"));
        if sid.is_none() && sub.is_none() {
            return Err(bad("neither sid nor sub"));
        }
        Ok(LogoutClaims {
            provider: p.settings.name.clone(),
            sid,
            sub,
            jti: jti.to_owned(),
            keep_until: exp.unwrap_or(iat + LOGOUT_TOKEN_MAX_AGE_SECONDS).max(iat)
                + CLOCK_SKEW_SECONDS,
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Jws {
    Valid,
    Invalid,
    /// No key of the set matches the `kid` (or there is none to try).
    NoKey,
}

fn verify_jws(
    metadata: &Metadata,
    kid: Option<&str>,
    alg: &CoreJwsSigningAlgorithm,
    signing_input: &str,
    signature: &[u8],
) -> Jws {
    let mut tried = false;
    for key in metadata.jwks().keys() {
        let usable = key.key_use().is_none_or(|u| u.allows_signature());
        if !usable || (kid.is_some() && key.key_id().map(|k| k.as_str()) != kid) {
            continue;
        }
        tried = true;
        if key
            .verify_signature(alg, signing_input.as_bytes(), signature)
            .is_ok()
        {
            return Jws::Valid;
        }
    }
    if tried { Jws::Invalid } else { Jws::NoKey }
}

fn decode_json(b64: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// An error and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A claim that is a string or a list of strings, as a list.
pub(super) fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

impl Provider {
    /// Discovery document and JWKS, cached. `refresh` asks for a new copy
    /// (at most every 30 s), e.g. when a token names an unknown key.
    async fn metadata(&self, refresh: bool) -> Result<Arc<Metadata>, OidcError> {
        let mut cache = self.cache.lock().await;
        if let Some((fetched, m)) = cache.as_ref() {
            let age = fetched.elapsed();
            if age < METADATA_TTL && !(refresh && age >= METADATA_MIN_REFRESH) {
                return Ok(m.clone());
            }
        }
        let unavailable = |reason: String| OidcError::Unavailable {
            provider: self.settings.name.clone(),
            reason,
        };
        let fetched = match IssuerUrl::new(self.settings.issuer.clone()) {
            Ok(issuer) => Metadata::discover_async(issuer, &self.http)
                .await
                .map_err(|e| unavailable(format!("discovery: {}", chain(&e)))),
            Err(e) => Err(unavailable(format!("issuer: {e}"))),
        };
        match (fetched, cache.as_ref()) {
            (Ok(m), _) => {
                let m = Arc::new(m);
                *cache = Some((Instant::now(), m.clone()));
                Ok(m)
            }
            (Err(e), Some((fetched, m))) if fetched.elapsed() < METADATA_STALE_LIMIT => {
                tracing::warn!(error = %e, "oidc discovery failed; using the cached metadata");
                Ok(m.clone())
            }
            (Err(e), _) => Err(e),
        }
    }

    fn client(&self, metadata: &Metadata) -> Result<Client, OidcError> {
        let redirect = RedirectUrl::new(self.settings.redirect_uri.clone()).map_err(|e| {
            OidcError::Unavailable {
                provider: self.settings.name.clone(),
                reason: format!("redirect_uri: {e}"),
            }
        })?;
        Ok(CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.settings.client_id.clone()),
            Some(self.secret.clone()),
        )
        .set_redirect_uri(redirect))
    }

    /// The authorization request URL (code flow, PKCE S256, state, nonce).
    pub(super) async fn authorization_url(
        &self,
        state: &str,
        nonce: &str,
        verifier: &str,
    ) -> Result<String, OidcError> {
        let metadata = self.metadata(false).await?;
        let client = self.client(&metadata)?;
        let challenge =
            PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.into()));
        let (state, nonce) = (state.to_owned(), nonce.to_owned());
        let scopes = BASE_SCOPES
            .iter()
            .map(|s| (*s).to_owned())
            .chain(self.settings.scopes.iter().cloned())
            .map(Scope::new);
        let (url, _, _) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .add_scopes(scopes)
            .set_pkce_challenge(challenge)
            .url();
        Ok(url.to_string())
    }

    /// Exchanges the code (client_secret_basic, with the PKCE verifier):
    /// `(id_token, access_token)`.
    pub(super) async fn exchange(
        &self,
        code: &str,
        verifier: &str,
    ) -> Result<(CoreIdToken, String), OidcError> {
        let metadata = self.metadata(false).await?;
        let client = self.client(&metadata)?;
        let unavailable = |reason: String| OidcError::Unavailable {
            provider: self.settings.name.clone(),
            reason,
        };
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| unavailable(format!("token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()));
        let tokens = match request.request_async(&self.http).await {
            Ok(t) => t,
            Err(RequestTokenError::ServerResponse(e)) => {
                return Err(OidcError::CodeRejected(e.error().to_string()));
            }
            // Not the parse errors' sources: they could quote the response.
            Err(RequestTokenError::Request(e)) => {
                return Err(unavailable(format!("token request: {}", chain(&e))));
            }
            Err(e) => return Err(unavailable(format!("token request: {e}"))),
        };
        let id_token = tokens.id_token().cloned().ok_or_else(|| {
            OidcError::InvalidIdToken("the token response has no id_token".into())
        })?;
        Ok((id_token, tokens.access_token().secret().clone()))
    }

    /// Verifies an ID token; the nonce is compared by its SHA-256.
    pub(super) async fn verify_id_token(
        &self,
        token: &CoreIdToken,
        nonce_hash: &str,
    ) -> Result<Claims, OidcError> {
        let check = |metadata: &Metadata| -> Result<(), ClaimsVerificationError> {
            let client = self
                .client(metadata)
                .map_err(|e| ClaimsVerificationError::Other(e.to_string()))?;
            let verifier = client
                .id_token_verifier()
                .set_allowed_algs(SIGNING_ALGS.iter().cloned());
            let expected = nonce_hash.to_owned();
            token
                .claims(&verifier, move |n: Option<&Nonce>| match n {
                    Some(n) if constant_eq(&token_hash(n.secret()), &expected) => Ok(()),
                    Some(_) => Err("nonce mismatch".to_owned()),
                    None => Err("missing nonce claim".to_owned()),
                })
                .map(|_| ())
        };
        let metadata = self.metadata(false).await?;
        let mut outcome = check(&metadata);
        if let Err(ClaimsVerificationError::SignatureVerification(_)) = outcome {
            // Perhaps the provider rotated its keys.
            let metadata = self.metadata(true).await?;
            outcome = check(&metadata);
        }
        outcome.map_err(|e| OidcError::InvalidIdToken(e.to_string()))?;
        // Verified: read every claim (the configured ones are not all standard).
        token
            .to_string()
            .split('.')
            .nth(1)
            .and_then(decode_json)
            .ok_or_else(|| OidcError::InvalidIdToken("unreadable claims".into()))
    }

    /// The userinfo claims, when the provider has the endpoint; their `sub`
    /// must be the ID token's.
    pub(super) async fn userinfo(
        &self,
        access_token: &str,
        sub: &str,
    ) -> Result<Option<Claims>, OidcError> {
        let metadata = self.metadata(false).await?;
        let Some(endpoint) = metadata.userinfo_endpoint() else {
            return Ok(None);
        };
        let bad = |m: String| OidcError::InvalidUserinfo(m);
        let resp = self
            .http
            .get(endpoint.url().clone())
            .bearer_auth(access_token)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| bad(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(bad(format!("status {}", resp.status())));
        }
        let claims: Claims = resp.json().await.map_err(|e| bad(e.to_string()))?;
        if claims.get("sub").and_then(Value::as_str) != Some(sub) {
            return Err(bad("sub differs from the ID token's".into()));
        }
        Ok(Some(claims))
    }

    /// The provider's end-session URL for RP-initiated logout, if it has one.
    pub(super) async fn end_session_url(&self) -> Result<Option<String>, OidcError> {
        let metadata = self.metadata(false).await?;
        let Some(endpoint) = metadata.additional_metadata().end_session_endpoint.clone() else {
            return Ok(None);
        };
        let mut request = LogoutRequest::from(endpoint)
            .set_client_id(ClientId::new(self.settings.client_id.clone()));
        if let Some(r) = &self.settings.end_session_redirect
            && let Ok(r) = PostLogoutRedirectUrl::new(r.clone())
        {
            request = request.set_post_logout_redirect_uri(r);
        }
        Ok(Some(request.http_get_url().to_string()))
    }
}

fn constant_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
