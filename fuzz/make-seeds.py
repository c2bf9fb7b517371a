#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/.

The seeds are the tests' examples (proxy/src/path.rs, proxy/src/csp_report.rs,
proxy/tests/jwt_verify.rs, tests/*.rs, audit/src/chain/verify.rs) in the shapes the
targets read. Deterministic: running it again rewrites the same files. Tokens are signed
with the fixed keys whose public halves fuzz_targets/jwt_verify.rs serves (Ed25519 seed
[7]*32, P-256 scalar 0x1234567890abcdef); spool lines carry real hash chains and a
checkpoint signed with the Ed25519 seed [9]*32. Needs python3-cryptography.

Usage: fuzz/make-seeds.py
"""
import base64
import hashlib
import json
import shutil
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"
FAR_FUTURE = 4102444800  # 2100-01-01
PAST = 1700000000


def write(target: str, name: str, data) -> None:
    if isinstance(data, str):
        data = data.encode()
    (CORPUS / target / name).write_bytes(data)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def compact(value) -> str:
    return json.dumps(value, separators=(",", ":"))


# --- path_normalise --------------------------------------------------------------------------
PATHS = {
    "root": "/",
    "tickets": "/api/tickets/",
    "ticket-comments": "/api/tickets/TCK-2026-000123/comments",
    "dot-dot": "/admin/../admin",
    "double-slash": "//admin",
    "dots-mixed": "/./api//x/./y/../z",
    "encoded-dot-dot": "/a/%2e%2e/",
    "encoded-dot-upper": "/api/%2E/x",
    "encoded-letter": "/%61dmin",
    "utf8-escapes": "/files/a%20b/%C3%A9t%C3%A9",
    "above-root": "/%2e%2e/%2e%2e/etc/passwd",
    "encoded-slash": "/admin%2fx",
    "double-encoding": "/admin%252fx",
    "matrix": "/admin;jsessionid=1",
    "trailing-dot": "/admin./x",
    "overlong-utf8": "/%c0%ae%c0%ae/x",
    "bad-escape": "/a%zz",
    "csp-collector": "/.portcullis/csp-report",
    # Issue 12: its escaped, forwarded spelling is three times longer than the limit allows.
    "long-escaped": "/" + "[" * 4096,
}

# --- jwt_verify --------------------------------------------------------------------------------
ED = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32)
EC = ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256R1())


def jws(header: dict, claims, sign: str = "ed", raw_payload: str | None = None) -> str:
    head = b64(compact(header).encode())
    body = raw_payload if raw_payload is not None else b64(compact(claims).encode())
    signing_input = f"{head}.{body}".encode()
    if sign == "ed":
        sig = ED.sign(signing_input)
    elif sign == "ec":
        r, s = decode_dss_signature(EC.sign(signing_input, ec.ECDSA(hashes.SHA256(), deterministic_signing=True)))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        sig = b""
    return f"{head}.{body}.{b64(sig)}"


def claims(**extra) -> dict:
    base = {
        "iss": "portcullis",
        "aud": "portcullis",
        "sub": "7",
        "sid": "0193a0c2-5a1e-7c3d-9f00-6b1f2e3d4c5b",
        "roles": ["employee"],
        "amr": ["pwd"],
        "preferred_username": "alice",
        "iat": PAST,
        "exp": FAR_FUTURE,
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


ED_HEADER = {"alg": "EdDSA", "typ": "JWT", "kid": "fuzz-ed"}
EC_HEADER = {"alg": "ES256", "typ": "JWT", "kid": "fuzz-ec"}
TOKENS = {
    "valid-eddsa": jws(ED_HEADER, claims()),
    "valid-eddsa-admin-mfa": jws(ED_HEADER, claims(sub="1", roles=["administrator"], amr=["pwd", "otp", "mfa"])),
    "valid-es256": jws(EC_HEADER, claims(aud=["other", "portcullis"]), sign="ec"),
    "expired": jws(ED_HEADER, claims(exp=PAST)),
    "not-yet-valid": jws(ED_HEADER, claims(nbf=FAR_FUTURE - 10)),
    "exp-as-string": jws(ED_HEADER, claims(exp=str(FAR_FUTURE))),
    "exp-as-float": jws(ED_HEADER, claims(exp=4102444800.5)),
    "wrong-audience": jws(ED_HEADER, claims(aud="someone-else")),
    "unknown-issuer": jws(ED_HEADER, claims(iss="https://evil.example")),
    "near-miss-issuer": jws(ED_HEADER, claims(iss="Portcullis/")),
    "no-sub": jws(ED_HEADER, claims(sub=None)),
    "alg-none": jws({"alg": "none", "kid": "fuzz-ed"}, claims(), sign=""),
    "alg-hs256": jws({"alg": "HS256", "kid": "fuzz-ed"}, claims()),
    "jku-header": jws({**ED_HEADER, "jku": "https://evil.example/jwks"}, claims()),
    "embedded-jwk": jws({**ED_HEADER, "jwk": {"kty": "OKP", "crv": "Ed25519", "x": "AA"}}, claims()),
    "kid-traversal": jws({"alg": "EdDSA", "kid": "../../etc/passwd"}, claims()),
    "unknown-kid": jws({"alg": "EdDSA", "kid": "rotated-away"}, claims()),
    "key-mismatch": jws({"alg": "ES256", "kid": "fuzz-ed"}, claims()),
    "empty-signature": jws(ED_HEADER, claims(), sign=""),
    "bad-signature": jws(ED_HEADER, claims()).rsplit(".", 1)[0] + "." + b64(bytes(64)),
    "payload-not-object": jws(ED_HEADER, None, raw_payload=b64(b"[1,2,3]")),
    "two-parts": "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiI3In0",
}
# A duplicate `alg` (a parser differential) needs the header written by hand.
TOKENS["duplicate-alg"] = (
    b64(b'{"alg":"EdDSA","alg":"none","kid":"fuzz-ed"}') + "." + TOKENS["valid-eddsa"].split(".", 1)[1]
)

# --- csp_report --------------------------------------------------------------------------------
LEGACY = {
    "csp-report": {
        "document-uri": "https://app.example/api/x?token=s3cret",
        "violated-directive": "script-src-elem 'self'",
        "effective-directive": "script-src-elem",
        "blocked-uri": "https://evil.example/x.js?a=1",
        "original-policy": "default-src 'self'; report-uri /.portcullis/csp-report",
        "disposition": "report",
    }
}
BATCH = [
    {
        "type": "csp-violation",
        "age": 1,
        "url": "https://localhost:8443/tickets",
        "user_agent": "Mozilla/5.0",
        "body": {
            "documentURL": "https://localhost:8443/tickets#frag",
            "effectiveDirective": "img-src",
            "blockedURL": "data",
            "disposition": "enforce",
            "statusCode": 200,
        },
    },
    {"type": "deprecation", "body": {}},
]
CSP = {
    "legacy": "application/csp-report; charset=utf-8\n" + json.dumps(LEGACY),
    "legacy-minimal": "application/csp-report\n"
    + compact({"csp-report": {"document-uri": "https://localhost/api/x", "violated-directive": "script-src-elem"}}),
    "reporting-api": "application/reports+json\n" + json.dumps(BATCH),
    "reporting-api-inline": "application/reports+json\n"
    + compact([{"type": "csp-violation", "body": {"documentURL": "https://a/", "effectiveDirective": "SCRIPT-SRC-ATTR", "blockedURL": "inline"}}]),
    "no-directive": "application/csp-report\n" + compact({"csp-report": {"document-uri": "https://a/"}}),
    "empty-batch": "application/reports+json\n[]",
    "wrong-type": "text/plain\n{}",
}

# --- config_load -------------------------------------------------------------------------------
CONFIGS = {
    "portcullis.yaml": (ROOT / "portcullis.yaml").read_text(),
    "empty.yaml": "# nothing but a comment\n",
    "unknown-key.yaml": "proxy:\n  listen:\n    htps: x\n",
    "moved-keys.yaml": "proxy:\n  policy: {dir: p, evaluation_time_limit_milliseconds: 50}\n"
    "  auth: {identity_key_file: k, revocation_pubsub: {url: 'redis://x'}}\n"
    "backend:\n  policy_dir: p\n  identity_key_file: k\n",
    "revocation-channel.yaml": "shared:\n  revocation_pubsub: {url: 'redis://127.0.0.1:6379'}\n",
    "bad-revocation-channel.yaml": "shared:\n  revocation_pubsub: {url: 'not a url', channel: ''}\n",
    "same-port.yaml": "backend:\n  listen: 0.0.0.0:8443\nlog: {format: text, level: 'info,portcullis::access=warn'}\n",
}

# --- policy_input ------------------------------------------------------------------------------
def head(line: str, *headers: str) -> str:
    return "\r\n".join([line, "Host: localhost:8443", *headers, "", ""])


EMPLOYEE = jws(ED_HEADER, claims())
ADMIN = jws(ED_HEADER, claims(sub="1", roles=["administrator"], amr=["pwd", "otp", "mfa"], preferred_username="admin"))
REQUESTS = {
    "anonymous-root": head("GET / HTTP/1.1", "User-Agent: Mozilla/5.0", "Accept: text/html"),
    "tickets-query": head(
        "GET /api/tickets?status=open&status=in_progress&q=printer+jam&page=2 HTTP/1.1",
        f"Authorization: Bearer {EMPLOYEE}",
        "Accept: application/json",
    ),
    "ticket-create-cookie": head(
        "POST /api/tickets HTTP/1.1",
        f"Authorization: Bearer {EMPLOYEE}",
        "Cookie: __Host-portcullis-access=x; __Host-portcullis-csrf=y",
        "Origin: https://localhost:8443",
        "Sec-Fetch-Site: same-origin",
        "Sec-Fetch-Mode: cors",
        "Content-Type: application/json",
    ),
    "admin-session-delete": head("DELETE /admin/users/7/sessions HTTP/1.1", f"Authorization: Bearer {ADMIN}"),
    "employee-patch-dots": head("PATCH /api/employees/./7/../7 HTTP/1.1", f"Authorization: Bearer {EMPLOYEE}"),
    "login": head("POST /auth/login HTTP/1.1", "Content-Type: application/json"),
    "session-encoded": head("GET /auth/%73ession?x=%2F%00&y HTTP/1.1"),
    "audit-export": head("GET /admin/audit/logs/export?from=2026-01-01T00:00:00Z HTTP/1.1", f"Authorization: Bearer {ADMIN}"),
}

# --- login_account -----------------------------------------------------------------------------
LOGINS = {
    "api-first-sign-in": compact({"username": "admin", "password": "one-time-Pw1", "new_password": "a much longer passphrase", "client": "api"}),
    "totp": compact({"username": "alice", "password": "not the password", "client": "api", "totp_code": "123456"}),
    "backup-code": compact({"username": "alice", "password": "pw", "backup_code": "abcd-efgh"}),
    "spaces-and-case": compact({"username": "  Alice\t", "password": "pw"}),
    "unicode": '{"username":"\\u00c5sa \\u0130\\u03a3","password":"pw"}',
    "nobody": '{"username":"nobody-here","password":"not the password"}',
    "duplicate-username": '{"username":"alice","username":"bob","password":"pw"}',
    "unknown-field": compact({"username": "alice", "password": "pw", "remember": True}),
    "username-number": '{"username":7,"password":"pw"}',
    "not-json": "username=alice&password=pw",
    # Issue 12: the backend reads this as alice's sign-in; the proxy finds no account.
    "array-form": '["alice","guess"]',
}

# --- audit_spool -------------------------------------------------------------------------------
GENESIS = "0" * 64
CHECKPOINT_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32)


def canonical(value) -> str:
    # serde_json's escapes and the audit crate's canonical form agree (audit/src/canonical.rs).
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain(emitter: str, events: list[dict], start_seq: int = 1, prev: str = GENESIS) -> tuple[list[str], str]:
    lines = []
    for i, event in enumerate(events):
        event = dict(event)
        event["portcullis.emitter"] = emitter
        event["portcullis.chain.seq"] = start_seq + i
        if event.get("event.action") == "audit-checkpoint":
            message = f"portcullis-audit-checkpoint-v1\n{emitter}\n{start_seq + i - 1}\n{prev}".encode()
            event["portcullis.checkpoint.seq"] = start_seq + i - 1
            event["portcullis.checkpoint.hash"] = prev
            event["portcullis.checkpoint.signature"] = CHECKPOINT_KEY.sign(message).hex()
            event["portcullis.checkpoint.public_key"] = CHECKPOINT_KEY.public_key().public_bytes_raw().hex()
        event["portcullis.chain.prev_hash"] = prev
        prev = hashlib.sha256(prev.encode() + canonical(event).encode()).hexdigest()
        event["portcullis.chain.hash"] = prev
        lines.append(canonical(event))
    return lines, prev


def event(seconds: int, category: str, action: str, outcome: str, level: str = "info", **fields) -> dict:
    e = {
        "@timestamp": f"2026-12-05T06:{seconds // 60:02}:{seconds % 60:02}.{seconds * 1111 % 1000000:06}Z",
        "ecs.version": "8.11.0",
        "event.id": f"0193a0c2-5a1e-7c3d-9f00-{seconds:012x}",
        "event.category": category,
        "event.action": action,
        "event.outcome": outcome,
        "log.level": level,
    }
    e.update(fields)
    return e


PROXY_EVENTS = [
    event(1, "system", "audit-checkpoint", "success"),
    event(2, "auth", "login", "failure", "warning", **{"user.id": "alice", "source.ip": "203.0.113.7",
          "portcullis.details": {"reason": "bad password", "password": "[REDACTED]"}}),
    event(3, "security", "rate_limit.reject", "failure", "warning", **{"http.request.id": "0193a0c2-0000-7000-8000-000000000003",
          "portcullis.route": "auth", "portcullis.details": {"rule": "login", "key": "login_account", "mode": "enforce", "store_error": False}}),
    event(4, "security", "policy.deny", "failure", "warning", **{"user.id": "7", "user.roles": ["employee"],
          "portcullis.session.id": "0193a0c2-5a1e-7c3d-9f00-6b1f2e3d4c5b", "portcullis.auth.method": "bearer",
          "portcullis.decision.id": "0193a0c2-0000-7000-8000-000000000004", "portcullis.policy.digest": "ab" * 32,
          "user_agent.original": "Mozilla/5.0 \u00e9\u0001", "portcullis.details": {"rule": "admin_only", "path": "/admin/users"}}),
    event(5, "security", "csp.violation", "unknown", "warning", **{"portcullis.details": {"directive": "img-src",
          "document_url": "https://localhost:8443/tickets", "blocked_url": "data", "disposition": "enforce"}}),
]
PROXY_LINES, _ = chain("proxy", PROXY_EVENTS)
BACKEND_LINES, _ = chain("backend", [
    event(10, "maintenance", "ticket.create", "success", **{"user.id": "7", "portcullis.details": {"ticket": "TCK-2026-000123"}}),
    event(11, "user", "role.change", "success", **{"user.id": "1", "portcullis.details": {"employee": 7, "roles": ["technician"]}}),
])
SPOOLS = {
    "proxy-segment": "\n".join(PROXY_LINES) + "\n",
    "torn-tail": "\n".join(PROXY_LINES[:3]) + "\n" + PROXY_LINES[3][:57],
    "two-emitters": "\n".join(x for pair in zip(PROXY_LINES, BACKEND_LINES) for x in pair) + "\n",
    "reordered": "\n".join([PROXY_LINES[0], PROXY_LINES[2], PROXY_LINES[1]]) + "\n",
    "edited": "\n".join(PROXY_LINES).replace('"alice"', '"mallory"') + "\n",
    "rotated-away": "\n".join(chain("proxy", PROXY_EVENTS[2:], start_seq=4711, prev="cd" * 32)[0]) + "\n",
}


def main() -> None:
    sets = {
        "path_normalise": PATHS,
        "jwt_verify": TOKENS,
        "csp_report": CSP,
        "config_load": CONFIGS,
        "policy_input": REQUESTS,
        "login_account": LOGINS,
        "audit_spool": SPOOLS,
    }
    for target, seeds in sets.items():
        shutil.rmtree(CORPUS / target, ignore_errors=True)
        (CORPUS / target).mkdir(parents=True)
        for name, data in seeds.items():
            write(target, name, data)
    print(f"wrote {sum(len(s) for s in sets.values())} seeds into {CORPUS}")


if __name__ == "__main__":
    main()
