//! The serving certificate: loaded and checked by our code, handed to rustls
//! through a [`ResolvesServerCert`] over an `ArcSwap`, so that replacing the
//! files on disk is a swap rather than a restart, and a bad file is an error
//! (the old certificate keeps serving) rather than a panic.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

use crate::metrics::Metrics;
use crate::settings::TlsSource;

/// Why a certificate could not be loaded.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path} holds no usable private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("the key in {key} does not match the certificate in {certificate}: {reason}")]
    Mismatch {
        certificate: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("the certificate in {path} expired")]
    Expired { path: PathBuf },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
}

/// The process-wide rustls provider: ring, restricted to forward-secret AEAD
/// suites. TLS 1.2 offers exactly one suite per key type, and the listener prefers
/// its own order ([`server_config`]), so the negotiated suite never depends on the
/// client's preference order (scanners such as testssl.sh rate that as a finding).
/// TLS 1.3 keeps the three standard suites, all AEAD with ephemeral key exchange.
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        ..default_provider()
    }
}

/// TLS sessions the server remembers for resumption by id; tickets (stateless, keys
/// rotated by rustls every 6 hours) resume without taking an entry.
const SESSION_CACHE_ENTRIES: usize = 16 * 1024;

/// The HTTPS listener's rustls configuration: TLS 1.3 and 1.2 on [`crypto_provider`],
/// the certificate from `certificate`, ALPN h2 then http/1.1, stateless session
/// tickets and a session cache, so returning clients skip the full handshake, and the
/// server's cipher-suite order.
pub fn server_config(certificate: CertStore) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(crypto_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(certificate));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// A loaded certificate and when it expires.
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// notAfter of the leaf, Unix seconds.
    pub not_after: i64,
}

/// Reads and validates a PEM chain and key: the chain parses, the leaf is
/// current, and the key matches the leaf.
pub fn load(certificate: &Path, key: &Path) -> Result<LoadedCert, TlsError> {
    let cert_pem = fs::read(certificate).map_err(|source| TlsError::Read {
        path: certificate.to_owned(),
        source,
    })?;
    let key_pem = fs::read(key).map_err(|source| TlsError::Read {
        path: key.to_owned(),
        source,
    })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: certificate.to_owned(),
            reason: e.to_string(),
        })?;
    let leaf = chain.first().ok_or_else(|| TlsError::NoCertificate {
        path: certificate.to_owned(),
    })?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::BadCertificate {
            path: certificate.to_owned(),
            reason: e.to_string(),
        })?;
    let not_after = parsed.validity().not_after.timestamp();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if not_after <= now {
        return Err(TlsError::Expired {
            path: certificate.to_owned(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadKey {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(crypto_provider()));
    let certified =
        CertifiedKey::from_der(chain, private, &provider).map_err(|e| TlsError::Mismatch {
            certificate: certificate.to_owned(),
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        not_after,
    })
}

/// Lifetime of a generated self-signed certificate.
const SELF_SIGNED_DAYS: i64 = 90;
/// A generated certificate this close to expiry is replaced at start-up.
const SELF_SIGNED_RENEW_DAYS: i64 = 7;

/// Writes a self-signed certificate for `localhost`, `127.0.0.1` and `::1`
/// into `dir` unless a usable one is already there; returns the file paths
/// and whether a new one was made. The key file is created with mode 0600.
pub fn ensure_self_signed(dir: &Path) -> Result<(PathBuf, PathBuf, bool), TlsError> {
    let cert_path = dir.join("self-signed.crt");
    let key_path = dir.join("self-signed.key");
    let now = time::OffsetDateTime::now_utc();
    let renew_after = (now + time::Duration::days(SELF_SIGNED_RENEW_DAYS)).unix_timestamp();
    if load(&cert_path, &key_path).is_ok_and(|c| c.not_after > renew_after) {
        return Ok((cert_path, key_path, false));
    }
    let generate = |e: &dyn std::fmt::Display| TlsError::Generate(e.to_string());
    fs::create_dir_all(dir).map_err(|e| generate(&e))?;
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| generate(&e))?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "Portcullis self-signed (localhost)",
    );
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(SELF_SIGNED_DAYS);
    let key = rcgen::KeyPair::generate().map_err(|e| generate(&e))?;
    let cert = params.self_signed(&key).map_err(|e| generate(&e))?;
    write_private(&key_path, key.serialize_pem().as_bytes()).map_err(|e| generate(&e))?;
    fs::write(&cert_path, cert.pem()).map_err(|e| generate(&e))?;
    Ok((cert_path, key_path, true))
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// The certificate currently served. Cloning shares the same slot.
#[derive(Clone)]
pub struct CertStore {
    current: Arc<ArcSwap<CertifiedKey>>,
    certificate: PathBuf,
    key: PathBuf,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// The names the served certificate is for (DNS names, lower case, `*.` wildcards
    /// kept; IP addresses, IPv6 in brackets), read from the certificate in force.
    pub fn names(&self) -> Vec<String> {
        let key = self.current.load();
        let Some(leaf) = key.cert.first() else {
            return Vec::new();
        };
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(leaf) else {
            return Vec::new();
        };
        let mut names = Vec::new();
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        names.push(d.to_ascii_lowercase());
                    }
                    x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                            names.push(std::net::Ipv4Addr::from(v4).to_string());
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                            names.push(format!("[{}]", std::net::Ipv6Addr::from(v6)));
                        }
                    }
                    _ => {}
                }
            }
        }
        names
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl CertStore {
    /// Loads the configured certificate (generating the self-signed one if
    /// that is what is configured). Returns the store and a line for the
    /// operator when a certificate was generated.
    pub fn open(source: &TlsSource, metrics: &Metrics) -> Result<(Self, Option<String>), TlsError> {
        let (certificate, key, note) = match source {
            TlsSource::Files { certificate, key } => (certificate.clone(), key.clone(), None),
            TlsSource::SelfSigned { dir } => {
                let (c, k, made) = ensure_self_signed(dir)?;
                let note = made.then(|| {
                    format!(
                        "generated a self-signed certificate for localhost in {} (configure proxy.tls for real use)",
                        dir.display()
                    )
                });
                (c, k, note)
            }
        };
        let loaded = load(&certificate, &key)?;
        metrics.tls_not_after.set(loaded.not_after);
        Ok((
            Self {
                current: Arc::new(ArcSwap::new(loaded.key)),
                certificate,
                key,
            },
            note,
        ))
    }

    /// Re-reads the files; swaps on success, keeps the old certificate on
    /// failure (counted by the reload service in `portcullis_reloads_total`).
    pub fn reload(&self, metrics: &Metrics) -> Result<(), TlsError> {
        match load(&self.certificate, &self.key) {
            Ok(loaded) => {
                self.current.store(loaded.key);
                metrics.tls_not_after.set(loaded.not_after);
                tracing::info!(certificate = %self.certificate.display(), "certificate reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "certificate reload rejected; the previous certificate keeps serving");
                Err(e)
            }
        }
    }

    fn fingerprint(&self) -> Option<(SystemTime, u64, SystemTime, u64)> {
        let c = fs::metadata(&self.certificate).ok()?;
        let k = fs::metadata(&self.key).ok()?;
        Some((c.modified().ok()?, c.len(), k.modified().ok()?, k.len()))
    }

    /// The reload target of this certificate: the folders of certificate and key are
    /// watched, and the periodic check catches symlink swaps of mounted secrets that
    /// raise no file event. A file event or poll reloads only when the files' size or
    /// time changed; `SIGHUP` always re-reads them.
    pub fn reload_target(&self, metrics: Metrics) -> portcullis_reload::Target {
        let store = self.clone();
        let mut seen = store.fingerprint();
        portcullis_reload::Target::new("certificate", move |trigger| {
            let now = store.fingerprint();
            if now == seen && trigger != portcullis_reload::Trigger::Signal {
                return Ok(portcullis_reload::Outcome::Unchanged);
            }
            seen = now;
            store
                .reload(&metrics)
                .map(|()| portcullis_reload::Outcome::Reloaded {
                    version: store.certificate.display().to_string(),
                })
                .map_err(|e| portcullis_reload::Rejected(e.to_string()))
        })
        .watch_files(&[self.certificate.clone(), self.key.clone()])
        .polled()
    }
}
