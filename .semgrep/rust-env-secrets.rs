// Test cases for rust-env-secrets.yaml (`semgrep --test .semgrep`). Not compiled.
fn settings() {
    // ruleid: portcullis.rust.secret-from-environment
    let key = std::env::var("PORTCULLIS_IDENTITY_KEY").unwrap_or_default();
    // ruleid: portcullis.rust.secret-from-environment
    let pw = env::var("DATABASE_PASSWORD")?;
    // ruleid: portcullis.rust.secret-from-environment
    let t = std::env::var_os("SPLUNK_HEC_TOKEN");
    // ruleid: portcullis.rust.secret-from-environment
    const S: &str = env!("OIDC_CLIENT_SECRET");
    // ok: portcullis.rust.secret-from-environment
    let user = std::env::var("USER").unwrap_or_default();
    // ok: portcullis.rust.secret-from-environment
    let ci = std::env::var_os("CI").is_some();
    // ok: portcullis.rust.secret-from-environment
    let v = env!("CARGO_PKG_VERSION");
    // ok: portcullis.rust.secret-from-environment
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY");
    // ruleid: portcullis.rust.secret-from-environment
    let c = std::env::var("CREDENTIALS_TOKEN");
}
