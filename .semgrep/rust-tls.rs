// Test cases for rust-tls.yaml (`semgrep --test .semgrep`). Not compiled.

fn client() -> reqwest::Client {
    // ruleid: portcullis.rust.tls-danger-accept-invalid
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
}

fn client2(insecure: bool) {
    // ruleid: portcullis.rust.tls-danger-accept-invalid
    let b = builder.danger_accept_invalid_hostnames(insecure);
    // ok: portcullis.rust.tls-danger-accept-invalid
    let b = builder.danger_accept_invalid_certs(false);
    // ok: portcullis.rust.tls-danger-accept-invalid
    let b = builder.add_root_certificate(ca);
}

fn rustls_config() {
    // ruleid: portcullis.rust.tls-rustls-dangerous
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify))
        .with_no_client_auth();
    // ok: portcullis.rust.tls-rustls-dangerous
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
}

#[derive(Debug)]
struct NoVerify;
// ruleid: portcullis.rust.tls-rustls-dangerous
impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(&self) -> Result<ServerCertVerified, Error> {
        // ruleid: portcullis.rust.tls-rustls-dangerous
        Ok(ServerCertVerified::assertion())
    }
}

fn peer() {
    let mut peer = HttpPeer::new(addr, true, sni);
    // ruleid: portcullis.rust.tls-verify-disabled
    peer.options.verify_cert = false;
    // ok: portcullis.rust.tls-verify-disabled
    peer.options.verify_cert = true;
    // ruleid: portcullis.rust.tls-verify-disabled
    let opts = PgConnectOptions::new().ssl_mode(PgSslMode::Require);
    // ok: portcullis.rust.tls-verify-disabled
    let opts = PgConnectOptions::new().ssl_mode(PgSslMode::VerifyFull);
}
