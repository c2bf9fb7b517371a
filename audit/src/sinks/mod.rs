//! The built-in sinks.

mod file;
mod host;
mod http;
mod syslog;

use crate::delivery::{Sink, SinkError};
use crate::settings::{SinkKind, SinkSettings};

/// Builds the sink `settings` describe, reading its certificate and token files now so a bad
/// file fails start-up rather than the first delivery.
pub(crate) fn build(settings: &SinkSettings, emitter: &str) -> Result<Box<dyn Sink>, SinkError> {
    let SinkSettings { name, kind } = settings;
    Ok(match kind {
        SinkKind::File { path, max_bytes } => Box::new(file::FileSink::new(
            name.clone(),
            path.clone(),
            *max_bytes,
            emitter.to_owned(),
        )),
        SinkKind::Syslog { addr, tls } => {
            Box::new(syslog::SyslogSink::new(name.clone(), addr, tls.as_ref())?)
        }
        SinkKind::Http {
            url,
            format,
            token_file,
            ca_file,
            batch_max_events,
        } => Box::new(http::HttpSink::new(
            name.clone(),
            url,
            *format,
            token_file.as_deref(),
            ca_file.as_deref(),
            *batch_max_events,
            emitter,
        )?),
    })
}
