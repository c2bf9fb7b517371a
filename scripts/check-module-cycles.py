#!/usr/bin/env python3
"""Fails when modules of one crate import each other in a circle.

For every crate of the workspace (a folder with Cargo.toml and src/), each file is a
module (`src/a/b.rs` and `src/a/b/mod.rs` are `a::b`; `lib.rs`/`main.rs` is the root).
Every `crate::…`, `super::…` and `self::…` path in a file (outside `#[cfg(test)]`
modules) is an import of the module it names. Imports are compared among siblings:
`a::b::c` using `a::d::e` is an arrow `a::b -> a::d` under `a`, and a child using
an item of its parent is an arrow to the parent. Any strongly connected set of
siblings is a cycle. The crate root (lib.rs / main.rs) is composition: it declares and
uses every module. What the root defines itself (the backend's `AppState`, handed to
every resource) may be used below it; a module importing one of the root's `pub use`
re-exports instead of the module that defines the item is reported, since that hides
the real arrow. The layout rule is that arrows
only point down (docs/architecture.md).

Usage: scripts/check-module-cycles.py [CRATE_DIR ...]   (default: every workspace crate)
       scripts/check-module-cycles.py --self-test        (the check finds planted circles)
Exit 1 with each cycle and the imports that make it.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")


def modules(src: Path):
    mods = {}
    for f in sorted(src.rglob("*.rs")):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "mod":
            parts = parts[:-1]
        if parts in (["lib"], ["main"]):
            parts = []
        if "bin" == (parts[:1] or [None])[0]:
            continue
        mods[tuple(parts)] = f
    return mods


def strip_tests(text: str) -> str:
    # `#[cfg(test)] mod tests { … }` and lone `#[cfg(test)]` items: drop from the
    # attribute to the end of the item (tests may import anything).
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        j = text.find("{", m.end())
        semi = text.find(";", m.end())
        if j == -1 or (semi != -1 and semi < j):
            i = semi + 1 if semi != -1 else len(text)
            continue
        depth, k = 0, j
        while k < len(text):
            if text[k] == "{":
                depth += 1
            elif text[k] == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        i = k + 1
    out.append(text[i:])
    return "".join(out)


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def expand_groups(text: str):
    """`use crate::a::{b, c::d}` → crate::a::b, crate::a::c::d (one level of nesting)."""
    for m in re.finditer(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}", text):
        head = m.group(1) + m.group(2)
        for item in re.split(r",(?![^{]*\})", m.group(3)):
            item = item.strip()
            if not item or item == "self":
                yield head
                continue
            sub = re.match(r"([A-Za-z_][A-Za-z0-9_:]*)", item)
            if sub:
                yield head + "::" + sub.group(1).rstrip(":")


def targets(text: str):
    for m in PATH_RE.finditer(text):
        if m.group(2) != "::{":
            yield m.group(1) + m.group(2)
    yield from expand_groups(text)


def resolve(path: str, here: tuple, mods: dict):
    parts = path.split("::")
    if parts[0] == "crate":
        base, rest = (), parts[1:]
    else:
        # In `a/b.rs` (module a::b) `super` is `a`; `self` is `a::b`.
        base, rest = here, parts[1:]
        if parts[0] == "super":
            base = here[:-1]
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    # Longest prefix that is a module.
    best = base
    for n in range(1, len(rest) + 1):
        cand = base + tuple(rest[:n])
        if cand in mods:
            best = cand
        else:
            break
    return best


CHILD_RE = re.compile(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", re.M)


def arrows(mods: dict):
    edges = {}
    for here, f in mods.items():
        text = strip_tests(strip_comments(f.read_text()))
        # A parent that uses its child (`child::x`, `use child::…`) points down to it; a
        # `pub use child::…` re-export is the folder's facade, not a use.
        body = re.sub(r"^\s*pub(?:\([a-z]+\))?\s+use\s+[^;]*;", "", text, flags=re.M)
        for child in CHILD_RE.findall(text):
            if here + (child,) in mods and re.search(rf"(?<![A-Za-z0-9_:]){child}::", body):
                edges.setdefault((here, here + (child,)), set()).add((f, f"{child}::"))
        for t in targets(text):
            there = resolve(t, here, mods)
            if there == here or there[: len(here)] == here:
                continue  # itself or its own children (counted above)
            # Compare at the level of the closest common parent.
            n = 0
            while n < min(len(here), len(there)) and here[n] == there[n]:
                n += 1
            a = here[: n + 1]
            b = there[: n + 1] if len(there) > n else there
            if a == b:
                continue
            edges.setdefault((a, b), set()).add((f, t))
    return edges


def without_root_items(edges, reexports):
    """Drops arrows to the crate root for items the root defines itself (composition
    state such as the backend's `AppState`): the documented exception to the rule."""
    kept = {}
    for (a, b), why in edges.items():
        if b == () and a != ():
            why = {(f, t) for f, t in why if t.split("::")[-1] in reexports}
            if not why:
                continue
        kept[(a, b)] = why
    return kept


def root_reexports(root):
    """Names the crate root re-exports from its own modules (`pub use a::{B, C}`)."""
    if root is None:
        return set()
    names = set()
    text = strip_comments(root.read_text())
    for m in re.finditer(r"pub use\s+(?:self::|crate::)?([a-z_][a-z0-9_]*)::([^;]+);", text):
        body = m.group(2)
        for n in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)(?:\s+as\s+([A-Za-z_][A-Za-z0-9_]*))?", body):
            names.add(n[1] or n[0])
    return names


def cycles(edges):
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def name(m):
    return "crate" if not m else "::".join(m)


def self_test():
    """Plants each kind of violation in a throwaway crate; the check must report it."""
    import tempfile

    cases = {
        "siblings": {"lib.rs": "mod a; mod b;", "a.rs": "use crate::b::B; pub struct A;",
                     "b.rs": "use crate::a::A; pub struct B;"},
        "parent and child": {"lib.rs": "mod a;", "a/mod.rs": "mod c; pub fn f() { c::g() }",
                             "a/c.rs": "use super::f; pub fn g() {}"},
        "root re-export": {"lib.rs": "mod a; mod b; pub use b::B;", "a.rs": "use crate::B;",
                           "b.rs": "pub struct B;"},
        "grouped import": {"lib.rs": "mod a; mod b;", "a.rs": "use crate::{b::{B}, x};",
                           "b.rs": "use crate::a::A;"},
    }
    clean = {"lib.rs": "mod a; mod b; pub struct State; fn f() { a::g() }",
             "a.rs": "use crate::b::B; use crate::State; pub fn g() {}",
             "b.rs": "pub struct B;\n#[cfg(test)]\nmod tests { use crate::a; }"}
    failures = []
    for name, files in [*cases.items(), ("clean", clean)]:
        with tempfile.TemporaryDirectory() as d:
            for rel, text in files.items():
                f = Path(d) / "src" / rel
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text(text)
            # The parent/child case: a/mod.rs declares c, whose `super::f` points up to a.
            mods = modules(Path(d) / "src")
            edges = without_root_items(arrows(mods), root_reexports(mods.get(())))
            found = bool(cycles(edges)) or any(b == () and a != () for a, b in edges)
            if found != (name != "clean"):
                failures.append(name)
    if failures:
        print(f"module-cycle check self-test failed for: {', '.join(failures)}")
        return 1
    print(f"module-cycle check self-test: {len(cases)} planted violations found, clean crate passes")
    return 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    crates = [Path(a).resolve() for a in argv] or sorted(
        p.parent for p in ROOT.glob("*/Cargo.toml") if (p.parent / "src").is_dir()
    ) + ([ROOT] if (ROOT / "src").is_dir() else [])
    failed = False
    checked = 0
    for crate in crates:
        mods = modules(crate / "src")
        edges = arrows(mods)
        checked += len(mods)
        label = crate.relative_to(ROOT) if crate != ROOT else Path(".")
        reexports = root_reexports(mods.get(()))
        edges = without_root_items(edges, reexports)
        for (a, b), why in sorted(edges.items()):
            hidden = [(f, t) for f, t in why if t.split("::")[-1] in reexports and t.startswith("crate::")]
            if b == () and a != () and hidden:
                failed = True
                f, t = sorted(hidden)[0]
                print(f"{label}: {name(a)} imports from the crate root, which composes it: "
                      f"{f.relative_to(ROOT)}: {t} (import it from the module that defines it)")
        for comp in cycles(edges):
            failed = True
            print(f"{label}: modules import each other in a circle: {', '.join(name(m) for m in comp)}")
            members = set(comp)
            for (a, b), why in sorted(edges.items()):
                if a in members and b in members:
                    f, t = sorted(why)[0]
                    print(f"  {name(a)} -> {name(b)}  ({f.relative_to(ROOT)}: {t})")
    if failed:
        return 1
    print(f"module cycles: none in {len(crates)} crates ({checked} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
