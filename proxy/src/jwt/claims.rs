//! The time, issuer, audience and subject claims of a token (step 6 of the
//! module documentation).

use serde_json::{Map, Value};

use super::{IssuerSettings, JwtError, parse};

/// Checks the time, issuer, audience and subject claims; returns `exp`.
pub(super) fn check_claims(
    settings: &IssuerSettings,
    claims: &Map<String, Value>,
    now: i64,
    exact_issuer: bool,
) -> Result<i64, JwtError> {
    let leeway = settings.leeway_seconds;
    let date = |name| parse::numeric_date(claims, name).map_err(|()| JwtError::Malformed);
    let exp = date("exp")?.ok_or(JwtError::MissingClaim("exp"))?;
    if now >= exp.saturating_add(leeway) {
        return Err(JwtError::Expired);
    }
    let future = |t: i64| t > now.saturating_add(leeway);
    if date("nbf")?.is_some_and(future) || date("iat")?.is_some_and(future) {
        return Err(JwtError::NotYetValid);
    }
    if !exact_issuer {
        return Err(JwtError::WrongIssuer);
    }
    let audiences = parse::string_list(claims, "aud");
    if !audiences.iter().any(|a| settings.audiences.contains(a)) {
        return Err(JwtError::WrongAudience);
    }
    match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if !sub.is_empty() => Ok(exp),
        _ => Err(JwtError::MissingClaim("sub")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::IssuerConfig;
    use super::*;

    fn settings() -> IssuerSettings {
        let mut c = IssuerConfig::with_jwks_url(
            "https://idp.example",
            "sso",
            vec!["portcullis".into()],
            "https://idp.example/jwks",
        );
        c.leeway_seconds = 10;
        IssuerSettings::try_new(&c).unwrap()
    }

    fn claims(json: Value) -> Map<String, Value> {
        match json {
            Value::Object(m) => m,
            _ => panic!("object"),
        }
    }

    #[test]
    fn claim_rules() {
        let s = settings();
        let base = serde_json::json!({"sub":"u1","aud":"portcullis","exp":1000});
        let check = |v: Value, now| check_claims(&s, &claims(v), now, true);
        assert_eq!(check(base.clone(), 500), Ok(1000));
        assert_eq!(check(base.clone(), 1009), Ok(1000), "within leeway");
        assert_eq!(check(base.clone(), 1010), Err(JwtError::Expired));
        let mut v = base.clone();
        v["nbf"] = 600.into();
        assert_eq!(check(v.clone(), 589), Err(JwtError::NotYetValid));
        assert_eq!(check(v, 590), Ok(1000));
        let mut v = base.clone();
        v["iat"] = 700.into();
        assert_eq!(check(v, 500), Err(JwtError::NotYetValid));
        let mut v = base.clone();
        v["aud"] = serde_json::json!(["other", "portcullis"]);
        assert_eq!(check(v.clone(), 500), Ok(1000));
        v["aud"] = serde_json::json!(["other"]);
        assert_eq!(check(v, 500), Err(JwtError::WrongAudience));
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove("aud");
        assert_eq!(check(v, 500), Err(JwtError::WrongAudience));
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove("exp");
        assert_eq!(check(v, 500), Err(JwtError::MissingClaim("exp")));
        let mut v = base.clone();
        v["exp"] = "1000".into();
        assert_eq!(check(v, 500), Err(JwtError::Malformed));
        let mut v = base.clone();
        v["sub"] = "".into();
        assert_eq!(check(v, 500), Err(JwtError::MissingClaim("sub")));
        assert_eq!(
            check_claims(&s, &claims(base), 500, false),
            Err(JwtError::WrongIssuer)
        );
    }
}
