//! The administrative CLI against a real state folder.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use std::path::Path;
use std::process::Command;

use sha2::Digest;

fn config(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("portcullis.yaml");
    std::fs::write(
        &file,
        format!(
            "state_dir: {}\nlog: {{format: text, level: info}}\nshared: {{policy_dir: '{p}'}}\n",
            dir.join("var").display(),
            p = support::policy_dir()
        ),
    )
    .unwrap();
    file
}

fn run(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(support::binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every file below `dir`, as bytes.
fn all_files(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
}

#[test]
fn imported_passwords_leave_no_plaintext_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let secrets = [
        "Plaintext-Secret-One-42",
        "Bcrypt-Secret-Two-42",
        "Sha-Secret-Three-42",
    ];
    let bcrypt_hash = bcrypt::hash(secrets[1], 4).unwrap();
    let sha = hex::encode(sha2::Sha256::digest(secrets[2].as_bytes()));
    let csv = format!(
        "username,email,display_name,department,roles,password_format,password\n\
         pia,pia@example.org,Pia,Facilities,employee,plaintext,{}\n\
         ben,ben@example.org,Ben,Facilities,technician;employee,bcrypt,{bcrypt_hash}\n\
         sam,sam@example.org,Sam,,department_head,sha256,{sha}\n",
        secrets[0]
    );
    let import = dir.path().join("users.csv");
    std::fs::write(&import, csv).unwrap();
    let (ok, out) = run(&cfg, &["user", "import", import.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("imported 3 user(s)"), "{out}");
    // A second import skips existing users and says so.
    let (ok, out2) = run(&cfg, &["user", "import", import.to_str().unwrap()]);
    assert!(ok && out2.contains("skipped 3"), "{out2}");

    let mut files = Vec::new();
    all_files(&dir.path().join("var"), &mut files);
    assert!(
        files.iter().any(|(p, _)| p.ends_with("portcullis.db")),
        "{:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for secret in secrets.iter().chain([&bcrypt_hash.as_str(), &sha.as_str()]) {
        for (path, bytes) in &files {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} found in {path}"
            );
        }
        assert!(
            !out.contains(secret) && !out2.contains(secret),
            "{secret} printed"
        );
    }

    // A malformed row names its line, never its content.
    std::fs::write(&import, "username,email,display_name,department,roles,password_format,password\nx,x@e.org,X,,wizard,plaintext,Visible-Secret-99\n").unwrap();
    let (ok, out) = run(&cfg, &["user", "import", import.to_str().unwrap()]);
    assert!(!ok && out.contains("unknown role `wizard`"), "{out}");
    assert!(!out.contains("Visible-Secret-99"), "{out}");
}

#[test]
fn policy_test_command_reports_and_fails_like_opa_test() {
    let (ok, out) = {
        let out = Command::new(support::binary())
            .args([
                "policy",
                "test",
                support::policy_dir(),
                "--coverage",
                "--threshold",
                "90",
            ])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert!(ok, "{out}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
    assert!(out.contains("policies/http.rego"), "{out}");

    let broken = tempfile::tempdir().unwrap();
    std::fs::write(
        broken.path().join("p.rego"),
        "package p\n\nallow if {\n  input.x ==\n}\n",
    )
    .unwrap();
    let out = Command::new(support::binary())
        .args(["policy", "test", broken.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("p.rego:"), "{err}");

    let failing = tempfile::tempdir().unwrap();
    std::fs::write(
        failing.path().join("p.rego"),
        "package p\n\nallow if input.x == 1\n",
    )
    .unwrap();
    std::fs::write(
        failing.path().join("p_test.rego"),
        "package p_test\n\ntest_allow if data.p.allow with input as {\"x\": 2}\n",
    )
    .unwrap();
    let out = Command::new(support::binary())
        .args(["policy", "test", failing.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAIL p_test.test_allow"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let input = failing.path().join("in.json");
    std::fs::write(&input, "{\"x\": 1}").unwrap();
    let out = Command::new(support::binary())
        .args([
            "policy",
            "eval",
            "--dir",
            failing.path().to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "data.p.allow",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "true");
}

#[test]
fn db_migrate_dry_run_lists_then_applies() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (ok, out) = run(&cfg, &["db", "migrate", "--dry-run"]);
    assert!(
        ok && out.contains("would apply") && out.contains("tickets"),
        "{out}"
    );
    assert!(!dir.path().join("var/portcullis.db-wal").exists() || ok);
    let (ok, out) = run(&cfg, &["db", "migrate"]);
    assert!(ok && out.contains("applied"), "{out}");
    let (ok, out) = run(&cfg, &["db", "migrate", "--dry-run"]);
    assert!(ok && out.contains("up to date"), "{out}");
}

#[test]
fn keys_rotate_adds_a_published_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (ok, out) = run(&cfg, &["db", "migrate"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&cfg, &["keys", "rotate"]);
    assert!(ok && out.contains("added signing key"), "{out}");
    let (ok, out) = run(&cfg, &["keys", "rotate"]);
    assert!(!ok && out.contains("already in progress"), "{out}");
    let ring: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("var/keys/jwt/keyring.json")).unwrap(),
    )
    .unwrap();
    let states: Vec<&str> = ring
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["current", "next"]);
}

#[test]
fn from_another_folder_the_built_in_bundle_serves_and_offline_commands_need_no_policy() {
    let dir = tempfile::tempdir().unwrap();
    let in_dir = |args: &[&str]| {
        let out = Command::new(support::binary())
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    // No configuration and no policies/ here: offline commands do not need one.
    let (ok, out) = in_dir(&["check-config", "/dev/null"]);
    assert!(ok, "{out}");
    std::fs::write(dir.path().join("empty.jsonl"), "").unwrap();
    let (ok, out) = in_dir(&["audit", "verify", "empty.jsonl"]);
    assert!(ok, "{out}");
    assert!(
        !dir.path().join("var/policies").exists(),
        "an offline command wrote the bundle"
    );
    // A command that enforces policy writes the built-in bundle once and says so.
    let (ok, out) = in_dir(&[
        "user",
        "create",
        "bob",
        "--email",
        "bob@example.org",
        "--display-name",
        "Bob",
        "--role",
        "employee",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("wrote the built-in bundle"), "{out}");
    for (name, text) in portcullis_authz::embedded::DEFAULT_BUNDLE {
        let shipped = std::fs::read_to_string(Path::new(support::policy_dir()).join(name)).unwrap();
        assert_eq!(*text, shipped, "{name}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("var/policies").join(name)).unwrap(),
            shipped,
            "{name}"
        );
    }
    // The security team's edits are theirs: a second run leaves the folder alone.
    std::fs::write(dir.path().join("var/policies/README.md"), "edited").unwrap();
    let (ok, out) = in_dir(&[
        "user",
        "create",
        "carol",
        "--email",
        "carol@example.org",
        "--display-name",
        "Carol",
        "--role",
        "employee",
    ]);
    assert!(ok, "{out}");
    assert!(!out.contains("wrote the built-in bundle"), "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("var/policies/README.md")).unwrap(),
        "edited"
    );
}

fn json_of(out: &str) -> serde_json::Value {
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in {out}"));
    serde_json::from_str(line).unwrap()
}

/// `user import` checks every row before it stores any: a bad row at the end leaves
/// nothing imported. `--json` prints a summary for scripts. Ctrl-C stops it between users
/// with exit 130 and whole users only; the next run imports the rest.
#[test]
fn user_import_is_all_checked_first_interruptible_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let header = "username,email,display_name,department,roles,password_format,password\n";
    let row = |n: usize| {
        format!("u{n},u{n}@example.org,U {n},Facilities,employee,plaintext,Imported-Secret-{n}\n")
    };
    let file = dir.path().join("users.csv");

    // Row 3 of 3 is bad: nothing is stored, so a correct file then imports all three.
    std::fs::write(
        &file,
        format!(
            "{header}{}{}u1,x@example.org,X,,employee,md5,abc\n",
            row(1),
            row(2)
        ),
    )
    .unwrap();
    let (ok, out) = run(&cfg, &["user", "import", file.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("user 3 (u1): listed twice"), "{out}");
    std::fs::write(&file, format!("{header}{}{}{}", row(1), row(2), row(3))).unwrap();
    let (ok, out) = run(&cfg, &["user", "import", file.to_str().unwrap(), "--json"]);
    assert!(ok, "{out}");
    let report = json_of(&out);
    assert_eq!(
        (
            report["total"].as_u64(),
            report["created"].as_u64(),
            report["skipped"].as_u64()
        ),
        (Some(3), Some(3), Some(0)),
        "{out}"
    );
    assert_eq!(report["interrupted"], false);

    // Many users (each an Argon2id hash): interrupted once the first few are in.
    let many = 1000;
    let text: String = std::iter::once(header.to_owned())
        .chain((10..10 + many).map(row))
        .collect();
    std::fs::write(&file, text).unwrap();
    let child = Command::new(support::binary())
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "user",
            "import",
            file.to_str().unwrap(),
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let trail = dir.path().join("var/audit/cli.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(&trail)
        .unwrap_or_default()
        .contains("\"target_username\":\"u10\"")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no user imported after 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{stdout}{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let first = json_of(&stdout);
    assert_eq!(first["interrupted"], true, "{stdout}");
    let done = first["created"].as_u64().unwrap();
    assert!(done >= 1 && done < many as u64, "{stdout}");

    let (ok, out) = run(&cfg, &["user", "import", file.to_str().unwrap(), "--json"]);
    assert!(ok, "{out}");
    let second = json_of(&out);
    assert_eq!(second["skipped"].as_u64(), Some(done), "{out}");
    assert_eq!(
        second["created"].as_u64(),
        Some(many as u64 - done),
        "{out}"
    );
    assert!(!out.contains("Imported-Secret"), "a password was printed");
}
