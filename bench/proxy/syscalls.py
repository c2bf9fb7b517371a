#!/usr/bin/env python3
"""`make bench-proxy-syscalls`: system calls per proxied request, Portcullis beside nginx.

A third of the proxy's CPU under load is the kernel's (BENCHMARKS.md), and a system call
costs the same whoever makes it, so the count per request is the kernel side's measure
that callgrind (`make bench-proxy-instructions`) leaves out. This runs `make
bench-proxy`'s set-up (the static upstream, nginx as the TLS reverse proxy, `portcullis
up` with the `/bench` routes, a signed-in user: see run.py), sends a warm-up, then
attaches `strace -f -c` to nginx's workers and to Portcullis in turn while exactly N
keep-alive requests go through (h2load --h1, 32 connections), and prints the calls per
request of each, side by side:

    python3 bench/proxy/syscalls.py [BINARY]

Rows (SYSCALL_ROWS, default `get`): `get` is nginx, and Portcullis with the shipped RBAC
policy and a bearer JWT (200); `post` is run.py's cookie + CSRF POST with its JSON body,
to both. Counts are exact; timings under strace are not, so none are printed. Calls made
by a timer or a background task (a tick, a flush) are included, divided by N like the
rest. A second table gives each side's context switches per request (every thread's
counters in /proc, over another N requests without strace): a voluntary one is a thread
that waited for work and was woken again.

Environment (optional): SYSCALL_REQUESTS (20000), SYSCALL_ROWS (`get`; `get,post` for
both). Every process started is stopped by pid at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import instructions  # noqa: E402  (its request driver)
import run as bench  # noqa: E402  (the set-up of `make bench-proxy`)

REQUESTS = bench.env_int("SYSCALL_REQUESTS", 20000)
ROWS = [r for r in os.environ.get("SYSCALL_ROWS", "get").split(",") if r]


def counted(b: bench.Bench, pids: list[int], kind: str, headers: list[str], body: Path | None,
            out: Path) -> dict[str, int]:
    """Calls by `pids` (all their threads) while REQUESTS requests go through `kind`."""
    argv = ["strace", "-f", "-c", "-o", str(out)]
    for pid in pids:
        argv += ["-p", str(pid)]
    tracer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # strace prints nothing once attached; give it time to reach every thread.
        time.sleep(1.5)
        if tracer.poll() is not None:
            raise bench.BenchError(f"strace exited: {tracer.stderr.read() if tracer.stderr else ''}")
        instructions.requests(b, "/bench", headers, REQUESTS, 200, body, kind=kind)
        time.sleep(0.5)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=60)
    calls: dict[str, int] = {}
    for line in out.read_text().splitlines():
        f = line.split()
        # "% time  seconds  usecs/call  calls  [errors]  syscall"; the total line is skipped.
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total" and f[3].isdigit():
            calls[f[-1]] = int(f[3])
    if not calls:
        raise bench.BenchError(f"strace counted nothing:\n{out.read_text()[-2000:]}")
    return calls


def context_switches(pids: list[int]) -> tuple[int, int]:
    """(voluntary, involuntary) context switches so far of every thread of `pids`."""
    vol = invol = 0
    for pid in pids:
        for status in Path(f"/proc/{pid}/task").glob("*/status"):
            try:
                text = status.read_text()
            except OSError:  # a thread that ended meanwhile
                continue
            for line in text.splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    invol += int(line.split()[1])
    return vol, invol


def switched(b: bench.Bench, pids: list[int], kind: str, headers: list[str],
             body: Path | None) -> tuple[int, int]:
    """Context switches of `pids` while REQUESTS requests go through `kind`, untraced."""
    before = context_switches(pids)
    instructions.requests(b, "/bench", headers, REQUESTS, 200, body, kind=kind)
    after = context_switches(pids)
    return after[0] - before[0], after[1] - before[1]


def main() -> int:
    binary = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORTCULLIS_BIN")
                  or Path(os.environ.get("CARGO_TARGET_DIR") or bench.ROOT / "target") / "release" / "portcullis").resolve()
    if not bench.tools_present("strace", "h2load", "openssl"):
        return 2
    if not os.access(binary, os.X_OK):
        bench.log(f"no executable binary at {binary}")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-syscalls-"))
    b = bench.Bench(binary, tmp)
    try:
        b.start_signed_in()
        b.start_nginx_tls(b.security_headers_of_portcullis())
        workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(b.nginx.pid)], capture_output=True,
                                                  text=True).stdout.split()]
        if not workers:
            raise bench.BenchError("nginx has no worker processes")
        post_body = tmp / "post-body.json"
        post_body.write_text('{"bench":true}')
        # row -> (what it is, nginx's headers, Portcullis' headers, the body): the same
        # requests to both, except that each POST names its own proxy as the Origin.
        rows = {
            "get": ("GET, Portcullis: shipped RBAC policy, bearer JWT", [], b.bearer(), None),
            "post": ("cookie + CSRF POST with a JSON body", b.cookie_headers(True, "nginx"),
                     b.cookie_headers(True, "portcullis"), post_body),
        }
        unknown = [r for r in ROWS if r not in rows]
        if unknown:
            raise bench.BenchError(f"unknown SYSCALL_ROWS {unknown}; rows: {', '.join(rows)}")
        cols: dict[tuple[str, str], dict[str, int]] = {}
        switches: dict[tuple[str, str], tuple[int, int]] = {}
        for row in ROWS:
            _, nginx_headers, pc_headers, body = rows[row]
            for name, pids, kind, headers in (("nginx", workers, "nginx", nginx_headers),
                                              ("Portcullis", [b.pc_proc.pid], "portcullis", pc_headers)):
                instructions.requests(b, "/bench", headers, 2000, 200, body, kind=kind)
                switches[row, name] = switched(b, pids, kind, headers, body)
                cols[row, name] = counted(b, pids, kind, headers, body, tmp / f"strace.{row}.{kind}")
                bench.log(f"{row}, {name}: {sum(cols[row, name].values()) / REQUESTS:.2f} system calls per request")
    except bench.BenchError as e:
        bench.log(f"failed: {e}")
        return 1
    finally:
        b.procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    for row in ROWS:
        what = rows[row][0]
        ng, pc = cols[row, "nginx"], cols[row, "Portcullis"]
        names = sorted(set(ng) | set(pc), key=lambda c: -(ng.get(c, 0) + pc.get(c, 0)))
        print(f"\nSystem calls per request (strace -f -c, {REQUESTS} keep-alive requests, 32 connections; "
              f"{what}):\n")
        print("| system call | nginx | Portcullis |")
        print("| --- | ---: | ---: |")
        for c in names:
            print(f"| `{c}` | {ng.get(c, 0) / REQUESTS:.3f} | {pc.get(c, 0) / REQUESTS:.3f} |")
        print(f"| all | {sum(ng.values()) / REQUESTS:.2f} | {sum(pc.values()) / REQUESTS:.2f} |")
        print(f"\nContext switches per request ({what}; /proc/PID/task/*/status, the same "
              f"{REQUESTS} requests untraced):\n")
        print("| | nginx | Portcullis |")
        print("| --- | ---: | ---: |")
        for i, label in enumerate(("voluntary (waits)", "involuntary (preempted)")):
            print(f"| {label} | {switches[row, 'nginx'][i] / REQUESTS:.3f} | "
                  f"{switches[row, 'Portcullis'][i] / REQUESTS:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
