//! Verification: checks every emitter's chain (each line's hash, seq continuity, `prev_hash`
//! links, checkpoints and their signatures) in files ([`verify_file`]) or in stored events
//! ([`verify_events`]), and stops at the first damage.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::canonical::write_canonical_object;
use crate::chain::checkpoint::{PublicKey, checkpoint_message};
use crate::chain::hash::{GENESIS_HASH, chain_hash};
use crate::chain::lines::{FileLines, Item, natural_cmp};
use crate::chain::report::{BadPosition, ChainSummary, Tamper, VerifyError, VerifyReport};
use crate::event::field;

/// How far [`verify_file`] looks ahead after a sequence gap to tell a reordered event from a
/// deleted one.
const LOOKAHEAD_EVENTS: usize = 100_000;

/// Verifies a JSON-lines file, or every `*.jsonl` file of a folder (a spool, or a file sink's
/// folder with its rotated files) in natural name order as one stream.
///
/// Each emitter's chain is checked separately: every line's hash, seq continuity, `prev_hash`
/// links and checkpoints. With `public_key`, every checkpoint signature must verify against
/// it; without, checkpoints are checked for consistency only. Stops at the first bad line.
/// A spool that is being written may end in a torn line, reported as malformed.
pub fn verify_file(
    path: &Path,
    public_key: Option<&PublicKey>,
) -> Result<VerifyReport, VerifyError> {
    let io_err = |source| VerifyError::Io {
        path: path.to_owned(),
        source,
    };
    let files = if fs::metadata(path).map_err(io_err)?.is_dir() {
        let mut files = Vec::new();
        for entry in fs::read_dir(path).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".jsonl") && entry.file_type().map_err(io_err)?.is_file() {
                files.push(name);
            }
        }
        files.sort_by(|a, b| natural_cmp(a, b));
        files.into_iter().map(|name| path.join(name)).collect()
    } else {
        vec![path.to_owned()]
    };
    let count = files.len() as u64;
    let mut report = run(FileLines::new(files), public_key)?;
    report.files = count;
    Ok(report)
}

/// Verifies events given as their JSON text, in the order stored (for events read back from
/// a database table; store the line exactly as delivered). Positions in errors are 1-based
/// indexes into `events`. See [`verify_file`] for what is checked.
pub fn verify_events<I, S>(
    events: I,
    public_key: Option<&PublicKey>,
) -> Result<VerifyReport, VerifyError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let items = events.into_iter().enumerate().map(|(i, text)| {
        Ok(Item {
            file: None,
            line: i as u64 + 1,
            text: Ok(text.as_ref().to_owned()),
        })
    });
    run(items, public_key)
}

/// Per-emitter state while verifying.
#[derive(Debug)]
struct ChainState {
    first_seq: u64,
    last_seq: u64,
    last_hash: String,
    checkpoints: u64,
    checkpoints_verified: u64,
}

/// The chain fields of one event.
struct Parsed {
    emitter: String,
    seq: u64,
    prev_hash: String,
    hash: String,
    object: serde_json::Map<String, Value>,
}

enum Finding {
    Bad {
        tamper: Tamper,
        emitter: Option<String>,
        seq: Option<u64>,
        detail: String,
    },
    Gap {
        emitter: String,
        expected: u64,
        found: u64,
    },
}

fn bad(tamper: Tamper, parsed: Option<&Parsed>, detail: String) -> Finding {
    Finding::Bad {
        tamper,
        emitter: parsed.map(|p| p.emitter.clone()),
        seq: parsed.map(|p| p.seq),
        detail,
    }
}

fn parse(text: &str) -> Result<Parsed, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err("not a JSON object".to_owned());
    };
    let string = |name: &str| {
        object
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("no string field {name}"))
    };
    let emitter = string(field::EMITTER)?;
    let prev_hash = string(field::CHAIN_PREV_HASH)?;
    let hash = string(field::CHAIN_HASH)?;
    let seq = object
        .get(field::CHAIN_SEQ)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("no integer field {}", field::CHAIN_SEQ))?;
    Ok(Parsed {
        emitter,
        seq,
        prev_hash,
        hash,
        object,
    })
}

/// Emitter and seq only, for the look-ahead.
fn peek(text: &str) -> Option<(String, u64)> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "portcullis.emitter")]
        emitter: String,
        #[serde(rename = "portcullis.chain.seq")]
        seq: u64,
    }
    let head: Head = serde_json::from_str(text).ok()?;
    Some((head.emitter, head.seq))
}

struct Verifier<'k> {
    key: Option<&'k PublicKey>,
    chains: BTreeMap<String, ChainState>,
    events: u64,
}

impl Verifier<'_> {
    fn check(&mut self, text: &str) -> Result<(), Finding> {
        let mut parsed = parse(text).map_err(|reason| bad(Tamper::Malformed, None, reason))?;
        parsed.object.remove(field::CHAIN_HASH);
        let mut unhashed = Vec::with_capacity(text.len());
        write_canonical_object(&parsed.object, &mut unhashed);
        let computed = chain_hash(&parsed.prev_hash, &unhashed);
        if computed != parsed.hash {
            return Err(bad(
                Tamper::Edited,
                Some(&parsed),
                "the content does not match portcullis.chain.hash".to_owned(),
            ));
        }
        match self.chains.get(&parsed.emitter) {
            None => {
                if parsed.seq == 1 && parsed.prev_hash != GENESIS_HASH {
                    return Err(bad(
                        Tamper::Deleted,
                        Some(&parsed),
                        "seq 1 does not start from the genesis hash".to_owned(),
                    ));
                }
            }
            Some(state) => {
                // No seq follows u64::MAX: whatever comes after it is out of order.
                let expected = state.last_seq.checked_add(1);
                if let Some(expected) = expected
                    && parsed.seq > expected
                {
                    return Err(Finding::Gap {
                        emitter: parsed.emitter.clone(),
                        expected,
                        found: parsed.seq,
                    });
                }
                if expected.is_none_or(|expected| parsed.seq < expected) {
                    return Err(bad(
                        Tamper::Reordered,
                        Some(&parsed),
                        format!("seq {} comes after seq {}", parsed.seq, state.last_seq),
                    ));
                }
                if parsed.prev_hash != state.last_hash {
                    return Err(bad(
                        Tamper::Deleted,
                        Some(&parsed),
                        format!(
                            "prev_hash does not match the hash of seq {}: an event before this one was removed or rewritten",
                            state.last_seq
                        ),
                    ));
                }
            }
        }
        let checkpoint = self.check_checkpoint(&parsed)?;
        let state = self
            .chains
            .entry(parsed.emitter.clone())
            .or_insert_with(|| ChainState {
                first_seq: parsed.seq,
                last_seq: 0,
                last_hash: String::new(),
                checkpoints: 0,
                checkpoints_verified: 0,
            });
        state.last_seq = parsed.seq;
        state.last_hash = parsed.hash;
        if let Some(verified) = checkpoint {
            state.checkpoints += 1;
            state.checkpoints_verified += u64::from(verified);
        }
        self.events += 1;
        Ok(())
    }

    /// `None` if not a checkpoint, else whether its signature was verified.
    fn check_checkpoint(&self, parsed: &Parsed) -> Result<Option<bool>, Finding> {
        let event = &parsed.object;
        let Some(signature) = event.get(field::CHECKPOINT_SIGNATURE) else {
            return Ok(None);
        };
        let broken = |detail: &str| bad(Tamper::BadCheckpoint, Some(parsed), detail.to_owned());
        let signature = signature
            .as_str()
            .ok_or_else(|| broken("signature is not a string"))?;
        let seq = event
            .get(field::CHECKPOINT_SEQ)
            .and_then(Value::as_u64)
            .ok_or_else(|| broken("no checkpoint seq"))?;
        let hash = event
            .get(field::CHECKPOINT_HASH)
            .and_then(Value::as_str)
            .ok_or_else(|| broken("no checkpoint hash"))?;
        if seq.checked_add(1) != Some(parsed.seq) || hash != parsed.prev_hash {
            return Err(broken(
                "the checkpoint does not describe the event before it",
            ));
        }
        match self.key {
            None => Ok(Some(false)),
            Some(key) if key.verify(&checkpoint_message(&parsed.emitter, seq, hash), signature) => {
                Ok(Some(true))
            }
            Some(_) => Err(broken(
                "the signature does not verify with the given public key",
            )),
        }
    }

    fn report(self) -> VerifyReport {
        VerifyReport {
            files: 0,
            events: self.events,
            chains: self
                .chains
                .into_iter()
                .map(|(emitter, s)| ChainSummary {
                    emitter,
                    first_seq: s.first_seq,
                    last_seq: s.last_seq,
                    last_hash: s.last_hash,
                    checkpoints: s.checkpoints,
                    checkpoints_verified: s.checkpoints_verified,
                })
                .collect(),
        }
    }
}

fn run<I>(mut items: I, key: Option<&PublicKey>) -> Result<VerifyReport, VerifyError>
where
    I: Iterator<Item = Result<Item, VerifyError>>,
{
    let mut verifier = Verifier {
        key,
        chains: BTreeMap::new(),
        events: 0,
    };
    while let Some(item) = items.next() {
        let item = item?;
        let finding = match &item.text {
            Ok(text) => verifier.check(text),
            Err(reason) => Err(bad(Tamper::Malformed, None, reason.clone())),
        };
        let (tamper, emitter, seq, detail) = match finding {
            Ok(()) => continue,
            Err(Finding::Bad {
                tamper,
                emitter,
                seq,
                detail,
            }) => (tamper, emitter, seq, detail),
            Err(Finding::Gap {
                emitter,
                expected,
                found,
            }) => {
                // Is the missing event further on (reordered) or gone (deleted)?
                let mut later = None;
                for next in items.by_ref().take(LOOKAHEAD_EVENTS) {
                    let next = next?;
                    let hit = next
                        .text
                        .as_deref()
                        .ok()
                        .and_then(peek)
                        .is_some_and(|(e, s)| e == emitter && s == expected);
                    if hit {
                        later = Some(next);
                        break;
                    }
                }
                match later {
                    Some(later) => (
                        Tamper::Reordered,
                        Some(emitter),
                        Some(found),
                        format!(
                            "seq {found} comes before seq {expected}, which is at {}",
                            describe(&later)
                        ),
                    ),
                    None => (
                        Tamper::Deleted,
                        Some(emitter),
                        Some(found),
                        if found == expected + 1 {
                            format!("seq {expected} is missing")
                        } else {
                            format!("seqs {expected} to {} are missing", found - 1)
                        },
                    ),
                }
            }
        };
        return Err(VerifyError::Tampered(Box::new(BadPosition {
            file: item.file.map(|f| f.as_ref().clone()),
            line: item.line,
            emitter,
            seq,
            tamper,
            detail,
        })));
    }
    Ok(verifier.report())
}

fn describe(item: &Item) -> String {
    match &item.file {
        Some(file) => format!("{}:{}", file.display(), item.line),
        None => format!("event {}", item.line),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The events as lines whose hash chain is intact (what anyone can compute).
    fn chained(events: &[Value]) -> Vec<String> {
        let mut prev = GENESIS_HASH.to_owned();
        events
            .iter()
            .map(|event| {
                let mut object = event.as_object().cloned().unwrap();
                object.insert(field::CHAIN_PREV_HASH.to_owned(), prev.clone().into());
                let mut unhashed = Vec::new();
                write_canonical_object(&object, &mut unhashed);
                prev = chain_hash(&prev, &unhashed);
                object.insert(field::CHAIN_HASH.to_owned(), prev.clone().into());
                Value::Object(object).to_string()
            })
            .collect()
    }

    fn finding(lines: &[String]) -> (Tamper, u64) {
        let error = verify_events(lines, None).unwrap_err();
        let position = error.position().unwrap();
        (position.tamper, position.line)
    }

    // Found by fuzz/fuzz_targets/audit_spool.rs: a seq of u64::MAX overflowed `+ 1` (a
    // panic where overflow checks are on, such as debug builds) instead of being reported.

    #[test]
    fn a_checkpoint_of_the_largest_seq_is_reported() {
        let lines = chained(&[json!({
            "portcullis.emitter": "proxy",
            "portcullis.chain.seq": 1,
            "portcullis.checkpoint.seq": u64::MAX,
            "portcullis.checkpoint.hash": GENESIS_HASH,
            "portcullis.checkpoint.signature": "00",
        })]);
        assert_eq!(finding(&lines), (Tamper::BadCheckpoint, 1));
    }

    #[test]
    fn an_event_after_the_largest_seq_is_reported() {
        let lines = chained(&[
            json!({"portcullis.emitter": "proxy", "portcullis.chain.seq": u64::MAX}),
            json!({"portcullis.emitter": "proxy", "portcullis.chain.seq": 1}),
        ]);
        assert_eq!(finding(&lines), (Tamper::Reordered, 2));
    }
}
