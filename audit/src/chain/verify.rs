//! Verification: checks every emitter's chain (each line's hash, seq continuity, `prev_hash`
//! links, checkpoints and their signatures) in files ([`verify_file`]) or in stored events
//! ([`verify_events`]), and stops at the first damage.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::canonical::write_canonical_object;
use crate::chain::checkpoint::{TrustedKeys, checkpoint_message};
use crate::chain::cut::ChainCut;
use crate::chain::hash::{GENESIS_HASH, chain_hash};
use crate::chain::lines::{FileLines, Item, natural_cmp};
use crate::chain::report::{BadPosition, ChainSummary, Tamper, VerifyError, VerifyReport};
use crate::event::field;

/// How often (in events) [`verify_file_with_progress`] reports.
const PROGRESS_EVERY: u64 = 4096;

/// How far [`verify_file`] looks ahead after a sequence gap to tell a reordered event from a
/// deleted one.
const LOOKAHEAD_EVENTS: usize = 100_000;

/// Verifies a JSON-lines file, or every `*.jsonl` file of a folder (a spool, or a file sink's
/// folder with its rotated files) in natural name order as one stream.
///
/// Each emitter's chain is checked separately: every line's hash, seq continuity, `prev_hash`
/// links and checkpoints. With `public_key`, every checkpoint signature must verify against
/// one of its keys (the current one or one used before a rotation); without, checkpoints
/// are checked for consistency only. Stops at the first bad line.
/// A spool that is being written may end in a torn line, reported as malformed.
pub fn verify_file(
    path: &Path,
    public_key: Option<&TrustedKeys>,
) -> Result<VerifyReport, VerifyError> {
    verify_file_with_progress(path, public_key, &mut |_, _| {})
}

/// [`verify_file`], telling `progress` every few thousand events how many bytes of how
/// many it has checked (for a bar with an ETA over a large trail).
pub fn verify_file_with_progress(
    path: &Path,
    public_key: Option<&TrustedKeys>,
    progress: &mut dyn FnMut(u64, u64),
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
    let total: u64 = files
        .iter()
        .filter_map(|f| fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let (mut done, mut seen) = (0u64, 0u64);
    let mut on_item = |item: &Item| {
        done += item.text.as_ref().map_or(0, |t| t.len() as u64 + 1);
        seen += 1;
        if seen % PROGRESS_EVERY == 0 {
            progress(done.min(total), total);
        }
    };
    let mut report = run(FileLines::new(files), public_key, None, &mut on_item)?;
    report.files = count;
    progress(total, total);
    Ok(report)
}

/// Verifies events given as their JSON text, in the order stored (for events read back from
/// a database table; store the line exactly as delivered). Positions in errors are 1-based
/// indexes into `events`. See [`verify_file`] for what is checked.
pub fn verify_events<I, S>(
    events: I,
    public_key: Option<&TrustedKeys>,
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
    run(items, public_key, None, &mut |_| {})
}

/// [`verify_events`] for one emitter's chain that retention cut at `cut`: the first event
/// must be the cut's seq + 1 and link to the cut's hash, so events deleted after the cut
/// (or an anchor moved to hide them) are found. The cut's signature must verify with
/// `cut_key` when given (checked for consistency only without). Position 0 in an error
/// names the cut itself.
pub fn verify_events_after<I, S>(
    cut: &ChainCut,
    cut_key: Option<&TrustedKeys>,
    events: I,
    public_key: Option<&TrustedKeys>,
) -> Result<VerifyReport, VerifyError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let bad_cut = |detail: &str| {
        VerifyError::Tampered(Box::new(BadPosition {
            file: None,
            line: 0,
            emitter: Some(cut.emitter.clone()),
            seq: Some(cut.seq),
            tamper: Tamper::BadCheckpoint,
            detail: detail.to_owned(),
        }))
    };
    if cut.hash.len() != GENESIS_HASH.len() || !cut.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad_cut("the chain cut's hash is not 64 hex digits"));
    }
    if let Some(key) = cut_key
        && !cut.verify_signature(key)
    {
        return Err(bad_cut(
            "the chain cut's signature does not verify with any of the given public keys",
        ));
    }
    let items = events.into_iter().enumerate().map(|(i, text)| {
        Ok(Item {
            file: None,
            line: i as u64 + 1,
            text: Ok(text.as_ref().to_owned()),
        })
    });
    run(items, public_key, Some(cut), &mut |_| {})
}

/// Per-emitter state while verifying.
#[derive(Debug)]
struct ChainState {
    first_seq: u64,
    last_seq: u64,
    last_hash: String,
    checkpoints: u64,
    checkpoints_verified: u64,
    /// The seq of the chain cut the chain starts after.
    cut: Option<u64>,
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
    key: Option<&'k TrustedKeys>,
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
                cut: None,
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
                "the signature does not verify with any of the given public keys",
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
                    cut_seq: s.cut,
                })
                .collect(),
        }
    }
}

fn run<I>(
    mut items: I,
    key: Option<&TrustedKeys>,
    cut: Option<&ChainCut>,
    on_item: &mut dyn FnMut(&Item),
) -> Result<VerifyReport, VerifyError>
where
    I: Iterator<Item = Result<Item, VerifyError>>,
{
    let mut verifier = Verifier {
        key,
        chains: BTreeMap::new(),
        events: 0,
    };
    if let Some(cut) = cut {
        // The chain continues from the anchor as if the deleted events were still there.
        verifier.chains.insert(
            cut.emitter.clone(),
            ChainState {
                first_seq: cut.seq.saturating_add(1),
                last_seq: cut.seq,
                last_hash: cut.hash.clone(),
                checkpoints: 0,
                checkpoints_verified: 0,
                cut: Some(cut.seq),
            },
        );
    }
    while let Some(item) = items.next() {
        let item = item?;
        on_item(&item);
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
    fn a_cut_chain_verifies_from_its_signed_anchor_and_tampering_after_it_is_found() {
        use crate::chain::cut::CutSigner;
        let events: Vec<Value> = (1..=6)
            .map(|i| json!({"portcullis.emitter": "backend", "portcullis.chain.seq": i}))
            .collect();
        let lines = chained(&events);
        let hash_of = |line: &str| {
            serde_json::from_str::<Value>(line).unwrap()[field::CHAIN_HASH]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let dir = tempfile::tempdir().unwrap();
        let signer = CutSigner::load(&dir.path().join("cut.key")).unwrap();
        let key = TrustedKeys::from(signer.public_key().clone());
        // Retention deleted seqs 1 and 2 and anchored the chain at seq 2.
        let cut = signer.sign("backend", 2, &hash_of(&lines[1]));
        let kept = &lines[2..];
        let report = verify_events_after(&cut, Some(&key), kept, None).unwrap();
        assert_eq!(report.events, 4);
        let chain = &report.chains[0];
        assert_eq!(
            (chain.first_seq, chain.last_seq, chain.cut_seq),
            (3, 6, Some(2))
        );

        let position = |e: VerifyError| {
            let p = e.position().unwrap().clone();
            (p.tamper, p.line)
        };
        // One more event deleted after the cut.
        let e = verify_events_after(&cut, Some(&key), &lines[3..], None).unwrap_err();
        assert_eq!(position(e), (Tamper::Deleted, 1));
        // An event after the cut edited.
        let mut edited = kept.to_vec();
        let mut object: Value = serde_json::from_str(&edited[1]).unwrap();
        object["user.id"] = json!("mallory");
        edited[1] = object.to_string();
        let e = verify_events_after(&cut, Some(&key), &edited, None).unwrap_err();
        assert_eq!(position(e), (Tamper::Edited, 2));
        // The anchor moved forward to hide the deletion of seq 3: its signature fails.
        let moved = ChainCut {
            seq: 3,
            hash: hash_of(&lines[2]),
            ..cut.clone()
        };
        let e = verify_events_after(&moved, Some(&key), &lines[3..], None).unwrap_err();
        assert_eq!(position(e), (Tamper::BadCheckpoint, 0));
        // A cut signed by someone else's key.
        let other = CutSigner::load(&dir.path().join("other.key")).unwrap();
        let foreign = other.sign("backend", 2, &hash_of(&lines[1]));
        let e = verify_events_after(&foreign, Some(&key), kept, None).unwrap_err();
        assert_eq!(position(e), (Tamper::BadCheckpoint, 0));
        // A correctly signed anchor whose first kept event was rewritten with a new chain.
        let wrong = signer.sign("backend", 2, GENESIS_HASH);
        let e = verify_events_after(&wrong, Some(&key), kept, None).unwrap_err();
        assert_eq!(position(e), (Tamper::Deleted, 1));
        // An event from before the cut put back.
        let e = verify_events_after(&cut, Some(&key), &lines[1..], None).unwrap_err();
        assert_eq!(position(e).0, Tamper::Reordered);
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
