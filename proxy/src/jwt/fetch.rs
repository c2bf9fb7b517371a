//! Fetching an issuer's JWK Set over HTTP(S), directly or through OIDC
//! discovery.

use std::time::Duration;

use reqwest::Url;
use reqwest::header::ACCEPT;
use serde_json::Value;
use thiserror::Error;

use super::keys::{KeySet, KeySetError};
use super::settings::{IssuerSettings, KeySource, parse_url};

/// Largest accepted JWKS or discovery document.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// Why a fetch failed. Messages name the configured URL at most, never
/// response bodies.
#[derive(Debug, Error)]
pub(crate) enum FetchError {
    #[error("request failed: {0}")]
    Request(#[source] reqwest::Error),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("document larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("discovery document: {0}")]
    Discovery(&'static str),
    #[error("key set: {0}")]
    KeySet(#[from] KeySetError),
}

/// The HTTP client for key fetches: no redirects (a JWKS URL that redirects
/// elsewhere is a configuration to fix, not a hop to follow), no connection
/// pool (fetches are minutes apart and may run on different tokio runtimes
/// under pingora; a pooled connection is tied to the runtime that opened it).
pub(crate) fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("portcullis-proxy/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Fetches and parses the issuer's key set; the second value counts skipped
/// (unusable) keys.
pub(crate) async fn key_set(
    client: &reqwest::Client,
    settings: &IssuerSettings,
) -> Result<(KeySet, usize), FetchError> {
    let url = match &settings.source {
        KeySource::Jwks(url) => url.clone(),
        KeySource::Discovery(url) => discover(client, settings, url.clone()).await?,
    };
    let body = get(client, url, settings.fetch_timeout).await?;
    Ok(KeySet::parse(&body)?)
}

/// Reads `jwks_uri` from an OIDC discovery document whose `issuer` must be
/// exactly the configured one (OpenID Connect Discovery §4.3).
async fn discover(
    client: &reqwest::Client,
    settings: &IssuerSettings,
    url: Url,
) -> Result<Url, FetchError> {
    let body = get(client, url, settings.fetch_timeout).await?;
    let doc: Value =
        serde_json::from_slice(&body).map_err(|_| FetchError::Discovery("not JSON"))?;
    if doc.get("issuer").and_then(Value::as_str) != Some(settings.issuer.as_str()) {
        return Err(FetchError::Discovery(
            "`issuer` differs from the configured issuer",
        ));
    }
    let jwks_uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or(FetchError::Discovery("no `jwks_uri`"))?;
    parse_url(jwks_uri).map_err(|_| FetchError::Discovery("`jwks_uri` is not an acceptable URL"))
}

async fn get(client: &reqwest::Client, url: Url, timeout: Duration) -> Result<Vec<u8>, FetchError> {
    let mut response = client
        .get(url)
        .header(ACCEPT, "application/json, application/jwk-set+json")
        .timeout(timeout)
        .send()
        .await
        .map_err(FetchError::Request)?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(FetchError::Request)? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
