//! A private rsyslogd for tests: `rsyslogd -n -f CONF -i PIDFILE` with three imtcp inputs on
//! ephemeral ports — plain TCP, TLS (ossl, anonymous client) and mutual TLS (ossl,
//! x509/certvalid) — each writing the raw messages it receives (`%rawmsg%`, one per line) to
//! its own file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Pki, free_port};

pub struct Rsyslog {
    binary: PathBuf,
    child: Option<Child>,
    conf: PathBuf,
    pidfile: PathBuf,
    pub tcp_port: u16,
    pub tls_port: u16,
    pub mtls_port: u16,
    pub tcp_log: PathBuf,
    pub tls_log: PathBuf,
    pub mtls_log: PathBuf,
    pub pki: Pki,
}

/// The rsyslogd binary; `None` (after saying so) when it is missing outside CI. In CI a missing
/// rsyslogd fails the test: it must never be skipped there.
#[allow(
    clippy::disallowed_methods,
    reason = "a missing receiver fails the run under CI (the CI flag, not configuration)"
)]
pub fn find() -> Option<PathBuf> {
    let found = [
        "/usr/sbin/rsyslogd",
        "/sbin/rsyslogd",
        "/usr/local/sbin/rsyslogd",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "rsyslogd is missing and CI is set: install rsyslog and rsyslog-openssl"
        );
        eprintln!("SKIPPED: rsyslogd not installed (apt-get install -y rsyslog rsyslog-openssl)");
    }
    found
}

impl Rsyslog {
    /// Writes the PKI and config into `dir` and starts rsyslogd. Free ports are picked before
    /// rsyslogd binds them, so a test running alongside can take one in between: then rsyslogd
    /// is started again on fresh ports instead of a test talking to someone else's listener.
    pub fn start(binary: PathBuf, dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("work")).unwrap();
        let pki = Pki::generate(dir);
        let mut rsyslog = Self {
            binary,
            child: None,
            pidfile: dir.join("rsyslogd.pid"),
            conf: dir.join("rsyslog.conf"),
            tcp_port: 0,
            tls_port: 0,
            mtls_port: 0,
            tcp_log: dir.join("tcp.log"),
            tls_log: dir.join("tls.log"),
            mtls_log: dir.join("mtls.log"),
            pki,
        };
        for _ in 0..5 {
            (rsyslog.tcp_port, rsyslog.tls_port, rsyslog.mtls_port) =
                (free_port(), free_port(), free_port());
            rsyslog.write_conf(dir);
            if rsyslog.run() {
                return rsyslog;
            }
            rsyslog.stop();
        }
        panic!("rsyslogd could not bind three free ports in five tries");
    }

    fn write_conf(&self, dir: &Path) {
        let d = dir.display();
        let (tcp_port, tls_port, mtls_port) = (self.tcp_port, self.tls_port, self.mtls_port);
        std::fs::write(
            &self.conf,
            format!(
                r#"global(
  workDirectory="{d}/work"
  maxMessageSize="64k"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}"
)
module(load="imtcp" maxSessions="100")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="tcp") {{ action(type="omfile" file="{tcp}" template="raw") }}
ruleset(name="tls") {{ action(type="omfile" file="{tls}" template="raw") }}
ruleset(name="mtls") {{ action(type="omfile" file="{mtls}" template="raw") }}
input(type="imtcp" address="127.0.0.1" port="{tcp_port}" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{tls_port}" ruleset="tls"
      streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{mtls_port}" ruleset="mtls"
      streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
"#,
                ca = self.pki.ca.display(),
                cert = self.pki.server_cert.display(),
                key = self.pki.server_key.display(),
                tcp = self.tcp_log.display(),
                tls = self.tls_log.display(),
                mtls = self.mtls_log.display(),
            ),
        )
        .unwrap();
    }

    /// Starts rsyslogd and waits until it listens on all three ports itself. `false` when
    /// another process holds one of them (rsyslogd then never gets it).
    fn run(&mut self) -> bool {
        let _ = std::fs::remove_file(&self.pidfile);
        let child = Command::new(&self.binary)
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(&self.pidfile)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.child = Some(child);
        let start = Instant::now();
        let ports = [self.tcp_port, self.tls_port, self.mtls_port];
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("rsyslogd exited: {status}");
            }
            let owned = listening_sockets(pid);
            let mine = |port: &u16| listener_inode(*port).is_some_and(|i| owned.contains(&i));
            if ports.iter().all(mine) {
                return true;
            }
            let taken = ports
                .iter()
                .any(|p| listener_inode(*p).is_some() && !mine(p));
            if taken && start.elapsed() > Duration::from_secs(2) {
                return false;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "rsyslogd did not listen on {ports:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops rsyslogd the way a service manager does (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status()
                .unwrap();
            assert!(status.success());
            child.wait().unwrap();
        }
    }

    /// Starts rsyslogd again on the same ports.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.run(),
            "another process took one of rsyslogd's ports while it was down"
        );
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The socket inode of the IPv4 listener on 127.0.0.1:`port`, from `/proc/net/tcp`.
fn listener_inode(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Fields: sl local_address rem_address st ... inode (the tenth); 0A is LISTEN.
        (f.len() > 9 && f[1] == local && f[3] == "0A")
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// The socket inodes among a process's open files.
fn listening_sockets(pid: u32) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.filter_map(|fd| {
        let target = std::fs::read_link(fd.ok()?.path()).ok()?;
        let t = target.to_str()?;
        t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
    })
    .collect()
}

/// One RFC 5424 message as received, parsed.
#[derive(Debug)]
pub struct Received {
    pub pri: u8,
    pub timestamp: String,
    pub hostname: String,
    pub app_name: String,
    pub msg_id: String,
    pub event_id: String,
    pub seq: u64,
    pub json: serde_json::Value,
}

/// Parses `<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG` strictly enough for the tests.
pub fn parse_rfc5424(line: &str) -> Received {
    let rest = line
        .strip_prefix('<')
        .unwrap_or_else(|| panic!("no PRI: {line}"));
    let (pri, rest) = rest.split_once('>').unwrap();
    let rest = rest
        .strip_prefix("1 ")
        .unwrap_or_else(|| panic!("not version 1: {line}"));
    let mut fields = rest.splitn(6, ' ');
    let timestamp = fields.next().unwrap().to_owned();
    let hostname = fields.next().unwrap().to_owned();
    let app_name = fields.next().unwrap().to_owned();
    let _procid = fields.next().unwrap();
    let msg_id = fields.next().unwrap().to_owned();
    let rest = fields.next().unwrap();
    let sd_end = rest
        .find("] ")
        .unwrap_or_else(|| panic!("no structured data: {line}"));
    let sd = &rest[..=sd_end];
    let msg = &rest[sd_end + 2..];
    assert!(sd.starts_with("[portcullis@32473 "), "unexpected SD: {sd}");
    let param = |name: &str| {
        let start = sd.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        let end = start + sd[start..].find('"').unwrap();
        sd[start..end].to_owned()
    };
    time::OffsetDateTime::parse(&timestamp, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("bad TIMESTAMP {timestamp}: {e}"));
    Received {
        pri: pri.parse().unwrap(),
        timestamp,
        hostname,
        app_name,
        msg_id,
        event_id: param("eventId"),
        seq: param("seq").parse().unwrap(),
        json: serde_json::from_str(msg).unwrap_or_else(|e| panic!("MSG is not JSON ({e}): {msg}")),
    }
}

/// Every message in a received-messages file.
/// Every complete message in a received-messages file (rsyslog may be half-way through
/// writing the last one).
pub fn received(path: &Path) -> Vec<Received> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .split('\n')
        .filter(|l| !l.is_empty())
        .map(parse_rfc5424)
        .collect()
}
