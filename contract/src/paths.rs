//! Backend endpoints the proxy treats specially, so both sides spell them once.

/// `POST`: password sign-in. The proxy reads the account name from its body for the
/// per-account rate limit.
pub const LOGIN: &str = "/auth/login";

/// `GET`: ends the local session and sends the browser to the OIDC provider's logout. A
/// navigation, so the proxy checks where it came from (Fetch Metadata) before it passes.
pub const OIDC_LOGOUT: &str = "/auth/oidc/logout";
