#!/usr/bin/env python3
"""Where a callgrind profile's instructions go, per request: `make bench-proxy-instructions`
with `INSTR_KEEP=1` keeps the files this reads.

    python3 bench/proxy/callgrind_costs.py FILE REQUESTS self [N]
        the N functions with the most instructions of their own
    python3 bench/proxy/callgrind_costs.py FILE REQUESTS callees REGEX [N]
        what the functions matching REGEX spend in the functions they call (inclusive)
    python3 bench/proxy/callgrind_costs.py FILE REQUESTS callers REGEX [N]
        who calls the functions matching REGEX, and how much that costs (inclusive)

Figures are percentages of the whole file and instructions per request (the file's
counts divided by REQUESTS, the number the run sent). callgrind_annotate 3.19 puts every
instruction of such a file (one combined dump, no per-instruction data) under the
thread entry `clone`; this reads the cost lines itself.

Function names need symbols valgrind can map. Rust 1.90 and later link with rust-lld,
whose split read-only segments valgrind 3.19 does not map: the totals stay right, but
every function of the binary is an address. For a profile, build a copy linked by
GNU ld in a target directory of its own:

    RUSTFLAGS=-Clink-arg=-fuse-ld=bfd CARGO_TARGET_DIR=/tmp/profile-target \\
        cargo build --release --bin portcullis
"""

from __future__ import annotations

import collections
import re
import sys

NAME = re.compile(r"\((\d+)\)(?: (.*))?")


def read(path: str) -> tuple[collections.Counter, collections.Counter]:
    """Self cost per function, and inclusive cost per (caller, callee) edge."""
    names: dict[str, str] = {}

    def name(field: str) -> str:
        # Compressed names: "(id) name" the first time, "(id)" after.
        m = NAME.match(field)
        if not m:
            return field
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), field)

    own: collections.Counter = collections.Counter()
    edges: collections.Counter = collections.Counter()
    fn = callee = ""
    call_follows = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                fn = name(line[3:].rstrip("\n"))
            elif line.startswith("cfn="):
                callee = name(line[4:].rstrip("\n"))
            elif line.startswith("calls="):
                call_follows = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                fields = line.split()
                if len(fields) < 2:
                    continue
                cost = int(fields[1])
                if call_follows:
                    edges[(fn, callee)] += cost
                    call_follows = False
                else:
                    own[fn] += cost
    return own, edges


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[3] not in ("self", "callees", "callers"):
        print(__doc__, file=sys.stderr)
        return 2
    path, requests, mode = argv[1], int(argv[2]), argv[3]
    own, edges = read(path)
    total = sum(own.values())
    if total == 0:
        print(f"{path}: no costs", file=sys.stderr)
        return 1

    def row(cost: int, label: str) -> str:
        return f"{cost / total * 100:6.2f} % {cost / requests:10,.0f} / request  {label[:180]}"

    if mode == "self":
        n = int(argv[4]) if len(argv) > 4 else 40
        for fn, cost in own.most_common(n):
            print(row(cost, fn))
    else:
        if len(argv) < 5:
            print(__doc__, file=sys.stderr)
            return 2
        pattern = re.compile(argv[4])
        n = int(argv[5]) if len(argv) > 5 else 30
        out: collections.Counter = collections.Counter()
        for (caller, callee), cost in edges.items():
            if mode == "callees" and pattern.search(caller) and not pattern.search(callee):
                out[callee] += cost
            elif mode == "callers" and pattern.search(callee) and not pattern.search(caller):
                out[caller] += cost
        inside = sum(cost for fn, cost in own.items() if pattern.search(fn))
        print(row(inside, f"(own instructions of the functions matching {argv[4]!r})"))
        for fn, cost in out.most_common(n):
            print(row(cost, fn))
    print(f"total: {total:,} instructions, {total / requests:,.0f} per request")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
