//! The built-in sinks.

mod file;
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

/// This host's name for syslog HOSTNAME and HEC `host`: printable ASCII without spaces, at
/// most 255 bytes, else `-`.
pub(crate) fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name = name.trim();
    if !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| (33..=126).contains(&b)) {
        name.to_owned()
    } else {
        "-".to_owned()
    }
}
