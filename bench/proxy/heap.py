#!/usr/bin/env python3
"""`make bench-proxy-heap`: the heap an idle keep-alive connection holds, by allocation site.

The idle row of `make bench-proxy` gives resident memory per connection, not what it is
made of. This runs the same set-up (the static upstream, `portcullis up` with the
`/bench` routes, a signed-in user: see run.py) with Portcullis under `valgrind
--tool=massif`, takes a detailed heap snapshot, opens N idle keep-alive TLS connections
the way the idle row does (`idle_conns.py`: handshake, one GET with the bearer token,
then nothing), takes a second snapshot, and prints the difference per connection,
grouped by the first frames outside the allocator and the standard library.

massif sees the system allocator only: build the binary without mimalloc,

    cargo build --release --bin portcullis --no-default-features

and, since valgrind 3.19 cannot read the symbols of a binary linked by rust-lld, in a
target directory of its own with `RUSTFLAGS=-Clink-arg=-fuse-ld=bfd` (BENCHMARKS.md,
"seventh stop"). Then:

    python3 bench/proxy/heap.py BINARY [BINARY ...]

Read the figures as the heap's own bytes: mimalloc rounds each block up to its size
class and keeps pages per thread, so resident memory per connection (the idle row) is
somewhat more. Environment (optional): HEAP_CONNS (1000), HEAP_ROWS (16: sites shown),
HEAP_DEPTH (2: frames that name a site). Every process started is stopped by pid.
"""

from __future__ import annotations

import collections
import json
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

CONNS = bench.env_int("HEAP_CONNS", 1000)
ROWS = bench.env_int("HEAP_ROWS", 16)
DEPTH = bench.env_int("HEAP_DEPTH", 2)

# Frames that say how, not why, memory was taken: the allocator, the standard library and
# the containers that grow on a caller's behalf.
PLUMBING = re.compile(r"\(library/|alloc::|raw_vec|hashbrown|bytes_mut|/vec/|\(vec\.rs|\(boxed\.rs|bytes\.rs")
NODE = re.compile(r"(\s*)n(\d+): (\d+) (?:0x[0-9A-Fa-f]+: )?(.*)")


def wrapper(tmp: Path, real: Path) -> Path:
    """A stand-in binary: `... up` runs under massif, every other subcommand natively."""
    w = tmp / "portcullis-under-massif"
    w.write_text(f"""#!/bin/sh
for a in "$@"; do
  if [ "$a" = up ]; then
    exec valgrind --tool=massif --vgdb=yes --threshold=0.01 --depth=40 \\
      --massif-out-file={tmp}/massif.out.%p "{real}" "$@"
  fi
done
exec "{real}" "$@"
""")
    w.chmod(0o755)
    return w


def sites(snapshot: Path) -> collections.Counter:
    """Bytes by site in the detailed heap tree of a `detailed_snapshot` file."""
    lines = snapshot.read_text().splitlines()
    start = max((i for i, l in enumerate(lines) if l.startswith("heap_tree=detailed")), default=None)
    if start is None:
        raise bench.BenchError(f"no detailed heap tree in {snapshot}")
    out: collections.Counter = collections.Counter()
    stack: list[str] = []
    for line in lines[start + 1:]:
        m = NODE.match(line)
        if not m:
            if line.startswith("snapshot="):
                break
            continue
        depth, children, size, frame = len(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
        del stack[depth:]
        stack.append(frame)
        if children == 0:
            own = [f for f in stack[1:] if not PLUMBING.search(f)]
            out[" ← ".join(f[:110] for f in own[:DEPTH]) or stack[-1][:110]] += size
    return out


def snapshot(pid: int, path: Path) -> collections.Counter:
    bench.run_bounded(["vgdb", f"--pid={pid}", "detailed_snapshot", str(path)], 300)
    return sites(path)


def measure(binary: Path) -> tuple[collections.Counter, int]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-heap-"))
    b = bench.Bench(wrapper(tmp, binary), tmp)
    try:
        b.start_signed_in(under_valgrind=True)
        pid = b.pc_proc.pid
        time.sleep(2)
        before = snapshot(pid, tmp / "before.massif")
        argv = [sys.executable, str(Path(__file__).resolve().parent / "idle_conns.py"),
                "--port", str(b.port["https"]), "--count", str(CONNS), "--path", "/bench",
                "--header", f"Authorization: Bearer {b.token}",
                "--open-seconds", str(max(300, CONNS // 5)), "--hold-seconds", "900"]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
        try:
            opened = json.loads(bench.read_line(p, max(360, CONNS // 5 + 60)))
            if opened["failed"] or set(opened["statuses"]) != {"200"}:
                raise bench.BenchError(f"idle connections did not all open with 200: {opened}")
            time.sleep(2)
            after = snapshot(pid, tmp / "after.massif")
            p.stdin.write("done\n")
            p.stdin.flush()
            held = json.loads(bench.read_line(p, 60))
            p.wait(timeout=60)
        except BaseException:
            p.kill()
            p.wait()
            raise
        if held["alive"] != opened["opened"]:
            raise bench.BenchError(f"the server closed idle connections during the snapshot: {held}")
        diff = collections.Counter({k: after[k] - before[k] for k in set(before) | set(after)})
        return diff, opened["opened"]
    finally:
        b.procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    binaries = [Path(a).resolve() for a in sys.argv[1:]]
    if not binaries:
        bench.log("usage: heap.py BINARY [BINARY ...], each built without mimalloc "
                  "(cargo build --release --bin portcullis --no-default-features; see the docstring)")
        return 2
    if not bench.tools_present("valgrind", "vgdb", "openssl"):
        return 2
    for binary in binaries:
        if not os.access(binary, os.X_OK):
            bench.log(f"no executable binary at {binary}")
            return 2
        try:
            diff, n = measure(binary)
        except bench.BenchError as e:
            bench.log(f"failed: {e}")
            return 1
        total = sum(diff.values())
        if total < 512 * n:
            # mimalloc takes its memory from the kernel directly, unseen by massif.
            bench.log(f"massif saw {total / n:.0f} bytes per connection: was {binary} built with mimalloc?")
            return 1
        print(f"\n`{binary}`: {total / n:,.0f} heap bytes per idle connection ({n} connections, massif)\n")
        print("| bytes per connection | site (first frames outside the allocator, each called from the next) |")
        print("| ---: | --- |")
        for site, size in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:ROWS]:
            print(f"| {size / n:,.0f} | `{site}` |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
