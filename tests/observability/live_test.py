#!/usr/bin/env python3
"""Live observability test: the real product, the real Prometheus with the shipped
configuration and rules, the real Alertmanager with the shipped routing, and a
webhook receiver in this process.

    PORTCULLIS_BIN=target/debug/portcullis python3 tests/observability/live_test.py

1. Starts `portcullis up` with a temporary configuration (random loopback ports, state
   under a temporary folder, a copy of the policy folder so that a reload can be
   provoked), Prometheus with dashboards/prometheus/prometheus.yml rewritten to those
   ports (scrape and rule evaluation every second, rule groups every second), and
   Alertmanager with dashboards/alertmanager/alertmanager.yml whose webhook URLs point
   at the receiver here (e-mail to a closed port; waits shortened).
2. Runs traffic through the proxy: sign-ins (the bootstrap administrator's one-time
   password, a second user created with `portcullis user create`), failed sign-ins up
   to a lockout, policy denials, missing and malformed tokens, a CSRF refusal, rate
   limiting, CSP reports, an ambiguous path, a failed TLS handshake, a request to an
   upstream that is down, a refused and an accepted policy reload.
3. Checks: both scrape targets up; `promtool check metrics` on both; no portcullis_*
   series exposed by both targets; every recording rule has a value; every panel query
   of every dashboard returns at least one finite value (NOT_EXPECTED below lists the
   queries that cannot, with the reason); and one alert end to end: the shipped
   PortcullisBruteForceSignIn rule (its `for:` shortened to 1 s in the test copy)
   fires on the failed sign-ins, Alertmanager routes it to the security team's
   webhook, and the receiver here gets it.

Exit status 0 only if every check passed; the last line is "N passed, N failed".
Without the product binary, prometheus, alertmanager or promtool the test is skipped,
unless CI is set: then it fails. PORTCULLIS_POLICY_DIR overrides the policy folder
(default: the repository's policies/). Every process started is stopped by its pid.
"""

import http.client
import http.server
import json
import math
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import panel_queries  # noqa: E402

PROM_DIR = ROOT / "dashboards" / "prometheus"
AM_CONFIG = ROOT / "dashboards" / "alertmanager" / "alertmanager.yml"
E2E_ALERT = "PortcullisBruteForceSignIn"
ANOMALY_ALERT = "PortcullisAnomalyDetected"

# Panel queries that cannot return data in a two-minute run, keyed by
# (dashboard uid, panel title): why. Keep this short and true.
NOT_EXPECTED = {
}

# Grafana variables for the live queries: $__range spans the whole run.
LIVE_VARIABLES = dict(panel_queries.SUBSTITUTIONS, **{"$__range": "10m", "$__rate_interval": "2m"})

results = []  # (ok, name, detail)


def check(ok, name, detail=""):
    results.append((bool(ok), name, detail))
    mark = "ok  " if ok else "FAIL"
    print(f"{mark} {name}" + (f"\n       {detail}" if detail and not ok else ""), flush=True)
    return ok


def find_tool(*names):
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    return None


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


# ---------------------------------------------------------------------------------
# Processes

children = []


def start(args, log_path, **kw):
    log = open(log_path, "wb")
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
    children.append((p, args[0]))
    return p


def stop_all():
    for p, _ in reversed(children):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + 15
    for p, name in reversed(children):
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_http(url, what, timeout=60, proc=None, log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = Path(log).read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"{what} exited ({proc.returncode}):\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready at {url} after {timeout}s")


# ---------------------------------------------------------------------------------
# Webhook receiver

received = []  # (path, payload)


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            received.append((self.path, json.loads(body)))
        except ValueError:
            received.append((self.path, {"unparsed": body.decode(errors="replace")}))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


# ---------------------------------------------------------------------------------
# HTTPS client for the proxy

TLS = ssl.create_default_context()
TLS.check_hostname = False
TLS.verify_mode = ssl.CERT_NONE


class Proxy:
    def __init__(self, port):
        self.port = port

    def request(self, method, path, body=None, headers=None):
        c = http.client.HTTPSConnection("127.0.0.1", self.port, context=TLS, timeout=30)
        h = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            h.setdefault("content-type", "application/json")
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        payload = r.read()
        c.close()
        return r.status, r.headers, payload

    def login(self, username, password, new_password=None, client="api"):
        body = {"username": username, "password": password, "client": client}
        if new_password:
            body["new_password"] = new_password
        return self.request("POST", "/auth/login", body)


def prom_query(port, expr):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        doc = json.load(r)
    if doc.get("status") != "success":
        raise RuntimeError(f"query failed: {doc}")
    return doc["data"]


def finite_values(data):
    rt, res = data["resultType"], data["result"]
    if rt == "scalar":
        vals = [res[1]]
    elif rt == "vector":
        vals = [s["value"][1] for s in res]
    elif rt == "matrix":
        vals = [v[1] for s in res for v in s["values"]]
    else:
        vals = []
    return [float(v) for v in vals if not math.isnan(float(v)) and not math.isinf(float(v))]


def write_panel_snapshot(port, files, start, path):
    """query_range of every panel query from `start` to now, written as JSON
    {dashboard uid: {panel id: {refId: matrix}}} for tests/browser/grafana-layout.mjs."""
    end = time.time()
    step = max(1, int((end - start) / 120))
    snap = {"_meta": {"taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end)),
                      "range": f"{int(end - start)} s, step {step} s"}}
    for q in panel_queries.queries(files, subst=True, values=LIVE_VARIABLES):
        url = f"http://127.0.0.1:{port}/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": q["expr"], "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)})
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                result = json.load(r)["data"]["result"]
        except Exception as e:  # the panel is drawn empty; the checks above report it
            print(f"snapshot: {q['expr']}: {e}", flush=True)
            result = []
        snap.setdefault(q["dashboard"], {}).setdefault(str(q["panel_id"]), {})[q["refId"]] = result
    path.write_text(json.dumps(snap))
    print(f"wrote the panel snapshot {path}", flush=True)


def wait_for(pred, timeout, interval=0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


# ---------------------------------------------------------------------------------


def main():
    in_ci = bool(os.environ.get("CI"))
    bin_path = Path(os.environ.get("PORTCULLIS_BIN", ROOT / "target" / "debug" / "portcullis"))
    if not bin_path.is_absolute():
        bin_path = ROOT / bin_path
    tools = {
        "prometheus": find_tool("prometheus"),
        "alertmanager": find_tool("alertmanager", "prometheus-alertmanager"),
        "promtool": find_tool("promtool"),
    }
    missing = [k for k, v in tools.items() if not v]
    if not bin_path.exists():
        missing.append(f"the product binary {bin_path} (PORTCULLIS_BIN)")
    if missing:
        msg = "live observability test needs " + ", ".join(missing) + " (scripts/observability-deps.sh)"
        if in_ci:
            print("FAIL " + msg)
            print("0 passed, 1 failed")
            return 1
        print("skipped: " + msg)
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="portcullis-obs-"))
    keep = bool(os.environ.get("OBS_KEEP_TMP"))
    try:
        run(tmp, bin_path, tools)
    except Exception as e:  # a setup failure is a failed check, with the logs' tails
        check(False, "test run", f"{type(e).__name__}: {e}")
        for log in sorted(tmp.glob("*.log")):
            print(f"--- {log.name} (tail)\n{log.read_text(errors='replace')[-2500:]}")
    finally:
        stop_all()
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    passed = sum(1 for ok, _, _ in results if ok)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


def run(tmp, bin_path, tools):
    t0 = time.time()
    (https, admin, backend, backend_admin, prom, am, am_cluster, hook, smtp, dead) = free_ports(10)

    # --- the product ------------------------------------------------------------
    schema = json.loads(subprocess.run([str(bin_path), "config-schema"], check=True,
                                       capture_output=True, text=True).stdout)
    backend_props = schema.get("$defs", {}).get("BackendConfig", {}).get("properties", {})
    has_backend_admin = "admin_listen" in backend_props
    policy_src = Path(os.environ.get("PORTCULLIS_POLICY_DIR", ROOT / "policies"))
    policies = tmp / "policies"
    shutil.copytree(policy_src, policies)
    config = {
        "state_dir": str(tmp / "var"),
        "log": {"format": "json", "level": "warn"},
        "proxy": {
            "listen": {"https": f"127.0.0.1:{https}", "http": None, "admin": f"127.0.0.1:{admin}"},
            "upstreams": {
                "backend": {"address": f"127.0.0.1:{backend}"},
                # Nothing listens there: requests on the route below are upstream errors.
                "down": {"address": f"127.0.0.1:{dead}", "connect_timeout_seconds": 1},
            },
            "routes": [
                {"name": "api", "path_prefix": "/api", "upstream": "backend"},
                {"name": "auth", "path_prefix": "/auth", "upstream": "backend"},
                {"name": "admin", "path_prefix": "/admin", "upstream": "backend"},
                {"name": "monitoring", "path_prefix": "/monitoring", "upstream": "backend"},
                # A public path (policy: anyone may GET it) sent to the dead upstream.
                {"name": "openapi-down", "path_prefix": "/api/openapi.json", "upstream": "down"},
                {"name": "app", "path_prefix": "/", "upstream": "backend"},
            ],
            "rate_limits": {"rules": [
                {"name": "obs_health", "key": "client_ip", "routes": ["monitoring"],
                 "requests_per_period": 1, "period_seconds": 60, "burst_requests": 3},
            ]},
        },
        "shared": {"policy_dir": str(policies)},
        "backend": {
            "listen": f"127.0.0.1:{backend}",
            "identity": {"lockout": {"account_failures": 5, "ip_failures": 10000,
                                     "delay_after_failures": 10000}},
            # The plumbing, not the rule (backend/src/anomaly has the rule's tests): a job
            # that runs every second and flags any subject refused in the last five
            # minutes, so the employee's denials below travel job -> metric ->
            # Prometheus -> Alertmanager -> webhook.
            "anomaly": {"interval_seconds": 1, "window_minutes": 5, "min_baseline_days": 0,
                        "min_events": 1, "threshold": 0.5},
        },
        "audit": {"ingest_url": f"http://127.0.0.1:{backend}/internal/audit/ingest"},
    }
    if has_backend_admin:
        config["backend"]["admin_listen"] = f"127.0.0.1:{backend_admin}"
    cfg_path = tmp / "portcullis.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    r = subprocess.run([str(bin_path), "check-config", str(cfg_path)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"check-config refused the test configuration:\n{r.stdout}{r.stderr}")
    product = start([str(bin_path), "--config", str(cfg_path), "up"], tmp / "portcullis.log")

    # --- webhook receiver -------------------------------------------------------
    server = http.server.ThreadingHTTPServer(("127.0.0.1", hook), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    # --- Alertmanager: the shipped routing, webhooks here, e-mail to a closed port
    am_doc = yaml.safe_load(AM_CONFIG.read_text())
    am_doc["global"]["smtp_smarthost"] = f"127.0.0.1:{smtp}"

    def shorten(route):
        route["group_wait"], route["group_interval"] = "1s", "1s"
        for child in route.get("routes", []):
            shorten(child)
    shorten(am_doc["route"])
    for rcv in am_doc["receivers"]:
        for wh in rcv.get("webhook_configs", []):
            path = urllib.parse.urlsplit(wh["url"]).path
            wh["url"] = f"http://127.0.0.1:{hook}{path}"
    am_cfg = tmp / "alertmanager.yml"
    am_cfg.write_text(yaml.safe_dump(am_doc, sort_keys=False))
    am_proc = start([tools["alertmanager"], f"--config.file={am_cfg}", f"--storage.path={tmp / 'am'}",
                     f"--web.listen-address=127.0.0.1:{am}",
                     f"--cluster.listen-address=127.0.0.1:{am_cluster}", "--cluster.peer-timeout=1s",
                     "--log.level=warn"], tmp / "alertmanager.log")

    # --- Prometheus: the shipped configuration and rules, rewritten to our ports --
    prom_doc = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    prom_doc["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    targets = {"portcullis-proxy": f"127.0.0.1:{admin}", "portcullis-backend": f"127.0.0.1:{backend_admin}"}
    for job in prom_doc["scrape_configs"]:
        if job["job_name"] not in targets:
            raise RuntimeError(f"prometheus.yml has a job this test does not know: {job['job_name']}")
        for sc in job["static_configs"]:
            sc["targets"] = [targets[job["job_name"]]]
    prom_doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{am}"]
    rules_dir = tmp / "rules"
    rules_dir.mkdir()
    recording, alerts = [], []
    for f in sorted((PROM_DIR / "rules").glob("*.yml")):
        doc = yaml.safe_load(f.read_text())
        for g in doc["groups"]:
            g["interval"] = "1s"
            for rule in g["rules"]:
                if "record" in rule:
                    recording.append(rule["record"])
                else:
                    alerts.append(rule["alert"])
                if rule.get("alert") == E2E_ALERT:
                    rule["for"] = "1s"  # test copy only: the shipped rule waits 2m
        (rules_dir / f.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    prom_doc["rule_files"] = [str(rules_dir / "*.yml")]
    prom_cfg = tmp / "prometheus.yml"
    prom_cfg.write_text(yaml.safe_dump(prom_doc, sort_keys=False))
    r = subprocess.run([tools["promtool"], "check", "config", str(prom_cfg)], capture_output=True, text=True)
    check(r.returncode == 0, "promtool check config on the rewritten prometheus.yml", r.stdout + r.stderr)
    prom_proc = start([tools["prometheus"], f"--config.file={prom_cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                       f"--web.listen-address=127.0.0.1:{prom}", "--log.level=warn"], tmp / "prometheus.log")

    # /health/live, not /ready: readiness fails while an upstream (here "down") is down.
    wait_http(f"http://127.0.0.1:{admin}/health/live", "portcullis", 90, product, tmp / "portcullis.log")
    wait_for(lambda: Proxy(https).request("GET", "/auth/jwks.json")[0] == 200, 30)
    wait_http(f"http://127.0.0.1:{prom}/-/ready", "prometheus", 60, prom_proc, tmp / "prometheus.log")
    wait_http(f"http://127.0.0.1:{am}/-/ready", "alertmanager", 60, am_proc, tmp / "alertmanager.log")
    print(f"started in {time.time() - t0:.1f}s", flush=True)

    # Traffic only once Prometheus has scraped the proxy: counters it first sees
    # at their final value show no increase.
    wait_for(lambda: finite_values(prom_query(prom, 'up{job="portcullis-proxy"} == 1')), 20)
    traffic(tmp, bin_path, cfg_path, Proxy(https), policies, admin)
    print(f"traffic done at {time.time() - t0:.1f}s", flush=True)

    # --- scrape targets, exposition, duplicates ---------------------------------
    def targets_up():
        try:
            d = prom_query(prom, 'up{job=~"portcullis-.*"}')
        except Exception:
            return None
        up = {s["metric"]["job"]: s["value"][1] for s in d["result"]}
        return up if up.get("portcullis-proxy") == "1" and up.get("portcullis-backend") == "1" else None
    wait_for(targets_up, 10)
    up = {s["metric"]["job"]: s["value"][1] for s in prom_query(prom, 'up{job=~"portcullis-.*"}')["result"]}
    check(up.get("portcullis-proxy") == "1", "Prometheus scrapes the proxy's admin listener", f"up = {up}")
    check(up.get("portcullis-backend") == "1",
          "Prometheus scrapes the backend's admin listener",
          f"up = {up}" + ("" if has_backend_admin else
                          "; the configuration schema has no backend.admin_listen: the backend exposes no /metrics of its own yet"))
    for job, addr in targets.items():
        try:
            with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as resp:
                text = resp.read()
            r = subprocess.run([tools["promtool"], "check", "metrics"], input=text, capture_output=True)
            check(r.returncode == 0, f"promtool check metrics on {job}'s /metrics",
                  (r.stdout + r.stderr).decode(errors="replace")[:2000])
        except Exception as e:
            check(False, f"promtool check metrics on {job}'s /metrics", str(e))
    # (the name is copied into a label: aggregation drops __name__)
    dup = prom_query(prom, 'count without (job, instance, component) (label_replace('
                           '{__name__=~"portcullis_.+"}, "name", "$1", "__name__", "(.+)")) > 1')["result"]
    check(not dup, "no portcullis_* series is exposed by both targets",
          ", ".join(sorted({s["metric"].get("name", "?") for s in dup}))[:1500])

    # --- settle: the last scrape after the traffic is in, rules evaluated on it ----
    settled = wait_for(lambda: finite_values(prom_query(
        prom, 'sum(portcullis_auth_logins_total{result=~"failure|locked"}) >= 48')), 20)
    check(settled, "Prometheus has scraped the last failed sign-ins")
    time.sleep(3)  # a few rule evaluations (every second) on the final data

    # --- recording rules ----------------------------------------------------------
    for rec in recording:
        vals = finite_values(prom_query(prom, rec))
        check(vals, f"recording rule {rec} has a value")

    # --- every panel query ----------------------------------------------------------
    files = sorted((ROOT / "dashboards" / "grafana" / "dashboards").glob("*.json"))
    for q in panel_queries.queries(files, subst=True, values=LIVE_VARIABLES):
        key = (q["dashboard"], q["title"])
        name = f"panel {q['dashboard']} #{q['panel_id']} \"{q['title']}\" {q['refId']}"
        if key in NOT_EXPECTED:
            print(f"skip {name}: {NOT_EXPECTED[key]}")
            continue
        try:
            vals = finite_values(prom_query(prom, q["expr"]))
            check(vals, name + " returns data", q["expr"])
        except Exception as e:
            check(False, name + " returns data", f"{q['expr']}: {e}")

    # --- a snapshot of every panel query over the run, for docs' layout renderings ---
    snapshot_path = os.environ.get("PORTCULLIS_PANEL_SNAPSHOT")
    if snapshot_path:
        write_panel_snapshot(prom, files, t0, Path(snapshot_path))

    # --- one alert end to end ---------------------------------------------------------
    def delivered():
        for path, payload in received:
            for a in payload.get("alerts", []):
                if a.get("labels", {}).get("alertname") == E2E_ALERT and a.get("status") == "firing":
                    return path, payload
        return None
    got = wait_for(delivered, 60)
    rules_state = ""
    if not got:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{prom}/api/v1/alerts", timeout=5) as resp:
                rules_state = resp.read().decode()[:2000]
        except Exception as e:
            rules_state = str(e)
    check(got, f"{E2E_ALERT} fires in Prometheus and reaches the webhook through Alertmanager",
          f"received: {[p for p, _ in received]}; Prometheus alerts: {rules_state}")
    if got:
        path, payload = got
        check(path == "/alerts/security" and payload.get("receiver") == "security-team",
              "the alert is routed to the security team's webhook", f"{path} {payload.get('receiver')}")
        alert = next(a for a in payload["alerts"] if a["labels"]["alertname"] == E2E_ALERT)
        check(alert["labels"].get("category") == "security" and alert["labels"].get("severity") == "critical"
              and alert["annotations"].get("summary", "").startswith("Brute force:"),
              "the delivered alert carries its labels and annotations", json.dumps(alert)[:800])
    # --- the anomaly job's finding, end to end ------------------------------------------
    def anomaly_delivered():
        for path, payload in received:
            for a in payload.get("alerts", []):
                if a.get("labels", {}).get("alertname") == ANOMALY_ALERT and a.get("status") == "firing":
                    return path, a
        return None
    got = wait_for(anomaly_delivered, 60)
    check(got, f"{ANOMALY_ALERT} (the anomaly job flagged the refused employee) reaches the webhook",
          f"received: {[p for p, _ in received]}")
    if got:
        path, alert = got
        check(path == "/alerts/security" and alert["labels"].get("kind") in
              ("denial_rate", "request_rate", "new_source_address", "off_hours", "distinct_tickets"),
              "the anomaly alert names its kind and goes to the security team", json.dumps(alert)[:800])
    print(f"finished in {time.time() - t0:.1f}s", flush=True)
    hold = float(os.environ.get("OBS_HOLD_SECONDS", "0"))
    if hold:
        print(f"holding {hold:.0f}s: Prometheus http://127.0.0.1:{prom}, Alertmanager http://127.0.0.1:{am}, "
              f"proxy admin http://127.0.0.1:{admin}", flush=True)
        time.sleep(hold)


def traffic(tmp, bin_path, cfg_path, px, policies, admin_port):
    """Everything the dashboards show, through the proxy."""
    # Sign-ins: the bootstrap administrator's one-time password, then a second user.
    text = (tmp / "var" / "initial-admin.txt").read_text()
    otp = re.search(r"one-time password:\s*(\S+)", text).group(1)
    admin_pw = "Obs-Root-Secret-4711"
    st, _, body = px.login("admin", otp, new_password=admin_pw)
    check(st == 200, "the bootstrap administrator signs in with its one-time password", f"{st} {body[:300]!r}")
    admin_token = json.loads(body)["access_token"]
    out = subprocess.run([str(bin_path), "--config", str(cfg_path), "user", "create", "obs-employee",
                          "--email", "obs-employee@example.org", "--display-name", "Obs Employee",
                          "--role", "employee"], capture_output=True, text=True)
    m = re.search(r"one-time password:\s*(\S+)", out.stdout + out.stderr)
    check(m, "portcullis user create prints a one-time password", out.stdout + out.stderr)
    emp_pw = "Obs-Staff-Secret-4711"
    st, _, body = px.login("obs-employee", m.group(1) if m else "x", new_password=emp_pw)
    check(st == 200, "a second user signs in", f"{st} {body[:300]!r}")
    emp_token = json.loads(body).get("access_token", "") if st == 200 else ""
    for _ in range(3):
        px.login("admin", admin_pw)
    bearer = {"authorization": f"Bearer {admin_token}"}

    # Two rounds with a scrape between: a counter first seen by Prometheus already at
    # its final value shows no increase, so each kind of request comes twice.
    for round_ in range(2):
        if round_:
            time.sleep(1.5)
        for _ in range(2):
            px.login("admin", admin_pw)
        # Ordinary requests.
        for _ in range(5):
            px.request("GET", "/api/tickets", headers=bearer)
            px.request("GET", "/monitoring/health")  # the 4th and later: rate limited (obs_health)
        px.request("POST", "/api/tickets", {"title": "Printer on fire", "description": "obs test"}, headers=bearer)

        # CSRF: a browser session (cookies) posting without its CSRF token.
        st, headers, body = px.login("admin", admin_pw, client="browser")
        cookies = "; ".join(c.split(";", 1)[0] for c in headers.get_all("set-cookie") or [])
        st, _, _ = px.request("POST", "/api/tickets", {"title": "x", "description": "y"},
                              headers={"cookie": cookies, "origin": "https://evil.example",
                                       "sec-fetch-site": "cross-site"})
        if not round_:
            check(st == 403, "a cross-site cookie POST is refused (CSRF)", str(st))

        # Policy denials: an employee on administrators' routes.
        for _ in range(25):
            px.request("GET", "/admin/sessions", headers={"authorization": f"Bearer {emp_token}"})
        # Unauthenticated, bad tokens, unsupported scheme.
        px.request("GET", "/api/tickets")
        px.request("GET", "/api/tickets", headers={"authorization": "Bearer not.a.jwt"})
        px.request("GET", "/api/tickets", headers={
            "authorization": "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIn0."})
        px.request("GET", "/api/tickets", headers={"authorization": "Basic b2JzOm9icw=="})

        # CSP reports: an enforced script violation and a report-only image violation.
        base = f"https://127.0.0.1:{px.port}"
        for directive, disposition in (("script-src-elem", "enforce"), ("img-src", "report")):
            px.request("POST", "/.portcullis/csp-report", json.dumps({"csp-report": {
                "document-uri": f"{base}/", "violated-directive": f"{directive} 'self'",
                "effective-directive": directive, "blocked-uri": "https://evil.example/x.js",
                "disposition": disposition}}), headers={"content-type": "application/csp-report"})

        # Refused before routing (ambiguous encoding), failed TLS handshake, upstream down.
        st, _, _ = px.request("GET", "/api/tickets%2Fx")  # encoded slash: ambiguous
        if not round_:
            check(st == 400, "an ambiguous path is refused before routing", str(st))
        with socket.create_connection(("127.0.0.1", px.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                s.recv(100)
            except OSError:
                pass
        st, _, _ = px.request("GET", "/api/openapi.json")
        if not round_:
            check(st in (502, 503, 504), "a request to an upstream that is down gets 5xx", str(st))

    # Policy reloads: a bundle that does not compile is refused, then fixed.
    broken = policies / "zz_observability_broken.rego"
    broken.write_text("package portcullis.broken\n\nthis is not rego\n")

    def reloads(result):
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        pattern = (r'^portcullis_reloads_total\{(?=[^}]*kind="policy")(?=[^}]*result="%s")[^}]*\} [1-9]'
                   % result)
        return re.search(pattern, text, re.M)
    check(wait_for(lambda: reloads("failure"), 20), "a broken policy bundle is counted as a failed reload")
    # Replacing it by a valid package puts a new bundle in force.
    broken.write_text("package portcullis.observability_probe\n\nprobe := true\n")
    check(wait_for(lambda: reloads("success"), 20), "the fixed bundle is counted as a successful reload")

    # Failed sign-ins last (they end in a lockout): 8 for the employee's account
    # (lockout after 5), 40 for unknown names. The brute-force alert needs > 30 in 5 min.
    for i in range(8):
        px.login("obs-employee", f"wrong-{i}")
    for i in range(40):
        px.login(f"nobody-{i}", "wrong-password")


if __name__ == "__main__":
    sys.exit(main())
