//! Reading audit spool files (the `portcullis-audit` crate):
//!
//! - every line as the spool's readers parse it for the sinks (`SpooledEvent::parse`);
//! - the file as `portcullis audit verify` checks it (`verify_file`), as it is and once
//!   more with every line's hash chain recomputed (links to the emitter's previous line,
//!   `portcullis.chain.hash` over the canonical JSON), so that the checks behind the
//!   hash (seq continuity, checkpoints) see fuzzed values too; verifying those lines as
//!   stored events (`verify_events`) must agree with verifying the file;
//! - the file as the newest segment of a spool that is opened (`Spool::open`), whose
//!   recovery keeps the valid prefix and cuts off the rest.
#![no_main]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis_audit::fuzzing::parse_spool_line;
use portcullis_audit::{GENESIS_HASH, Spool, SpoolSettings, verify_events, verify_file};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

const EMITTER: &str = "proxy";

struct Harness {
    runtime: tokio::runtime::Runtime,
    /// `<scratch>/verify.jsonl`
    file: PathBuf,
    /// `<scratch>/spool`
    spool: SpoolSettings,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("portcullis-fuzz-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        let mut spool = SpoolSettings::new(EMITTER, dir.join("spool"));
        spool.checkpoint = None;
        Harness {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            file: dir.join("verify.jsonl"),
            spool,
        }
    })
}

/// Canonical JSON as the audit crate writes it: sorted keys, no whitespace, strings
/// and numbers as serde_json prints them.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => canonical_object(map, out),
        other => out.push_str(&other.to_string()),
    }
}

fn canonical_object(map: &Map<String, Value>, out: &mut String) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push('{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(key.clone()).to_string());
        out.push(':');
        canonical(value, out);
    }
    out.push('}');
}

/// The lines with their hash chain recomputed; lines that are not JSON objects with a
/// string emitter stay as they are.
fn rechained(text: &str) -> Vec<String> {
    let mut last: HashMap<String, String> = HashMap::new();
    text.lines()
        .map(|line| {
            let Ok(Value::Object(mut event)) = serde_json::from_str::<Value>(line) else {
                return line.to_owned();
            };
            let Some(emitter) = event.get("portcullis.emitter").and_then(Value::as_str) else {
                return line.to_owned();
            };
            let emitter = emitter.to_owned();
            let prev = last
                .get(&emitter)
                .cloned()
                .unwrap_or_else(|| GENESIS_HASH.to_owned());
            event.remove("portcullis.chain.hash");
            event.insert(
                "portcullis.chain.prev_hash".to_owned(),
                Value::String(prev.clone()),
            );
            let mut unhashed = String::new();
            canonical_object(&event, &mut unhashed);
            let mut hasher = Sha256::new();
            hasher.update(prev.as_bytes());
            hasher.update(unhashed.as_bytes());
            let hash = hex::encode(hasher.finalize());
            event.insert(
                "portcullis.chain.hash".to_owned(),
                Value::String(hash.clone()),
            );
            last.insert(emitter, hash);
            let mut line = String::new();
            canonical_object(&event, &mut line);
            line
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let h = harness();

    // What a sink is handed.
    for line in data.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        if let Ok(event) = parse_spool_line(line.to_owned()) {
            assert_eq!(
                event.json(),
                line,
                "a spooled event must be forwarded as stored"
            );
            let value: Value = serde_json::from_str(line).expect("a parsed line is JSON");
            assert_eq!(value["portcullis.chain.seq"].as_u64(), Some(event.seq()));
            assert_eq!(value["portcullis.emitter"].as_str(), Some(event.emitter()));
        }
    }

    // `portcullis audit verify FILE`.
    std::fs::write(&h.file, data).expect("write the file");
    let as_is = verify_file(&h.file, None);
    if let Ok(report) = &as_is {
        let lines = data.split(|&b| b == b'\n').count() as u64;
        assert!(
            report.events <= lines,
            "{} events in {lines} lines",
            report.events
        );
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let lines = rechained(text);
        let mut file = lines.join("\n");
        if !lines.is_empty() {
            file.push('\n');
        }
        std::fs::write(&h.file, &file).expect("write the file");
        let from_file = verify_file(&h.file, None);
        let from_events = verify_events(&lines, None);
        match (&from_file, &from_events) {
            (Ok(a), Ok(b)) => {
                assert_eq!((a.events, &a.chains), (b.events, &b.chains));
            }
            (Err(_), Err(_)) => {}
            _ => panic!("the file and its events disagree: {from_file:?} / {from_events:?}"),
        }
    }

    // A spool whose newest segment is this file.
    let dir = &h.spool.dir;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("spool folder");
    let segment = dir.join("00000001.jsonl");
    std::fs::write(&segment, data).expect("write the segment");
    if let Ok(spool) = Spool::open(&h.spool) {
        let kept = std::fs::read(&segment).expect("the segment is still there");
        assert!(data.starts_with(&kept), "recovery changed the kept lines");
        assert!(
            kept.is_empty() || kept.ends_with(b"\n"),
            "recovery kept a torn line"
        );
        h.runtime.block_on(spool.close());
    }
});
