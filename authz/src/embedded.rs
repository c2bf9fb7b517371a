//! The default policy bundle, compiled into the binary.
//!
//! A fresh installation has no policy folder of its own. Rather than failing (or looking
//! for `policies/` in whatever folder the process was started from), the binary writes
//! this bundle — exactly the repository's `policies/` at build time — into the state
//! folder on first run. From then on that folder is the security team's to edit: it is
//! watched and hot-reloaded like any configured bundle, and never overwritten.

use std::io::Write as _;
use std::path::Path;

use thiserror::Error;

/// `(file name, contents)` of every file of the shipped bundle.
pub const DEFAULT_BUNDLE: &[(&str, &str)] = &[
    ("README.md", include_str!("../../policies/README.md")),
    (
        "attachments.rego",
        include_str!("../../policies/attachments.rego"),
    ),
    (
        "attachments_test.rego",
        include_str!("../../policies/attachments_test.rego"),
    ),
    ("data.yaml", include_str!("../../policies/data.yaml")),
    (
        "directory.rego",
        include_str!("../../policies/directory.rego"),
    ),
    (
        "directory_test.rego",
        include_str!("../../policies/directory_test.rego"),
    ),
    ("http.rego", include_str!("../../policies/http.rego")),
    (
        "http_test.rego",
        include_str!("../../policies/http_test.rego"),
    ),
    ("tickets.rego", include_str!("../../policies/tickets.rego")),
    (
        "tickets_test.rego",
        include_str!("../../policies/tickets_test.rego"),
    ),
];

/// The built-in bundle could not be written out.
#[derive(Debug, Error)]
#[error("cannot write the built-in policy bundle to {path}: {source}")]
pub struct WriteError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// Writes [`DEFAULT_BUNDLE`] into `dir` unless `dir` already exists; returns whether it
/// wrote. The files are written to a sibling temporary folder first and renamed into
/// place, so a crash never leaves half a bundle behind.
pub fn write_default_bundle(dir: &Path) -> Result<bool, WriteError> {
    if dir.exists() {
        return Ok(false);
    }
    let err = |path: &Path| {
        let path = path.display().to_string();
        move |source| WriteError { path, source }
    };
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(err(parent))?;
    let staging = parent.join(format!(
        ".{}.partial",
        dir.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("policies")
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir(&staging).map_err(err(&staging))?;
    for (name, text) in DEFAULT_BUNDLE {
        let path = staging.join(name);
        let mut f = std::fs::File::create(&path).map_err(err(&path))?;
        f.write_all(text.as_bytes()).map_err(err(&path))?;
        f.sync_all().map_err(err(&path))?;
    }
    std::fs::rename(&staging, dir).map_err(err(dir))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_shipped_folder_is_built_in() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let mut on_disk: Vec<String> = std::fs::read_dir(&shipped)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let built_in: Vec<&str> = DEFAULT_BUNDLE.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            on_disk, built_in,
            "policies/ and DEFAULT_BUNDLE list different files"
        );
    }

    #[test]
    fn written_once_then_left_to_the_security_team() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("var/policies");
        assert!(write_default_bundle(&bundle).unwrap());
        let loaded = crate::PolicyBundle::load(&bundle).unwrap();
        assert!(loaded.run_tests(false).all_passed());
        std::fs::write(bundle.join("http.rego"), "package edited").unwrap();
        assert!(!write_default_bundle(&bundle).unwrap());
        assert_eq!(
            std::fs::read_to_string(bundle.join("http.rego")).unwrap(),
            "package edited"
        );
    }
}
