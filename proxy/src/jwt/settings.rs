//! Issuer configuration: [`IssuerConfig`] mirrors the file, [`IssuerSettings`]
//! is its validated form.

use std::time::Duration;

use reqwest::Url;
use schemars::JsonSchema;
use serde::Deserialize;

use portcullis_contract::problems::Problems;

/// Largest accepted clock-skew allowance.
pub const MAX_LEEWAY_SECONDS: u64 = 120;

/// A signature algorithm a token may use. Only asymmetric algorithms exist
/// here: `none` and the HMAC family (`HS256`…) cannot be expressed, so a
/// public key can never be used as an HMAC secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwsAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// RSASSA-PSS with SHA-384.
    Ps384,
    /// RSASSA-PSS with SHA-512.
    Ps512,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
    /// Ed25519.
    EdDsa,
}

impl JwsAlgorithm {
    const ALL: [Self; 9] = [
        Self::Rs256,
        Self::Rs384,
        Self::Rs512,
        Self::Ps256,
        Self::Ps384,
        Self::Ps512,
        Self::Es256,
        Self::Es384,
        Self::EdDsa,
    ];

    /// The `alg` header value, e.g. `ES256`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::EdDsa => "EdDSA",
        }
    }

    /// Parses an `alg` value. Exact match: JOSE algorithm names are
    /// case-sensitive (RFC 7515 §4.1.1), so `es256` is not `ES256`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    pub(crate) fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            Self::Rs256 => A::RS256,
            Self::Rs384 => A::RS384,
            Self::Rs512 => A::RS512,
            Self::Ps256 => A::PS256,
            Self::Ps384 => A::PS384,
            Self::Ps512 => A::PS512,
            Self::Es256 => A::ES256,
            Self::Es384 => A::ES384,
            Self::EdDsa => A::EdDSA,
        }
    }
}

impl std::fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One trusted token issuer, as written in the configuration file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` value of this issuer's tokens (compared byte for byte).
    pub issuer: String,
    /// Short name used as the `issuer` metric label and in audit events
    /// (`[a-z0-9_-]`, at most 32 characters), e.g. `backend` or `sso`.
    pub label: String,
    /// Accepted `aud` values: a token must name at least one. Required.
    pub audiences: Vec<String>,
    /// URL of the issuer's JWKS. Exactly one of `jwks_url` and
    /// `discovery_url`. `https`, or `http` to a loopback address only.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// URL of the OIDC discovery document
    /// (`…/.well-known/openid-configuration`); its `jwks_uri` is used and its
    /// `issuer` must equal `issuer`.
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// Allowed `alg` values. Default `["EdDSA", "ES256"]`. `none` and `HS*`
    /// are refused.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`. Default 30, at most 120.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// How often the JWKS is fetched in the background. Default 300
    /// (10..=86400).
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval_seconds: u64,
    /// Least time between two fetches, so that tokens with unknown `kid`s
    /// cannot make the proxy hammer the JWKS endpoint. Default 30
    /// (1..=refresh_interval_seconds).
    #[serde(default = "default_min_refetch_interval")]
    pub min_refetch_interval_seconds: u64,
    /// Time limit of one JWKS (or discovery) request. Default 5 (1..=60).
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_seconds: u64,
    /// Claim holding the subject's roles: an array of strings (or one
    /// string). Default `roles`.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
}

fn default_algorithms() -> Vec<String> {
    vec!["EdDSA".to_owned(), "ES256".to_owned()]
}
fn default_leeway() -> u64 {
    30
}
fn default_refresh_interval() -> u64 {
    300
}
fn default_min_refetch_interval() -> u64 {
    30
}
fn default_fetch_timeout() -> u64 {
    5
}
fn default_roles_claim() -> String {
    "roles".to_owned()
}

impl IssuerConfig {
    /// An issuer with the given JWKS URL and every other option at its default.
    pub fn with_jwks_url(
        issuer: impl Into<String>,
        label: impl Into<String>,
        audiences: Vec<String>,
        jwks_url: impl Into<String>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            label: label.into(),
            audiences,
            jwks_url: Some(jwks_url.into()),
            discovery_url: None,
            algorithms: default_algorithms(),
            leeway_seconds: default_leeway(),
            refresh_interval_seconds: default_refresh_interval(),
            min_refetch_interval_seconds: default_min_refetch_interval(),
            fetch_timeout_seconds: default_fetch_timeout(),
            roles_claim: default_roles_claim(),
        }
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySource {
    Jwks(Url),
    Discovery(Url),
}

/// A validated issuer. Build it with [`IssuerSettings::try_new`].
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    pub(crate) issuer: String,
    pub(crate) label: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) source: KeySource,
    pub(crate) algorithms: Vec<JwsAlgorithm>,
    pub(crate) leeway_seconds: i64,
    pub(crate) refresh_interval: Duration,
    pub(crate) min_refetch_interval: Duration,
    pub(crate) fetch_timeout: Duration,
    pub(crate) roles_claim: String,
}

impl IssuerSettings {
    /// Validates `config`, returning every problem found. Paths are relative
    /// to the issuer (`algorithms[1]`), so the caller prefixes its own.
    pub fn try_new(config: &IssuerConfig) -> Result<Self, Problems> {
        let IssuerConfig {
            issuer,
            label,
            audiences,
            jwks_url,
            discovery_url,
            algorithms,
            leeway_seconds,
            refresh_interval_seconds,
            min_refetch_interval_seconds,
            fetch_timeout_seconds,
            roles_claim,
        } = config;
        let mut errors = Problems::default();
        let mut problem = |field: &str, message: &str| errors.push(field, message);

        if issuer.trim().is_empty() || issuer.trim() != issuer {
            problem(
                "issuer",
                "must be non-empty, without surrounding whitespace",
            );
        }
        let label_ok = !label.is_empty()
            && label.len() <= 32
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !label_ok {
            problem("label", "use 1-32 of a-z, 0-9, `_` and `-`");
        }
        if audiences.is_empty() {
            problem("audiences", "at least one audience is required");
        }
        for (i, aud) in audiences.iter().enumerate() {
            if aud.trim().is_empty() {
                problem(&format!("audiences[{i}]"), "must not be empty");
            }
        }

        let source = match (jwks_url, discovery_url) {
            (Some(url), None) => parse_url(url)
                .map_err(|m| problem("jwks_url", m))
                .ok()
                .map(KeySource::Jwks),
            (None, Some(url)) => parse_url(url)
                .map_err(|m| problem("discovery_url", m))
                .ok()
                .map(KeySource::Discovery),
            _ => {
                problem("jwks_url", "set exactly one of jwks_url and discovery_url");
                None
            }
        };

        let mut algs = Vec::new();
        if algorithms.is_empty() {
            problem("algorithms", "at least one algorithm is required");
        }
        for (i, name) in algorithms.iter().enumerate() {
            match JwsAlgorithm::from_name(name) {
                Some(alg) if !algs.contains(&alg) => algs.push(alg),
                Some(_) => problem(&format!("algorithms[{i}]"), "listed twice"),
                None if name.eq_ignore_ascii_case("none") || name.starts_with("HS") => problem(
                    &format!("algorithms[{i}]"),
                    "`none` and HMAC algorithms are refused: tokens must be signed with an asymmetric key",
                ),
                None => problem(
                    &format!("algorithms[{i}]"),
                    "unknown algorithm; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA",
                ),
            }
        }

        if *leeway_seconds > MAX_LEEWAY_SECONDS {
            problem("leeway_seconds", "must be at most 120");
        }
        if !(10..=86_400).contains(refresh_interval_seconds) {
            problem("refresh_interval_seconds", "must be between 10 and 86400");
        }
        if *min_refetch_interval_seconds == 0
            || min_refetch_interval_seconds > refresh_interval_seconds
        {
            problem(
                "min_refetch_interval_seconds",
                "must be at least 1 and at most refresh_interval_seconds",
            );
        }
        if !(1..=60).contains(fetch_timeout_seconds) {
            problem("fetch_timeout_seconds", "must be between 1 and 60");
        }
        if roles_claim.is_empty() {
            problem("roles_claim", "must not be empty");
        }

        match source {
            Some(source) if errors.is_empty() => Ok(Self {
                issuer: issuer.clone(),
                label: label.clone(),
                audiences: audiences.clone(),
                source,
                algorithms: algs,
                // Bounded by MAX_LEEWAY_SECONDS above, so the cast is exact.
                leeway_seconds: i64::try_from(*leeway_seconds).unwrap_or(0),
                refresh_interval: Duration::from_secs(*refresh_interval_seconds),
                min_refetch_interval: Duration::from_secs(*min_refetch_interval_seconds),
                fetch_timeout: Duration::from_secs(*fetch_timeout_seconds),
                roles_claim: roles_claim.clone(),
            }),
            _ => Err(errors),
        }
    }

    /// The exact `iss` value.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The metric label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The allowed algorithms.
    pub fn algorithms(&self) -> &[JwsAlgorithm] {
        &self.algorithms
    }
}

/// Accepts `https` URLs, and `http` only to a loopback host (a backend on the
/// same machine): keys fetched in clear text over a network could be swapped.
pub(crate) fn parse_url(raw: &str) -> Result<Url, &'static str> {
    let url = Url::parse(raw).map_err(|_| "not a valid absolute URL")?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials");
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err("plain http is allowed only to a loopback address; use https"),
        _ => Err("must be an https URL"),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> IssuerConfig {
        IssuerConfig::with_jwks_url(
            "https://idp.example",
            "sso",
            vec!["portcullis".to_owned()],
            "https://idp.example/jwks.json",
        )
    }

    fn fields(config: &IssuerConfig) -> Vec<String> {
        IssuerSettings::try_new(config)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.path)
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let s = IssuerSettings::try_new(&config()).unwrap();
        assert_eq!(s.algorithms(), &[JwsAlgorithm::EdDsa, JwsAlgorithm::Es256]);
        assert_eq!(s.leeway_seconds, 30);
    }

    #[test]
    fn refuses_none_and_hmac() {
        for alg in [
            "none", "None", "NONE", "HS256", "HS384", "HS512", "es256", "",
        ] {
            let mut c = config();
            c.algorithms = vec![alg.to_owned()];
            assert_eq!(fields(&c), vec!["algorithms[0]"], "{alg}");
        }
    }

    #[test]
    fn bounds_leeway_and_intervals() {
        let mut c = config();
        c.leeway_seconds = 121;
        c.refresh_interval_seconds = 5;
        c.min_refetch_interval_seconds = 0;
        c.fetch_timeout_seconds = 0;
        assert_eq!(
            fields(&c),
            vec![
                "leeway_seconds",
                "refresh_interval_seconds",
                "min_refetch_interval_seconds",
                "fetch_timeout_seconds"
            ]
        );
    }

    #[test]
    fn key_source_rules() {
        let mut c = config();
        c.discovery_url = Some("https://idp.example/.well-known/openid-configuration".into());
        assert_eq!(fields(&c), vec!["jwks_url"]);
        c.jwks_url = None;
        assert!(IssuerSettings::try_new(&c).is_ok());
        for bad in [
            "http://idp.example/jwks",
            "ftp://idp.example/jwks",
            "https://user:pw@idp.example/jwks",
            "/jwks.json",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        for good in [
            "http://127.0.0.1:8081/auth/jwks.json",
            "http://[::1]:1/j",
            "http://localhost/j",
        ] {
            assert!(parse_url(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn label_and_audience_rules() {
        let mut c = config();
        c.label = "Has Space".into();
        c.audiences = vec![];
        assert_eq!(fields(&c), vec!["label", "audiences"]);
    }
}
