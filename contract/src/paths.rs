//! Backend endpoints the proxy treats specially, so both sides spell them once.

/// `POST`: password sign-in. The proxy reads the account name from its body for the
/// per-account rate limit.
pub const LOGIN: &str = "/auth/login";
