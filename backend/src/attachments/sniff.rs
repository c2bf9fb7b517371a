//! What an upload is, judged by the server: its content type sniffed from the first
//! bytes (the client's `Content-Type` is ignored), its file name sanitised, and the
//! `Content-Disposition` a download carries.

/// Bytes looked at to decide the type.
pub const SNIFF_BYTES: usize = 8 * 1024;

/// The content type of `head` (the first up to [`SNIFF_BYTES`] of the content; `whole`
/// when that is all of it): a known signature (`infer`), else `text/plain` for UTF-8
/// text without NUL bytes, else `application/octet-stream`.
pub fn content_type(head: &[u8], whole: bool) -> &'static str {
    if let Some(t) = infer::get(head) {
        return t.mime_type();
    }
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        // A character cut by the end of the sniffed window is fine.
        Err(e) => !whole && e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    };
    if text && !head.contains(&0) {
        "text/plain"
    } else {
        "application/octet-stream"
    }
}

/// Longest file name a client may send, in bytes.
pub const MAX_GIVEN_FILENAME_BYTES: usize = 1000;

/// Longest stored file name, in bytes.
const MAX_FILENAME_BYTES: usize = 200;

/// The file name to store for the client's `name` (refused with a path separator or a
/// control character): without invisible format characters, leading dots or spaces, at most 200 bytes
/// (the extension kept). `None` when nothing usable is left, or the name given is longer
/// than 1000 bytes.
pub fn sanitize_filename(name: &str) -> Option<String> {
    // What the API documents (`maxLength` 1000); longer is refused, not cut.
    if name.len() > MAX_GIVEN_FILENAME_BYTES {
        return None;
    }
    // A path or a control character is refused rather than repaired: what a browser
    // sends is a plain name, and the API documents exactly these characters.
    if name.contains(['/', '\\']) || name.chars().any(char::is_control) {
        return None;
    }
    let cleaned: String = name.chars().filter(|c| !is_invisible(*c)).collect();
    let cleaned = cleaned
        .trim_start_matches(['.', ' '])
        .trim_end_matches([' ', '.']);
    if cleaned.is_empty() {
        return None;
    }
    if cleaned.len() <= MAX_FILENAME_BYTES {
        return Some(cleaned.to_owned());
    }
    let (stem, ext) = match cleaned.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() && e.len() <= 16 => (s, Some(e)),
        _ => (cleaned, None),
    };
    let room = MAX_FILENAME_BYTES - ext.map_or(0, |e| e.len() + 1);
    let mut cut = room.min(stem.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    Some(match ext {
        Some(e) => format!("{}.{e}", &stem[..cut]),
        None => stem[..cut].to_owned(),
    })
}

/// Bidirectional overrides and zero-width characters: they make a name look like
/// another (`invoice\u{202e}fdp.exe`).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>`
/// (RFC 6266, RFC 8187).
pub fn content_disposition(filename: &str) -> String {
    let fallback: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " ._-()+,".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(filename.len() * 3);
    for b in filename.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_bytes() {
        assert_eq!(content_type(b"%PDF-1.7\n...", true), "application/pdf");
        assert_eq!(
            content_type(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", true),
            "image/png"
        );
        assert_eq!(content_type("grüße\n".as_bytes(), true), "text/plain");
        assert_eq!(
            content_type(b"MZ\x90\0\x03\0\0\0", true),
            "application/vnd.microsoft.portable-executable"
        );
        assert_eq!(content_type(b"a\0b", true), "application/octet-stream");
        // A multi-byte character cut at the window's end is still text.
        let cut = &"é".as_bytes()[..1];
        assert_eq!(
            content_type(&[b"abc".as_slice(), cut].concat(), false),
            "text/plain"
        );
        assert_eq!(
            content_type(&[b"abc".as_slice(), cut].concat(), true),
            "application/octet-stream"
        );
    }

    #[test]
    fn names_are_sanitised() {
        assert_eq!(sanitize_filename("../../etc/passwd"), None);
        assert_eq!(sanitize_filename("C:\\x\\report.pdf"), None);
        assert_eq!(sanitize_filename(".htaccess").as_deref(), Some("htaccess"));
        assert_eq!(sanitize_filename("a\r\nb.txt"), None);
        assert_eq!(
            sanitize_filename("inv\u{202e}fdp.exe").as_deref(),
            Some("invfdp.exe")
        );
        assert_eq!(sanitize_filename("..."), None);
        assert_eq!(sanitize_filename("dir/"), None);
        assert_eq!(sanitize_filename(&"a".repeat(1001)), None);
        let long = format!("{}.pdf", "é".repeat(300));
        let s = sanitize_filename(&long).unwrap_or_default();
        assert!(s.len() <= 200 && s.ends_with(".pdf"), "{s}");
    }

    #[test]
    fn disposition_quotes_nothing_it_should_not() {
        assert_eq!(
            content_disposition("a \"b\";c.txt"),
            "attachment; filename=\"a _b__c.txt\"; filename*=UTF-8''a%20%22b%22%3Bc.txt"
        );
        assert!(content_disposition("grüße.txt").ends_with("gr%C3%BC%C3%9Fe.txt"));
    }
}
