//! Request-path normalisation, done once before routing.
//!
//! The proxy routes, authorises and forwards one canonical spelling of the
//! path. Anything that different servers decode differently is refused rather
//! than guessed at, so that no route or policy can be bypassed by spelling:
//!
//! * percent-escapes of unreserved characters are decoded (`%2e` is `.`);
//! * an encoded `/`, `\` or `%` (double encoding), a raw `\`, NUL or other
//!   control characters (C0, DEL and C1), Unicode's bidirectional controls (which
//!   make a logged path read differently from what was routed), and invalid or
//!   overlong UTF-8 are refused;
//! * `;` (matrix parameters, which some servers strip) is refused;
//! * empty segments (`//`) collapse, `.` segments vanish, `..` removes the
//!   previous segment, and a `..` that would climb above the root is refused;
//! * a segment ending in `.` other than `.`/`..` is refused, because some
//!   platforms drop trailing dots (`/admin.` would reach `/admin`).
//!
//! The result keeps a trailing slash if the request had one.

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use thiserror::Error;

/// Longest path accepted, in bytes, before decoding.
pub const MAX_PATH_BYTES: usize = 8192;

/// Why a path was refused. The `code` is the stable reason label used in
/// metrics and problem documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PathError {
    #[error("the request target must be an absolute path")]
    NotAbsolute,
    #[error("the path is longer than {MAX_PATH_BYTES} bytes (escaped as it is forwarded)")]
    TooLong,
    #[error("the path contains a malformed percent-escape")]
    BadEscape,
    #[error("the path contains an encoded slash or backslash")]
    EncodedSeparator,
    #[error("the path contains a backslash")]
    Backslash,
    #[error("the path contains an encoded percent sign (double encoding)")]
    DoubleEncoding,
    #[error("the path contains a NUL or control character")]
    ControlCharacter,
    #[error("the path is not valid UTF-8")]
    InvalidUtf8,
    #[error("the path contains `;` parameters")]
    MatrixParameter,
    #[error("a path segment ends with a dot")]
    TrailingDot,
    #[error("the path climbs above the root")]
    AboveRoot,
}

impl PathError {
    /// Stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            Self::NotAbsolute => "not_absolute",
            Self::TooLong => "too_long",
            Self::BadEscape => "bad_escape",
            Self::EncodedSeparator => "encoded_separator",
            Self::Backslash => "backslash",
            Self::DoubleEncoding => "double_encoding",
            Self::ControlCharacter => "control_character",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::MatrixParameter => "matrix_parameter",
            Self::TrailingDot => "trailing_dot",
            Self::AboveRoot => "above_root",
        }
    }
}

/// Characters escaped again when the canonical path is forwarded: everything
/// outside RFC 3986 `pchar`, plus `%` itself.
const SEGMENT_ESCAPE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// A canonical path: decoded for matching, re-encoded for forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalisedPath {
    decoded: String,
    encoded: String,
}

impl NormalisedPath {
    /// The decoded canonical path, used for routing and policy.
    pub fn as_str(&self) -> &str {
        &self.decoded
    }

    /// The canonical path escaped for the request line sent upstream.
    pub fn encoded(&self) -> &str {
        &self.encoded
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalises the path part (no query) of a request target.
/// The explicit directional formatting characters (Unicode's `Bidi_Control`).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

pub fn normalise(raw: &str) -> Result<NormalisedPath, PathError> {
    normalise_bytes(raw.as_bytes())
}

/// Normalises raw path bytes, which need not be UTF-8.
pub fn normalise_bytes(raw: &[u8]) -> Result<NormalisedPath, PathError> {
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        let byte = if b == b'%' {
            let (Some(hi), Some(lo)) = (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            i += 3;
            match hi << 4 | lo {
                b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                b'%' => return Err(PathError::DoubleEncoding),
                d => d,
            }
        } else {
            i += 1;
            if b == b'\\' {
                return Err(PathError::Backslash);
            }
            b
        };
        if byte < 0x20 || byte == 0x7f {
            return Err(PathError::ControlCharacter);
        }
        if byte == b';' {
            return Err(PathError::MatrixParameter);
        }
        decoded.push(byte);
    }
    // `from_utf8` refuses overlong forms and surrogates, as RFC 3629 requires.
    let text = std::str::from_utf8(&decoded).map_err(|_| PathError::InvalidUtf8)?;
    if !text.is_ascii() && text.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return Err(PathError::ControlCharacter);
    }

    let mut segments: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s if s.ends_with('.') => return Err(PathError::TrailingDot),
            s => segments.push(s),
        }
    }
    let trailing_slash = !segments.is_empty() && text.ends_with('/');
    let mut out = String::with_capacity(text.len());
    let mut enc = String::with_capacity(raw.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
        enc.push('/');
        enc.extend(utf8_percent_encode(s, SEGMENT_ESCAPE));
    }
    if segments.is_empty() || trailing_slash {
        out.push('/');
        enc.push('/');
    }
    // The bound holds for what is forwarded too: escaping may make the canonical
    // spelling up to three times the target's length, and that spelling must normalise
    // again to itself (the backend, or a second proxy, reads it).
    if enc.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    Ok(NormalisedPath {
        decoded: out,
        encoded: enc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(raw: &str) -> String {
        normalise(raw).unwrap().as_str().to_owned()
    }

    #[test]
    fn canonical_paths_pass_unchanged() {
        for p in ["/", "/api", "/api/tickets", "/api/tickets/", "/a-b_c~d/e.f"] {
            assert_eq!(ok(p), p);
        }
    }

    #[test]
    fn dot_segments_and_slashes_collapse() {
        assert_eq!(ok("/admin/../admin"), "/admin");
        assert_eq!(ok("//admin"), "/admin");
        assert_eq!(ok("/./api//x/./y/../z"), "/api/x/z");
        assert_eq!(ok("/a/%2e%2e/"), "/");
        assert_eq!(ok("/api/%2E/x"), "/api/x");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/%61dmin"), "/admin");
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        let cases = [
            ("api", PathError::NotAbsolute),
            ("/..", PathError::AboveRoot),
            ("/%2e%2e/%2e%2e/etc/passwd", PathError::AboveRoot),
            ("/admin%2fx", PathError::EncodedSeparator),
            ("/admin%2Fx", PathError::EncodedSeparator),
            ("/admin%5cx", PathError::EncodedSeparator),
            ("/admin\\x", PathError::Backslash),
            ("/a%00b", PathError::ControlCharacter),
            ("/a%0d%0ab", PathError::ControlCharacter),
            ("/a%C2%85b", PathError::ControlCharacter),
            ("/a%C2%9Bb", PathError::ControlCharacter),
            ("/file%E2%80%AEfdp.exe", PathError::ControlCharacter),
            ("/a%E2%81%A6b", PathError::ControlCharacter),
            ("/a%D8%9Cb", PathError::ControlCharacter),
            ("/%c0%ae%c0%ae/x", PathError::InvalidUtf8),
            ("/%c0%af", PathError::InvalidUtf8),
            ("/%ed%a0%80", PathError::InvalidUtf8),
            ("/admin%252fx", PathError::DoubleEncoding),
            ("/admin;jsessionid=1", PathError::MatrixParameter),
            ("/admin%3bx", PathError::MatrixParameter),
            ("/admin.", PathError::TrailingDot),
            ("/admin./x", PathError::TrailingDot),
            ("/a%zz", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
        ];
        for (raw, want) in cases {
            assert_eq!(normalise(raw), Err(want), "{raw}");
        }
        assert_eq!(normalise_bytes(b"/\xff"), Err(PathError::InvalidUtf8));
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        assert_eq!(normalise(&long), Err(PathError::TooLong));
    }

    /// Found by `fuzz/fuzz_targets/path_normalise.rs`: escaping on the way upstream can
    /// make the canonical spelling of a path up to three times longer (each raw `[`,
    /// `{`, space or non-ASCII byte becomes `%XX`). The bound now applies to that
    /// spelling as well, so whatever is accepted normalises again to itself.
    #[test]
    fn the_canonical_spelling_of_an_accepted_path_is_accepted_again() {
        let raw = format!("/{}", "[".repeat(4096));
        assert_eq!(normalise(&raw), Err(PathError::TooLong));
        let raw = format!("/{}", "[".repeat(2000));
        let once = normalise(&raw).unwrap();
        assert_eq!(normalise(once.encoded()), Ok(once));
    }

    #[test]
    fn encoding_round_trips() {
        let p = normalise("/files/a%20b/%C3%A9t%C3%A9").unwrap();
        assert_eq!(p.as_str(), "/files/a b/été");
        assert_eq!(p.encoded(), "/files/a%20b/%C3%A9t%C3%A9");
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent(raw in "/[a-zA-Z0-9./%~_-]{0,40}") {
            if let Ok(once) = normalise(&raw) {
                let twice = normalise(once.encoded()).unwrap();
                prop_assert_eq!(&twice, &once);
                prop_assert!(!once.as_str().contains("//"));
                prop_assert!(!once.as_str().split('/').any(|s| s == ".." || s == "."));
            }
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut with_slash = vec![b'/'];
            with_slash.extend(raw);
            let _ = normalise_bytes(&with_slash);
        }
    }
}
