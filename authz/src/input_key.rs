//! What a cached decision is keyed by: only what the decision can read.
//!
//! At load, the input paths a compiled decision's rules refer to (`input.request.method`,
//! `input.subject.roles`, …) are read off their source; a decision is then a function of
//! the values at those paths (the data document is fixed per bundle), unless it calls a
//! builtin whose result is not (`time.now_ns`, `rand.intn`, …), in which case it is never
//! cached. Two requests that agree on those values get the same decision, so the second
//! one is answered from the cache.
//!
//! The analysis is conservative: an `input` that is indexed with brackets, used whole, or
//! imported under another name makes the whole input the key (correct, rarely a hit).
//! The cache itself (per worker thread and bundle) is in `decision`.

use std::borrow::Cow;
use std::collections::BTreeSet;

/// A policy input the decision cache can read one field at a time.
///
/// A cache hit needs only the few fields the decision reads, so a caller whose input is
/// costly to assemble (the proxy builds one per request) writes those fields straight
/// from its own state, and builds the whole document only when the decision has to be
/// evaluated. A `serde_json::Value` is the plain implementation.
pub trait PolicyInput {
    /// Appends the compact JSON of the value at `path` (object keys below `input`) to
    /// `out` and returns `true`; returns `false`, writing nothing, when there is no value
    /// there (undefined in Rego). The bytes must be exactly what
    /// [`PolicyInput::document`]'s value at `path` serialises to.
    fn write_at(&self, path: &[String], out: &mut Vec<u8>) -> bool;

    /// The whole input document.
    fn document(&self) -> Cow<'_, serde_json::Value>;
}

impl PolicyInput for serde_json::Value {
    fn write_at(&self, path: &[String], out: &mut Vec<u8>) -> bool {
        let found = path
            .iter()
            .try_fold(self, |node, step| node.as_object()?.get(step));
        found.is_some_and(|value| serde_json::to_writer(out, value).is_ok())
    }

    fn document(&self) -> Cow<'_, serde_json::Value> {
        Cow::Borrowed(self)
    }
}

/// What a cached decision is keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InputKey {
    /// The values at these paths (each a list of object keys below `input`).
    Paths(Vec<Vec<String>>),
    /// The whole input.
    Whole,
}

impl InputKey {
    /// Writes the key of `input` to `out`: the JSON of the values at the paths, each
    /// followed by `\x01`, with `\x00` for a path that is not there (undefined in Rego,
    /// which is not `null`). Compact JSON never holds either byte raw, so two inputs
    /// share a key only when they agree on every path.
    pub(crate) fn write<I: PolicyInput + ?Sized>(&self, input: &I, out: &mut Vec<u8>) {
        match self {
            Self::Whole => {
                // Writing a `Value` to a `Vec` cannot fail.
                let _ = serde_json::to_writer(out, input.document().as_ref());
            }
            Self::Paths(paths) => {
                for path in paths {
                    if !input.write_at(path, out) {
                        out.push(0);
                    }
                    out.push(1);
                }
            }
        }
    }

    /// `input` with only the values the decision can read: the same decision, for less
    /// conversion into the engine's values (a request carries headers, query and
    /// addresses the shipped decisions never look at). Objects on the way to a path are
    /// kept as objects; a path that is not there stays undefined.
    pub(crate) fn prune<'a>(&self, input: &'a serde_json::Value) -> Cow<'a, serde_json::Value> {
        let Self::Paths(paths) = self else {
            return Cow::Borrowed(input);
        };
        let mut pruned = serde_json::Map::new();
        for path in paths {
            let Some((last, parents)) = path.split_last() else {
                return Cow::Borrowed(input); // the empty path is the whole input
            };
            let Some(value) = path
                .iter()
                .try_fold(input, |node, step| node.as_object()?.get(step))
            else {
                continue;
            };
            let mut node = &mut pruned;
            for step in parents {
                let entry = node
                    .entry(step.clone())
                    .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
                // Paths are prefix-free (see `input_key`), so a parent is never a leaf.
                let serde_json::Value::Object(map) = entry else {
                    return Cow::Borrowed(input);
                };
                node = map;
            }
            node.insert(last.clone(), value.clone());
        }
        Cow::Owned(serde_json::Value::Object(pruned))
    }
}

/// The input paths referred to in Rego source text (comments already removed), or
/// [`InputKey::Whole`] when `input` is used in a way paths cannot describe.
pub(crate) fn input_key(sources: &[&str]) -> InputKey {
    let mut paths: BTreeSet<Vec<String>> = BTreeSet::new();
    for source in sources {
        let code = strip_comments(source);
        let bytes = code.as_bytes();
        let mut at = 0;
        while let Some(found) = code[at..].find("input") {
            let start = at + found;
            let end = start + "input".len();
            at = end;
            let before = start.checked_sub(1).map(|i| bytes[i]);
            let after = bytes.get(end).copied();
            let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
            if before.is_some_and(|b| is_word(b) || b == b'.') || after.is_some_and(is_word) {
                continue; // part of another name, or a field called `input`
            }
            // `import input…` aliases and `input[...]` indexing: anything may be read.
            let line_start = code[..start].rfind('\n').map_or(0, |i| i + 1);
            if code[line_start..start].trim_start().starts_with("import") || after == Some(b'[') {
                return InputKey::Whole;
            }
            let mut path = Vec::new();
            let mut pos = end;
            while bytes.get(pos) == Some(&b'.') {
                let field_end = code[pos + 1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(code.len(), |i| pos + 1 + i);
                if field_end == pos + 1 {
                    break;
                }
                path.push(code[pos + 1..field_end].to_owned());
                pos = field_end;
            }
            if path.is_empty() {
                return InputKey::Whole;
            }
            // `input.a.b[x]`: the key is `input.a.b` whatever is indexed below it.
            paths.insert(path);
        }
    }
    // A path below another is covered by it.
    let all: Vec<Vec<String>> = paths.into_iter().collect();
    let minimal = all
        .iter()
        .filter(|p| !all.iter().any(|q| q.len() < p.len() && p.starts_with(q)))
        .cloned()
        .collect();
    InputKey::Paths(minimal)
}

/// Rego source without `#` comments and with the contents of string literals blanked
/// out (`"…"` and raw `` `…` ``), so neither can look like a reference to `input`.
fn strip_comments(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut raw = false;
    for line in source.lines() {
        let mut in_string = false;
        let mut escaped = false;
        for c in line.chars() {
            if raw {
                if c == '`' {
                    raw = false;
                    out.push(c);
                } else {
                    out.push(' ');
                }
                continue;
            }
            if in_string {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => in_string = false,
                    _ => {}
                }
                out.push(if in_string { ' ' } else { c });
                continue;
            }
            match c {
                '#' => break,
                '"' => in_string = true,
                '`' => raw = true,
                _ => {}
            }
            out.push(c);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(key: &InputKey) -> Vec<String> {
        match key {
            InputKey::Paths(p) => p.iter().map(|p| p.join(".")).collect(),
            InputKey::Whole => vec!["<whole>".to_owned()],
        }
    }

    #[test]
    fn the_paths_a_policy_reads_are_found() {
        let key = input_key(&[
            "package p\n# input.commented.out\nx := input.request.method\ny if { some s in input.request.segments; s == \"input\" }\nz := input.request.segments[0]\nw := input.subject.roles\nv := input.subject",
        ]);
        assert_eq!(
            paths(&key),
            ["request.method", "request.segments", "subject"]
        );
    }

    #[test]
    fn uses_paths_cannot_describe_key_on_the_whole_input() {
        for source in [
            "x := input[\"request\"]",
            "x := input",
            "import input.request as r\nx := r.method",
            "x := object.get(input, \"a\", 1)",
        ] {
            assert_eq!(input_key(&[source]), InputKey::Whole, "{source}");
        }
        // Names that merely contain the word are not the input.
        assert_eq!(
            paths(&input_key(&["x := data.my_input.y\ny := z.input"])),
            Vec::<String>::new()
        );
    }

    fn key_of(key: &InputKey, input: &serde_json::Value) -> Vec<u8> {
        let mut out = Vec::new();
        key.write(input, &mut out);
        out
    }

    #[test]
    fn keys_tell_undefined_from_null_and_ignore_other_fields() {
        let key = InputKey::Paths(vec![vec!["a".into()], vec!["b".into(), "c".into()]]);
        let one = key_of(&key, &json!({"a": 1, "b": {"c": null}, "ignored": 1}));
        assert_eq!(
            one,
            key_of(&key, &json!({"a": 1, "b": {"c": null}, "ignored": 2}))
        );
        assert_ne!(one, key_of(&key, &json!({"a": 1, "b": {}})));
        assert_ne!(one, key_of(&key, &json!({"a": 2, "b": {"c": null}})));
        // A separator inside a value is escaped, so it cannot forge another split.
        let two = InputKey::Paths(vec![vec!["a".into()], vec!["b".into()]]);
        assert_ne!(
            key_of(&two, &json!({"a": "x\u{1}", "b": "y"})),
            key_of(&two, &json!({"a": "x", "b": "\u{1}y"}))
        );
    }

    #[test]
    fn the_whole_key_is_the_document() {
        let input = json!({"a": [1, "two"], "b": {"c": true}});
        assert_eq!(
            key_of(&InputKey::Whole, &input),
            input.to_string().into_bytes()
        );
    }

    #[test]
    fn pruning_keeps_exactly_the_paths_read() {
        let key = InputKey::Paths(vec![
            vec!["request".into(), "method".into()],
            vec!["request".into(), "segments".into()],
            vec!["subject".into(), "roles".into()],
            vec!["absent".into(), "field".into()],
        ]);
        let input = json!({
            "request": {"method": "GET", "segments": ["a", "b"], "headers": {"x": "y"}},
            "subject": {"roles": null, "sub": "42"},
            "source": {"ip": "192.0.2.1"},
        });
        assert_eq!(
            key.prune(&input).into_owned(),
            json!({"request": {"method": "GET", "segments": ["a", "b"]}, "subject": {"roles": null}})
        );
        // A field whose parent is not an object is undefined, and stays so.
        assert_eq!(
            key.prune(&json!({"request": "GET", "subject": {"roles": []}}))
                .into_owned(),
            json!({"subject": {"roles": []}})
        );
        assert!(matches!(InputKey::Whole.prune(&input), Cow::Borrowed(_)));
    }
}
