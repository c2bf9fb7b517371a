//! Redis connections from the configuration, one rule for every Redis the services use
//! (shared rate limits, the revocation channel): a `redis://host:port[/db]` URL that
//! names no password, and the password, when the server asks for one (`requirepass` or
//! an ACL user), read from a file (`password_file`, or `credential:NAME`). A password
//! written in the URL is refused by the configuration loader like any inline secret.

use std::path::Path;

use redis::IntoConnectionInfo;

/// Why a Redis client could not be made. No message quotes the URL or the password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedisConfigError {
    #[error("not a valid redis://host:port[/db] URL (TLS, rediss://, is not built in)")]
    Url,
    #[error("cannot read the password file: {0}")]
    PasswordFile(String),
    #[error("the password file is empty")]
    EmptyPassword,
}

/// A client for `url` (not connected yet), authenticating with the password in
/// `password_file` when one is given. The file's trailing newline is not part of the
/// password.
pub fn client(url: &str, password_file: Option<&Path>) -> Result<redis::Client, RedisConfigError> {
    let info = url
        .into_connection_info()
        .map_err(|_| RedisConfigError::Url)?;
    let info = match password_file {
        None => info,
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| RedisConfigError::PasswordFile(format!("{}: {e}", file.display())))?;
            let password = text.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return Err(RedisConfigError::EmptyPassword);
            }
            let settings = info.redis_settings().clone().set_password(password);
            info.set_redis_settings(settings)
        }
    };
    redis::Client::open(info).map_err(|_| RedisConfigError::Url)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn the_password_comes_from_the_file_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("redis.password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let c = client("redis://127.0.0.1:6379/2", Some(&file)).unwrap();
        let info = c.get_connection_info();
        assert_eq!(info.redis_settings().password(), Some("s3cret"));
        assert_eq!(info.redis_settings().db(), 2);
        std::fs::write(&file, "\n").unwrap();
        assert_eq!(
            client("redis://127.0.0.1:6379", Some(&file)).unwrap_err(),
            RedisConfigError::EmptyPassword
        );
        let missing = client("redis://127.0.0.1:6379", Some(&dir.path().join("nope")));
        assert!(matches!(missing, Err(RedisConfigError::PasswordFile(_))));
        assert_eq!(
            client("http://127.0.0.1", None).unwrap_err(),
            RedisConfigError::Url
        );
    }
}
