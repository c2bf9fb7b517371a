//! A moto S3 server for the tests of S3 storage (attachments, retention archives).

use std::path::PathBuf;

/// A moto S3 server (`moto_server` from PyPI, installed by scripts/install-test-deps.sh)
/// on a free port; killed on drop.
pub struct Moto {
    child: std::process::Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// `None` (test skipped) only when moto is missing and `CI` is unset.
    #[allow(
        clippy::disallowed_methods,
        reason = "where the test tools are installed and whether this is CI are test setup, not configuration"
    )]
    pub async fn start() -> Option<Moto> {
        let home = std::env::var("HOME").unwrap_or_default();
        let bin = PathBuf::from(home).join(".cache/portcullis-tools/moto/bin/moto_server");
        if !bin.is_file() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{} is missing: run scripts/install-test-deps.sh",
                bin.display()
            );
            eprintln!(
                "moto_server not installed: S3 test skipped (run scripts/install-test-deps.sh)"
            );
            return None;
        }
        let port = portcullis_testkit::free_port();
        let child = std::process::Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client.get(&moto.endpoint).send().await.is_ok() {
                return Some(moto);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("moto_server did not start on {}", moto.endpoint);
    }

    /// Creates `bucket`.
    pub async fn create_bucket(&self, bucket: &str) {
        let r = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "bucket {bucket}: {}", r.status());
    }

    /// A credentials file (the shared-credentials format) in `dir` for the test's keys.
    pub fn credentials_file(dir: &std::path::Path) -> PathBuf {
        let creds = dir.join("s3-credentials");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = testing\naws_secret_access_key = testing-secret\n",
        )
        .unwrap();
        creds
    }

    /// A client of the whole bucket (no prefix), signing as the test's credentials.
    pub fn bucket(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing-secret")
            .with_allow_http(true)
            .build()
            .unwrap()
    }

    /// Every object of `bucket`: (key, bytes), read straight from the server.
    pub async fn objects(&self, bucket: &str) -> Vec<(String, Vec<u8>)> {
        use futures_util::TryStreamExt;
        use object_store::{ObjectStore, ObjectStoreExt};
        let store = self.bucket(bucket);
        let metas: Vec<object_store::ObjectMeta> = store.list(None).try_collect().await.unwrap();
        let mut out = Vec::new();
        for m in metas {
            let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
            assert_eq!(bytes.len() as u64, m.size);
            out.push((m.location.to_string(), bytes.to_vec()));
        }
        out
    }
}
