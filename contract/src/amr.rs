//! Reading a token's `amr` (authentication methods references, RFC 8176) the same way
//! on both sides: the proxy for the policy input and audit, the backend for the
//! second-factor rule of `mfa_required_roles`.

/// Set by the backend for a password sign-in.
pub const PASSWORD: &str = "pwd";
/// Set by the backend for our own TOTP or backup code.
pub const ONE_TIME_PASSWORD: &str = "otp";
/// Set by an OpenID provider's multi-factor sign-in.
pub const MULTI_FACTOR: &str = "mfa";
/// Set by the backend for a sign-in at an external (OIDC) provider.
pub const EXTERNAL: &str = "ext";

/// Whether an `amr` list records a second factor: our own TOTP or backup code (`otp`),
/// or a provider's multi-factor sign-in (`mfa`).
#[must_use]
pub fn used_second_factor<S: AsRef<str>>(amr: &[S]) -> bool {
    amr.iter()
        .any(|m| matches!(m.as_ref(), ONE_TIME_PASSWORD | MULTI_FACTOR))
}

/// The sign-in method an `amr` list names: `oidc`, `password`, or `token` when neither.
#[must_use]
pub fn auth_method<S: AsRef<str>>(amr: &[S]) -> &'static str {
    if amr.iter().any(|m| m.as_ref() == EXTERNAL) {
        "oidc"
    } else if amr.iter().any(|m| m.as_ref() == PASSWORD) {
        "password"
    } else {
        "token"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_factor_is_otp_or_mfa_only() {
        assert!(used_second_factor(&["pwd", "otp"]));
        assert!(used_second_factor(&["ext", "mfa"]));
        assert!(!used_second_factor(&["pwd"]));
        assert!(!used_second_factor::<&str>(&[]));
    }

    #[test]
    fn external_wins_over_password() {
        assert_eq!(auth_method(&["ext", "pwd"]), "oidc");
        assert_eq!(auth_method(&["pwd", "otp"]), "password");
        assert_eq!(auth_method::<&str>(&[]), "token");
    }
}
