"""Finds import cycles between the modules of each crate in this workspace.

The project bans import cycles between modules (two modules that use each other, directly
or through others, should be one module or share a third); `make lint` runs this check.
A module depends on another when its file names it by a `crate::`, `super::` or `self::`
path, in a `use` (grouped forms included) or inline in code. Comments, strings, `tests.rs`
files, `src/bin/` and everything from `#[cfg(test)] mod tests {` to the end of a file are
ignored, and so are edges between a module and its own ancestors or descendants.

Usage: python3 scripts/check_module_cycles.py [ROOT]     (ROOT: the repo root by default)
       python3 scripts/check_module_cycles.py --self-test
"""

import re
import sys
import tempfile
from collections import deque
from pathlib import Path

TOKEN = re.compile(r"\w+|\*|[{},;]")
INLINE_PATH = re.compile(r"(?<![\w:])(?:crate|super|self)(?:::\w+)+")
USE_STMT = re.compile(r"\buse\s[^;]*;")
TESTS_START = re.compile(r"^[ \t]*#\[cfg\(test\)\]\s*mod\s+tests\s*\{", re.M)
# Comments, raw strings, strings and char literals (not lifetimes): blanked before scanning.
NOISE = re.compile(r"//[^\n]*|/\*.*?\*/|(?<!\w)b?r(#*)\".*?\"\1|\"(?:\\.|[^\"\\])*\""
                   r"|'(?:\\.[^']*|[^\\'])'", re.S)


def blank(text):
    """The text with every character but newlines replaced by a space."""
    return re.sub(r"[^\n]", " ", text)


def use_paths(body, offset):
    """Expands a `use` tree into (segments, text offset of its last segment) pairs."""
    prefixes, path, found, at, skip = [[]], [], [], offset, False
    for m in TOKEN.finditer(body):
        token = m.group()
        if skip or token == "as":  # `as` and the alias after it
            skip = not skip
        elif token == "{":
            prefixes.append(path)
        elif token in ",};":
            if len(path) > len(prefixes[-1]):
                found.append((path, at))
            if token == "}" and len(prefixes) > 1:
                prefixes.pop()
            path = prefixes[-1]
        else:
            path, at = path + [token], offset + m.start()
    return found


def resolve(module, segments, modules):
    """The longest existing module a `crate::`, `super::` or `self::` path names, else None."""
    if segments[0] not in ("crate", "super", "self"):
        return None  # another crate, or a name in scope
    full = [] if segments[0] == "crate" else [p for p in module.split("::") if p]
    for segment in segments[segments[0] == "crate":]:
        full = full[:-1] if segment == "super" else full if segment == "self" else full + [segment]
    prefixes = ("::".join(full[:k]) for k in range(len(full), -1, -1))
    return next((prefix for prefix in prefixes if prefix in modules), None)


def lineal(a, b):
    """Whether module a is module b or an ancestor of it (the crate root is "")."""
    return a in ("", b) or b.startswith(a + "::")


def crate_edges(src):
    """Maps each module of a crate to its files and to {dependency: (file, line)}."""
    files = {}
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src).with_suffix("").parts
        parts = rel[:-1] if rel[-1] in ("mod", "lib", "main") else rel
        if rel[0] != "bin" and "tests" not in parts:  # binaries and test-only modules
            files["::".join(parts)] = path
    edges = {m: {} for m in files}
    for module, path in files.items():
        text = NOISE.sub(lambda m: blank(m.group()), path.read_text(encoding="utf-8"))
        if m := TESTS_START.search(text):
            text = text[:m.start()]
        found = []
        for m in USE_STMT.finditer(text):
            found += use_paths(m.group()[3:], m.start() + 3)
            text = text[:m.start()] + blank(m.group()) + text[m.end():]
        found += [(m.group().split("::"), m.start()) for m in INLINE_PATH.finditer(text)]
        for segments, at in sorted(found, key=lambda f: f[1]):
            dep = resolve(module, segments, files)
            if dep is not None and not lineal(dep, module) and not lineal(module, dep):
                edges[module].setdefault(dep, (path, text.count("\n", 0, at) + 1))
    return edges


def strongly_connected(edges):
    """Tarjan's algorithm: the strongly connected components with more than one module."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = [stack.pop()]
            while component[-1] != v:
                component.append(stack.pop())
            on_stack.difference_update(component)
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def shortest_path(edges, start, goal, within):
    """Modules on a shortest path start -> ... -> goal (goal == start: a cycle)."""
    queue, came_from = deque([start]), {}
    while queue:
        v = queue.popleft()
        for w in sorted(edges[v]):
            if w in within and w not in came_from:
                came_from[w] = v
                if w == goal:
                    path = [w]
                    while path[-1] != start or len(path) == 1:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                queue.append(w)
    return None


def find_cycles(root):
    """Report lines (one example cycle per module of each cycle), module and crate counts."""
    lines, n_modules, n_crates = [], 0, 0
    for src in sorted(p for p in Path(root).glob("*/src") if p.is_dir()):
        crate, edges = src.parent.name, crate_edges(src)
        n_modules, n_crates = n_modules + len(edges), n_crates + 1
        for component in strongly_connected(edges):
            covered, first = set(), component[0]
            for member in component:
                if member in covered:
                    continue
                path = shortest_path(edges, first, member, component)
                if member != first:
                    path += shortest_path(edges, member, first, component)[1:]
                covered.update(path)
                hops = "".join(f" -> {b} ({edges[a][b][0].relative_to(root)}:{edges[a][b][1]})"
                               for a, b in zip(path, path[1:]))
                lines.append(f"{crate}: {path[0]}{hops}")
    return lines, n_modules, n_crates


def self_test():
    """A cycle a <-> b is reported; p <-> p::c (parent and child), tests and comments are not."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "demo", "src")
        for folder in ("p", "bin"):
            (src / folder).mkdir(parents=True)
        files = {
            "lib.rs": "pub mod a;\npub mod b;\npub mod p;\npub struct Root;\n",
            "a.rs": "// crate::p is only mentioned here\nuse crate::b::B;\npub struct A;\n"
                    "#[cfg(test)]\nmod tests {\n    use crate::p::P;\n}\n",
            "b.rs": "use crate::{\n    Root,\n    a::{self, A},\n};\npub struct B;\n",
            "p/mod.rs": "pub mod c;\npub use self::c::C;\npub struct P;\nconst S: &str = \"crate::a\";\n",
            "p/c.rs": "pub struct C(super::P);\nfn f() -> super::super::b::B { todo!() }\n",
            "tests.rs": "use crate::p::P;\n",
            "bin/tool.rs": "use crate::{a::A, b::B};\n",
        }
        for name, text in files.items():
            (src / name).write_text(text)
        lines, n_modules, n_crates = find_cycles(Path(tmp))
        assert (n_modules, n_crates) == (5, 1), (n_modules, n_crates)
        assert lines == ["demo: a -> b (demo/src/a.rs:2) -> a (demo/src/b.rs:3)"], lines
    print("self-test passed")


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parent.parent)
    lines, n_modules, n_crates = find_cycles(root)
    if not lines:
        print(f"no import cycles between modules ({n_modules} modules in {n_crates} crates)")
        return 0
    print("import cycles between modules (one example path through each module in one):")
    print("\n".join(lines))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
