//! OIDC single sign-on against a real OpenID provider: panva/oidc-provider,
//! started from `tests/oidc-provider` on an ephemeral loopback port for each
//! test (`npm install` runs first when its `node_modules` is missing). Every
//! test runs on SQLite and on the PostgreSQL at 127.0.0.1:5432.
//!
//! Without node/npm the provider tests are skipped, unless `CI` is set: then
//! they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_backend::directory::repo;
use portcullis_backend::identity::oidc::{OidcError, OidcProviderConfig, validate_providers};
use portcullis_backend::identity::store;
use portcullis_backend::{AppState, BackendConfig};
use portcullis_contract::problems::Problems;
use portcullis_contract::shared::SharedConfig;
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncBufReadExt as _;

#[macro_use]
mod support;

use portcullis_testkit::pg::TestDatabase;
use portcullis_testkit::unique;
use support::Engine;

const SECRET: &str = "portcullis-test-client-secret-0123456789";
const SUB_SECRET: &str = "portcullis-sub-test-client-secret-0123456";
const OTHER_SECRET: &str = "other-app-test-client-secret-0123456789ab";
/// A redirect URI of the foreign client: nothing listens there, the test
/// reads the code off the redirect.
const OTHER_REDIRECT: &str = "http://127.0.0.1:9/cb";

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn b64url_json(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// The claims of a JWT (not verified: for looking only).
fn claims_of(token: &str) -> Value {
    b64url_json(token.split('.').nth(1).unwrap())
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn with_param(url: &str, name: &str, value: Option<&str>) -> String {
    let mut u = Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut q = u.query_pairs_mut();
        q.clear();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        if let Some(v) = value {
            q.append_pair(name, v);
        }
    }
    u.to_string()
}

fn location(r: &reqwest::Response) -> String {
    let raw = r
        .headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location on {}", r.status()))
        .to_str()
        .unwrap();
    r.url().join(raw).unwrap().to_string()
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

async fn problem(r: reqwest::Response, status: StatusCode, slug: &str) -> Value {
    assert_eq!(
        r.headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("application/problem+json".to_owned())
    );
    let got = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(got, status, "{body}");
    assert_eq!(
        body["type"],
        format!("urn:portcullis:problem:{slug}"),
        "{body}"
    );
    body
}

// ------------------------------------------------------------------ node

/// Checks node and installs the provider's packages once per test binary.
fn node_setup() -> Result<(), String> {
    let dir = provider_dir();
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("node is not installed".into());
    }
    if !dir
        .join("node_modules/oidc-provider/package.json")
        .is_file()
    {
        let out = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("npm: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "npm install in {} failed: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

fn provider_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/oidc-provider"
    ))
}

/// Whether the provider can run. Under `CI` a missing node/npm/oidc-provider
/// is a failure, never a skip.
#[allow(
    clippy::disallowed_methods,
    reason = "whether the tests run under CI is test setup, not configuration"
)]
async fn provider_available() -> bool {
    static SETUP: OnceLock<Result<(), String>> = OnceLock::new();
    let result = tokio::task::spawn_blocking(|| SETUP.get_or_init(node_setup).clone())
        .await
        .unwrap();
    match result {
        Ok(()) => true,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("the OIDC tests need node and oidc-provider under CI: {e}")
        }
        Err(e) => {
            eprintln!("skipping: {e}");
            false
        }
    }
}

/// The running provider (killed when dropped).
struct Idp {
    _child: tokio::process::Child,
    issuer: String,
    config_path: PathBuf,
    config: Mutex<Value>,
}

impl Idp {
    async fn start(dir: &Path, config: Value) -> Idp {
        let config_path = dir.join("idp.json");
        write_atomically(&config_path, &config);
        let mut child = tokio::process::Command::new("node")
            .arg("provider.js")
            .arg("0")
            .arg(&config_path)
            .current_dir(provider_dir())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Pass the provider's errors on; drop its two known start-up warnings
        // (Node 20 is "unsupported", the in-memory adapter is for development).
        let mut errors = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = errors.next_line().await {
                if !line.starts_with("oidc-provider WARNING") {
                    eprintln!("oidc-provider: {line}");
                }
            }
        });
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let issuer = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(issuer) = line.strip_prefix("READY ") {
                    return issuer.to_owned();
                }
            }
            panic!("the provider exited before it was ready");
        })
        .await
        .expect("the provider did not start within 30 s");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let discovery = format!("{issuer}/.well-known/openid-configuration");
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if client
                .get(&discovery)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Idp {
                    _child: child,
                    issuer,
                    config_path,
                    config: Mutex::new(config),
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no discovery document at {discovery}");
    }

    /// Changes an account's groups; the provider reads them at each sign-in.
    fn set_groups(&self, account: &str, groups: &[&str]) {
        let mut config = self.config.lock().unwrap();
        config["accounts"][account]["groups"] = json!(groups);
        write_atomically(&self.config_path, &config);
    }
}

fn write_atomically(path: &Path, value: &Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

// ------------------------------------------------------------------ relay

/// A back-channel logout the provider sent.
#[derive(Debug, Clone)]
struct Delivered {
    /// `relay` (forwarded to the backend) or `capture` (kept only).
    route: String,
    logout_token: String,
    /// What the backend answered (relay only).
    status: Option<u16>,
}

/// Stands between the provider and the backend's back-channel endpoint so
/// the test can see (and replay) the logout tokens.
async fn start_relay(backend: String) -> (String, Arc<Mutex<Vec<Delivered>>>) {
    use axum::extract::State;
    #[derive(Clone)]
    struct Relay {
        backend: String,
        seen: Arc<Mutex<Vec<Delivered>>>,
    }
    async fn handle(State(r): State<Relay>, route: String, body: String) -> StatusCode {
        let token = url_form(&body).remove("logout_token").unwrap_or_default();
        let status = if route == "relay" {
            let resp = reqwest::Client::new()
                .post(format!("{}/auth/oidc/backchannel-logout", r.backend))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
            Some(resp.status().as_u16())
        } else {
            None
        };
        r.seen.lock().unwrap().push(Delivered {
            route,
            logout_token: token,
            status,
        });
        status.map_or(StatusCode::OK, |s| StatusCode::from_u16(s).unwrap())
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route(
            "/relay",
            axum::routing::post(|s: State<Relay>, body: String| handle(s, "relay".into(), body)),
        )
        .route(
            "/capture",
            axum::routing::post(|s: State<Relay>, body: String| handle(s, "capture".into(), body)),
        )
        .with_state(Relay {
            backend,
            seen: seen.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

fn url_form(body: &str) -> BTreeMap<String, String> {
    Url::parse(&format!("http://x/?{body}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

// ------------------------------------------------------------------ browser

/// A browser: no automatic redirects, one cookie jar per host:port (paths
/// and the Secure flag ignored: everything here is loopback http).
struct Browser {
    http: reqwest::Client,
    jar: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
}

fn origin(url: &str) -> String {
    let u = Url::parse(url).unwrap();
    format!(
        "{}:{}",
        u.host_str().unwrap(),
        u.port_or_known_default().unwrap()
    )
}

impl Browser {
    fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            jar: Mutex::new(BTreeMap::new()),
        }
    }

    fn cookie(&self, url: &str, name: &str) -> Option<String> {
        self.jar
            .lock()
            .unwrap()
            .get(&origin(url))
            .and_then(|c| c.get(name).cloned())
    }

    fn set_cookie(&self, url: &str, name: &str, value: &str) {
        self.jar
            .lock()
            .unwrap()
            .entry(origin(url))
            .or_default()
            .insert(name.to_owned(), value.to_owned());
    }

    async fn send(&self, req: reqwest::RequestBuilder, url: &str) -> reqwest::Response {
        let header: Vec<String> = self
            .jar
            .lock()
            .unwrap()
            .get(&origin(url))
            .map(|c| c.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        let req = if header.is_empty() {
            req
        } else {
            req.header("cookie", header.join("; "))
        };
        let resp = req.send().await.unwrap();
        let mut jar = self.jar.lock().unwrap();
        let cookies = jar.entry(origin(url)).or_default();
        for c in set_cookies(&resp) {
            let mut attrs = c.split(';').map(str::trim);
            let Some((name, value)) = attrs.next().and_then(|nv| nv.split_once('=')) else {
                continue;
            };
            let expired = attrs.any(|a| {
                a.eq_ignore_ascii_case("max-age=0")
                    || a.to_ascii_lowercase()
                        .starts_with("expires=thu, 01 jan 1970")
            });
            if expired || value.is_empty() {
                cookies.remove(name);
            } else {
                cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        resp
    }

    async fn get(&self, url: &str) -> reqwest::Response {
        self.send(self.http.get(url), url).await
    }

    async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect();
        let req = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.join("&"));
        self.send(req, url).await
    }
}

// ------------------------------------------------------------------ audit

impl App {
    /// Audit events in this backend's `audit_events` table (as ECS objects) that match
    /// `wanted`, once at least `at_least` of them have arrived (the database sink
    /// delivers asynchronously); fails after 10 s.
    async fn audit(&self, at_least: usize, wanted: impl Fn(&Value) -> bool) -> Vec<Value> {
        use sqlx::Row;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let rows = sqlx::query("select line from audit_events order by audit_event_id")
                .fetch_all(self.state.db.pool())
                .await
                .unwrap();
            let found: Vec<Value> = rows
                .iter()
                .map(|r| serde_json::from_str::<Value>(&r.get::<String, _>(0)).unwrap())
                .filter(|e| wanted(e))
                .collect();
            if found.len() >= at_least {
                return found;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "expected {at_least} audit event(s), found {found:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ------------------------------------------------------------------ the app

struct App {
    base: String,
    state: AppState,
    idp: Idp,
    relayed: Arc<Mutex<Vec<Delivered>>>,
    engine: Engine,
    _dir: tempfile::TempDir,
    pg_db: Option<TestDatabase>,
}

/// Accounts at the provider: `<name>-<engine>`, so audit events of parallel
/// tests stay apart.
fn account(engine: Engine, name: &str) -> String {
    format!("{name}-{}", engine.tag())
}

impl App {
    async fn start(engine: Engine) -> Option<App> {
        Self::start_with(engine, Vec::new()).await
    }

    /// With `backend.identity.mfa_required_roles`.
    async fn start_with(
        engine: Engine,
        mfa_required_roles: Vec<portcullis_backend::model::Role>,
    ) -> Option<App> {
        if !provider_available().await {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (relay, relayed) = start_relay(base.clone()).await;
        let redirect = format!("{base}/auth/oidc/callback");
        let client = |id: &str, secret: &str, sid_required: bool| {
            json!({
                "client_id": id,
                "client_secret": secret,
                "redirect_uris": [redirect],
                "post_logout_redirect_uris": [format!("{base}/")],
                "token_endpoint_auth_method": "client_secret_basic",
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "id_token_signed_response_alg": "RS256",
                "backchannel_logout_uri": format!("{relay}/relay"),
                "backchannel_logout_session_required": sid_required,
            })
        };
        let mut accounts = serde_json::Map::new();
        for (name, groups) in [
            (
                "alice",
                vec!["MAINT-EMPLOYEE", "MAINT-TECHNICIAN", "CANTEEN-USERS"],
            ),
            ("bob", vec!["MAINT-EMPLOYEE"]),
            ("carol", vec!["CANTEEN-USERS"]),
        ] {
            let id = account(engine, name);
            // Mixed case: usernames are lower-cased.
            let mut upper = name.to_owned();
            upper[..1].make_ascii_uppercase();
            accounts.insert(
                id.clone(),
                json!({
                    "preferred_username": format!("{upper}-{}", engine.tag()),
                    "email": format!("{id}@example.org"),
                    "email_verified": true,
                    "name": format!("{upper} Example"),
                    "groups": groups,
                }),
            );
        }
        let idp = Idp::start(
            dir.path(),
            json!({
                "clients": [
                    client("portcullis", SECRET, true),
                    client("portcullis-sub", SUB_SECRET, false),
                    {
                        "client_id": "other-app",
                        "client_secret": OTHER_SECRET,
                        "redirect_uris": [OTHER_REDIRECT],
                        "token_endpoint_auth_method": "client_secret_basic",
                        "grant_types": ["authorization_code"],
                        "response_types": ["code"],
                        "backchannel_logout_uri": format!("{relay}/capture"),
                        "backchannel_logout_session_required": true,
                    },
                ],
                "accounts": accounts,
            }),
        )
        .await;
        std::fs::write(dir.path().join("idp.secret"), format!("{SECRET}\n")).unwrap();
        std::fs::write(dir.path().join("idp-sub.secret"), SUB_SECRET).unwrap();
        let configs: Vec<OidcProviderConfig> = serde_json::from_value(json!([
            {
                "name": "idp",
                "display_name": "Example IdP",
                "issuer": idp.issuer,
                "client_id": "portcullis",
                "client_secret_file": "idp.secret",
                "redirect_uri": redirect,
                "end_session_redirect": format!("{base}/"),
            },
            {
                "name": "idp-sub",
                "issuer": idp.issuer,
                "client_id": "portcullis-sub",
                "client_secret_file": "idp-sub.secret",
                "redirect_uri": redirect,
            },
        ]))
        .unwrap();
        let mut problems = Problems::default();
        let oidc = validate_providers(&configs, "oidc", dir.path(), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");

        let (url, pg_db) = support::database(engine, dir.path(), "portcullis_oidc").await;
        let settings = support::settings(
            dir.path(),
            url,
            portcullis_backend::identity::IdentitySettings {
                oidc,
                mfa_required_roles,
                ..Default::default()
            },
        );
        let state = portcullis_backend::open(&settings, None, &prometheus::Registry::new())
            .await
            .unwrap();
        let serving = state.clone();
        tokio::spawn(async move {
            portcullis_backend::serve(listener, serving, std::future::pending())
                .await
                .unwrap();
        });
        Some(App {
            base,
            state,
            idp,
            relayed,
            engine,
            _dir: dir,
            pg_db,
        })
    }

    async fn finish(self) {
        let pg_db = self.pg_db.clone();
        drop(self);
        if let Some(db) = pg_db {
            db.drop().await;
        }
    }

    fn account(&self, name: &str) -> String {
        account(self.engine, name)
    }

    /// `GET /auth/oidc/login`: the provider's authorization URL.
    async fn start_login(&self, b: &Browser, provider: &str, return_to: &str) -> String {
        let r = b
            .get(&format!(
                "{}/auth/oidc/login?provider={provider}&return_to={}",
                self.base,
                form_encode(return_to)
            ))
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let oidc_cookie = set_cookies(&r)
            .into_iter()
            .find(|c| c.starts_with("__Host-portcullis-oidc="))
            .expect("the login sets the binding cookie");
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=600",
        ] {
            assert!(oidc_cookie.contains(attr), "{oidc_cookie} lacks {attr}");
        }
        location(&r)
    }

    /// Plays the user at the provider (signing in as `account` when asked)
    /// until it redirects away; returns that URL.
    async fn at_provider(&self, b: &Browser, url: String, account: &str) -> String {
        self.at_provider_with_amr(b, url, account, None).await
    }

    /// As [`Self::at_provider`], telling the provider how the user
    /// authenticated (`amr`, comma-separated).
    async fn at_provider_with_amr(
        &self,
        b: &Browser,
        mut url: String,
        account: &str,
        amr: Option<&str>,
    ) -> String {
        for _ in 0..10 {
            if !url.starts_with(&self.idp.issuer) {
                return url;
            }
            let r = if Url::parse(&url)
                .unwrap()
                .path()
                .starts_with("/interaction/")
            {
                let mut form = vec![("login", account)];
                if let Some(amr) = amr {
                    form.push(("amr", amr));
                }
                b.post_form(&format!("{url}/login"), &form).await
            } else {
                b.get(&url).await
            };
            assert!(r.status().is_redirection(), "{url}: {}", r.status());
            url = location(&r);
        }
        panic!("the provider kept redirecting");
    }

    /// A full sign-in; returns the backend's answer to the callback.
    async fn sign_in(
        &self,
        b: &Browser,
        provider: &str,
        account: &str,
        return_to: &str,
    ) -> reqwest::Response {
        let auth = self.start_login(b, provider, return_to).await;
        let callback = self.at_provider(b, auth, account).await;
        assert!(callback.starts_with(&self.base), "{callback}");
        b.get(&callback).await
    }

    /// Signs in and returns the session id (from the access cookie).
    async fn signed_in(&self, b: &Browser, provider: &str, account: &str) -> String {
        let r = self.sign_in(b, provider, account, "/").await;
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
        let access = b.cookie(&self.base, "__Host-portcullis-access").unwrap();
        claims_of(&access)["sid"].as_str().unwrap().to_owned()
    }

    /// Ends the provider session of this browser the way a user would:
    /// the end-session page, then its confirmation form.
    async fn logout_at_provider(&self, b: &Browser, url: Option<&str>) -> reqwest::Response {
        let url = url.map_or_else(|| format!("{}/session/end", self.idp.issuer), str::to_owned);
        let r = b.get(&url).await;
        assert_eq!(r.status(), StatusCode::OK);
        let html = r.text().await.unwrap();
        let xsrf = html
            .split("name=\"xsrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no xsrf in {html}"))
            .to_owned();
        let r = b
            .post_form(
                &format!("{}/session/end/confirm", self.idp.issuer),
                &[("xsrf", &xsrf), ("logout", "yes")],
            )
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        r
    }

    async fn employee(&self, account: &str) -> portcullis_backend::model::Employee {
        let (id, _) = store::employee_by_username(&self.state.db, account)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no employee {account}"));
        repo::get_employee(&self.state.db, id).await.unwrap()
    }

    async fn session(&self, sid: &str) -> store::Session {
        store::session(&self.state.db, sid).await.unwrap().unwrap()
    }

    async fn revoked_feed(&self) -> Vec<String> {
        store::revocations_after(&self.state.db, 0, "", 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, sid)| sid)
            .collect()
    }

    /// Posts a logout token as the provider would.
    async fn backchannel(&self, token: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/auth/oidc/backchannel-logout", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("logout_token={}", form_encode(token)))
            .send()
            .await
            .unwrap()
    }

    fn delivered(&self) -> Vec<Delivered> {
        self.relayed.lock().unwrap().clone()
    }

    /// Code flow run by the test itself as `client_id` (PKCE, its own
    /// verifier): the token response.
    async fn tokens_as(
        &self,
        b: &Browser,
        client_id: &str,
        secret: &str,
        redirect_uri: &str,
        account: &str,
        nonce: &str,
    ) -> Value {
        let verifier = format!("{}{}", unique(), "v".repeat(43));
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let auth = format!(
            "{}/auth?client_id={client_id}&response_type=code&scope=openid&redirect_uri={}&state=s&nonce={nonce}&code_challenge={challenge}&code_challenge_method=S256",
            self.idp.issuer,
            form_encode(redirect_uri)
        );
        let back = self.at_provider(b, auth, account).await;
        let code = query_param(&back, "code").unwrap_or_else(|| panic!("no code in {back}"));
        let r = self
            .token_request(client_id, secret, redirect_uri, &code, Some(&verifier))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    async fn token_request(
        &self,
        client_id: &str,
        secret: &str,
        redirect_uri: &str,
        code: &str,
        verifier: Option<&str>,
    ) -> reqwest::Response {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier", v));
        }
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect();
        reqwest::Client::new()
            .post(format!("{}/token", self.idp.issuer))
            .basic_auth(client_id, Some(secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.join("&"))
            .send()
            .await
            .unwrap()
    }
}

// ------------------------------------------------------------------ tests

async fn sign_in_creates_the_user_and_resyncs_roles_at_every_login(engine: Engine) {
    let Some(app) = App::start(engine).await else {
        return;
    };
    let alice = app.account("alice");
    let b = Browser::new();
    // A return path with markup in it: it must come back as a path, not markup.
    let r = app
        .sign_in(&b, "idp", &alice, "/tickets?view=mine&q=\"><b>")
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let cookies = set_cookies(&r);
    for name in [
        "__Host-portcullis-access=",
        "__Host-portcullis-refresh=",
        "__Host-portcullis-csrf=",
    ] {
        let c = cookies
            .iter()
            .find(|c| c.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {cookies:?}"));
        assert!(c.contains("Secure") && c.contains("SameSite=Strict"), "{c}");
    }
    // The binding cookie is spent.
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Host-portcullis-oidc=;") && c.contains("Max-Age=0")),
        "{cookies:?}"
    );
    // The page moves on to the return path by itself (a same-site navigation,
    // which carries the Strict cookies), without script.
    let page = r.text().await.unwrap();
    let escaped = "/tickets?view=mine&amp;q=&quot;&gt;&lt;b&gt;";
    assert!(
        page.contains(&format!(
            "<meta http-equiv=\"refresh\" content=\"0;url={escaped}\">"
        )),
        "{page}"
    );
    assert!(page.contains(&format!("<a href=\"{escaped}\">")), "{page}");
    assert!(!page.contains("<b>") && !page.contains("<script"), "{page}");
    let access = b.cookie(&app.base, "__Host-portcullis-access").unwrap();
    let claims = claims_of(&access);
    assert_eq!(claims["roles"], json!(["employee", "technician"]));
    assert_eq!(claims["amr"], json!(["ext"]));
    // The username comes lower-cased from preferred_username.
    assert_eq!(claims["preferred_username"], json!(alice));
    let first_sid = claims["sid"].as_str().unwrap().to_owned();

    let e = app.employee(&alice).await;
    assert!(e.is_oidc);
    assert_eq!(e.email, format!("{alice}@example.org"));
    assert_eq!(e.display_name, "Alice Example");
    use portcullis_backend::model::Role;
    assert_eq!(e.roles, vec![Role::Employee, Role::Technician]);
    let session = app.session(&first_sid).await;
    assert_eq!(session.auth_method, "oidc");
    assert_eq!(session.oidc_provider.as_deref(), Some("idp"));
    assert!(session.oidc_sid.is_some(), "the provider's sid is kept");
    let provisioned = app
        .audit(1, |e| {
            e["event.action"] == "user.provision"
                && e["portcullis.details"]["username"] == json!(alice)
        })
        .await;
    assert_eq!(
        provisioned[0]["portcullis.details"]["roles"],
        json!(["employee", "technician"])
    );
    app.audit(1, |e| {
        e["event.action"] == "login" && e["portcullis.session.id"] == json!(first_sid)
    })
    .await;

    // The groups change at the provider: the next sign-in follows them.
    app.idp
        .set_groups(&alice, &["MAINT-TECHNICIAN", "MAINT-ADMIN"]);
    let second_sid = app.signed_in(&b, "idp", &alice).await;
    let access = b.cookie(&app.base, "__Host-portcullis-access").unwrap();
    assert_eq!(
        claims_of(&access)["roles"],
        json!(["technician", "administrator"])
    );
    let e = app.employee(&alice).await;
    assert_eq!(e.roles, vec![Role::Technician, Role::Administrator]);
    assert_eq!(e.id, app.employee(&alice).await.id, "the same employee");
    let is_sync = |e: &Value| {
        e["event.action"] == "user.roles_sync"
            && e["portcullis.details"]["username"] == json!(alice)
    };
    let synced = app.audit(1, is_sync).await;
    assert_eq!(synced.len(), 1, "{synced:?}");
    assert_eq!(
        synced[0]["portcullis.details"]["removed"],
        json!(["employee"])
    );
    assert_eq!(
        synced[0]["portcullis.details"]["added"],
        json!(["administrator"])
    );
    // Sessions holding the old roles end.
    let old = app.session(&first_sid).await;
    assert_eq!(old.revoked_reason.as_deref(), Some("role_change"));
    assert!(app.revoked_feed().await.contains(&first_sid));
    assert!(app.session(&second_sid).await.revoked_at.is_none());

    // Same groups again: nothing to synchronise, nothing ended.
    let third_sid = app.signed_in(&b, "idp", &alice).await;
    assert!(app.session(&second_sid).await.revoked_at.is_none());
    // Once the third sign-in's event is in, nothing else was synchronised before it.
    app.audit(1, |e| {
        e["event.action"] == "login" && e["portcullis.session.id"] == json!(third_sid)
    })
    .await;
    assert_eq!(app.audit(0, is_sync).await.len(), 1);

    // No mapped group left: refused, and the account keeps no role or session.
    app.idp.set_groups(&alice, &["CANTEEN-USERS"]);
    let r = app.sign_in(&b, "idp", &alice, "/").await;
    problem(r, StatusCode::FORBIDDEN, "oidc-no-role").await;
    assert!(app.employee(&alice).await.roles.is_empty());
    assert!(app.session(&third_sid).await.revoked_at.is_some());

    // Someone whose groups never mapped is not even created.
    let carol = app.account("carol");
    let r = app.sign_in(&Browser::new(), "idp", &carol, "/").await;
    problem(r, StatusCode::FORBIDDEN, "oidc-no-role").await;
    assert!(
        store::employee_by_username(&app.state.db, &carol)
            .await
            .unwrap()
            .is_none()
    );
    app.finish().await;
}

async fn state_must_match_the_pending_login_and_this_browser(engine: Engine) {
    let Some(app) = App::start(engine).await else {
        return;
    };
    let alice = app.account("alice");
    let b = Browser::new();
    let auth = app.start_login(&b, "idp", "/").await;
    let callback = app.at_provider(&b, auth, &alice).await;
    let binding = b.cookie(&app.base, "__Host-portcullis-oidc").unwrap();

    // A state nobody issued.
    let forged = with_param(&callback, "state", Some("forged-state"));
    let r = b.get(&forged).await;
    problem(r, StatusCode::BAD_REQUEST, "oidc-invalid-state").await;
    // No state at all.
    let r = b.get(&with_param(&callback, "state", None)).await;
    problem(r, StatusCode::BAD_REQUEST, "oidc-invalid-state").await;
    // The right state in another browser (no binding cookie, or another one):
    // a login-CSRF attempt.
    let other = Browser::new();
    let r = other.get(&callback).await;
    problem(r, StatusCode::BAD_REQUEST, "oidc-invalid-state").await;
    other.set_cookie(&app.base, "__Host-portcullis-oidc", "someone-elses-cookie");
    let r = other.get(&callback).await;
    problem(r, StatusCode::BAD_REQUEST, "oidc-invalid-state").await;

    // None of that spent the genuine sign-in.
    assert_eq!(
        b.cookie(&app.base, "__Host-portcullis-oidc").as_deref(),
        Some(binding.as_str())
    );
    let r = b.get(&callback).await;
    assert_eq!(r.status(), StatusCode::OK);
    app.finish().await;
}

async fn a_pending_login_and_its_nonce_are_single_use(engine: Engine) {
    let Some(app) = App::start(engine).await else {
        return;
    };
    let alice = app.account("alice");
    let b = Browser::new();
    let auth = app.start_login(&b, "idp", "/").await;
    let state = query_param(&auth, "state").unwrap();
    let nonce = query_param(&auth, "nonce").unwrap();
    let callback = app.at_provider(&b, auth, &alice).await;
    let binding = b.cookie(&app.base, "__Host-portcullis-oidc").unwrap();
    let r = b.get(&callback).await;
    assert_eq!(r.status(), StatusCode::OK);

    // Replaying the callback (same state, same cookie, same code → same nonce).
    b.set_cookie(&app.base, "__Host-portcullis-oidc", &binding);
    let r = b.get(&callback).await;
    problem(r, StatusCode::BAD_REQUEST, "oidc-invalid-state").await;

    // What is stored: hashes only, the login marked used.
    use sqlx::Row as _;
    let row = sqlx::query(
        "select browser_hash, nonce_hash, used_at from oidc_logins where state_hash = $1",
    )
    .bind(sha256_hex(&state))
    .fetch_one(app.state.db.pool())
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>(0), sha256_hex(&binding));
    assert_eq!(row.get::<String, _>(1), sha256_hex(&nonce));
    assert!(row.get::<Option<String>, _>(2).is_some());
    // The nonce is remembered as used.
    let used: i64 =
        sqlx::query("select count(*) from oidc_replay where kind = 'nonce' and value_hash = $1")
            .bind(sha256_hex(&nonce))
            .fetch_one(app.state.db.pool())
            .await
            .unwrap()
            .get(0);
    assert_eq!(used, 1);

    // A nonce is accepted once, even with a pending login that expects it:
    // a new sign-in whose request (and stored hash) carry the old nonce gets
    // a valid ID token with that nonce, and is refused as a replay.
    let auth = app.start_login(&b, "idp", "/").await;
    let state2 = query_param(&auth, "state").unwrap();
    let auth = with_param(&auth, "nonce", Some(&nonce));
    sqlx::query("update oidc_logins set nonce_hash = $1 where state_hash = $2")
        .bind(sha256_hex(&nonce))
        .bind(sha256_hex(&state2))
        .execute(app.state.db.pool())
        .await
        .unwrap();
    let callback2 = app.at_provider(&b, auth, &alice).await;
    let r = b.get(&callback2).await;
    problem(r, StatusCode::UNAUTHORIZED, "oidc-replay").await;

    // An ID token whose nonce is not the pending login's is refused.
    let auth = app.start_login(&b, "idp", "/").await;
    let auth = with_param(&auth, "nonce", Some("a-nonce-this-backend-never-issued"));
    let callback3 = app.at_provider(&b, auth, &alice).await;
    let r = b.get(&callback3).await;
    problem(r, StatusCode::UNAUTHORIZED, "oidc-invalid-id-token").await;

    // An expired pending login is refused too.
    let auth = app.start_login(&b, "idp", "/").await;
    let state4 = query_param(&auth, "state").unwrap();
    let callback4 = app.at_provider(&b, auth, &alice).await;
    sqlx::query("update oidc_logins set expires_at = $1 where state_hash = $2")
        .bind("2000-01-01T00:00:00.000000Z")
        .bind(sha256_hex(&state4))
        .execute(app.state.db.pool())
        .await
        .unwrap();
    let r = b.get(&callback4).await;
    problem(r, StatusCode::BAD_REQUEST, "oidc-invalid-state").await;
    app.finish().await;
}

async fn pkce_is_always_sent_and_the_provider_requires_it(engine: Engine) {
    let Some(app) = App::start(engine).await else {
        return;
    };
    let alice = app.account("alice");
    let redirect = format!("{}/auth/oidc/callback", app.base);
    let b = Browser::new();
    let auth = app.start_login(&b, "idp", "/").await;
    assert!(
        auth.starts_with(&format!("{}/auth?", app.idp.issuer)),
        "{auth}"
    );
    assert_eq!(
        query_param(&auth, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(query_param(&auth, "code_challenge").unwrap().len(), 43);
    assert_eq!(query_param(&auth, "response_type").as_deref(), Some("code"));
    assert_eq!(
        query_param(&auth, "client_id").as_deref(),
        Some("portcullis")
    );
    assert_eq!(query_param(&auth, "redirect_uri"), Some(redirect.clone()));
    let scope = query_param(&auth, "scope").unwrap();
    for s in ["openid", "email", "profile", "groups"] {
        assert!(scope.split(' ').any(|x| x == s), "{scope}");
    }
    assert!(query_param(&auth, "state").unwrap().len() >= 43);
    assert!(query_param(&auth, "nonce").unwrap().len() >= 43);

    // The provider is set to refuse an authorization request without PKCE.
    let bare = with_param(
        &with_param(&auth, "code_challenge", None),
        "code_challenge_method",
        None,
    );
    let r = Browser::new().get(&bare).await;
    let refused = location(&r);
    assert_eq!(
        query_param(&refused, "error").as_deref(),
        Some("invalid_request"),
        "{refused}"
    );

    // With a code in hand, neither a missing nor a wrong verifier gets tokens…
    let callback = app.at_provider(&b, auth, &alice).await;
    let code = query_param(&callback, "code").unwrap();
    for verifier in [None, Some("a".repeat(43))] {
        let r = app
            .token_request("portcullis", SECRET, &redirect, &code, verifier.as_deref())
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant", "{body}");
    }
    // …while the backend, which sends its verifier, signs in with that code.
    let r = b.get(&callback).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());

    // The verifier is derived from the browser's binding cookie: with another
    // cookie (its hash planted in the pending login) the backend sends a
    // wrong verifier, and the provider refuses the code.
    let b2 = Browser::new();
    let auth = app.start_login(&b2, "idp", "/").await;
    let state = query_param(&auth, "state").unwrap();
    let callback = app.at_provider(&b2, auth, &alice).await;
    sqlx::query("update oidc_logins set browser_hash = $1 where state_hash = $2")
        .bind(sha256_hex("tampered-binding"))
        .bind(sha256_hex(&state))
        .execute(app.state.db.pool())
        .await
        .unwrap();
    b2.set_cookie(&app.base, "__Host-portcullis-oidc", "tampered-binding");
    let r = b2.get(&callback).await;
    problem(r, StatusCode::UNAUTHORIZED, "oidc-code-rejected").await;
    app.finish().await;
}

async fn tokens_for_another_audience_are_refused(engine: Engine) {
    let Some(app) = App::start(engine).await else {
        return;
    };
    let alice = app.account("alice");
    let providers = &app.state.identity.oidc;
    let b = Browser::new();

    // An ID token the provider issued to another client.
    let nonce = format!("n{}", unique());
    let foreign = app
        .tokens_as(
            &b,
            "other-app",
            OTHER_SECRET,
            OTHER_REDIRECT,
            &alice,
            &nonce,
        )
        .await;
    let foreign_id_token = foreign["id_token"].as_str().unwrap();
    assert_eq!(claims_of(foreign_id_token)["aud"], "other-app");
    match providers
        .verify_id_token("idp", foreign_id_token, &nonce)
        .await
    {
        Err(OidcError::InvalidIdToken(reason)) => {
            assert!(reason.to_lowercase().contains("audience"), "{reason}");
        }
        other => panic!("accepted a token for another audience: {other:?}"),
    }
    // Control: one issued to this backend's client passes the same check,
    // and fails with another nonce.
    let nonce = format!("n{}", unique());
    let own = app
        .tokens_as(
            &b,
            "portcullis",
            SECRET,
            &format!("{}/auth/oidc/callback", app.base),
            &alice,
            &nonce,
        )
        .await;
    let own_id_token = own["id_token"].as_str().unwrap();
    let claims = providers
        .verify_id_token("idp", own_id_token, &nonce)
        .await
        .unwrap();
    assert_eq!(claims["sub"], json!(alice));
    assert!(matches!(
        providers
            .verify_id_token("idp", own_id_token, "another-nonce")
            .await,
        Err(OidcError::InvalidIdToken(_))
    ));
    // The other provider entry (client portcullis-sub, same issuer) refuses it.
    assert!(matches!(
        providers
            .verify_id_token("idp-sub", own_id_token, &nonce)
            .await,
        Err(OidcError::InvalidIdToken(_))
    ));
    // An ID token is no logout token.
    let r = app.backchannel(own_id_token).await;
    problem(r, StatusCode::BAD_REQUEST, "oidc-invalid-logout-token").await;

    // Logout tokens: ending this provider session sends one to each client;
    // the other client's (captured on its way) is refused here.
    app.logout_at_provider(&b, None).await;
    let delivered = app.delivered();
    let foreign_logout = delivered
        .iter()
        .find(|d| d.route == "capture")
        .expect("a logout token for the other client");
    assert_eq!(claims_of(&foreign_logout.logout_token)["aud"], "other-app");
    let r = app.backchannel(&foreign_logout.logout_token).await;
    let body = problem(r, StatusCode::BAD_REQUEST, "oidc-invalid-logout-token").await;
    assert!(
        body["detail"].as_str().unwrap().contains("audience"),
        "{body}"
    );
    // This backend's own logout token was accepted (200) when relayed.
    assert!(
        delivered
            .iter()
            .any(|d| d.route == "relay" && d.status == Some(200)),
        "{delivered:?}"
    );
    app.finish().await;
}

async fn backchannel_logout_ends_sessions_by_sid_and_by_sub(engine: Engine) {
    let Some(app) = App::start(engine).await else {
        return;
    };
    let alice = app.account("alice");
    // Two browsers, two provider sessions, two backend sessions.
    let b1 = Browser::new();
    let b2 = Browser::new();
    let s1 = app.signed_in(&b1, "idp", &alice).await;
    let s2 = app.signed_in(&b2, "idp", &alice).await;
    assert_ne!(
        app.session(&s1).await.oidc_sid,
        app.session(&s2).await.oidc_sid
    );

    // The user signs out at the provider in the first browser.
    app.logout_at_provider(&b1, None).await;
    let delivered = app.delivered();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].status, Some(200));
    let token = delivered[0].logout_token.clone();
    let header = b64url_json(token.split('.').next().unwrap());
    assert_eq!(header["typ"], "logout+jwt");
    let claims = claims_of(&token);
    assert!(claims.get("nonce").is_none());
    assert_eq!(
        claims["sid"].as_str(),
        app.session(&s1).await.oidc_sid.as_deref()
    );

    let ended = app.session(&s1).await;
    assert_eq!(ended.revoked_reason.as_deref(), Some("backchannel_logout"));
    assert!(app.revoked_feed().await.contains(&s1));
    // Only that provider session's.
    assert!(app.session(&s2).await.revoked_at.is_none());
    assert!(!app.revoked_feed().await.contains(&s2));

    // A logout token is single use (jti).
    let r = app.backchannel(&token).await;
    let body = problem(r, StatusCode::BAD_REQUEST, "oidc-invalid-logout-token").await;
    assert!(body["detail"].as_str().unwrap().contains("jti"), "{body}");
    // A tampered one is refused: claims changed (signature no longer matches)…
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut forged = claims.clone();
    forged["jti"] = json!("another-jti");
    forged["sid"] = app.session(&s2).await.oidc_sid.into();
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    let r = app.backchannel(&parts.join(".")).await;
    problem(r, StatusCode::BAD_REQUEST, "oidc-invalid-logout-token").await;
    // …or unsigned.
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        parts[1]
    );
    let r = app.backchannel(&unsigned).await;
    problem(r, StatusCode::BAD_REQUEST, "oidc-invalid-logout-token").await;
    assert!(app.session(&s2).await.revoked_at.is_none());
    // Garbage and a missing token are 400 too.
    let r = app.backchannel("not-a-jwt").await;
    problem(r, StatusCode::BAD_REQUEST, "oidc-invalid-logout-token").await;
    let r = reqwest::Client::new()
        .post(format!("{}/auth/oidc/backchannel-logout", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("something=else")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::BAD_REQUEST, "oidc-invalid-logout-token").await;

    // A client registered without session ids gets logout tokens with `sub`
    // only: every session of that user through that provider ends.
    let bob = app.account("bob");
    let b3 = Browser::new();
    let b4 = Browser::new();
    let s3 = app.signed_in(&b3, "idp-sub", &bob).await;
    let s4 = app.signed_in(&b4, "idp-sub", &bob).await;
    assert!(app.session(&s3).await.oidc_sid.is_none());
    app.logout_at_provider(&b3, None).await;
    let delivered = app.delivered();
    let sub_only = delivered.last().unwrap();
    assert_eq!(sub_only.status, Some(200));
    let claims = claims_of(&sub_only.logout_token);
    assert_eq!(claims["aud"], "portcullis-sub");
    assert!(claims.get("sid").is_none() && claims["sub"] == json!(bob));
    for sid in [&s3, &s4] {
        assert_eq!(
            app.session(sid).await.revoked_reason.as_deref(),
            Some("backchannel_logout")
        );
        assert!(app.revoked_feed().await.contains(sid));
    }
    // Alice's remaining session is untouched.
    assert!(app.session(&s2).await.revoked_at.is_none());
    app.finish().await;
}

async fn rp_initiated_logout_ends_the_session_and_redirects_to_the_provider(engine: Engine) {
    let Some(app) = App::start(engine).await else {
        return;
    };
    let alice = app.account("alice");
    let b = Browser::new();
    let sid = app.signed_in(&b, "idp", &alice).await;
    let r = b.get(&format!("{}/auth/oidc/logout", app.base)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cleared = set_cookies(&r);
    for name in [
        "__Host-portcullis-access=",
        "__Host-portcullis-refresh=",
        "__Host-portcullis-csrf=",
    ] {
        assert!(
            cleared
                .iter()
                .any(|c| c.starts_with(name) && c.contains("Max-Age=0")),
            "{cleared:?}"
        );
    }
    let target = location(&r);
    assert!(
        target.starts_with(&format!("{}/session/end?", app.idp.issuer)),
        "{target}"
    );
    assert_eq!(
        query_param(&target, "client_id").as_deref(),
        Some("portcullis")
    );
    assert_eq!(
        query_param(&target, "post_logout_redirect_uri"),
        Some(format!("{}/", app.base))
    );
    let ended = app.session(&sid).await;
    assert_eq!(ended.revoked_reason.as_deref(), Some("logout"));
    assert!(app.revoked_feed().await.contains(&sid));

    // The provider confirms and sends the browser back here.
    let r = app.logout_at_provider(&b, Some(&target)).await;
    assert_eq!(location(&r), format!("{}/", app.base));

    // Without a session: just home.
    let r = Browser::new()
        .get(&format!("{}/auth/oidc/logout", app.base))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), format!("{}/", app.base));
    app.finish().await;
}

async fn bad_sign_in_requests_get_problems(engine: Engine) {
    let Some(app) = App::start(engine).await else {
        return;
    };
    let b = Browser::new();
    // Open-redirect attempts.
    for bad in [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "/ok\r\nSet-Cookie: x=1",
        "evil",
    ] {
        let r = b
            .get(&format!(
                "{}/auth/oidc/login?provider=idp&return_to={}",
                app.base,
                form_encode(bad)
            ))
            .await;
        problem(r, StatusCode::BAD_REQUEST, "oidc-invalid-return-to").await;
    }
    let r = b
        .get(&format!("{}/auth/oidc/login?provider=nope", app.base))
        .await;
    problem(r, StatusCode::BAD_REQUEST, "oidc-unknown-provider").await;
    // Two providers: one must be named.
    let r = b.get(&format!("{}/auth/oidc/login", app.base)).await;
    problem(r, StatusCode::BAD_REQUEST, "oidc-unknown-provider").await;
    // The sign-in page names them (the display name, else the name).
    let r = b.get(&format!("{}/auth/oidc/providers", app.base)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"providers": [
            {"name": "idp", "display_name": "Example IdP"},
            {"name": "idp-sub", "display_name": "idp-sub"},
        ]})
    );
    let r = b
        .get(&format!(
            "{}/auth/oidc/login?provider=idp&extra=1",
            app.base
        ))
        .await;
    problem(r, StatusCode::BAD_REQUEST, "bad-request").await;

    // The provider refuses the user (unknown account): the callback says so,
    // and the pending login is spent.
    let auth = app.start_login(&b, "idp", "/").await;
    let binding = b.cookie(&app.base, "__Host-portcullis-oidc").unwrap();
    let callback = app.at_provider(&b, auth, "nobody").await;
    assert_eq!(
        query_param(&callback, "error").as_deref(),
        Some("access_denied")
    );
    let r = b.get(&callback).await;
    problem(r, StatusCode::UNAUTHORIZED, "oidc-sign-in-refused").await;
    b.set_cookie(&app.base, "__Host-portcullis-oidc", &binding);
    let r = b.get(&callback).await;
    problem(r, StatusCode::BAD_REQUEST, "oidc-invalid-state").await;

    // A response naming another issuer (RFC 9207 mix-up defence).
    let alice = app.account("alice");
    let auth = app.start_login(&b, "idp", "/").await;
    let callback = app.at_provider(&b, auth, &alice).await;
    assert_eq!(query_param(&callback, "iss"), Some(app.idp.issuer.clone()));
    let r = b
        .get(&with_param(
            &callback,
            "iss",
            Some("https://attacker.example"),
        ))
        .await;
    problem(r, StatusCode::BAD_REQUEST, "oidc-issuer-mismatch").await;

    // A password account of the same name is never taken over.
    repo::create_employee(
        &app.state.db,
        &portcullis_backend::model::NewEmployee {
            username: app.account("bob"),
            email: "local-bob@example.org".into(),
            display_name: "Local Bob".into(),
            department_id: None,
            roles: vec![portcullis_backend::model::Role::Administrator],
        },
        false,
    )
    .await
    .unwrap();
    let r = app
        .sign_in(&Browser::new(), "idp", &app.account("bob"), "/")
        .await;
    problem(r, StatusCode::CONFLICT, "oidc-account-conflict").await;
    app.finish().await;
}

// ------------------------------------------------------------------ config

#[test]
fn provider_configuration_is_validated_with_paths() {
    let config: BackendConfig = serde_json::from_value(json!({
        "identity": {
            "oidc": [
                {
                    "name": "azure",
                    "issuer": "https://login.microsoftonline.com/tenant/v2.0",
                    "client_id": "c1",
                    "client_secret_file": "azure.secret",
                    "redirect_uri": "https://portcullis.example.org/auth/oidc/callback",
                    "scopes": [],
                },
                {
                    "name": "Okta!",
                    "display_name": "Okta\u{0007}",
                    "issuer": "http://okta.example.com",
                    "client_id": "",
                    "client_secret_file": "okta.secret",
                    "redirect_uri": "https://portcullis.example.org/elsewhere",
                    "scopes": ["groups", "bad scope"],
                    "role_mapping": {"Admins": "superuser"},
                    "end_session_redirect": "ftp://x",
                },
                {
                    "name": "azure",
                    "issuer": "https://login.microsoftonline.com/tenant/v2.0",
                    "client_id": "c2",
                    "client_secret_file": "/etc/secret",
                    "redirect_uri": "https://portcullis.example.org/auth/oidc/callback",
                },
            ]
        }
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shared = SharedConfig::default().validate(
        "shared",
        Path::new("/srv/portcullis"),
        dir.path(),
        &mut Problems::default(),
    );
    let problems = config
        .validate("backend", Path::new("/srv/portcullis"), dir.path(), &shared)
        .err()
        .unwrap()
        .into_lines();
    let expected = [
        "backend.identity.oidc[1].name:",
        "backend.identity.oidc[1].display_name: use 1 to 64 printable characters",
        "backend.identity.oidc[1].issuer: use an https URL",
        "backend.identity.oidc[1].client_id: must not be empty",
        "backend.identity.oidc[1].redirect_uri: its path must end in /auth/oidc/callback",
        "backend.identity.oidc[1].scopes[1]: `bad scope` is not a scope token",
        "backend.identity.oidc[1].role_mapping.Admins: unknown role `superuser`",
        "backend.identity.oidc[1].end_session_redirect:",
        "backend.identity.oidc[2].name: `azure` is used by another provider",
    ];
    for e in expected {
        assert!(
            problems.iter().any(|p| p.starts_with(e)),
            "missing `{e}` in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    assert!(
        !problems.iter().any(|p| p.contains("oidc[0]")),
        "{problems:#?}"
    );

    // Defaults, and a relative secret file resolved against the config's folder.
    let ok: Vec<OidcProviderConfig> = serde_json::from_value(json!([{
        "name": "okta",
        "issuer": "https://example.okta.com/oauth2/default",
        "client_id": "c",
        "client_secret_file": "secrets/okta",
        "redirect_uri": "https://portcullis.example.org/auth/oidc/callback",
    }]))
    .unwrap();
    let mut problems = Problems::default();
    let settings = validate_providers(&ok, "oidc", Path::new("/srv/p"), &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    let s = &settings[0];
    assert_eq!(s.client_secret_file, Path::new("/srv/p/secrets/okta"));
    assert_eq!(s.scopes, vec!["groups".to_owned()]);
    assert_eq!(s.groups_claim, "groups");
    assert_eq!(s.username_claim, "preferred_username");
    use portcullis_backend::model::Role;
    assert_eq!(s.role_mapping.get("MAINT-HOD"), Some(&Role::DepartmentHead));
    assert_eq!(
        s.role_mapping.get("MAINT-DEVELOPER"),
        Some(&Role::Developer)
    );
    assert_eq!(s.role_mapping.len(), 5);

    // Unknown keys are refused at parse time.
    let err = serde_json::from_value::<OidcProviderConfig>(json!({
        "name": "x", "issuer": "https://x", "client_id": "c",
        "client_secret_file": "f", "redirect_uri": "https://x/auth/oidc/callback",
        "client_secret": "inline secrets are not accepted",
    }))
    .unwrap_err();
    assert!(err.to_string().contains("client_secret"), "{err}");
}

#[test]
fn return_to_must_be_a_local_path() {
    use portcullis_backend::identity::oidc::local_path;
    for ok in [
        "/",
        "/tickets",
        "/tickets?id=TCK-2026-000001&x=%2F%2F",
        "/a/b#frag",
    ] {
        assert_eq!(local_path(ok), Some(ok));
    }
    for bad in [
        "",
        "tickets",
        "//evil",
        "///evil",
        "/\\evil",
        "\\\\evil",
        "https://evil",
        "/a b",
        "/\u{e9}",
        "/a\nb",
        "/\t/evil",
    ] {
        assert_eq!(local_path(bad), None, "{bad:?}");
    }
}

/// `mfa_required_roles` with single sign-on: the provider's word counts. A
/// sign-in whose ID token's `amr` lists `mfa` holds the role; one without
/// does not, in the token and in the session record alike.
async fn a_role_that_needs_mfa_follows_the_providers_amr(engine: Engine) {
    let Some(app) =
        App::start_with(engine, vec![portcullis_backend::model::Role::Technician]).await
    else {
        return;
    };
    let alice = app.account("alice");
    for (amr, roles, token_amr, mfa) in [
        (None, json!(["employee"]), json!(["ext"]), false),
        (
            Some("pwd,mfa"),
            json!(["employee", "technician"]),
            json!(["ext", "mfa"]),
            true,
        ),
    ] {
        let b = Browser::new();
        let auth = app.start_login(&b, "idp", "/").await;
        let callback = app.at_provider_with_amr(&b, auth, &alice, amr).await;
        let r = b.get(&callback).await;
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
        let claims = claims_of(&b.cookie(&app.base, "__Host-portcullis-access").unwrap());
        assert_eq!(claims["roles"], roles, "amr {amr:?}");
        assert_eq!(claims["amr"], token_amr, "amr {amr:?}");
        let session = app.session(claims["sid"].as_str().unwrap()).await;
        assert_eq!(session.mfa, mfa, "amr {amr:?}");
    }
    app.finish().await;
}

on_both_engines!(
    sign_in_creates_the_user_and_resyncs_roles_at_every_login,
    a_role_that_needs_mfa_follows_the_providers_amr,
    state_must_match_the_pending_login_and_this_browser,
    a_pending_login_and_its_nonce_are_single_use,
    pkce_is_always_sent_and_the_provider_requires_it,
    tokens_for_another_audience_are_refused,
    backchannel_logout_ends_sessions_by_sid_and_by_sub,
    rp_initiated_logout_ends_the_session_and_redirects_to_the_provider,
    bad_sign_in_requests_get_problems,
);
