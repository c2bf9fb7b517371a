//! Unverified parsing of a compact JWS: its three parts, the protected header
//! and the claims. Nothing here trusts the token; it only decides whether the
//! token is well-formed enough to be verified.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::JwtError;
use super::settings::JwsAlgorithm;

/// Largest accepted token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Longest accepted `kid`.
pub const MAX_KID_CHARS: usize = 128;

/// Header parameters that would let the token choose its own key or add
/// semantics we do not implement: tokens carrying them are refused outright,
/// and none of them is ever fetched or used.
const FORBIDDEN_HEADERS: [&str; 5] = ["jku", "x5u", "jwk", "crit", "b64"];

/// The three parts of a compact JWS, still encoded.
#[derive(Debug)]
pub(crate) struct Parts<'a> {
    pub header: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
    /// `header.payload`: the bytes the signature covers.
    pub signing_input: &'a str,
}

/// What the verifier uses from the protected header.
#[derive(Debug)]
pub(crate) struct Header {
    pub alg: JwsAlgorithm,
    pub kid: String,
}

/// Splits a token into its parts. Only the base64url alphabet is accepted
/// (no padding, no whitespace); the signature may be empty here so that an
/// unsigned token is reported for its `alg` rather than as malformed.
pub(crate) fn split(token: &str) -> Result<Parts<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Oversized);
    }
    let mut it = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(JwtError::Malformed);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(JwtError::Malformed);
    }
    let alphabet = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !(alphabet(header) && alphabet(payload) && alphabet(signature)) {
        return Err(JwtError::Malformed);
    }
    Ok(Parts {
        header,
        payload,
        signature,
        signing_input: &token[..header.len() + 1 + payload.len()],
    })
}

/// Decodes one base64url part into a JSON object, refusing duplicate
/// members (a parser differential: which `alg` or `sub` would win?).
pub(crate) fn object(part: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice::<StrictObject>(&bytes)
        .map(|o| o.0)
        .map_err(|_| JwtError::Malformed)
}

/// Checks the protected header: a known asymmetric `alg`, no key-carrying or
/// critical parameters, and a plain `kid`.
pub(crate) fn header(part: &str) -> Result<Header, JwtError> {
    let header = object(part)?;
    let Some(Value::String(alg)) = header.get("alg") else {
        return Err(JwtError::Malformed);
    };
    // Every spelling of `none`, every HS*, anything unknown.
    let alg = JwsAlgorithm::from_name(alg).ok_or(JwtError::AlgorithmNotAllowed)?;
    if let Some(name) = FORBIDDEN_HEADERS
        .into_iter()
        .find(|h| header.contains_key(*h))
    {
        return Err(JwtError::ForbiddenHeader(name));
    }
    let kid = match header.get("kid") {
        None | Some(Value::Null) => return Err(JwtError::MissingKid),
        Some(Value::String(kid)) if valid_kid(kid) => kid.clone(),
        Some(_) => return Err(JwtError::BadKid),
    };
    Ok(Header { alg, kid })
}

/// A `kid` is an opaque token: 1..=128 characters of `A-Za-z0-9` and
/// `-_.:=+`, never `..`. Anything that could be a path, URL or injection
/// (`/`, `\`, `%`, quotes, control characters) is refused.
pub(crate) fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID_CHARS
        && !kid.contains("..")
        && kid.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'=' | b'+')
        })
}

/// A JSON object whose top level has no duplicate member names.
struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictObject, A::Error> {
                let mut map = Map::new();
                while let Some((key, value)) = access.next_entry::<String, Value>()? {
                    if map.contains_key(&key) {
                        return Err(A::Error::custom("duplicate member"));
                    }
                    map.insert(key, value);
                }
                Ok(StrictObject(map))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// A NumericDate claim (RFC 7519 §2): a JSON number, fractions truncated.
/// `Err` when present but not a number.
pub(crate) fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, ()> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else {
                match n.as_f64() {
                    // Saturating cast; a date past year 292 billion is no date.
                    Some(f) if f.is_finite() => Ok(Some(f as i64)),
                    _ => Err(()),
                }
            }
        }
        Some(_) => Err(()),
    }
}

/// A claim holding an array of strings, or one string. Anything else, or
/// absence, is an empty list; non-string array members are skipped.
pub(crate) fn string_list(claims: &Map<String, Value>, name: &str) -> Vec<String> {
    match claims.get(name) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn header_of(json: &str) -> Result<Header, JwtError> {
        header(&b64(json))
    }

    #[test]
    fn split_shapes() {
        assert!(split("a.b.c").is_ok());
        assert!(split("a.b.").is_ok());
        for bad in [
            "", "a.b", "a.b.c.d", ".b.c", "a..c", "a.b.c=", "a.b+.c", "a. b.c",
        ] {
            assert!(matches!(split(bad), Err(JwtError::Malformed)), "{bad:?}");
        }
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(split(&big), Err(JwtError::Oversized)));
    }

    #[test]
    fn header_rules() {
        let ok = header_of(r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#).unwrap();
        assert_eq!((ok.alg, ok.kid.as_str()), (JwsAlgorithm::Es256, "k1"));
        for alg in [
            "none", "None", "NONE", "nOnE", "HS256", "es256", "RSA-OAEP", "",
        ] {
            let h = format!(r#"{{"alg":"{alg}","kid":"k1"}}"#);
            assert!(
                matches!(header_of(&h), Err(JwtError::AlgorithmNotAllowed)),
                "{alg}"
            );
        }
        assert!(matches!(
            header_of(r#"{"alg":"ES256"}"#),
            Err(JwtError::MissingKid)
        ));
        for h in [
            r#"{"alg":"ES256","kid":"k1","jku":"https://evil"}"#,
            r#"{"alg":"ES256","kid":"k1","x5u":"https://evil"}"#,
            r#"{"alg":"ES256","kid":"k1","jwk":{}}"#,
            r#"{"alg":"ES256","kid":"k1","crit":["exp"]}"#,
        ] {
            assert!(
                matches!(header_of(h), Err(JwtError::ForbiddenHeader(_))),
                "{h}"
            );
        }
        assert!(matches!(
            header_of(r#"{"alg":"ES256","alg":"none","kid":"k"}"#),
            Err(JwtError::Malformed)
        ));
        assert!(matches!(header_of("[1]"), Err(JwtError::Malformed)));
        assert!(matches!(
            header_of(r#"{"kid":"k"}"#),
            Err(JwtError::Malformed)
        ));
    }

    #[test]
    fn kid_rules() {
        for good in [
            "k1",
            "2026-01-rotation",
            "a.b",
            "abc=",
            "urn:key:1",
            "A+b_c-d",
        ] {
            assert!(valid_kid(good), "{good}");
        }
        let long = "k".repeat(MAX_KID_CHARS + 1);
        for bad in [
            "",
            "../../etc/passwd",
            "..",
            "a/b",
            "a\\b",
            "%2e%2e",
            "k 1",
            "k\n1",
            "k'1",
            long.as_str(),
        ] {
            assert!(!valid_kid(bad), "{bad:?}");
        }
        assert!(matches!(
            header_of(r#"{"alg":"ES256","kid":7}"#),
            Err(JwtError::BadKid)
        ));
    }

    #[test]
    fn numeric_dates_and_lists() {
        let claims: Map<String, Value> =
            serde_json::from_str(r#"{"a":1,"b":1.9,"c":"1","r":["x",1,"y"],"s":"solo","n":null}"#)
                .unwrap();
        assert_eq!(numeric_date(&claims, "a"), Ok(Some(1)));
        assert_eq!(numeric_date(&claims, "b"), Ok(Some(1)));
        assert_eq!(numeric_date(&claims, "c"), Err(()));
        assert_eq!(numeric_date(&claims, "z"), Ok(None));
        assert_eq!(string_list(&claims, "r"), vec!["x", "y"]);
        assert_eq!(string_list(&claims, "s"), vec!["solo"]);
        assert!(string_list(&claims, "n").is_empty());
    }
}
