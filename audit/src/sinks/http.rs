//! HTTP sink: NDJSON batches or Splunk HTTP Event Collector.
//!
//! A batch is one POST; any 2xx status acknowledges it, anything else (or no answer within
//! 30 s) is a failure and the batch is sent again later. NDJSON bodies are the stored lines
//! (`application/x-ndjson`, `Authorization: Bearer <token>` when a token file is set); HEC
//! bodies are `{"event":<line>,"host":…,"source":"portcullis:<emitter>","sourcetype":
//! "portcullis:audit","time":<epoch seconds>}` per line with `Authorization: Splunk <token>`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::canonical::write_json_string;
use crate::delivery::{Sink, SinkError};
use crate::settings::HttpFormat;
use crate::sinks::host::hostname;
use crate::spool::spooled::SpooledEvent;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct HttpSink {
    name: String,
    client: reqwest::Client,
    url: reqwest::Url,
    format: HttpFormat,
    token: Option<Token>,
    batch_max_events: usize,
    hostname: String,
    source: String,
}

impl HttpSink {
    pub(crate) fn new(
        name: String,
        url: &str,
        format: HttpFormat,
        token_file: Option<&Path>,
        ca_file: Option<&Path>,
        batch_max_events: usize,
        emitter: &str,
    ) -> Result<Self, SinkError> {
        let url = reqwest::Url::parse(url)
            .map_err(|e| SinkError::Other(format!("url {url:?}: {e}").into()))?;
        let token = token_file
            .map(|path| Token::load(path, format))
            .transpose()?;
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("portcullis-audit/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .map_err(SinkError::io(format!("CA file {}", path.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            name,
            client: builder.build()?,
            url,
            format,
            token,
            batch_max_events,
            hostname: hostname(),
            source: format!("portcullis:{emitter}"),
        })
    }

    fn body(&self, batch: &[SpooledEvent]) -> Vec<u8> {
        let mut body = Vec::with_capacity(batch.len() * 1024);
        for event in batch {
            match self.format {
                HttpFormat::Ndjson => body.extend_from_slice(event.json().as_bytes()),
                HttpFormat::SplunkHec => {
                    body.extend_from_slice(b"{\"event\":");
                    body.extend_from_slice(event.json().as_bytes());
                    body.extend_from_slice(b",\"host\":");
                    write_json_string(&self.hostname, &mut body);
                    body.extend_from_slice(b",\"source\":");
                    write_json_string(&self.source, &mut body);
                    body.extend_from_slice(b",\"sourcetype\":\"portcullis:audit\"");
                    if let Ok(at) = OffsetDateTime::parse(event.timestamp(), &Rfc3339) {
                        body.extend_from_slice(
                            format!(",\"time\":{}.{:06}", at.unix_timestamp(), at.microsecond())
                                .as_bytes(),
                        );
                    }
                    body.push(b'}');
                }
            }
            body.push(b'\n');
        }
        body
    }
}

/// The sink's token, from its file. A rotated token (the file replaced, as Vault Agent
/// or a Kubernetes secret volume do) is picked up at the next batch without a restart:
/// the file's modification time is checked before each one. A replacement that cannot
/// be read keeps the previous token and says so.
struct Token {
    path: PathBuf,
    format: HttpFormat,
    modified: Option<SystemTime>,
    /// `Bearer <token>` or `Splunk <token>`, marked sensitive (never logged by reqwest).
    header: HeaderValue,
}

impl Token {
    fn load(path: &Path, format: HttpFormat) -> Result<Self, SinkError> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Ok(Self {
            header: read_token(path, format)?,
            path: path.to_owned(),
            format,
            modified,
        })
    }

    fn refresh(&mut self) {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified == self.modified {
            return;
        }
        match read_token(&self.path, self.format) {
            Ok(header) => {
                self.header = header;
                self.modified = modified;
                tracing::info!(file = %self.path.display(), "audit sink token reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit sink token file changed but cannot be used; the previous token stays");
                self.modified = modified;
            }
        }
    }
}

fn read_token(path: &Path, format: HttpFormat) -> Result<HeaderValue, SinkError> {
    let token = std::fs::read_to_string(path)
        .map_err(SinkError::io(format!("token file {}", path.display())))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(SinkError::Other(
            format!("token file {} is empty", path.display()).into(),
        ));
    }
    let scheme = match format {
        HttpFormat::Ndjson => "Bearer",
        HttpFormat::SplunkHec => "Splunk",
    };
    let mut value = HeaderValue::from_str(&format!("{scheme} {token}")).map_err(|_| {
        SinkError::Other(
            format!(
                "token file {} holds characters not allowed in a header",
                path.display()
            )
            .into(),
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

#[async_trait]
impl Sink for HttpSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_batch_events(&self) -> usize {
        self.batch_max_events
    }

    async fn deliver(&mut self, batch: &[SpooledEvent]) -> Result<(), SinkError> {
        let content_type = match self.format {
            HttpFormat::Ndjson => "application/x-ndjson",
            HttpFormat::SplunkHec => "application/json",
        };
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, content_type)
            .body(self.body(batch));
        if let Some(token) = &mut self.token {
            token.refresh();
            request = request.header(AUTHORIZATION, token.header.clone());
        }
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let mut body = response.text().await.unwrap_or_default();
        if body.len() > 256 {
            let mut end = 256;
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            body.truncate(end);
        }
        Err(SinkError::Status {
            status: status.as_u16(),
            body,
        })
    }
}
