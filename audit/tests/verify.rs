//! `verify_file` and `verify_events` find edited, deleted and reordered events and name the
//! first bad position; checkpoints stop a forger who recomputes the hashes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_audit::{
    AuditLog, CheckpointSettings, Tamper, TrustedKeys, VerifyError, verify_events, verify_file,
};
use sha2::{Digest as _, Sha256};
use support::{event, file_sink, settings};

/// 30 events with a checkpoint after every 5: 36 lines in `audit.jsonl`.
async fn audit_file(dir: &Path) -> (PathBuf, TrustedKeys) {
    let out = dir.join("audit.jsonl");
    let mut settings = settings(dir, "proxy");
    settings.spool.checkpoint = Some(CheckpointSettings {
        key_file: dir.join("keys/checkpoint.key"),
        every_events: 5,
        interval: Duration::from_secs(3600),
    });
    settings.sinks.push(file_sink("file", &out));
    let log = AuditLog::start(settings, &prometheus::Registry::new()).unwrap();
    for n in 0..30 {
        log.emit(event(n)).await.unwrap();
    }
    let key = TrustedKeys::from(log.public_key().cloned().unwrap());
    log.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        TrustedKeys::read_file(&dir.join("keys/checkpoint.key.pub")).unwrap(),
        key
    );
    (out, key)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn expect_bad(
    result: Result<portcullis_audit::VerifyReport, VerifyError>,
    tamper: Tamper,
    line: u64,
) -> String {
    let error = result.unwrap_err();
    let position = error
        .position()
        .unwrap_or_else(|| panic!("not a tamper finding: {error}"));
    assert_eq!(position.tamper, tamper, "{error}");
    assert_eq!(position.line, line, "{error}");
    error.to_string()
}

#[tokio::test]
async fn clean_file_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (out, key) = audit_file(dir.path()).await;
    let report = verify_file(&out, Some(&key)).unwrap();
    assert_eq!(report.events, 36);
    let chain = &report.chains[0];
    assert_eq!(
        (chain.emitter.as_str(), chain.first_seq, chain.last_seq),
        ("proxy", 1, 36)
    );
    assert_eq!((chain.checkpoints, chain.checkpoints_verified), (6, 6));
    let unsigned = verify_file(&out, None).unwrap();
    assert_eq!(unsigned.chains[0].checkpoints_verified, 0);
    // The same lines from a database.
    let report = verify_events(lines(&out), Some(&key)).unwrap();
    assert_eq!(report.events, 36);
}

#[tokio::test]
async fn edited_deleted_and_reordered_lines_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (out, key) = audit_file(dir.path()).await;
    let original = lines(&out);
    let bad = dir.path().join("bad.jsonl");

    let mut edited = original.clone();
    edited[7] = edited[7].replace("\"user-", "\"admin-");
    assert_ne!(edited[7], original[7]);
    write(&bad, &edited);
    let message = expect_bad(verify_file(&bad, Some(&key)), Tamper::Edited, 8);
    assert!(message.contains("bad.jsonl:8"), "{message}");
    eprintln!("edited: {message}");

    let mut deleted = original.clone();
    deleted.remove(9);
    write(&bad, &deleted);
    let message = expect_bad(verify_file(&bad, Some(&key)), Tamper::Deleted, 10);
    assert!(message.contains("seq 10 is missing"), "{message}");
    eprintln!("deleted: {message}");

    let mut reordered = original.clone();
    reordered.swap(12, 13);
    write(&bad, &reordered);
    let message = expect_bad(verify_file(&bad, Some(&key)), Tamper::Reordered, 13);
    eprintln!("reordered: {message}");

    // An event moved later in the file.
    let mut moved = original.clone();
    let line = moved.remove(2);
    moved.insert(20, line);
    write(&bad, &moved);
    expect_bad(verify_file(&bad, Some(&key)), Tamper::Reordered, 3);

    // Same findings for events from a database, by position.
    expect_bad(verify_events(&edited, Some(&key)), Tamper::Edited, 8);
    expect_bad(verify_events(&deleted, Some(&key)), Tamper::Deleted, 10);
    expect_bad(verify_events(&reordered, None), Tamper::Reordered, 13);

    // A torn last line.
    let mut torn = original.join("\n") + "\n";
    torn.push_str(&original[0][..40]);
    std::fs::write(&bad, torn).unwrap();
    expect_bad(verify_file(&bad, Some(&key)), Tamper::Malformed, 37);
}

/// Rewrites line `index` and re-chains everything after it, as a forger without the
/// checkpoint key would.
fn forge(lines: &[String], index: usize, edit: impl Fn(&mut serde_json::Value)) -> Vec<String> {
    let mut out = lines[..index].to_vec();
    let mut prev: String = if index == 0 {
        portcullis_audit::GENESIS_HASH.to_owned()
    } else {
        let v: serde_json::Value = serde_json::from_str(&lines[index - 1]).unwrap();
        v["portcullis.chain.hash"].as_str().unwrap().to_owned()
    };
    for (i, line) in lines[index..].iter().enumerate() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        if i == 0 {
            edit(&mut v);
        }
        let object = v.as_object_mut().unwrap();
        object.remove("portcullis.chain.hash");
        object.insert("portcullis.chain.prev_hash".into(), prev.clone().into());
        if object.contains_key("portcullis.checkpoint.hash") {
            object.insert("portcullis.checkpoint.hash".into(), prev.clone().into());
        }
        // serde_json without preserve_order sorts keys, which is the canonical form here.
        let canonical = serde_json::to_string(&v).unwrap();
        let hash = hex::encode(
            Sha256::new()
                .chain_update(prev.as_bytes())
                .chain_update(canonical.as_bytes())
                .finalize(),
        );
        v["portcullis.chain.hash"] = hash.clone().into();
        out.push(serde_json::to_string(&v).unwrap());
        prev = hash;
    }
    out
}

#[tokio::test]
async fn forged_history_fails_on_the_next_signed_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (out, key) = audit_file(dir.path()).await;
    let forged = forge(&lines(&out), 7, |v| v["user.id"] = "nobody".into());
    let bad = dir.path().join("forged.jsonl");
    write(&bad, &forged);
    // Hashes and checkpoint statements are consistent again, so only the signature of the
    // first checkpoint after the edit (line 12: events 1-5, checkpoint 6, events 7-11) can
    // tell; without the public key the forgery passes.
    verify_file(&bad, None).unwrap();
    let message = expect_bad(verify_file(&bad, Some(&key)), Tamper::BadCheckpoint, 12);
    assert!(message.contains("signature"), "{message}");
    eprintln!("forged: {message}");
    // A different key does not verify the genuine file either.
    let other_dir = tempfile::tempdir().unwrap();
    let (_, other_key) = audit_file(other_dir.path()).await;
    expect_bad(
        verify_file(&out, Some(&other_key)),
        Tamper::BadCheckpoint,
        6,
    );
}

#[tokio::test]
async fn a_spool_folder_verifies_as_one_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path(), "backend");
    settings
        .sinks
        .push(file_sink("file", &dir.path().join("out/audit.jsonl")));
    if let portcullis_audit::SinkKind::File { max_bytes, .. } = &mut settings.sinks[0].kind {
        *max_bytes = 16 * 1024;
    }
    let log = AuditLog::start(settings.clone(), &prometheus::Registry::new()).unwrap();
    for n in 0..300 {
        log.emit(event(n)).await.unwrap();
    }
    let key = TrustedKeys::from(log.public_key().cloned().unwrap());
    log.shutdown(Duration::from_secs(5)).await;
    // The spool keeps its newest segment; the file sink rotated into several files.
    let spool = verify_file(&settings.spool.dir, Some(&key)).unwrap();
    assert!(spool.chains[0].last_seq >= 300);
    let out = verify_file(&dir.path().join("out"), Some(&key)).unwrap();
    assert!(out.files > 5, "rotated files: {}", out.files);
    assert_eq!(
        (out.chains[0].first_seq, out.chains[0].last_seq),
        (1, spool.chains[0].last_seq)
    );
}
