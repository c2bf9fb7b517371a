//! This host's name as the sinks report it (syslog HOSTNAME, Splunk HEC `host`).

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
