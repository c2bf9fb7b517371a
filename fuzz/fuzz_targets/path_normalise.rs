//! Request-path normalisation (`portcullis_proxy::path`), which every request's path
//! passes before routing, policy and forwarding: any bytes are refused or give one
//! canonical path that normalises to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_proxy::path::{MAX_PATH_BYTES, normalise, normalise_bytes};

fuzz_target!(|raw: &[u8]| {
    let Ok(once) = normalise_bytes(raw) else {
        return;
    };
    assert!(raw.len() <= MAX_PATH_BYTES);
    let decoded = once.as_str();
    let encoded = once.encoded();
    for p in [decoded, encoded] {
        assert!(p.starts_with('/'), "{p:?} is not absolute");
        assert!(!p.contains("//"), "{p:?} has an empty segment");
        assert!(
            !p.split('/').any(|s| s == "." || s == ".."),
            "{p:?} has a dot segment"
        );
        assert!(!p.contains("/../") && !p.contains("/./"), "{p:?}");
    }
    assert!(!decoded.contains(['\\', ';', '%']), "{decoded:?}");
    assert!(
        !decoded.chars().any(char::is_control),
        "{decoded:?} has a control character (C0, DEL or C1)"
    );
    assert!(
        !decoded.contains(['\u{200E}', '\u{200F}', '\u{202E}', '\u{2066}', '\u{2069}']),
        "{decoded:?} has a bidirectional control"
    );
    // What goes upstream is one request-line token: no query, fragment or space in it.
    assert!(
        encoded
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#'),
        "{encoded:?}"
    );
    // Idempotent: the forwarded spelling and the decoded one both normalise to the same
    // (the length bound covers the escaped spelling too).
    assert!(encoded.len() <= MAX_PATH_BYTES, "{} bytes forwarded", encoded.len());
    let again = normalise(encoded).expect("the encoded canonical path is refused");
    assert_eq!(again, once, "normalising {encoded:?} again changed it");
    let again = normalise(decoded).expect("the decoded canonical path is refused");
    assert_eq!(again, once, "normalising {decoded:?} again changed it");
});
