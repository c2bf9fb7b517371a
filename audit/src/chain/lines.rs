//! The input of verification: numbered event lines ([`Item`]), read from files one after
//! another ([`FileLines`], torn or non-UTF-8 lines included), and the natural name order the
//! files of a folder are read in.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use crate::chain::report::VerifyError;

/// Compares names so that digit runs compare as numbers (`9.jsonl` < `10.jsonl`, and
/// `audit.00000001.jsonl` < `audit.jsonl`).
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let ord = na
                    .len()
                    .cmp(&nb.len())
                    .then_with(|| na.cmp(nb))
                    .then(da.cmp(&db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                // Digits sort before everything else.
                let ord = match (x.is_ascii_digit(), y.is_ascii_digit()) {
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    _ => x.cmp(y),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

/// One event to verify and where it came from.
pub(super) struct Item {
    pub(super) file: Option<std::sync::Arc<PathBuf>>,
    pub(super) line: u64,
    /// The text, or why it is not text.
    pub(super) text: Result<String, String>,
}

/// The lines of several files, in order.
pub(super) struct FileLines {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<(std::sync::Arc<PathBuf>, BufReader<File>, u64)>,
}

impl FileLines {
    pub(super) fn new(files: Vec<PathBuf>) -> Self {
        Self {
            files: files.into_iter(),
            current: None,
        }
    }
}

impl Iterator for FileLines {
    type Item = Result<Item, VerifyError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some((path, reader, line)) = &mut self.current else {
                let path = self.files.next()?;
                match File::open(&path) {
                    Ok(file) => {
                        self.current = Some((std::sync::Arc::new(path), BufReader::new(file), 0));
                    }
                    Err(source) => return Some(Err(VerifyError::Io { path, source })),
                }
                continue;
            };
            let mut buf = Vec::new();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => {
                    self.current = None;
                }
                Ok(_) => {
                    *line += 1;
                    let torn = buf.last() != Some(&b'\n');
                    if !torn {
                        buf.pop();
                    }
                    let text = match String::from_utf8(buf) {
                        Ok(_) if torn => Err("the last line is incomplete (torn write)".to_owned()),
                        Ok(text) => Ok(text),
                        Err(_) => Err("not UTF-8".to_owned()),
                    };
                    return Some(Ok(Item {
                        file: Some(path.clone()),
                        line: *line,
                        text,
                    }));
                }
                Err(source) => {
                    let path = path.as_ref().clone();
                    self.current = None;
                    return Some(Err(VerifyError::Io { path, source }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut names = vec![
            "audit.jsonl",
            "audit.00000002.jsonl",
            "100000000.jsonl",
            "audit.00000001.jsonl",
            "00000002.jsonl",
            "00000010.jsonl",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "00000002.jsonl",
                "00000010.jsonl",
                "100000000.jsonl",
                "audit.00000001.jsonl",
                "audit.00000002.jsonl",
                "audit.jsonl"
            ]
        );
    }
}
