#!/usr/bin/env python3
"""`make bench-proxy`: Portcullis against nginx and the bare upstream, one run, loopback.

Starts, each on free 127.0.0.1 ports and in one temporary folder:
  * a static upstream: nginx `return 200` (plain HTTP/1.1, and h2c on a second port);
  * nginx as a plain TLS reverse proxy to it (2 workers, upstream keep-alive pool,
    session cache and tickets, h2, the same static security headers Portcullis sends);
  * `portcullis up` with the full pipeline, an extra route `/bench` to the static
    upstream, rate limits raised out of the way, and a copy of policies/ with two
    benchmark routes added (`/bench` for any authenticated subject, `/bench/denied`
    for administrators only);
then signs a user in (bearer token, and a browser session with cookies and CSRF
token), runs every scenario against the three side by side, prints a Markdown
table and appends it to BENCHMARKS.md. Every load is bounded in time; every
process started here is stopped by pid at the end (also on Ctrl-C).

Environment (all optional):
  PORTCULLIS_BIN          binary (default ${CARGO_TARGET_DIR:-target}/release/portcullis)
  BENCH_SECONDS           measured seconds per row (10)
  BENCH_WARMUP_SECONDS    warm-up seconds before each row, not measured (2)
  BENCH_CONNECTIONS       wrk connections (32); BENCH_THREADS wrk threads (1)
  BENCH_H2_CLIENTS / BENCH_H2_STREAMS   h2load connections and streams each (8 x 4)
  BENCH_IDLE_CONNS        idle keep-alive TLS connections (10000)
  BENCH_OPEN_LOOP_FRACTION  open-loop rate as a fraction of Portcullis' max (0.5)
  BENCH_UPSTREAM_WORKERS / BENCH_NGINX_WORKERS  nginx worker processes (1 / 2)
  BENCH_PORTCULLIS_LOG_LEVEL  Portcullis `log.level` (info, the shipped default)
  BENCH_PORTCULLIS_THREADS    Portcullis `proxy.worker_threads` (the shipped default:
                          one per core)
  BENCH_ONLY              comma-separated groups: h1,post,h2,close,open,idle (all)
  BENCH_NO_RECORD=1       print only, do not append to BENCHMARKS.md (always so for
                          a binary under a debug/ folder)
  BENCH_KEEP_TMP=1        keep the temporary folder (logs, configs) and print its path
  BENCH_TOOLS             where oha was installed (~/.cache/bench-tools)
"""

from __future__ import annotations

import collections
import datetime
import functools
import hashlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
HOST = "127.0.0.1"  # every target is on loopback; nothing else is ever contacted
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name, "").strip()
    return int(v) if v else default


def env_float(name: str, default: float) -> float:
    v = os.environ.get(name, "").strip()
    return float(v) if v else default


SECONDS = env_int("BENCH_SECONDS", 10)
WARMUP = env_int("BENCH_WARMUP_SECONDS", 2)
CONNS = env_int("BENCH_CONNECTIONS", 32)
THREADS = env_int("BENCH_THREADS", 1)
H2_CLIENTS = env_int("BENCH_H2_CLIENTS", 8)
H2_STREAMS = env_int("BENCH_H2_STREAMS", 4)
IDLE_CONNS = env_int("BENCH_IDLE_CONNS", 10000)
OPEN_FRACTION = env_float("BENCH_OPEN_LOOP_FRACTION", 0.5)
UPSTREAM_WORKERS = env_int("BENCH_UPSTREAM_WORKERS", 1)
NGINX_WORKERS = env_int("BENCH_NGINX_WORKERS", 2)
LOG_LEVEL = os.environ.get("BENCH_PORTCULLIS_LOG_LEVEL", "info")
GROUPS = ["h1", "post", "h2", "close", "open", "idle"]
ONLY = [g.strip() for g in os.environ.get("BENCH_ONLY", ",".join(GROUPS)).split(",") if g.strip()]
NO_RECORD = bool(os.environ.get("BENCH_NO_RECORD"))
KEEP_TMP = bool(os.environ.get("BENCH_KEEP_TMP"))
TOOLS = Path(os.environ.get("BENCH_TOOLS", str(Path.home() / ".cache" / "bench-tools")))
RUN_SLACK = 60  # seconds a load tool may overrun its own duration before it is killed

BENCH_USER = "benchuser"
SECURITY_HEADERS = [
    "strict-transport-security", "content-security-policy", "content-security-policy-report-only",
    "x-content-type-options", "x-frame-options", "referrer-policy", "permissions-policy",
    "cross-origin-opener-policy", "cross-origin-resource-policy", "cross-origin-embedder-policy",
    "reporting-endpoints", "report-to",
]
# The shipped defaults (portcullis.yaml), used only if Portcullis' own headers cannot be read.
DEFAULT_HEADERS = {
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "permissions-policy": "accelerometer=(), camera=(), geolocation=(), gyroscope=(), "
    "magnetometer=(), microphone=(), payment=(), usb=()",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'; "
    "require-trusted-types-for 'script'; upgrade-insecure-requests; report-uri /.portcullis/csp-report",
}


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(f"bench-proxy: {msg}", file=sys.stderr, flush=True)


def tools_present(*tools: str) -> bool:
    """Whether `tools` and nginx are installed (saying which are not); puts /usr/sbin, where
    Debian keeps nginx, on PATH for the servers started later."""
    missing = [t for t in tools if not shutil.which(t)]
    if not (shutil.which("nginx") or os.access("/usr/sbin/nginx", os.X_OK)):
        missing.append("nginx")
    if missing:
        log(f"missing tools: {', '.join(missing)} (bench/proxy/install-deps.sh installs them)")
        return False
    if "/usr/sbin" not in os.environ.get("PATH", ""):
        os.environ["PATH"] += ":/usr/sbin"
    return True


# ----------------------------------------------------------------- processes


class Procs:
    """Every long-running child, stopped by pid in reverse start order."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen, int]] = []

    def start(self, name: str, argv: list[str], logfile: Path, stop_signal=signal.SIGTERM, **kw) -> subprocess.Popen:
        out = open(logfile, "ab")
        try:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, **kw)
        finally:
            out.close()
        self.procs.append((name, p, stop_signal))
        log(f"started {name} (pid {p.pid})")
        return p

    def stop_all(self) -> None:
        while self.procs:
            name, p, sig = self.procs.pop()
            stop(p, sig, name)


def stop(p: subprocess.Popen, sig=signal.SIGTERM, name: str = "", grace: float = 15.0) -> None:
    if p.poll() is not None:
        return
    try:
        p.send_signal(sig)
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log(f"{name or p.pid} did not stop in {grace:.0f}s: SIGKILL")
        p.kill()
        p.wait(timeout=10)
    except ProcessLookupError:
        pass


def run_bounded(argv: list[str], timeout: float, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Runs a load tool to completion, killed if it overruns its bound."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         env=env, cwd=cwd, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise BenchError(f"{argv[0]} overran its {timeout:.0f}s bound and was killed:\n{err.decode(errors='replace')[-2000:]}")
    except BaseException:
        p.kill()
        p.wait()
        raise
    return subprocess.CompletedProcess(argv, p.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for(cond, what: str, timeout: float = 60.0, proc: subprocess.Popen | None = None, logfile: Path | None = None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = logfile.read_text(errors="replace")[-3000:] if logfile and logfile.exists() else ""
            raise BenchError(f"{what}: process exited with {proc.returncode}\n{tail}")
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(0.1)
    tail = logfile.read_text(errors="replace")[-3000:] if logfile and logfile.exists() else ""
    raise BenchError(f"timed out waiting for {what} ({last})\n{tail}")


# --------------------------------------------------------------- /proc reading


def tree_pids(root: int) -> list[int]:
    children = collections.defaultdict(list)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[ppid].append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (all threads)
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


class Sampler:
    """CPU of a process tree over a run, and its peak RSS sampled every 100 ms."""

    def __init__(self, root_pid: int) -> None:
        self.pids = tree_pids(root_pid)
        self.peak = rss_bytes(self.pids)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, rss_bytes(self.pids))

    def __enter__(self):
        self.cpu0 = cpu_seconds(self.pids)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self.cpu = cpu_seconds(self.pids) - self.cpu0
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_bytes(self.pids))
        return False


# ---------------------------------------------------------------- load tools


def parse_wrk(out: str) -> dict:
    m = re.search(r"^WRK_JSON (\{.*\})$", out, re.M)
    if not m:
        raise BenchError(f"wrk printed no summary:\n{out[-2000:]}")
    return json.loads(m.group(1))


def wrk(url: str, headers: list[str], seconds: int, conns: int = CONNS, method: str = "GET", body: str = "") -> dict:
    env = dict(os.environ, WRK_METHOD=method, WRK_BODY=body)
    argv = ["wrk", "-t", str(THREADS), "-c", str(conns), "-d", f"{seconds}s", "--timeout", "10s",
            "--latency", "-s", str(HERE / "report.lua")]
    for h in headers:
        argv += ["-H", h]
    argv.append(url)
    r = run_bounded(argv, seconds + RUN_SLACK, env=env)
    if r.returncode != 0:
        raise BenchError(f"wrk failed ({r.returncode}): {r.stderr[-2000:]}")
    w = parse_wrk(r.stdout)
    lat = w["latency_us"]
    errs = w["errors"]
    return {
        "requests": w["requests"],
        "rps": w["requests"] / (w["duration_us"] / 1e6) if w["duration_us"] else 0.0,
        "p50": lat["p50"] / 1000, "p99": lat["p99"] / 1000, "p999": lat["p999"] / 1000,
        "non_2xx": errs["status"],  # wrk counts responses with status > 399
        "socket_errors": {k: v for k, v in errs.items() if k != "status" and v},
    }


def h2load(url: str, headers: list[str], seconds: int, log_file: Path | None) -> dict:
    argv = ["h2load", "-t", "1", "-c", str(H2_CLIENTS), "-m", str(H2_STREAMS), "-D", str(seconds)]
    for h in headers:
        argv += ["-H", h]
    if log_file is not None:
        argv += ["--log-file", str(log_file)]
    argv.append(url)
    r = run_bounded(argv, seconds + RUN_SLACK)
    out = r.stdout
    if r.returncode != 0 or "finished in" not in out:
        raise BenchError(f"h2load failed ({r.returncode}): {out[-1500:]} {r.stderr[-1500:]}")
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                    r"(\d+) errored, (\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    res = {"rps": rps, "requests": int(req.group(3)), "failed": int(req.group(5)),
           "errored": int(req.group(6)), "timeout": int(req.group(7)),
           "codes": {"2xx": int(codes.group(1)), "3xx": int(codes.group(2)),
                     "4xx": int(codes.group(3)), "5xx": int(codes.group(4))},
           "p50": None, "p99": None, "p999": None}
    if log_file is not None and log_file.exists():
        lat = []
        with open(log_file) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3:
                    lat.append(int(parts[2]))
        log_file.unlink()
        if lat:
            lat.sort()
            pct = lambda q: lat[min(len(lat) - 1, int(q / 100 * len(lat)))] / 1000  # noqa: E731
            res.update(p50=pct(50), p99=pct(99), p999=pct(99.9))
    return res


def oha_path() -> str | None:
    return shutil.which("oha") or (str(TOOLS / "bin" / "oha") if (TOOLS / "bin" / "oha").exists() else None)


@functools.lru_cache(maxsize=1)
def oha_help() -> str:
    return run_bounded([oha_path(), "--help"], 30).stdout


def oha(url: str, headers: list[str], seconds: int, rate: float, conns: int = CONNS) -> dict:
    exe = oha_path()
    help_text = oha_help()
    fmt = ["--output-format", "json"] if "--output-format" in help_text else ["-j"]
    argv = [exe, "-z", f"{seconds}s", "-q", f"{rate:.0f}", "--latency-correction", "--no-tui",
            "-c", str(conns), "--insecure", *fmt]
    if "--wait-ongoing-requests-after-deadline" in help_text:
        argv.append("--wait-ongoing-requests-after-deadline")
    for h in headers:
        argv += ["-H", h]
    argv.append(url)
    r = run_bounded(argv, seconds + RUN_SLACK)
    if r.returncode != 0:
        raise BenchError(f"oha failed ({r.returncode}): {r.stderr[-2000:]}")
    j = json.loads(r.stdout)
    pct = j["latencyPercentiles"]
    codes = {str(k): v for k, v in j.get("statusCodeDistribution", {}).items()}
    total = sum(codes.values())
    errs = j.get("errorDistribution", {})
    return {"rps": j["summary"]["requestsPerSec"], "requests": total,
            "p50": pct["p50"] * 1000, "p99": pct["p99"] * 1000, "p999": pct["p99.9"] * 1000,
            "codes": codes, "errors": errs}


# ------------------------------------------------------------------- results


@dataclass
class Row:
    group: str
    label: str
    kind: str  # direct | nginx | portcullis
    rps: float = 0.0
    p50: float | None = None
    p99: float | None = None
    p999: float | None = None
    cpu_per_10k: float | None = None
    tool_cpu_per_10k: float | None = None
    peak_rss: int = 0
    responses: str = ""
    ok: bool = True


@dataclass
class Group:
    key: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def fmt_ms(v):
    if v is None:
        return "–"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def fmt_ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "–"


def group_table(g: Group) -> list[str]:
    # Ratios of requests/s say nothing at a fixed rate (the open-loop group).
    base = {r.kind: r for r in g.rows if r.kind in ("direct", "nginx") and r.ok and g.key != "open"}
    out = [f"**{g.title}**", ""]
    if g.rows:
        out += ["| path | requests/s | p50 ms | p99 ms | p99.9 ms | × nginx | × direct | CPU s / 10k req "
                "| load tool CPU s / 10k req | peak RSS MiB | responses |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in g.rows:
        xn = fmt_ratio(r.rps, base["nginx"].rps) if r.kind == "portcullis" and "nginx" in base else ""
        xd = fmt_ratio(r.rps, base["direct"].rps) if r.kind != "direct" and "direct" in base else ""
        cpu = f"{r.cpu_per_10k:.2f}" if r.cpu_per_10k is not None else "–"
        tool = f"{r.tool_cpu_per_10k:.2f}" if r.tool_cpu_per_10k is not None else "–"
        rps = f"{r.rps:,.0f}" if r.rps else "–"
        resp = r.responses if r.ok else f"**INVALID** {r.responses}"
        out.append(f"| {r.label} | {rps} | {fmt_ms(r.p50)} | {fmt_ms(r.p99)} | {fmt_ms(r.p999)} | {xn} | {xd} "
                   f"| {cpu} | {tool} | {r.peak_rss / 2**20:.0f} | {resp} |")
    if g.rows:
        out.append("")
    for n in g.notes:
        out.append(f"- {n}")
    if g.notes:
        out.append("")
    return out


# ------------------------------------------------------------------ the run


class Bench:
    def __init__(self, binary: Path, tmp: Path) -> None:
        self.bin = binary
        self.tmp = tmp
        self.procs = Procs()
        self.groups: list[Group] = []
        self.checks: list[str] = []
        p = {n: free_port() for n in ("up", "up_h2c", "nginx", "https", "admin", "backend")}
        self.port = p
        self.pc_proc: subprocess.Popen | None = None
        self.policy_state = "rbac"
        self.idle_bad = False

    # -- set-up -------------------------------------------------------------

    def cert(self) -> None:
        d = self.tmp / "tls"
        d.mkdir()
        self.crt, self.key = d / "cert.pem", d / "key.pem"
        r = run_bounded(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                         "-nodes", "-keyout", str(self.key), "-out", str(self.crt), "-days", "7",
                         "-subj", "/CN=localhost",
                         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                         "-addext", "basicConstraints=critical,CA:FALSE",
                         "-addext", "keyUsage=critical,digitalSignature",
                         "-addext", "extendedKeyUsage=serverAuth"], 60)
        if r.returncode != 0:
            raise BenchError(f"openssl failed: {r.stderr}")

    def nofile(self) -> int:
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]

    def nginx_common(self, d: Path, workers: int, conns: int) -> str:
        temp = "\n".join(f"  {k}_temp_path {d}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        return f"""worker_processes {workers};
worker_rlimit_nofile {self.nofile()};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections {conns}; }}
http {{
  access_log off;
  server_tokens off;
{temp}
  keepalive_timeout 600s;
  keepalive_requests 1000000000;
"""

    def start_nginx(self, name: str, conf: str) -> subprocess.Popen:
        d = self.tmp / name
        (d / "conf").mkdir(parents=True, exist_ok=True)
        path = d / "conf" / "nginx.conf"
        path.write_text(conf)
        argv = [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(d), "-c", str(path), "-e", str(d / "error.log")]
        t = run_bounded(argv + ["-t"], 30)
        if t.returncode != 0:
            raise BenchError(f"nginx {name}: configuration refused:\n{t.stderr}")
        return self.procs.start(name, argv, d / "stdout.log", stop_signal=signal.SIGTERM)

    def start_upstream(self) -> None:
        d = self.tmp / "upstream"
        conf = self.nginx_common(d, UPSTREAM_WORKERS, 4096) + f"""  default_type text/plain;
  server {{
    listen {HOST}:{self.port['up']} backlog=4096;
    listen {HOST}:{self.port['up_h2c']} http2 backlog=4096;
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""
        self.upstream = self.start_nginx("upstream", conf)
        wait_for(lambda: http_status("http", self.port["up"], "/bench") == 200, "static upstream",
                 proc=self.upstream, logfile=d / "error.log")

    def start_nginx_tls(self, headers: dict[str, str]) -> None:
        d = self.tmp / "nginx-tls"
        add = []
        for k, v in headers.items():
            if "$" in v or "\n" in v:
                raise BenchError(f"header {k} cannot be written into nginx.conf: {v!r}")
            add.append(f'      add_header {k} "{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}" always;')
        add_s = "\n".join(add)
        conf = self.nginx_common(d, NGINX_WORKERS, max(4096, IDLE_CONNS + 2048)) + f"""  upstream static {{
    server {HOST}:{self.port['up']};
    keepalive 64;
    keepalive_requests 1000000000;
    keepalive_timeout 600s;
  }}
  ssl_session_cache shared:SSL:20m;
  ssl_session_timeout 1h;
  ssl_session_tickets on;
  server {{
    listen {HOST}:{self.port['nginx']} ssl http2 backlog=4096;
    ssl_certificate {self.crt};
    ssl_certificate_key {self.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      proxy_pass http://static;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
{add_s}
    }}
  }}
}}
"""
        self.nginx = self.start_nginx("nginx-tls", conf)
        wait_for(lambda: http_status("https", self.port["nginx"], "/bench") == 200, "nginx TLS proxy",
                 proc=self.nginx, logfile=d / "error.log")

    def policies(self) -> None:
        """Two complete bundles: rbac (shipped + bench routes) and allow_all; tests run on both."""
        b = self.tmp / "bundles"
        rbac, allow = b / "rbac", b / "allow_all"
        shutil.copytree(ROOT / "policies", rbac, ignore=shutil.ignore_patterns("README.md", ".*"))
        data = (rbac / "data.yaml").read_text()
        if not data.endswith("\n"):
            data += "\n"
        # `config.http.routes` is the last list of data.yaml; the decisions checked
        # below fail the run if that ever changes.
        data += """
      # Added by bench/proxy/run.py (make bench-proxy), never shipped.
      - id: bench
        path: [bench]
        methods: {GET: ["*"], POST: ["*"]}
      - id: bench_denied
        path: [bench, denied]
        methods: {GET: [administrator]}
"""
        (rbac / "data.yaml").write_text(data)
        shutil.copytree(rbac, allow)
        (allow / "http.rego").write_text("""# make bench-proxy: the allow-all policy (every request reaches its upstream).
package portcullis.http

decision := {
	"allow": true,
	"reason": "allow_all",
	"rule": "allow_all",
	"public_reason": true,
	"obligations": {"headers": {}, "rate_limit_class": null},
}
""")
        (allow / "http_test.rego").write_text("""package portcullis.http_test

import data.portcullis.http

test_everything_is_allowed if {
	http.decision.allow == true with input as {"request": {"method": "GET", "segments": ["bench", "denied"]}}
}
""")
        for name, d in (("shipped RBAC + bench routes", rbac), ("allow-all", allow)):
            r = run_bounded([str(self.bin), "policy", "test", str(d)], 300)
            if r.returncode != 0:
                raise BenchError(f"policy tests of the {name} bundle fail:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
        subject = {"authenticated": True, "sub": "1", "username": BENCH_USER, "roles": ["employee"],
                   "auth_method": "password", "session_id": "x", "mfa": False}
        want = [("GET", ["bench"], True), ("POST", ["bench"], True), ("GET", ["bench", "denied"], False)]
        for method, segs, allowed in want:
            inp = {"request": {"method": method, "path": "/" + "/".join(segs), "segments": segs, "query": {},
                               "headers": {}}, "subject": subject, "source": {"ip": HOST}, "route": "bench",
                   "time": {"unix_seconds": int(time.time())}}
            f = self.tmp / "input.json"
            f.write_text(json.dumps(inp))
            r = run_bounded([str(self.bin), "policy", "eval", "--dir", str(rbac), "--input", str(f),
                             "data.portcullis.http.decision"],
                            120, cwd=rbac)
            if r.returncode != 0 or f'"allow": {str(allowed).lower()}' not in re.sub(r'"allow":\s*', '"allow": ', r.stdout):
                raise BenchError(f"the RBAC bundle does not decide {method} /{'/'.join(segs)} as "
                                 f"{'allow' if allowed else 'deny'}:\n{r.stdout}{r.stderr}")
        self.bundles = {"rbac": rbac, "allow_all": allow}
        self.policy_dir = self.tmp / "policies"
        shutil.copytree(rbac, self.policy_dir)

    def start_portcullis(self) -> None:
        d = self.tmp / "portcullis"
        d.mkdir()
        p = self.port
        be = f"http://{HOST}:{p['backend']}"
        big = {"requests_per_period": 1000000, "burst_requests": 100000}
        rules = [dict(name="client_ip", key="client_ip", **big),
                 dict(name="login_account", key="login_account", routes=["auth"], **big),
                 dict(name="subject", key="subject", **big)]
        config = {
            "state_dir": str(d / "var"),
            "log": {"format": "json", "level": LOG_LEVEL},
            "proxy": {
                "listen": {"https": f"{HOST}:{p['https']}", "http": None, "admin": f"{HOST}:{p['admin']}"},
                "tls": {"certificate_file": str(self.crt), "private_key_file": str(self.key)},
                "shutdown": {"grace_seconds": 2},
                "upstreams": {"backend": {"address": f"{HOST}:{p['backend']}"},
                              "static": {"address": f"{HOST}:{p['up']}"}},
                "routes": [
                    {"name": "api", "path_prefix": "/api", "upstream": "backend"},
                    {"name": "auth", "path_prefix": "/auth", "upstream": "backend"},
                    {"name": "admin", "path_prefix": "/admin", "upstream": "backend"},
                    {"name": "monitoring", "path_prefix": "/monitoring", "upstream": "backend"},
                    {"name": "bench", "path_prefix": "/bench", "upstream": "static"},
                    {"name": "app", "path_prefix": "/", "upstream": "backend"},
                ],
                "auth": {
                    "issuers": [{"issuer": "portcullis", "label": "backend", "audiences": ["portcullis"],
                                 "jwks_url": f"{be}/auth/jwks.json", "algorithms": ["EdDSA"]}],
                    "revocation_feed_url": f"{be}/auth/revocations",
                },
                "rate_limits": {"rules": rules},
            },
            "backend": {
                "listen": f"{HOST}:{p['backend']}",
                "identity": {"access_token_ttl_seconds": 3600, "max_sessions_per_user": 20},
            },
            "audit": {"ingest_url": f"{be}/internal/audit/ingest"},
        }
        # One bundle folder for both parts: `shared.policy_dir` where the binary has it,
        # else the older per-part keys.
        defs = json.loads(run_bounded([str(self.bin), "config-schema"], 120).stdout).get("$defs", {})
        if "policy_dir" in defs.get("SharedConfig", {}).get("properties", {}):
            config["shared"] = {"policy_dir": str(self.policy_dir)}
        else:
            config["proxy"]["policy"] = {"dir": str(self.policy_dir)}
            config["backend"]["policy_dir"] = str(self.policy_dir)
        # Connection limits, where the binary has them: room for the idle connections
        # (plus the load tools' own), and idle keep-alive connections kept as long as
        # nginx keeps them here (600 s), so the idle row measures holding them.
        limits = defs.get("LimitsConfig", {}).get("properties", {})
        if "limits" in defs.get("ProxyConfig", {}).get("properties", {}):
            want = {"max_connections": IDLE_CONNS + 1024, "keepalive_idle_seconds": 600}
            config["proxy"]["limits"] = {k: max(v, limits[k].get("default") or 0)
                                         for k, v in want.items() if k in limits}
        if os.environ.get("BENCH_PORTCULLIS_THREADS"):
            config["proxy"]["worker_threads"] = int(os.environ["BENCH_PORTCULLIS_THREADS"])
        cfg = d / "portcullis.yaml"
        cfg.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.pc_config = cfg
        r = run_bounded([str(self.bin), "check-config", str(cfg)], 120, cwd=d)
        if r.returncode != 0:
            raise BenchError(f"check-config refused the benchmark configuration:\n{r.stdout}{r.stderr}")
        self.password = "bench-" + os.urandom(12).hex()
        users = d / "users.csv"
        users.write_text("username,email,display_name,department,roles,password_format,password\n"
                         f"{BENCH_USER},bench@example.org,Bench User,Facilities,employee,plaintext,{self.password}\n")
        r = run_bounded([str(self.bin), "--config", str(cfg), "user", "import", str(users)], 300, cwd=d)
        users.unlink()
        if r.returncode != 0:
            raise BenchError(f"user import failed:\n{r.stdout}{r.stderr}")
        self.pc_log = d / "portcullis.log"
        self.pc_proc = self.procs.start("portcullis", [str(self.bin), "--config", str(cfg), "up"], self.pc_log, cwd=d)
        wait_for(lambda: admin_get(p["admin"], "/health/ready")[0] == 200, "Portcullis /health/ready",
                 timeout=180, proc=self.pc_proc, logfile=self.pc_log)

    def sign_in(self) -> None:
        body = {"username": BENCH_USER, "password": self.password, "client": "api"}
        st, hdrs, data = https_request(self.port["https"], "POST", "/auth/login", {"content-type": "application/json"},
                                       json.dumps(body).encode(), cafile=self.crt)
        if st != 200:
            raise BenchError(f"API sign-in answered {st}: {data[:500]!r}")
        self.token = json.loads(data)["access_token"]
        body.pop("client")
        st, hdrs, data = https_request(self.port["https"], "POST", "/auth/login", {"content-type": "application/json"},
                                       json.dumps(body).encode(), cafile=self.crt)
        if st != 200:
            raise BenchError(f"browser sign-in answered {st}: {data[:500]!r}")
        cookies = [v.split(";", 1)[0].strip() for k, v in hdrs if k.lower() == "set-cookie"]
        self.cookie = "; ".join(c for c in cookies if not c.endswith("="))
        self.csrf = json.loads(data)["csrf_token"]
        if "__Host-portcullis-access=" not in self.cookie:
            raise BenchError(f"browser sign-in set no access cookie: {cookies}")

    # -- requests -----------------------------------------------------------

    def url(self, kind: str, path: str, h2: bool = False, name: str = HOST) -> str:
        if kind == "direct":
            return f"http://{HOST}:{self.port['up_h2c' if h2 else 'up']}{path}"
        return f"https://{name}:{self.port['nginx' if kind == 'nginx' else 'https']}{path}"

    def wrk_url(self, kind: str, path: str) -> str:
        # wrk puts the URL's host into SNI even when it is an IP address (which TLS
        # forbids, and rustls logs a warning for on every handshake), so TLS targets
        # are named `localhost`: wrk tries each address it resolves to (127.0.0.1, and
        # ::1 where /etc/hosts lists it, on which nothing listens) until one connects.
        return self.url(kind, path, name="localhost")

    def bearer(self) -> list[str]:
        return [f"Authorization: Bearer {self.token}"]

    def cookie_headers(self, post: bool, kind: str) -> list[str]:
        h = [f"Cookie: {self.cookie}"]
        if post:
            port = self.port["nginx" if kind == "nginx" else "https"]
            h += ["Content-Type: application/json", "Sec-Fetch-Site: same-origin",
                  f"Origin: https://localhost:{port}", f"X-CSRF-Token: {self.csrf}"]
        return h

    def server_counts(self) -> dict[str, int]:
        """From Portcullis' /metrics: requests of route `bench` by status class, requests in
        flight, the proxy's security audit events spooled, and its sinks' delivery lag."""
        st, text = admin_get(self.port["admin"], "/metrics")
        out = collections.Counter()
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name, value = line.rsplit(" ", 1)
            v = int(float(value))
            if name.startswith("portcullis_http_requests_total{") and 'route="bench"' in name:
                m = re.search(r'status_class="(\w+)"', name)
                if m:
                    out[m.group(1)] += v
            elif name.startswith("portcullis_http_requests_in_flight"):
                out["in_flight"] += v
            elif name.startswith("portcullis_audit_events_total{") and 'emitter="proxy"' in name \
                    and 'category="security"' in name:
                out["audit_security"] += v
            elif name.startswith("portcullis_audit_events_folded_total{"):
                out["audit_folded"] += v
            elif name.startswith("portcullis_audit_sink_lag_events{") and 'emitter="proxy"' in name:
                out["audit_lag"] += v
        return out

    def quiesce(self) -> dict[str, int]:
        """Waits (up to 15 s) until Portcullis has no request in flight, so that a run's
        counts do not take in the end of the run before it; returns the counts."""
        deadline = time.monotonic() + 15
        while True:
            c = self.server_counts()
            if c.get("in_flight", 0) <= 0 or time.monotonic() > deadline:
                return c
            time.sleep(0.1)

    def swap_policy(self, to: str) -> None:
        if self.policy_state == to:
            return
        src = self.bundles[to]
        for name in ("http_test.rego", "http.rego"):
            tmp = self.policy_dir / f".{name}.new"
            shutil.copyfile(src / name, tmp)
            os.replace(tmp, self.policy_dir / name)
        digest = bundle_digest(self.policy_dir)
        want = 200 if to == "allow_all" else 403

        def converged():
            ready = json.loads(admin_get(self.port["admin"], "/health/ready")[1])
            if ready.get("checks", {}).get("policy") != digest:
                return False
            st, _, _ = https_request(self.port["https"], "GET", "/bench/denied",
                                     {"authorization": f"Bearer {self.token}"})
            return st == want

        try:
            wait_for(converged, f"the {to} bundle to load", timeout=5)
        except BenchError:
            os.kill(self.pc_proc.pid, signal.SIGHUP)
            wait_for(converged, f"the {to} bundle to load (after SIGHUP)", timeout=60,
                     proc=self.pc_proc, logfile=self.pc_log)
        self.policy_state = to
        log(f"policy bundle now: {to} ({digest[:12]})")

    def prechecks(self) -> None:
        """Exact status codes and headers of one request per path, before any load."""
        bt = {"authorization": f"Bearer {self.token}"}
        ck = {"cookie": self.cookie}
        post = {"cookie": self.cookie, "content-type": "application/json", "sec-fetch-site": "same-origin",
                "origin": f"https://{HOST}:{self.port['https']}", "x-csrf-token": self.csrf}
        cases = [
            ("direct GET", http_status("http", self.port["up"], "/bench"), 200),
            ("nginx GET", http_status("https", self.port["nginx"], "/bench"), 200),
            ("Portcullis bearer GET /bench", https_request(self.port["https"], "GET", "/bench", bt)[0], 200),
            ("Portcullis cookie GET /bench", https_request(self.port["https"], "GET", "/bench", ck)[0], 200),
            ("Portcullis cookie POST /bench with CSRF token", https_request(
                self.port["https"], "POST", "/bench", post, b'{"bench":true}')[0], 200),
            ("Portcullis cookie POST /bench without CSRF token", https_request(
                self.port["https"], "POST", "/bench", ck | {"content-type": "application/json"}, b"{}")[0], 403),
            ("Portcullis bearer GET /bench/denied", https_request(self.port["https"], "GET", "/bench/denied", bt)[0], 403),
            ("Portcullis anonymous GET /bench", https_request(self.port["https"], "GET", "/bench", {})[0], 401),
        ]
        bad = [f"{n}: {got} (expected {want})" for n, got, want in cases if got != want]
        if bad:
            raise BenchError("pre-checks failed:\n  " + "\n  ".join(bad))
        self.checks.append("Pre-checks passed: " + "; ".join(f"{n} → {want}" for n, _, want in cases) + ".")
        # Security headers: the nginx proxy must send what Portcullis sends.
        _, h_pc, _ = https_request(self.port["https"], "GET", "/bench", bt)
        _, h_ng, _ = https_request(self.port["nginx"], "GET", "/bench", {})
        pc = {k.lower() for k, _ in h_pc if k.lower() in SECURITY_HEADERS}
        ng = {k.lower() for k, _ in h_ng if k.lower() in SECURITY_HEADERS}
        if pc != ng:
            raise BenchError(f"security headers differ: Portcullis {sorted(pc)}, nginx {sorted(ng)}")
        self.checks.append(f"Both proxies send the same {len(pc)} security headers ({', '.join(sorted(pc))}).")
        # TLS: protocol, cipher and session resumption as a client that keeps its session sees them.
        for name, port in (("nginx", self.port["nginx"]), ("Portcullis", self.port["https"])):
            proto, cipher, reused = tls_resumption(port)
            self.checks.append(f"{name}: {proto} {cipher}, session resumption {'yes' if reused else '**no**'}.")

    def security_headers_of_portcullis(self) -> dict[str, str]:
        st, h, _ = https_request(self.port["https"], "GET", "/bench", {"authorization": f"Bearer {self.token}"})
        got = {k.lower(): v for k, v in h if k.lower() in SECURITY_HEADERS}
        if st != 200 or not got:
            log(f"could not read Portcullis' security headers (status {st}); nginx gets the shipped defaults")
            return dict(DEFAULT_HEADERS)
        return got

    # -- measuring ----------------------------------------------------------

    def tree_root(self, kind: str) -> int:
        return {"direct": self.upstream.pid, "nginx": self.nginx.pid, "portcullis": self.pc_proc.pid}[kind]

    def measure(self, g: Group, label: str, kind: str, load, expect: int, audit_denials: bool = False,
                in_flight: int = CONNS) -> Row:
        """Warm-up, then the measured run with CPU and RSS of the serving process tree."""
        row = Row(g.key, label, kind)
        log(f"[{g.key}] {label}")
        try:
            if WARMUP > 0:
                load(WARMUP, warm=True)
            before = self.quiesce() if kind == "portcullis" else None
            c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            with Sampler(self.tree_root(kind)) as s:
                res = load(SECONDS, warm=False)
            c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            after = self.quiesce() if kind == "portcullis" else None
        except BenchError as e:
            row.ok = False
            row.responses = str(e).splitlines()[0][:120]
            g.rows.append(row)
            log(f"  failed: {e}")
            return row
        row.rps, row.p50, row.p99, row.p999 = res["rps"], res["p50"], res["p99"], res["p999"]
        row.cpu_per_10k = s.cpu / res["requests"] * 10000 if res["requests"] else None
        # The load tool is the only child reaped in the run: its CPU shows when the
        # generator, not the server, is what the two cores are busy with.
        tool_cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
        row.tool_cpu_per_10k = tool_cpu / res["requests"] * 10000 if res["requests"] else None
        row.peak_rss = s.peak
        cls = f"{expect // 100}xx"
        # Client side: every response has the expected status class, no socket errors.
        if "codes" in res:  # h2load, oha
            codes = collections.Counter()
            for k, v in res["codes"].items():
                codes[k if k.endswith("xx") else f"{k[0]}xx"] += v
            other = sum(v for k, v in codes.items() if k != cls)
            errors = {k: v for k, v in res.items() if k in ("failed", "errored", "timeout") and v}
            errors.update(res.get("errors") or {})
            row.responses = f"{codes.get(cls, 0):,} × {expect}"
        else:  # wrk: `non_2xx` counts statuses above 399
            bad4 = res["non_2xx"]
            other = bad4 if expect < 400 else res["requests"] - bad4
            errors = res["socket_errors"]
            row.responses = f"{res['requests'] - other:,} × {expect}"
        if other:
            row.ok = False
            row.responses += f", {other:,} other"
        if errors:
            row.responses += f", errors {errors}"
            if sum(errors.values()) > max(10, 0.001 * res["requests"]):
                row.ok = False
        # Server side (Portcullis): what its own request counter saw in the measured run.
        if before is not None:
            classes = ("1xx", "2xx", "3xx", "4xx", "5xx", "none")
            delta = {k: after.get(k, 0) - before.get(k, 0) for k in classes if after.get(k) or before.get(k)}
            seen = delta.get(cls, 0)
            # `none`: connections the client closed with no response written (the load
            # tool stopping mid-request, or closing an idle keep-alive connection).
            aborted = delta.get("none", 0)
            wrong = {k: v for k, v in delta.items() if k not in (cls, "none") and v}
            # Requests still in flight when the load tool stops are cut off: pingora records a
            # stream the client reset as 400. Up to that many are the run's end, not an error.
            cut = sum(wrong.values()) <= in_flight
            other_s = "".join(f", {v:,} {k}" for k, v in sorted(wrong.items()))
            if wrong and cut:
                other_s += " as the load stopped"
            row.responses += (f" (server: {seen:,} {cls}{other_s}"
                              f"{f', {aborted:,} closed unanswered' if aborted else ''})")
            if not cut or seen < res["requests"]:
                row.ok = False
            if audit_denials:
                # Every denial is accounted for in the audit trail: the first of each
                # subject's window as an event of its own (spooled, fsync'd, delivered to
                # each sink), the repeats folded into that window's summary event, which
                # carries their count (issue 12's flood control). Summaries are security
                # events too, so `accounted` may exceed the denials by their number.
                deadline = time.monotonic() + 30
                while True:
                    now = self.server_counts()
                    events = now.get("audit_security", 0) - before.get("audit_security", 0)
                    folded = now.get("audit_folded", 0) - before.get("audit_folded", 0)
                    if (events + folded >= seen and now.get("audit_lag", 0) == 0) or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                lag = now.get("audit_lag", 0)
                row.responses += (f"; denials audited: {events:,} events, {folded:,} folded into summaries"
                                  + (f", {lag:,} not yet delivered after 30 s" if lag else ""))
                if events + folded < seen:
                    row.ok = False
        log(f"  {row.rps:,.0f} req/s p50 {fmt_ms(row.p50)} p99 {fmt_ms(row.p99)} ms; {row.responses}")
        g.rows.append(row)
        return row

    def wrk_load(self, url, headers, method="GET", body="", close=False):
        h = list(headers) + (["Connection: close"] if close else [])
        return lambda secs, warm: wrk(url, h, secs, method=method, body=body)

    def h2_load(self, url, headers):
        return lambda secs, warm: h2load(url, headers, secs, None if warm else self.tmp / "h2load.log")

    # -- groups -------------------------------------------------------------

    def group_h1(self) -> Group:
        g = Group("h1", f"HTTP/1.1 keep-alive, GET, wrk -t{THREADS} -c{CONNS}")
        self.groups.append(g)
        self.measure(g, "upstream directly (plain HTTP)", "direct",
                     self.wrk_load(self.wrk_url("direct", "/bench"), self.bearer()), 200)
        self.measure(g, "nginx TLS reverse proxy", "nginx",
                     self.wrk_load(self.wrk_url("nginx", "/bench"), self.bearer()), 200)
        self.swap_policy("allow_all")
        self.measure(g, "Portcullis, allow-all policy, bearer JWT", "portcullis",
                     self.wrk_load(self.wrk_url("portcullis", "/bench"), self.bearer()), 200)
        self.swap_policy("rbac")
        self.max_row = self.measure(g, "Portcullis, shipped RBAC policy, bearer JWT", "portcullis",
                                    self.wrk_load(self.wrk_url("portcullis", "/bench"), self.bearer()), 200)
        self.measure(g, "Portcullis, shipped RBAC policy, session cookie", "portcullis",
                     self.wrk_load(self.wrk_url("portcullis", "/bench"), self.cookie_headers(False, "portcullis")), 200)
        self.measure(g, "Portcullis, shipped RBAC policy, denied (403, audited)", "portcullis",
                     self.wrk_load(self.wrk_url("portcullis", "/bench/denied"), self.bearer()), 403, audit_denials=True)
        g.notes.append("Same request headers on every path (the bearer token is sent to nginx and the upstream "
                       "too). The policy rows differ only in the bundle: the shipped one with a `/bench` route "
                       "for any authenticated subject, or one whose decision is a constant allow.")
        return g

    def group_post(self) -> Group:
        g = Group("post", f"HTTP/1.1 keep-alive, POST with session cookie and CSRF token, wrk -t{THREADS} -c{CONNS}")
        self.groups.append(g)
        body = '{"bench":true}'
        for kind, label in (("direct", "upstream directly (plain HTTP)"), ("nginx", "nginx TLS reverse proxy"),
                            ("portcullis", "Portcullis, shipped RBAC policy, cookie + CSRF check")):
            self.measure(g, label, kind, self.wrk_load(self.wrk_url(kind, "/bench"), self.cookie_headers(True, kind),
                                                       method="POST", body=body), 200)
        g.notes.append("Sec-Fetch-Site, Origin and the double-submit token are checked by Portcullis on every "
                       "request (cookie sessions only; bearer calls are exempt).")
        return g

    def group_h2(self) -> Group:
        g = Group("h2", f"h2, h2load -t1 -c{H2_CLIENTS} -m{H2_STREAMS} (h2c to the upstream)")
        self.groups.append(g)
        for kind, label in (("direct", "upstream directly (h2c)"), ("nginx", "nginx TLS reverse proxy"),
                            ("portcullis", "Portcullis, shipped RBAC policy, bearer JWT")):
            self.measure(g, label, kind, self.h2_load(self.url(kind, "/bench", h2=True), self.bearer()), 200,
                         in_flight=H2_CLIENTS * H2_STREAMS)
        g.notes.append("Percentiles from h2load's per-request log (`--log-file`).")
        return g

    def group_close(self) -> Group:
        g = Group("close", f"New connection per request (`Connection: close`), wrk -t{THREADS} -c{CONNS}")
        self.groups.append(g)
        for kind, label in (("direct", "upstream directly (new TCP connection)"),
                            ("nginx", "nginx TLS reverse proxy (new TLS connection)"),
                            ("portcullis", "Portcullis, shipped RBAC policy, bearer JWT (new TLS connection)")):
            self.measure(g, label, kind, self.wrk_load(self.wrk_url(kind, "/bench"), self.bearer(), close=True), 200)
        g.notes.append("wrk keeps one OpenSSL session per connection slot (`SSL_clear` after each close), so it "
                       "resumes whenever the server offers resumption; see the TLS lines under the tables.")
        return g

    def group_open(self) -> Group:
        g = Group("open", "")
        self.groups.append(g)
        exe = oha_path()
        if exe is None:
            g.title = "Open-loop constant rate: skipped"
            g.notes.append("oha is not installed (bench/proxy/install-deps.sh installs it from crates.io; "
                           "BENCH_SKIP_OHA was set or the install failed).")
            return g
        max_rps = getattr(self, "max_row", None)
        if max_rps is None or not max_rps.ok:
            g2 = Group("max", "")
            max_rps = self.measure(g2, "Portcullis maximum (for the open-loop rate)", "portcullis",
                                   self.wrk_load(self.wrk_url("portcullis", "/bench"), self.bearer()), 200)
        rate = max(1.0, max_rps.rps * OPEN_FRACTION)
        version = run_bounded([exe, "--version"], 30).stdout.strip()
        oha_help()  # once, outside the measured runs
        g.title = (f"Open-loop constant rate {rate:,.0f} req/s (= {OPEN_FRACTION:g} × Portcullis' maximum above), "
                   f"HTTP/1.1 keep-alive, {version} -q {rate:.0f} --latency-correction -c {CONNS}")
        rows = {}
        for kind, label in (("direct", "upstream directly (plain HTTP)"), ("nginx", "nginx TLS reverse proxy"),
                            ("portcullis", "Portcullis, shipped RBAC policy, bearer JWT")):
            rows[kind] = self.measure(g, label, kind, lambda secs, warm, kind=kind: oha(
                self.url(kind, "/bench"), self.bearer(), secs, rate), 200)
        d = rows["direct"]
        for kind in ("nginx", "portcullis"):
            r = rows[kind]
            if r.ok and d.ok and r.rps:
                added = [(q, getattr(r, q) - getattr(d, q)) for q in ("p50", "p99", "p999")]
                g.notes.append(f"Added latency of {'nginx' if kind == 'nginx' else 'Portcullis'} over the upstream at "
                               f"{rate:,.0f} req/s: " + ", ".join(f"{q.replace('p999', 'p99.9')} +{v:.3f} ms"
                                                                   for q, v in added) + ".")
            if r.rps < 0.95 * rate:
                g.notes.append(f"{r.label}: only {r.rps:,.0f} of {rate:,.0f} req/s were sent: the generator or "
                               "the server could not keep the rate; the latencies include the queueing.")
        if rows["portcullis"].ok and d.ok:
            self.added_p99 = rows["portcullis"].p99 - d.p99
        g.notes.append("Latency is measured from each request's scheduled start (coordinated omission "
                       "corrected), so queueing behind a slow response counts.")
        return g

    def group_idle(self) -> Group:
        n = min(IDLE_CONNS, self.nofile() - 1000)
        g = Group("idle", f"{n:,} idle keep-alive TLS connections")
        self.groups.append(g)
        self.idle_rows = []
        for kind, name, port in (("nginx", "nginx TLS reverse proxy", self.port["nginx"]),
                                 ("portcullis", "Portcullis", self.port["https"])):
            log(f"[idle] {name}: opening {n} connections")
            pids = tree_pids(self.tree_root(kind))
            time.sleep(1)
            before = rss_bytes(pids)
            cpu0 = cpu_seconds(pids)
            argv = [sys.executable, str(HERE / "idle_conns.py"), "--port", str(port), "--count", str(n),
                    "--path", "/bench", "--header", f"Authorization: Bearer {self.token}",
                    "--open-seconds", str(max(120, n // 20)), "--hold-seconds", "300"]
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, start_new_session=True)
            try:
                opened = json.loads(read_line(p, max(180, n // 20) + 60))
                time.sleep(3)  # settle
                with_conns = 0
                for _ in range(3):
                    with_conns = max(with_conns, rss_bytes(pids))
                    time.sleep(0.3)
                p.stdin.write("done\n")
                p.stdin.flush()
                held = json.loads(read_line(p, 60))
                p.wait(timeout=60)
            except BaseException:
                p.kill()
                p.wait()
                raise
            cpu = cpu_seconds(pids) - cpu0
            per = (with_conns - before) / opened["opened"] if opened["opened"] else 0
            self.idle_rows.append((name, before, with_conns, per, opened, held, cpu))
            if opened["failed"] or set(opened["statuses"]) != {"200"} or held["alive"] != opened["opened"]:
                self.idle_bad = True
            if kind == "portcullis":
                self.idle_portcullis = with_conns
            log(f"  {opened['opened']} open ({opened['failed']} failed) in {opened['seconds']}s; "
                f"RSS {before / 2**20:.1f} → {with_conns / 2**20:.1f} MiB; {held['alive']} still open")
        return g

    def idle_table(self, g: Group) -> list[str]:
        out = [f"**{g.title}** (each: TLS handshake, one GET /bench with the bearer token, then idle; "
               "`bench/proxy/idle_conns.py`)", "",
               "| server | RSS before MiB | RSS with connections MiB | per connection KiB | opened "
               "| still open after hold | CPU s / 1k connections (handshake + 1 request) | statuses |",
               "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for name, before, with_conns, per, opened, held, cpu in getattr(self, "idle_rows", []):
            st = ", ".join(f"{v:,} × {k}" for k, v in sorted(opened["statuses"].items()))
            if opened["errors"]:
                st += f"; errors {opened['errors']}"
            out.append(f"| {name} | {before / 2**20:.1f} | {with_conns / 2**20:.1f} | {per / 1024:.1f} "
                       f"| {opened['opened']:,} | {held['alive']:,} "
                       f"| {cpu / opened['opened'] * 1000 if opened['opened'] else 0:.2f} | {st} |")
        out.append("")
        return out

    def start_signed_in(self, under_valgrind: bool = False) -> None:
        """The upstream, Portcullis on the bench bundle and a signed-in user: the set-up the
        per-request tools (instructions.py, syscalls.py, heap.py) share. Under valgrind the
        bundle's `*_test.rego` files go before start-up: their evaluation time limit (5 s) is
        too short there, and run.py passes them natively on the same copy."""
        self.cert()
        self.start_upstream()
        self.policies()
        if under_valgrind:
            for t in self.policy_dir.glob("*_test.rego"):
                t.unlink()
        self.start_portcullis()
        self.sign_in()

    # -- driver -------------------------------------------------------------

    def run(self) -> None:
        self.cert()
        self.policies()
        self.start_upstream()
        self.start_portcullis()
        self.sign_in()
        self.start_nginx_tls(self.security_headers_of_portcullis())
        self.prechecks()
        for key in GROUPS:
            if key in ONLY:
                getattr(self, f"group_{key}")()
        if self.pc_proc.poll() is not None:
            raise BenchError(f"Portcullis exited during the run ({self.pc_proc.returncode})")

    def markdown(self) -> list[str]:
        out = []
        for g in self.groups:
            out += self.idle_table(g) if g.key == "idle" else group_table(g)
        out += [f"- {c}" for c in self.checks]
        out.append("")
        t = []
        h1 = next((g for g in self.groups if g.key == "h1"), None)
        r = getattr(self, "max_row", None)
        if h1 and r is not None and r.ok:
            base = {x.kind: x for x in h1.rows if x.kind in ("direct", "nginx") and x.ok}
            if "nginx" in base:
                t.append(f"full pipeline (shipped RBAC, bearer) / nginx = **{r.rps / base['nginx'].rps:.2f}×** "
                         "(target ≥ 1.0×, not done below 0.5×)")
        if hasattr(self, "added_p99"):
            t.append(f"added p99 over the upstream at half of Portcullis' maximum = **{self.added_p99:.3f} ms** "
                     "(target ≤ 1 ms)")
        if hasattr(self, "idle_portcullis"):
            t.append(f"Portcullis RSS with the idle connections = **{self.idle_portcullis / 2**20:.0f} MiB** "
                     "(target ≤ 100 MiB)")
        if t:
            out += ["Targets (issue 11): " + "; ".join(t) + ".", ""]
        return out


# ------------------------------------------------------------- small clients


def client_ctx(cafile: Path | None = None) -> ssl.SSLContext:
    if cafile:
        ctx = ssl.create_default_context(cafile=str(cafile))
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def https_request(port: int, method: str, path: str, headers: dict, body: bytes | None = None,
                  cafile: Path | None = None):
    c = http.client.HTTPSConnection(HOST, port, timeout=30, context=client_ctx(cafile))
    try:
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        c.close()


def http_status(scheme: str, port: int, path: str) -> int:
    if scheme == "https":
        return https_request(port, "GET", path, {})[0]
    c = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        c.request("GET", path)
        return c.getresponse().status
    finally:
        c.close()


def admin_get(port: int, path: str) -> tuple[int, str]:
    c = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def tls_resumption(port: int) -> tuple[str, str, bool]:
    """Two connections, the second offering the first's session (ticket or id)."""
    ctx = client_ctx()
    session = None
    proto = cipher = ""
    reused = False
    for _ in range(2):
        with socket.create_connection((HOST, port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
                s.sendall(f"GET /bench HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
                while s.recv(65536):  # read to the end, so TLS 1.3 tickets are processed
                    pass
                proto, cipher, reused = s.version(), s.cipher()[0], s.session_reused
                session = s.session
    return proto, cipher, reused


def bundle_digest(d: Path) -> str:
    """The bundle digest as policies/README.md defines it."""
    h = hashlib.sha256()
    names = sorted(p.name for p in d.iterdir()
                   if p.is_file() and not p.name.startswith(".") and (p.suffix == ".rego" or p.name == "data.yaml"))
    for n in names:
        data = (d / n).read_bytes()
        h.update(n.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


def read_line(p: subprocess.Popen, timeout: float) -> str:
    box: list[str] = []
    t = threading.Thread(target=lambda: box.append(p.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not box or not box[0]:
        err = ""
        if p.poll() is not None:
            err = p.stderr.read()[-2000:]
        raise BenchError(f"idle connection client gave no answer in {timeout:.0f}s {err}")
    return box[0]


# ------------------------------------------------------------------ recording


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    return f"{model}, {len(os.sched_getaffinity(0))} cores (nproc), {mem / 2**30:.1f} GiB RAM"


def tool_versions(binary: Path) -> str:
    def first(argv):
        try:
            r = run_bounded(argv, 30)
            text = (r.stdout + r.stderr).strip().splitlines()
            return text[0] if text else "?"
        except (OSError, BenchError):
            return "?"
    nginx = first(["nginx", "-v"]).replace("nginx version: ", "")
    wrk_v = first(["wrk", "-v"]).split(" [")[0]
    h2 = first(["h2load", "--version"])
    parts = [nginx, wrk_v, h2]
    if oha_path():
        parts.append(first([oha_path(), "--version"]))
    return ", ".join(parts)


def git(*args) -> str:
    r = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return r.stdout.strip()


MARKER = "<!-- bench-proxy results: newest first; bench/proxy/run.py inserts each run below this line -->"


def record(md: list[str], header: list[str]) -> None:
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    section = "\n".join(header + [""] + md).strip() + "\n"
    if MARKER not in text:
        text = text.rstrip() + "\n\n## Proxy against nginx (`make bench-proxy`)\n\n" + MARKER + "\n"
    before, after = text.split(MARKER, 1)
    after = after.lstrip("\n")
    text = before + MARKER + "\n\n" + section + ("\n" + after if after else "")
    path.write_text(text)
    log(f"appended to {path}")


def main() -> int:
    default_bin = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "release" / "portcullis"
    binary = Path(os.environ.get("PORTCULLIS_BIN") or default_bin).resolve()
    if not os.access(binary, os.X_OK):
        log(f"no executable Portcullis binary at {binary} (build it: cargo build --release --bin portcullis)")
        return 2
    if not tools_present("wrk", "h2load", "openssl"):
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by every server started here

    # SIGTERM/SIGHUP to the driver: unwind through the finally below like Ctrl-C does.
    def _term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGHUP, _term)
    # Ctrl-C, even where the shell started us with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    started = datetime.datetime.now(datetime.timezone.utc)
    tmp = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    b = Bench(binary, tmp)
    status = 0
    try:
        b.run()
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    except BenchError as e:
        log(f"failed: {e}")
        status = 1
    except Exception:  # noqa: BLE001 - a bug here: report it, still stop everything
        import traceback
        traceback.print_exc()
        status = 1
    finally:
        b.procs.stop_all()
        all_ok = status == 0 and not b.idle_bad and all(r.ok for g in b.groups for r in g.rows)
        if KEEP_TMP or status == 1 or (status == 0 and not all_ok):
            log(f"kept {tmp} (configurations and logs)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if status != 0 and not b.groups:
        return status

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    build = "debug" if "/debug/" in str(binary) else "release" if "/release/" in str(binary) else "unknown"
    cmd = "make bench-proxy" + "".join(f" {k}={os.environ[k]}" for k in
                                       ("BENCH_SECONDS", "BENCH_ONLY", "BENCH_CONNECTIONS", "BENCH_IDLE_CONNS")
                                       if os.environ.get(k))
    header = [f"### {started:%Y-%m-%d %H:%M} UTC, commit {commit}{' + uncommitted changes' if dirty else ''}", "",
              f"`{cmd}` · {build} build `{binary}` · {machine()} · {tool_versions(binary)} · "
              f"{SECONDS} s per row after {WARMUP} s of warm-up, load generators on the same cores."]
    md = b.markdown()
    print("\n".join(header + [""] + md))
    if NO_RECORD or build == "debug" or status != 0:
        why = "BENCH_NO_RECORD" if NO_RECORD else "debug build" if build == "debug" else "the run did not finish"
        log(f"not recorded in BENCHMARKS.md ({why})")
    else:
        record(md, header)
    if status == 0 and not all_ok:
        log("some rows are INVALID (see the responses column and the idle connections' statuses)")
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
