#!/usr/bin/env python3
"""Reports import cycles between the modules of each crate.

A module is a file under src/ (mod.rs and lib.rs name their directory's module). An edge
A -> B is any `crate::b...` or `super::...` path in A's file that resolves to module B,
ancestors included (an item defined in lib.rs belongs to the root module). A module using
its own descendants is not an edge: a parent owns, assembles and re-exports its children;
a child reaching back into its parent, or into a sibling that reaches back, is a cycle.
Test code (after the first `#[cfg(test)]`) is ignored. Exits 1 when any crate has a cycle.
"""
import os
import re
import sys


def module_of(src, path):
    rel = os.path.relpath(path, src)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ("lib", "main", "mod"):
        parts = parts[:-1]
    return tuple(parts)


def known(mods, parts):
    """The longest known module that is a prefix of `parts`."""
    for n in range(len(parts), -1, -1):
        if tuple(parts[:n]) in mods:
            return tuple(parts[:n])
    return ()


def edges(src):
    files = []
    for root, _, names in os.walk(src):
        files += [os.path.join(root, n) for n in names if n.endswith(".rs")]
    mods = {module_of(src, f): f for f in files}
    graph = {m: set() for m in mods}
    for m, f in mods.items():
        text = open(f, encoding="utf-8").read()
        text = text.split("#[cfg(test)]")[0]
        text = re.sub(r"//[^\n]*", "", text)
        for hit in re.finditer(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)", text):
            names = hit.group(2).split("::")[1:]
            if hit.group(1) == "crate":
                base = []
            else:
                base = list(m[:-1])
            # `use super::{a, b}` and `use crate::{a, b}` forms.
            target = known(mods, base + names)
            if target[: len(m)] != m:
                graph[m].add(target)
        for hit in re.finditer(r"\b(crate|super)::\{([^}]*)\}", text):
            base = [] if hit.group(1) == "crate" else list(m[:-1])
            for item in hit.group(2).split(","):
                item = item.strip().split("::")
                if item and item[0]:
                    target = known(mods, base + item)
                    if target[: len(m)] != m:
                        graph[m].add(target)
    return graph


def cycles(graph):
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def self_test():
    """The checker finds a sibling cycle and a cycle through a parent, and passes a tree."""
    import tempfile

    def crate(files):
        d = tempfile.mkdtemp()
        for name, text in files.items():
            path = os.path.join(d, "c", "src", name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "w", encoding="utf-8").write(text)
        return d

    sibling = crate({"lib.rs": "mod a; mod b;", "a.rs": "use crate::b::X;", "b.rs": "use crate::a::Y;"})
    parent = crate({"lib.rs": "mod p;", "p/mod.rs": "mod q; pub struct S; use crate::r::T;",
                    "p/q.rs": "use super::S;", "r.rs": "use crate::p::q::U;"})
    tree = crate({"lib.rs": "mod a; mod b; use a::X;", "a.rs": "use crate::b::Y;", "b.rs": "pub struct Y;",
                  "h/mod.rs": "mod k; use k::Z;", "h/k.rs": "use super::super::b::Y;"})
    for d, want in [(sibling, 1), (parent, 1), (tree, 0)]:
        got = len(cycles(edges(os.path.join(d, "c", "src"))))
        assert got == want, (d, got, want)
    print("module-cycles self-test: ok")


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        return
    root = sys.argv[1] if len(sys.argv) > 1 else "crates"
    bad = 0
    for crate in sorted(os.listdir(root)):
        src = os.path.join(root, crate, "src")
        if not os.path.isdir(src):
            continue
        for comp in cycles(edges(src)):
            bad += 1
            names = sorted("::".join(c) or "(root)" for c in comp)
            print(f"{crate}: modules import each other in a cycle: {', '.join(names)}")
    sys.exit(1 if bad else 0)


main()
