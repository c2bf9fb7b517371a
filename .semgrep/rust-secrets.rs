// Test cases for rust-secrets.yaml (`semgrep --test .semgrep`). Not compiled.

// ruleid: portcullis.rust.hardcoded-credential
const ADMIN_PASSWORD: &str = "Sup3r-S3cret!2024";
// ruleid: portcullis.rust.hardcoded-credential
static HEC_TOKEN: &str = "7f3c2a90e1b54d6f8a1c0b9e2d4f6a8c";
// ok: portcullis.rust.hardcoded-credential
pub const PASSWORD: &str = "pwd";
// ok: portcullis.rust.hardcoded-credential
const CSRF_TOKEN: &str = "x-csrf-token";
// ok: portcullis.rust.hardcoded-credential
const SESSION_TOKEN: &str = "__Host-portcullis-session";
// ok: portcullis.rust.hardcoded-credential
const TOKEN_FILE: &str = "/etc/portcullis/token";

fn login() {
    // ruleid: portcullis.rust.hardcoded-credential
    let db_password = "hunter2hunter2";
    // ruleid: portcullis.rust.hardcoded-credential
    let api_key: String = "AbCdEf0123456789".to_string();
    // ruleid: portcullis.rust.hardcoded-credential-field
    let c = Credentials { user: "admin".into(), password: "correct-horse-Battery9".into() };
    // ok: portcullis.rust.hardcoded-credential
    let password = read_secret_file(&settings.database_password_file)?;
    // ok: portcullis.rust.hardcoded-credential
    let token = format!("{prefix}.{rest}");
    // ok: portcullis.rust.hardcoded-credential-field
    let h = Header { token: "x-csrf-token", path: "/auth/refresh" };
    // ok: portcullis.rust.hardcoded-credential-field
    let c = Credentials { user: "admin".into(), password: secret.clone() };
    // ruleid: portcullis.rust.hardcoded-key-material
    let key = EncodingKey::from_secret(b"my-very-secret-hmac-key");
    // ruleid: portcullis.rust.hardcoded-key-material
    let mac = HmacSha256::new_from_slice(b"0123456789abcdef0123456789abcdef");
    // ok: portcullis.rust.hardcoded-key-material
    let mac = HmacSha256::new_from_slice(&key_bytes);
}

#[cfg(test)]
mod tests {
    fn rfc6238() {
        // ok: portcullis.rust.hardcoded-credential
        let secret = "12345678901234567890";
        // ok: portcullis.rust.hardcoded-key-material
        let sealer = SecretSealer::new_from_slice(&[7; 32]);
    }
}
