#!/usr/bin/env python3
"""`make bench-proxy-instructions`: user-space instructions per proxied request, by callgrind.

Requests per second on a shared two-core machine move by ±15 % from one minute to the
next; instruction counts do not. This runs the same set-up as `make bench-proxy` (the
static upstream, `portcullis up` with the `/bench` routes, a signed-in user: see run.py)
with Portcullis under `valgrind --tool=callgrind`, sends a warm-up, zeroes the counters,
sends exactly N keep-alive requests per row (h2load --h1, 32 connections), dumps, and
divides. Each binary given is measured in turn, so an A/B comparison is one command:

    python3 bench/proxy/instructions.py OLD_BINARY NEW_BINARY

Rows: `bearer` (shipped RBAC policy, bearer JWT, 200), `cookie` (session cookie, 200),
`denied` (403, audited), `post` (the cookie + CSRF POST of run.py's post group, with its
JSON body, 200; not in the default set). Read the figures as relative, not as time:
  * only Portcullis' own user-space instructions count: the system calls' kernel work,
    which is about a third of the proxy's CPU time under load (BENCHMARKS.md), is not;
  * valgrind does not emulate the SHA extensions, so SHA-256 (the token cache key, the
    signed identity, the hashed rate-limit subject) runs in its portable form here and
    its share is several times what it is on hardware;
  * the 32 connections' TLS handshakes are included (about 0.1 % of N = 20 000).
The bundle copy under test has its `*_test.rego` files removed before start-up: their
evaluation time limit (5 s) is too short under valgrind. run.py has already run those
tests natively on the same copy, and the decisions are unchanged.

Environment (optional): INSTR_REQUESTS (20000), INSTR_ROWS (bearer,cookie,denied),
INSTR_KEEP=1 keeps each binary's callgrind files (for callgrind_annotate) and prints
where. Every process started is stopped by pid at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (the set-up of `make bench-proxy`)

REQUESTS = bench.env_int("INSTR_REQUESTS", 20000)
ROWS = [r for r in os.environ.get("INSTR_ROWS", "bearer,cookie,denied").split(",") if r]
KEEP = bool(os.environ.get("INSTR_KEEP"))
CONNS = 32


def wrapper(tmp: Path, real: Path, out: Path) -> Path:
    """A stand-in binary: `... up` runs under callgrind, every other subcommand natively."""
    w = tmp / "portcullis-under-callgrind"
    w.write_text(f"""#!/bin/sh
for a in "$@"; do
  if [ "$a" = up ]; then
    exec valgrind --tool=callgrind --callgrind-out-file={out}/callgrind.out.%p \\
      --dump-instr=no --combine-dumps=yes "{real}" "$@"
  fi
done
exec "{real}" "$@"
""")
    w.chmod(0o755)
    return w


def requests(b: bench.Bench, path: str, headers: list[str], n: int, expect: int,
             body: Path | None = None, kind: str = "portcullis") -> None:
    """Exactly `n` keep-alive requests to `kind` (a proxy of run.py: syscalls.py also sends
    them to nginx), each answered `expect`; POSTs of the file `body` when given."""
    argv = ["h2load", "--h1", "-n", str(n), "-c", str(CONNS), "-t", "1"]
    if body is not None:
        argv += ["-d", str(body)]
    for h in headers:
        argv += ["-H", h]
    argv.append(b.url(kind, path, name="localhost"))
    r = bench.run_bounded(argv, 3600)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", r.stdout)
    counts = dict(zip((200, 300, 400, 500), map(int, codes.groups()))) if codes else {}
    if counts.get(expect // 100 * 100) != n:
        raise bench.BenchError(f"{path}: expected {n} × {expect}, h2load reported:\n{r.stdout[-1500:]}")


def first_part_total(out: Path) -> int:
    """Instructions of the first dump (between the zeroing and `callgrind_control -d`)."""
    files = list(out.glob("callgrind.out.*"))
    if len(files) != 1:
        raise bench.BenchError(f"expected one callgrind file in {out}, found {len(files)}")
    with open(files[0]) as f:
        for line in f:
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise bench.BenchError(f"no summary line in {files[0]}")


def measure(binary: Path, keep_root: Path | None) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-instr-"))
    b = bench.Bench(wrapper(tmp, binary, tmp), tmp)
    per_request: dict[str, float] = {}
    try:
        b.start_signed_in(under_valgrind=True)
        pid = str(b.pc_proc.pid)
        post_body = tmp / "post-body.json"
        post_body.write_text('{"bench":true}')
        rows = {
            "bearer": ("/bench", b.bearer(), 200, None),
            "cookie": ("/bench", b.cookie_headers(False, "portcullis"), 200, None),
            "denied": ("/bench/denied", b.bearer(), 403, None),
            "post": ("/bench", b.cookie_headers(True, "portcullis"), 200, post_body),
        }
        for name in ROWS:
            path, headers, expect, body = rows[name]
            requests(b, path, headers, 2000, expect, body)
            for f in tmp.glob("callgrind.out.*"):
                f.unlink()
            subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
            requests(b, path, headers, REQUESTS, expect, body)
            subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
            time.sleep(0.5)
            per_request[name] = first_part_total(tmp) / REQUESTS
            bench.log(f"{binary}: {name}: {per_request[name]:,.0f} instructions per request")
            if keep_root:
                for f in tmp.glob("callgrind.out.*"):
                    shutil.copy(f, keep_root / f"{name}.{f.name}")
    finally:
        b.procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return per_request


def main() -> int:
    binaries = [Path(a).resolve() for a in sys.argv[1:]] or [
        Path(os.environ.get("PORTCULLIS_BIN")
             or Path(os.environ.get("CARGO_TARGET_DIR") or bench.ROOT / "target") / "release" / "portcullis").resolve()]
    if not bench.tools_present("valgrind", "callgrind_control", "h2load", "openssl"):
        return 2
    unknown = [r for r in ROWS if r not in ("bearer", "cookie", "denied", "post")]
    if unknown or not ROWS:
        bench.log(f"INSTR_ROWS: unknown rows {unknown}; choose from bearer, cookie, denied, post")
        return 2
    results = []
    for i, binary in enumerate(binaries):
        if not os.access(binary, os.X_OK):
            bench.log(f"no executable binary at {binary}")
            return 2
        keep = None
        if KEEP:
            keep = Path(tempfile.mkdtemp(prefix=f"bench-instr-{i}-"))
            bench.log(f"callgrind files of {binary} go to {keep}")
        try:
            results.append(measure(binary, keep))
        except bench.BenchError as e:
            bench.log(f"failed: {e}")
            return 1
    print(f"\nUser-space instructions per request (callgrind, {REQUESTS} keep-alive requests per row, "
          f"{CONNS} connections):\n")
    print("| binary | " + " | ".join(ROWS) + " |")
    print("| --- | " + " | ".join("---:" for _ in ROWS) + " |")
    for binary, r in zip(binaries, results):
        cells = []
        for name in ROWS:
            cell = f"{r[name]:,.0f}"
            if r is not results[0]:
                cell += f" ({(r[name] / results[0][name] - 1) * 100:+.1f} %)"
            cells.append(cell)
        print(f"| `{binary}` | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
