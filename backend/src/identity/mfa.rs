//! TOTP (RFC 6238) and backup codes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead;
use totp_rs::{Algorithm, TOTP};

/// Digits, period and accepted clock skew (steps either side).
const DIGITS: usize = 6;
const PERIOD: u64 = 30;
const SKEW_STEPS: i64 = 1;
/// Backup codes per enrolment.
pub const BACKUP_CODES: usize = 10;

/// A TOTP generator for a base32 secret.
pub fn totp(secret_base32: &str, issuer: &str, account: &str) -> Option<TOTP> {
    let secret = totp_rs::Secret::Encoded(secret_base32.to_owned())
        .to_bytes()
        .ok()?;
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        1,
        PERIOD,
        secret,
        Some(issuer.to_owned()),
        account.to_owned(),
    )
    .ok()
}

/// Marks a sealed secret in the database (anything else is a plaintext
/// secret stored before sealing existed, still read).
const SEALED_PREFIX: &str = "v1:";

/// Why a TOTP secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot seal the TOTP secret")]
    Seal,
    /// Wrong key, another account's row, or an edited value. Sign-in fails
    /// closed on it: the second factor is never skipped.
    #[error("the stored TOTP secret cannot be opened")]
    Open,
}

/// TOTP secrets at rest: AES-256-GCM under a key file only the backend reads
/// (`<state_dir>/keys/mfa.key`, 0600), with the employee id as associated
/// data so a sealed secret cannot be moved to another account. A copy of the
/// database alone no longer yields working authenticators.
pub struct SecretSealer(aead::LessSafeKey);

impl std::fmt::Debug for SecretSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretSealer(..)")
    }
}

impl SecretSealer {
    pub fn new(key: &[u8; 32]) -> Result<Self, SealError> {
        let key = aead::UnboundKey::new(&aead::AES_256_GCM, key).map_err(|_| SealError::Seal)?;
        Ok(Self(aead::LessSafeKey::new(key)))
    }

    /// `v1:` + base64url(nonce ‖ ciphertext ‖ tag). Nonces are random: 96 bits
    /// are ample for one enrolment per account at a time.
    pub fn seal(&self, employee_id: i64, secret: &str) -> Result<String, SealError> {
        let nonce: [u8; aead::NONCE_LEN] = rand::random();
        let mut sealed = secret.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(employee_id.to_be_bytes()),
                &mut sealed,
            )
            .map_err(|_| SealError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    /// The base32 secret of a stored value.
    pub fn open(&self, employee_id: i64, stored: &str) -> Result<String, SealError> {
        let Some(sealed) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_owned());
        };
        let mut bytes = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| SealError::Open)?;
        if bytes.len() < aead::NONCE_LEN {
            return Err(SealError::Open);
        }
        let mut ciphertext = bytes.split_off(aead::NONCE_LEN);
        let nonce: [u8; aead::NONCE_LEN] = bytes.try_into().map_err(|_| SealError::Open)?;
        let plain = self
            .0
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(employee_id.to_be_bytes()),
                &mut ciphertext,
            )
            .map_err(|_| SealError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Open)
    }
}

/// A new random 160-bit secret, base32.
pub fn new_secret() -> String {
    let bytes: [u8; 20] = rand::random();
    totp_rs::Secret::Raw(bytes.to_vec())
        .to_encoded()
        .to_string()
}

/// The time step a code matches at `now` (±1 step), if any. The caller
/// refuses steps at or before the last accepted one (replay).
pub fn matching_step(t: &TOTP, code: &str, now_unix: u64) -> Option<i64> {
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = (now_unix / PERIOD) as i64;
    (current - SKEW_STEPS..=current + SKEW_STEPS)
        .filter(|s| *s >= 0)
        .find(|s| {
            let expected = t.generate(*s as u64 * PERIOD);
            subtle_eq(expected.as_bytes(), code.as_bytes())
        })
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The otpauth URI as an SVG QR code.
pub fn qr_svg(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .build(),
    )
}

/// Ten random backup codes, `xxxx-xxxx` from an unambiguous alphabet (40 bits each).
pub fn new_backup_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    (0..BACKUP_CODES)
        .map(|_| {
            let raw: [u8; 8] = rand::random();
            let chars: String = raw
                .iter()
                .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
                .collect();
            format!("{}-{}", &chars[..4], &chars[4..])
        })
        .collect()
}

/// Backup codes are compared case-insensitively, without separators.
pub fn normalise_backup_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_for_their_account_and_key() {
        let sealer = SecretSealer::new(&[7; 32]).unwrap();
        let secret = new_secret();
        let sealed = sealer.seal(42, &secret).unwrap();
        assert!(sealed.starts_with("v1:") && !sealed.contains(&secret));
        assert_ne!(
            sealed,
            sealer.seal(42, &secret).unwrap(),
            "fresh nonce each time"
        );
        assert_eq!(sealer.open(42, &sealed).unwrap(), secret);
        assert!(
            sealer.open(43, &sealed).is_err(),
            "moved to another account"
        );
        let other = SecretSealer::new(&[8; 32]).unwrap();
        assert!(other.open(42, &sealed).is_err(), "another key");
        let mut edited = sealed.clone();
        edited.pop();
        edited.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(sealer.open(42, &edited).is_err(), "edited");
        assert!(sealer.open(42, "v1:").is_err());
        // Rows written before sealing existed are plain base32.
        assert_eq!(sealer.open(42, &secret).unwrap(), secret);
    }

    /// RFC 6238 Appendix B: SHA-1, secret "12345678901234567890", 8 digits.
    #[test]
    fn rfc6238_appendix_b_vectors() {
        let secret = b"12345678901234567890".to_vec();
        let t = TOTP::new(Algorithm::SHA1, 8, 1, 30, secret, None, "rfc".into()).unwrap();
        for (time, code) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(t.generate(time), code, "T={time}");
        }
        // SHA-256 and SHA-512 rows use 32- and 64-byte secrets.
        let t256 = TOTP::new(
            Algorithm::SHA256,
            8,
            1,
            30,
            b"12345678901234567890123456789012".to_vec(),
            None,
            "rfc".into(),
        )
        .unwrap();
        assert_eq!(t256.generate(59), "46119246");
        assert_eq!(t256.generate(1_111_111_109), "68084774");
        let t512 = TOTP::new(
            Algorithm::SHA512,
            8,
            1,
            30,
            b"1234567890123456789012345678901234567890123456789012345678901234".to_vec(),
            None,
            "rfc".into(),
        )
        .unwrap();
        assert_eq!(t512.generate(59), "90693936");
        assert_eq!(t512.generate(20_000_000_000), "47863826");
    }

    #[test]
    fn codes_match_within_one_step_only() {
        let s = new_secret();
        let t = totp(&s, "Portcullis", "alice").unwrap();
        let now = 1_790_000_000u64;
        let code = t.generate(now);
        assert_eq!(matching_step(&t, &code, now), Some((now / 30) as i64));
        assert_eq!(matching_step(&t, &code, now + 30), Some((now / 30) as i64));
        assert_eq!(matching_step(&t, &code, now + 90), None);
        assert_eq!(matching_step(&t, "12345", now), None);
        assert!(
            totp(&s, "Portcullis", "alice")
                .unwrap()
                .get_url()
                .starts_with("otpauth://totp/")
        );
    }

    #[test]
    fn backup_codes_are_distinct_and_normalised() {
        let codes = new_backup_codes();
        assert_eq!(codes.len(), 10);
        assert_eq!(
            codes.iter().collect::<std::collections::HashSet<_>>().len(),
            10
        );
        assert_eq!(normalise_backup_code("AbCd-EfGh"), "abcdefgh");
    }
}
