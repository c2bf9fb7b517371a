//! The contract between the Portcullis proxy and the ticket backend.
//!
//! Both services depend on this crate and on nothing of each other, so every name,
//! shape and rule they must agree on is written once, here:
//!
//! - [`identity`]: the verified identity the proxy forwards, signed per request with the
//!   shared key, and the service subject the proxy uses for its own calls;
//! - [`headers`]: the header names between the two and the request-id rule;
//! - [`cookies`]: the browser cookie names and the one cookie reader;
//! - [`amr`]: how `amr` values are read (authentication method, second factor);
//! - [`problem`]: the problem `type` URN of every error answer;
//! - [`revocation`]: the revocation feed's wire shape and its Redis pub/sub channel;
//! - [`redis_client`]: how a Redis URL and its password file become a client;
//! - [`audit_ingest`]: where and how the proxy ships its audit events to the backend;
//! - [`paths`]: backend endpoints the proxy treats specially;
//! - [`problems`]: the one shape of configuration problems (`path: message`), which
//!   every section validator (proxy, backend, audit) reports in;
//! - [`shared`]: the settings both services read (policy bundle, identity key,
//!   revocation channel), configured once in the `shared:` section.

pub mod amr;
pub mod audit_ingest;
pub mod cookies;
pub mod headers;
pub mod identity;
pub mod paths;
pub mod problem;
pub mod problems;
pub mod redis_client;
pub mod revocation;
pub mod shared;
