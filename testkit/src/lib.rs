//! The harness every crate's tests share, so each helper exists once: free ports, waiting
//! for a condition, throwaway PostgreSQL databases, and a process's memory mappings.
//!
//! Test code may panic on a failed setup step (the test should stop there, loudly).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support: a failed setup step should abort the test loudly"
)]

pub mod pg;
pub mod smaps;

use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago. Whoever binds it next gets it, so
/// there is a small window in which another process could take it.
///
/// Ports come from below the kernel's ephemeral range (32768–60999 by default): a port
/// the kernel handed out for `bind(0)` is also what it hands the next outgoing
/// connection (to PostgreSQL, Redis, another test's server), and one of those taking it
/// before the server under test binds it made starts fail with "Address already in
/// use". One cursor per process walks the range from a random start, so two calls never
/// return the same port (tests run on threads of one process) and parallel processes
/// start far apart; each port is checked free.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 15_000;
    const SPAN: u32 = 17_000;
    static CURSOR: std::sync::OnceLock<AtomicU32> = std::sync::OnceLock::new();
    let cursor = CURSOR.get_or_init(|| AtomicU32::new(rand::random_range(0..SPAN)));
    for _ in 0..SPAN {
        let n = cursor.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(LOW + n % SPAN).unwrap();
        if port_is_free(port) {
            return port;
        }
    }
    // Everything below the ephemeral range taken: let the kernel choose.
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether nothing listens on `port` of 127.0.0.1 now.
pub fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after `timeout`.
pub async fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `$cond` (an expression that may `.await`) every 50 ms until it is true;
/// panics with the message after `$timeout`.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $timeout:expr, $($msg:tt)+) => {{
        let deadline = std::time::Instant::now() + $timeout;
        loop {
            if $cond {
                break;
            }
            if std::time::Instant::now() > deadline {
                panic!($($msg)+);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }};
}

/// A short random hex name part, unique enough for parallel test runs.
pub fn unique() -> String {
    let n: u64 = rand::random();
    format!("{:x}{n:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_of_one_process_never_repeat_and_stay_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..500).map(|_| free_port()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        assert!(
            ports.iter().all(|p| (15_000..32_000).contains(p)),
            "{ports:?}"
        );
    }
}
