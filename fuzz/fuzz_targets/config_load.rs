//! The configuration loader (`src/config.rs`: YAML → structure, every structural
//! problem collected, then each section's validation), as `portcullis check-config`
//! and every start-up run it. `src/config.rs` belongs to the binary, so it is compiled
//! into this target as it is.
//!
//! Each input is written to `portcullis.yaml` in a folder of its own (relative paths in
//! the file resolve there) and loaded. Loading only reads: nothing is created.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, reason = "the binary's module, of which the loader is used")]
#[path = "../../src/config.rs"]
mod config;

fn file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("portcullis-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir.join("portcullis.yaml")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = file();
    std::fs::write(path, data).expect("write the configuration");
    match config::load(Some(path)) {
        Ok(settings) => {
            // Everything is resolved, and the proxy and the backend do not share a port.
            assert!(settings.state_dir.is_absolute(), "{:?}", settings.state_dir);
            assert_ne!(
                Some(settings.backend.listen),
                Some(settings.proxy.https_addr)
            );
        }
        Err(error) => {
            let lines = error.lines();
            assert!(!lines.is_empty(), "refused without a reason");
            assert!(
                lines.iter().all(|l| !l.trim().is_empty()),
                "an empty reason: {lines:?}"
            );
        }
    }
});
