//! Canonical JSON: the one byte form of an event that the spool writes and the chain hash
//! covers (see [`crate::chain`]).
//!
//! No whitespace, object keys sorted by their UTF-8 bytes at every depth, strings escaped as
//! `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t` and `\u00xx` (lower-case hex) for other control
//! characters, everything else (including non-ASCII) written as is, numbers as serde_json
//! prints them. The spool writes lines in exactly this form.

use serde_json::Value;

/// Writes `value` as canonical JSON (see the module docs).
pub(crate) fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => write_canonical_object(map, out),
    }
}

/// Writes an object as canonical JSON.
pub(crate) fn write_canonical_object(map: &serde_json::Map<String, Value>, out: &mut Vec<u8>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b'{');
    for (i, (key, item)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(key, out);
        out.push(b':');
        write_canonical(item, out);
    }
    out.push(b'}');
}

/// Writes a JSON string literal with the canonical escapes.
pub(crate) fn write_json_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_sorts_and_escapes() {
        let value: Value = serde_json::from_str(
            r#"{"b":1,"a":{"y":[true,null,1.5],"x":"q\"\\\n\u0001é/"},"A":-3}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        write_canonical(&value, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"A":-3,"a":{"x":"q\"\\\n\u0001é/","y":[true,null,1.5]},"b":1}"#
        );
    }

    #[test]
    fn canonical_string_matches_serde_json() {
        let s: String = (0u8..=0x7f).map(char::from).chain("é✓😀".chars()).collect();
        let mut out = Vec::new();
        write_json_string(&s, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&s).unwrap()
        );
    }
}
