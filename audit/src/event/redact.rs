//! Redaction: the detail keys that always look secret ([`is_secret_key`]), the configured
//! extra keys ([`Redactor`]), and the [`REDACTED`] value that replaces them.

use std::collections::HashSet;

use serde_json::Value;

/// The value that replaces a redacted detail.
pub const REDACTED: &str = "[redacted]";

/// The configured extra keys to redact (exact match, case-insensitive).
#[derive(Debug, Clone, Default)]
pub(crate) struct Redactor {
    pub(super) keys: HashSet<String>,
}

impl Redactor {
    pub(crate) fn new<'a>(keys: impl IntoIterator<Item = &'a String>) -> Self {
        Self {
            keys: keys.into_iter().map(|k| k.to_lowercase()).collect(),
        }
    }

    pub(super) fn matches(&self, key: &str) -> bool {
        self.keys.contains(&key.to_lowercase())
    }
}

/// Whether a detail key looks like it holds a secret or a request body; such keys are always
/// redacted.
///
/// Matches, case-insensitively and ignoring `_`, `-`, `.` and spaces, any key containing
/// `password`, `passwd`, `passphrase`, `secret`, `token`, `authorization`, `cookie`,
/// `codeverifier`, `apikey`, `privatekey` or `credential`; and keys with a word `otp`, `totp`,
/// `hotp`, `pwd` or `body` (words split at separators and camelCase humps).
pub fn is_secret_key(key: &str) -> bool {
    const FRAGMENTS: [&str; 11] = [
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "authorization",
        "cookie",
        "codeverifier",
        "apikey",
        "privatekey",
        "credential",
    ];
    const WORDS: [&str; 5] = ["otp", "totp", "hotp", "pwd", "body"];
    let squashed: String = key
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    if FRAGMENTS.iter().any(|f| squashed.contains(f)) {
        return true;
    }
    words(key).any(|w| WORDS.contains(&w.as_str()))
}

/// Splits `requestBody`, `request_body`, `x-otp` into lower-case words.
fn words(key: &str) -> impl Iterator<Item = String> + '_ {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out.into_iter()
}

/// `value` with every key `redact` matches (at any depth, `key` included) replaced by
/// [`REDACTED`].
pub(super) fn redact_value(key: &str, value: Value, redact: &dyn Fn(&str) -> bool) -> Value {
    if redact(key) {
        return Value::String(REDACTED.to_owned());
    }
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = redact_value(&k, v, redact);
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| redact_value("", v, redact))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys() {
        for key in [
            "password",
            "newPassword",
            "access_token",
            "refreshToken",
            "client_secret",
            "Authorization",
            "Set-Cookie",
            "otp",
            "totp_code",
            "x-otp",
            "code_verifier",
            "codeVerifier",
            "api_key",
            "request_body",
            "requestBody",
            "body",
        ] {
            assert!(is_secret_key(key), "{key} should be secret");
        }
        for key in [
            "user",
            "footprint",
            "hotplug",
            "route",
            "reason",
            "code",
            "nobody_knows",
        ] {
            assert!(!is_secret_key(key), "{key} should not be secret");
        }
    }
}
