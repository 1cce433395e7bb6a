#!/usr/bin/env python3
"""Module-level import-cycle check over `cargo modules dependencies` DOT output.

Usage: scripts/cycles.py GRAPH.dot     (or the DOT on stdin)

cargo-modules' graph is item-level: a node per module, type, trait and fn, "owns" edges for
structure (module -> item, type -> its methods) and "uses" edges for what an item depends on
(a module's `use` / `pub use` imports, a type's field types, a fn's parameter and return types).
Its own `--acyclic` runs on that raw graph, owns edges included, so it trips over a type and its
own methods. Here instead:

  * every node is collapsed to the module that owns it (following "owns" edges up to the nearest
    `mod` or the crate root): `crate::a::b::Item` and `crate::a::b::Item::method` are `crate::a::b`;
  * "owns" edges are dropped (declaring `mod child;` is not an import), and so are edges a module
    has to itself;
  * a "uses" edge to an item defined in a child module is a dependency on that child module, and a
    use of a parent's item (`use super::X`) is a dependency on the parent. So a parent that
    re-exports or imports a child's item (`pub use child::X`, `use child::Y`) while the child
    imports the parent's own items (`use super::Z`, Z defined in the parent) is a cycle and is
    reported. Imports resolve to where an item is defined, so `use super::X` of something the
    parent merely re-exports from a sibling counts as a dependency on that sibling, not on the
    parent. Glob imports (`use super::*`) count every name they bring into scope;
  * uses from items inside `impl` blocks (methods, associated consts and types) are not counted:
    cargo-modules files them under their self type, not under the module the `impl` is written in,
    so `impl From<UsageError> for crate::Error` in `entry::args` would read as `error` depending
    on `entry::args`. The module holding an impl normally imports what the impl names, and that
    import is counted. Uses from items declared directly in a module (field types of its
    structs and enums, signatures of its free fns) are counted.

scripts/cycles runs cargo-modules without `--cfg-test`: `#[cfg(test)]` modules are leaves that
product code cannot reach, and their `use super::*` imports every sibling module's name, so two
test modules in one file would read as a cycle they do not have.

Exit 0 with a one-line summary when the module graph is acyclic. Otherwise, for each group of
modules tangled in cycles (strongly connected component), print the shortest cycle through each
of its edges as `a -> b -> a` (so every offending edge appears, without the combinatorial list
of all elementary cycles), then each edge with the item-level uses causing it; exit 1.
"""

import re
import sys
from collections import defaultdict, deque

NODE_RE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)" \[label="((?:[^"\\]|\\.)*)".*// "([^"]*)" node$')
EDGE_RE = re.compile(
    r'^\s*"((?:[^"\\]|\\.)*)" -> "((?:[^"\\]|\\.)*)" \[.*// "(uses|owns)" edge$'
)
MODULE_KINDS = {"mod", "crate"}
MAX_WITNESSES = 8  # item-level uses listed per module edge


def parse(text):
    kinds, owners, uses = {}, defaultdict(set), []
    for line in text.splitlines():
        m = NODE_RE.match(line)
        if m:
            kinds[m.group(1)] = m.group(3)
            continue
        m = EDGE_RE.match(line)
        if m:
            src, dst, kind = m.groups()
            if kind == "owns":
                owners[dst].add(src)
            else:
                uses.append((src, dst))
    return kinds, owners, uses


def module_resolver(kinds, owners):
    modules = {n for n, k in kinds.items() if k in MODULE_KINDS}
    cache = {}

    def by_path(node):
        # Fallback for a node without an owner: the longest module path that prefixes it.
        parts = node.split("::")
        for i in range(len(parts) - 1, 0, -1):
            cand = "::".join(parts[:i])
            if cand in modules:
                return cand
        return None

    def module_of(node):
        if node in cache:
            return cache[node]
        seen, cur, result = set(), node, None
        while cur is not None and cur not in seen:
            seen.add(cur)
            if kinds.get(cur) in MODULE_KINDS:
                result = cur
                break
            parents = sorted(owners.get(cur, ()))
            cur = parents[0] if len(parents) == 1 else None
        if result is None:
            result = by_path(node)
        cache[node] = result
        return result

    return modules, module_of


def sccs(nodes, succ):
    """Tarjan's algorithm, iterative. Returns the list of SCCs (each a list of nodes)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(succ[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(succ[w]))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


def shortest_cycles(comp, succ):
    """For each edge inside one SCC, the shortest cycle through it (found by BFS back to the
    edge's source), rotated to start at its smallest module and deduplicated. Every edge of
    the tangle shows up in some printed cycle, without listing every elementary cycle."""
    members = set(comp)
    found = {}
    for a in comp:
        for b in sorted(succ[a] & members):
            prev, queue = {b: None}, deque([b])
            while queue and a not in prev:
                v = queue.popleft()
                for w in sorted(succ[v] & members):
                    if w not in prev:
                        prev[w] = v
                        queue.append(w)
            back, v = [], a
            while v is not None:
                back.append(v)
                v = prev[v]
            cyc = [a] + back[::-1]  # a -> b -> ... -> a
            body = cyc[:-1]
            i = body.index(min(body))
            body = body[i:] + body[:i]
            found[tuple(body)] = body + [body[0]]
    return sorted(found.values(), key=lambda c: (len(c), c))


def main(argv):
    if len(argv) > 2 or (len(argv) == 2 and argv[1] in ("-h", "--help")):
        print(__doc__.strip())
        return 2
    text = open(argv[1], encoding="utf-8").read() if len(argv) == 2 else sys.stdin.read()
    kinds, owners, uses = parse(text)
    modules, module_of = module_resolver(kinds, owners)
    if not modules:
        print("cycles: no modules in the cargo-modules graph (empty or unexpected output)", file=sys.stderr)
        return 2
    root = next((n for n, k in kinds.items() if k == "crate"), None)

    def show(path):
        if root and path == root:
            return "crate"
        if root and path.startswith(root + "::"):
            return "crate::" + path[len(root) + 2:]
        return path

    def counted(src):
        # A module's own imports, or an item declared directly in a module; not an impl's items.
        if kinds.get(src) in MODULE_KINDS:
            return True
        parents = owners.get(src, ())
        return not parents or any(kinds.get(p) in MODULE_KINDS for p in parents)

    succ = defaultdict(set)
    witnesses = defaultdict(set)
    for src, dst in uses:
        if not counted(src):
            continue
        a, b = module_of(src), module_of(dst)
        if a is None or b is None or a == b:
            continue
        succ[a].add(b)
        witnesses[(a, b)].add((src, dst))
    for m in modules:
        succ[m]  # every module is a node, edges or not
    edge_count = sum(len(v) for v in succ.values())

    cyclic = [c for c in sccs(modules, succ) if len(c) > 1]
    if not cyclic:
        print(f"cycles: no module import cycles ({len(modules)} modules, {edge_count} module-level use edges)")
        return 0

    total = 0
    lines = []
    for comp in sorted(cyclic):
        cycles = shortest_cycles(comp, succ)
        total += len(cycles)
        lines.append(f"cycle group of {len(comp)} modules: {', '.join(show(m) for m in comp)}")
        for cyc in cycles:
            lines.append("  " + " -> ".join(show(m) for m in cyc))
        lines.append("  caused by:")
        members = set(comp)
        for a in comp:
            for b in sorted(succ[a] & members):
                lines.append(f"    {show(a)} -> {show(b)}:")
                ws = sorted(witnesses[(a, b)])
                for src, dst in ws[:MAX_WITNESSES]:
                    lines.append(
                        f"      {show(src)} ({kinds.get(src, '?')}) uses {show(dst)} ({kinds.get(dst, '?')})"
                    )
                if len(ws) > MAX_WITNESSES:
                    lines.append(f"      ... and {len(ws) - MAX_WITNESSES} more")
    print(
        f"cycles: {total} module import cycle(s) in {len(cyclic)} group(s) of tangled modules "
        f"({len(modules)} modules, {edge_count} module-level use edges):"
    )
    print("\n".join(lines))
    print(
        "cycles: `X (mod) uses Y` is a `use`/`pub use` of Y in module X; `X (fn|struct|...) uses Y` "
        "is Y in X's signature or fields. Break each cycle by moving the shared item to the module "
        "the other side already depends on (details: scripts/cycles.py)."
    )
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
